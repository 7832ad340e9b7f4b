"""What `forecast isoflop` writes into `--out`: isoflop.csv, law.json (the frontier N_opt(C)), isoflop.png,
frontier.png and isoflop.md (the report's "Compute" section).

Each finished cell (compute budget, size) is one arm of the report's joint bootstrap (`stats.paired_bootstrap`):
its probabilities [seeds, test dates pooled over the folds], so the frontier's interval comes from the same
date-and-seed draws as every other claim, refitted on each draw (`law.fit_frontier`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forecast.core.errors import ForecastError
from forecast.core.files import atomic_path, write_json_atomic, write_text_atomic
from forecast.report.isoflop import Isoflop
from forecast.report.law import Frontier, fit_frontier
from forecast.report.stats import Arm, paired_bootstrap

SECTION = "isoflop.md"  # the "Compute" section; `forecast report` into the same --out appends it to report.md
COMPUTE_KEYS = ("compute", "skipped")  # isoflop's part of law.json; "series" is the report's


def read_law(out: Path) -> dict[str, Any]:
    """law.json of `out` as written so far (by `forecast report` or `forecast isoflop`), or {} when there is none.

    Raises:
        ForecastError: it is not a JSON object.
    """
    path = out / "law.json"
    if not path.is_file():
        return {}
    try:
        law = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ForecastError(f"{path} is not readable JSON ({err}); remove it or choose another --out") from None
    if not isinstance(law, dict):
        raise ForecastError(f"{path} is not a JSON object; remove it or choose another --out")
    return law


def compute_part(out: Path) -> dict[str, Any]:
    """The compute axis a `forecast isoflop` wrote into `out`'s law.json (kept when the report rewrites it)."""
    law = read_law(out)
    return {k: law[k] for k in COMPUTE_KEYS if k in law}


def compute_section(out: Path) -> str:
    """The "Compute" section a `forecast isoflop` wrote into `out`, for report.md ("" when none)."""
    path = out / SECTION
    return "\n" + path.read_text() if path.is_file() else ""


COLUMNS = ("compute", "budget", "params", "lr", "lr_source", "fold", "seed", "steps", "batch", "epochs",
           "samples_seen", "tokens_seen", "flops", "loss", "auroc", "wall_s")


def table(iso: Isoflop) -> pd.DataFrame:
    """One row per finished cell x fold x seed (isoflop.csv)."""
    rows = [{k: r[k] for k in COLUMNS} for r in iso.results]
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["compute", "params", "fold", "seed"])


def arms(iso: Isoflop) -> tuple[np.ndarray, list[Arm], list[float]]:
    """The labels [D] over the folds, one arm per complete cell (every fold x seed done) and its compute."""
    y = np.concatenate([f.labels for f in iso.folds]).astype(float)
    by = {(r["compute"], r["budget"], r["fold"], r["seed"]): r["probs"] for r in iso.results}
    out, compute = [], []
    for c in iso.cells:
        keys = [[(c.compute, c.size.budget, f.index, s) for f in iso.folds] for s in iso.seeds]
        if c.skipped or not all(k in by for row in keys for k in row):
            continue
        probs = np.array([np.concatenate([by[k] for k in row]) for row in keys], dtype=float)
        out.append(Arm(f"C={c.compute:.3g} {c.size.budget}", probs, float(c.size.params)))
        compute.append(c.compute)
    return y, out, compute


def frontier(iso: Isoflop, draws: int) -> tuple[Frontier | None, list[Arm], list[float], Any]:
    """N_opt(C) over the complete cells, with the joint draws (None with no cell)."""
    y, models, compute = arms(iso)
    if not models:
        return None, models, compute, None
    d = paired_bootstrap(y, models, draws=draws, auroc=False)
    return fit_frontier(compute, [m.params for m in models], d.loss, d.loss_draws), models, compute, d


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def isoflop_figure(front: Frontier, models: list[Arm], compute: list[float], loss: np.ndarray) -> Figure:
    """Loss against size, one curve per compute budget, each budget's fitted minimum marked."""
    fig, ax = _figure()
    for c in sorted(set(compute)):
        idx = [j for j, cj in enumerate(compute) if cj == c]
        n = np.array([models[j].params for j in idx])
        order = np.argsort(n)
        line = ax.plot(n[order], loss[idx][order], "o-", label=f"C = {c:.2g} FLOPs")[0]
        b = next((b for b in front.budgets if b["compute"] == c), None)
        if b is not None:
            ax.plot([b["best_size"]], [b["loss_at_best_size"]], "x" if b["excluded"] else "*",
                    color=line.get_color(), markersize=11)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (exact)")
    ax.set_ylabel("pooled test loss (BCE)")
    ax.set_title("iso-FLOP profiles (*: fitted minimum, x: left out)")
    ax.legend(fontsize=7)
    return fig


