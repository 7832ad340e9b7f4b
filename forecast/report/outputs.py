"""Write the report's files under `--out`, each atomically; the figures also to TensorBoard."""

from __future__ import annotations

from pathlib import Path

from forecast.core.files import atomic_path, write_json_atomic, write_text_atomic
from forecast.core.workers import Pool
from forecast.report.build import Report, ReportOptions, Say, build_report
from forecast.report.isoflop_outputs import compute_part, compute_section
from forecast.report.markdown import render
from forecast.report.plots import (
    data_scaling_figure,
    folds_figure,
    save_png,
    scaling_figure,
    search_figure,
)
from forecast.report.tables import TABLES

TENSORBOARD = "tensorboard"


def make_report(options: ReportOptions, say: Say = print, workers: Pool | None = None) -> Report:
    """`forecast report`: build the report (`build.build_report`) and write every file under `options.out`."""
    report = build_report(options, say, workers)
    if report.pending is None:  # a worker, or a process whose last retrains others still run, writes nothing
        write_outputs(report, options.out)
    return report


def write_outputs(report: Report, out: Path) -> list[Path]:
    """report.md, the CSVs, law.json, folds.png, scaling.png, search.png, data_scaling.png (studies trained on
    fewer years) and TensorBoard figures.

    Returns:
        The files written, report.md last (it lists the others).
    """
    written = []
    for name, make in TABLES.items():
        frame = make(report)
        if frame.empty:  # e.g. regimes.csv of a tier without VIX: no file, and no stale one
            (out / name).unlink(missing_ok=True)
            continue
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        written.append(out / name)
    write_json_atomic(out / "law.json", {**law_record(report), **compute_part(out)})  # `forecast isoflop`'s kept
    written.append(out / "law.json")
    figures = {"folds": folds_figure(report), "scaling": scaling_figure(report), "search": search_figure(report)}
    if report.data:  # studies trained on fewer years: the data section's figure
        figures["data_scaling"] = data_scaling_figure(report)
    else:
        (out / "data_scaling.png").unlink(missing_ok=True)  # no stale one from an earlier report
    for name, fig in figures.items():
        save_png(fig, out / f"{name}.png")
        written.append(out / f"{name}.png")
    text = render(report, [p.name for p in written] + [f"{TENSORBOARD}/", "runs/<study>/fold<k>-seed<s>/"])
    text += compute_section(out)  # the iso-FLOP runs' section, when `forecast isoflop` wrote into this --out
    _tensorboard(out / TENSORBOARD, figures, text)
    write_text_atomic(out / "report.md", text)
    return [*written, out / "report.md"]


def law_record(report: Report) -> dict:
    """law.json: per series, the law of each axis (`forecast.report.law.AxisLaw.record`): parameters with intervals,
    degenerate share, points left out, held-out check."""
    return {"series": [{"series": r.series.label, "parameters": None if r.law is None else r.law.record()}
                       for r in report.series]}


def _tensorboard(folder: Path, figures: dict, text: str) -> None:
    """The figures and the report text under `report/` in TensorBoard (IMAGES and TEXT tabs).

    Earlier reports' event files in this folder are removed first: TensorBoard would show both.
    """
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for name, fig in figures.items():
            writer.add_figure(f"report/{name}", fig, global_step=0, close=False)
        writer.add_text("report/markdown", text, global_step=0)
    finally:
        writer.close()
