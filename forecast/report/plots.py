"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- `folds_figure`: test AUROC per walk-forward fold, one line per budget (mean over seeds, each
  seed a dot) and one dashed line per baseline; one panel per series.
- `scaling_figure`: pooled test loss and AUROC against exact parameter count (log axis), one line
  per series, error bars = the joint block-bootstrap interval; the baselines as horizontal lines; the fitted
  law L(N) dotted on the loss panel, with its band over the draws (where at least 4 budgets were fitted).
- `data_scaling_figure`: pooled test loss and AUROC against training years per budget and design,
  with the baselines fitted on the same years (studies trained on fewer years only).
- `search_figure`: one panel per study: every finished trial's validation loss (pruned ones at
  their last reported epoch) and the best-so-far curve, titled with the sufficiency verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forecast.core.files import atomic_path
from forecast.report.build import Report, SeriesResult
from forecast.report.data_scaling import curve
from forecast.report.tables import folds_frame
from forecast.training.baselines import BASELINES

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
          "tab:olive", "tab:cyan", "tab:gray")
BASELINE_STYLE = {"prior": ":", "logistic": "--", "hist_gb": "-."}
# data_scaling.png: each baseline its own colour (none of COLORS, which the budgets take) and marker
BASELINE_LOOK = {"prior": ("black", "s"), "logistic": ("dimgray", "^"), "hist_gb": ("darkgoldenrod", "D")}
PANELS = (("loss", "pooled test loss (BCE, lower is better)"), ("auroc", "pooled test AUROC (higher is better)"))


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: savefig and TensorBoard's add_figure render through it
    return fig, list(fig.subplots(1, cols, squeeze=False)[0])