def frontier_figure(front: Frontier) -> Figure:
    """N_opt against C with the fitted line (when fitted); left-out budgets hollow."""
    fig, ax = _figure()
    for b in front.budgets:
        ax.plot([b["compute"]], [b["best_size"]], "o", mfc="none" if b["excluded"] else None, color="tab:blue")
    a, g = front.exponent.estimate, front.coefficient.estimate
    if math.isfinite(a):
        c = np.geomspace(min(b["compute"] for b in front.budgets), max(b["compute"] for b in front.budgets), 50)
        ax.plot(c, 10 ** (g + a * np.log10(c)), "--", color="tab:orange", label=f"N_opt = G C^a, a = {a:.3f}")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("N_opt (parameters)")
    ax.set_title(f"compute frontier: {front.status}")
    return fig


def section(iso: Isoflop, front: Frontier | None, frame: pd.DataFrame) -> str:
    """The "Compute" section of the report (markdown)."""
    lines = ["## Compute", ""]
    if front is not None and front.failed:
        lines += ["**The frontier's held-out check FAILED**: the largest included budget's N_opt lies outside "
                  "what the smaller budgets predict.", ""]
    lines.append(f"Iso-FLOP runs: {len(iso.results)} runs over {len(iso.folds)} folds x {len(iso.seeds)} seeds; "
                 "each run trains exactly C FLOPs (steps = floor(C / (FLOPs per sample x batch))), early "
                 "stopping off, the cosine schedule ending at the budget, tested with its final weights.")
    for c in iso.cells:
        if c.skipped:
            lines.append(f"- skipped C={c.compute:.3g} {c.size.budget}: {c.skipped}")
    lines += [f"- failed: {f}" for f in iso.failed]
    if not frame.empty:
        means = frame.groupby(["compute", "budget", "params"], as_index=False).agg(
            steps=("steps", "first"), epochs=("epochs", "mean"), loss=("loss", "mean"), auroc=("auroc", "mean"))
        lines += ["", "| C (FLOPs) | budget | params | steps | epochs | loss | AUROC |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.compute:.3g} | {r.budget} | {r.params:,} | {r.steps} | {r.epochs:.2f} | {r.loss:.4f} | "
                  f"{r.auroc:.3f} |" for r in means.sort_values(["compute", "params"]).itertuples()]
    if front is not None:
        lines += ["", f"Frontier N_opt(C) = G C^a: **{front.status}** ({front.why}); degenerate share "
                  f"{front.degenerate_share:.2f}."]
        lines += [f"- C={b['compute']:.3g} left out: {b['reason']}" for b in front.budgets if b["excluded"]]
        if front.check is not None:
            ch = front.check
            lines.append(f"- held-out check at C={ch.held_out:.3g}: log10 N_opt predicted {ch.predicted.text(3)}, "
                         f"observed {ch.observed.text(3)}: {'passed' if ch.passed else 'FAILED'}")
        else:
            lines.append(f"- held-out check: none{f' ({front.check_note})' if front.check_note else ''}")
    return "\n".join(lines) + "\n"


def write_outputs(iso: Isoflop, out: Path, draws: int) -> Frontier | None:
    """Write isoflop.csv, law.json, isoflop.png, frontier.png and isoflop.md into `out`; the frontier."""
    out.mkdir(parents=True, exist_ok=True)
    frame = table(iso)
    with atomic_path(out / "isoflop.csv") as tmp:
        frame.to_csv(tmp, index=False)
    front, models, compute, d = frontier(iso, draws)
    record = {"compute": None if front is None else front.record(),
              "skipped": [{"compute": c.compute, "budget": c.size.budget, "reason": c.skipped}
                          for c in iso.cells if c.skipped]}
    write_json_atomic(out / "law.json", {**read_law(out), **record})  # the report's "series" kept
    if front is not None:
        _save(isoflop_figure(front, models, compute, d.loss), out / "isoflop.png")
        _save(frontier_figure(front), out / "frontier.png")
    write_text_atomic(out / SECTION, section(iso, front, frame))
    return front