def folds_figure(report: Report) -> Figure:
    """Per-fold test AUROC by budget, with the baselines, one panel per series."""
    frame = folds_frame(report)
    fig, axes = _figure(max(7.0, 5.5 * len(report.series)), 4.5, cols=max(len(report.series), 1))
    for ax, r in zip(axes, report.series, strict=False):
        if not r.folds:
            ax.set_title(f"{r.series.label}: not reported", fontsize=10)
            continue
        rows = frame[(frame["horizon"] == r.series.horizon) & (frame["task"] == r.series.task)
                     & (frame["tier"] == r.series.tier) & (frame["symbol"] == r.series.symbol)
                     & (frame["inputs"] == r.series.inputs) & (frame["train"] == r.series.train)]
        models = [s.entry.budget for s in r.reported]
        for i, budget in enumerate(models):
            own = rows[rows["budget"] == budget]
            mean = own.groupby("fold")["auroc"].mean()
            ax.plot(mean.index, mean.values, color=COLORS[i % len(COLORS)], marker="o", label=f"PatchTST {budget}")
            ax.plot(own["fold"], own["auroc"], ".", color=COLORS[i % len(COLORS)], alpha=0.5)
        for b in BASELINES:
            own = rows[rows["budget"] == b].sort_values("fold")
            ax.plot(own["fold"], own["auroc"], color="black", ls=BASELINE_STYLE[b], lw=1, label=b)
        ax.set_xticks([f.index for f in r.folds], [f"{f.index}\n{f.test[0][:7]}" for f in r.folds], fontsize=8)
        ax.set_xlabel("fold (first test month)")
        ax.set_ylabel("test AUROC")
        ax.set_title(r.series.label, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Walk-forward folds: test AUROC per fold (line: mean over seeds, dots: seeds)", fontsize=10)
    return fig


def scaling_figure(report: Report) -> Figure:
    """Pooled test loss and AUROC vs parameters, every series with its baselines."""
    fig, axes = _figure(12, 4.8, cols=len(PANELS))
    for i, r in enumerate(report.series):
        if r.draws is None:
            continue
        color = COLORS[i % len(COLORS)]
        ok = r.reported
        for ax, (metric, _) in zip(axes, PANELS, strict=True):
            x = [s.entry.best.params for s in ok]
            y = np.array([r.draws.column(metric, s.entry.budget) for s in ok])
            drawn = [np.asarray(r.draws.column(metric, s.entry.budget, draws=True)) for s in ok]
            lo = np.array([np.nanquantile(v, 0.025) if np.isfinite(v).any() else np.nan for v in drawn])
            hi = np.array([np.nanquantile(v, 0.975) if np.isfinite(v).any() else np.nan for v in drawn])
            err = np.nan_to_num(np.stack([y - lo, hi - y]))
            ax.errorbar(x, y, yerr=err, color=color, marker="o", capsize=4, label=r.series.label)
            for b in BASELINES:
                ax.axhline(r.draws.column(metric, b), color=color, ls=BASELINE_STYLE[b], lw=1, alpha=0.7)
        _law_curve(axes[0], r, color)
    for ax, (_, title) in zip(axes, PANELS, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (exact count of each budget's best model)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # nothing to name when no series could be reported
        axes[0].legend(fontsize=8, title="baselines: prior ':', logistic '--', HistGB '-.'", title_fontsize=7)
    fig.suptitle("Scaling over all folds: 95% joint block-bootstrap intervals (dates x seeds)")
    return fig


def _law_curve(ax: Any, r: SeriesResult, color: str) -> None:
    """The fitted L(N) (`forecast.report.law`) over the budgets' range, dotted, with its 95% band over the draws."""
    fit = r.law.fit if r.law is not None else None
    if fit is None:
        return
    x = [p["N"] for p in r.law.points]
    n = np.geomspace(min(x), max(x), 50)[:, None]
    ax.plot(n[:, 0], fit.predict(n), color=color, ls=":", lw=1.5, label=f"{r.series.label}: L(N) fit ({r.law.status})")
    if len(fit.draws):
        drawn = fit.predict(n, draws=True)  # [B, 50]
        ax.fill_between(n[:, 0], *np.quantile(drawn, [0.025, 0.975], axis=0), color=color, alpha=0.12, lw=0)


def data_scaling_figure(report: Report) -> Figure:
    """Pooled test loss and AUROC against training years (log2 axis), one row per family: a line per
    budget and design (trailing solid, blocks dashed), each baseline in its own colour and marker
    (`BASELINE_LOOK`), 95% joint intervals; every curve has a legend entry."""
    fig = Figure(figsize=(12, 4.6 * max(len(report.data), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(report.data), 1), len(PANELS), squeeze=False)
    for row, res in zip(axes, report.data, strict=False):
        models = list(dict.fromkeys(c.model for c in res.cells))
        for i, model in enumerate(models):
            color, marker = BASELINE_LOOK[model] if model in BASELINES else (COLORS[i % len(COLORS)], "o")
            for design, ls in (("trailing", "-"), ("blocks", "--")):
                points = curve(res.cells, model, design)
                if not points:
                    continue
                for ax, (metric, _) in zip(row, PANELS, strict=True):
                    found = np.array([res.interval(c, metric) for c in points])  # [P, 3]
                    err = np.nan_to_num(np.stack([found[:, 0] - found[:, 1], found[:, 2] - found[:, 0]]))
                    ax.errorbar([c.span for c in points], found[:, 0], yerr=err, color=color, ls=ls, marker=marker,
                                capsize=3, lw=1 if model in BASELINES else 1.6, label=f"{model} {design}")
        for ax, (_, title) in zip(row, PANELS, strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("training years (kept span; blocks: years drawn)")
            ax.set_title(f"{res.family.family_label}: {title}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        if row[0].get_legend_handles_labels()[0]:
            row[0].legend(fontsize=7)
    fig.suptitle("Scaling in data: fixed test dates, training years before validation (trailing) or drawn at "
                 "random (blocks, draws pooled)", fontsize=10)
    return fig


def search_figure(report: Report) -> Figure:
    """Best-so-far validation loss per trial, one panel per study (`forecast.report.sufficiency`)."""
    studies = [(r.series, s) for r in report.series for s in r.studies if s.search is not None]
    cols = max(min(len(studies), 3), 1)
    rows = max(-(-len(studies) // cols), 1)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(studies):]:
        ax.set_axis_off()
    for ax, (series, s) in zip(axes, studies, strict=False):
        q = s.search
        for state, style in (("complete", dict(color="tab:blue", marker="o", ls="")),
                             ("pruned", dict(color="tab:gray", marker="x", ls="")),
                             ("failed", dict(color="tab:red", marker="v", ls=""))):
            found = [(t.number, t.value) for t in s.entry.trials if t.state == state and t.value is not None]
            if found:
                ax.plot(*zip(*found, strict=True), label=state, **style)
        if q.curve:
            ax.step(*zip(*q.curve, strict=True), where="post", color="black", lw=1.2, label="best so far")
        ax.axvline(q.best_trial, color="tab:green", lw=0.8, ls="--")
        ax.set_title(f"{series.label} {s.entry.budget}: {'UNCONVERGED' if q.unconverged else 'converged'}",
                     fontsize=8, color="tab:red" if q.unconverged else "black")
        ax.set_xlabel("trial")
        ax.set_ylabel("val/loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Search sufficiency: each trial's validation loss and the best so far (dashed: the best trial)",
                 fontsize=10)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure as PNG atomically (the temporary name has no .png: say the format)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
