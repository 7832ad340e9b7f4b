"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- `scaling_figure`: test loss and test AUROC against exact parameter count (log axis), one line
  per series (horizon), error bars = 95% t-interval over seeds; each series' baselines as a band
  in its colour, from the class prior (dotted) to the best of prior, logistic and HistGB.
- `learning_figure`: val/loss per epoch of every retrain of one budget, one colour per series;
  the search's own trial (its pruner curve) dashed; dots mark the best (tested) epochs.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from forecast.io import atomic_path
from forecast.metrics import MONITOR
from forecast.report.build import BASELINES, METRICS, Report, SeriesResult, baseline_metric

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
          "tab:olive", "tab:cyan", "tab:gray")
PANELS = (("loss", "test loss (BCE, lower is better)"), ("auroc", "test AUROC (higher is better)"))


def _figure(width: float, height: float, cols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: savefig and TensorBoard's add_figure render through it
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, list(axes)


def scaling_figure(report: Report) -> Figure:
    """Test loss and AUROC vs parameters, every series with its baselines."""
    fig, axes = _figure(12, 4.8, cols=len(PANELS))
    for i, r in enumerate(report.series):
        color = COLORS[i % len(COLORS)]
        for ax, (metric, _) in zip(axes, PANELS, strict=True):
            _series_line(ax, r, metric, color)
            _baselines(ax, r, metric, color)
    for ax, (_, title) in zip(axes, PANELS, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (exact count of each budget's best model)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=COLORS[i % len(COLORS)], marker="o", label=r.series.label)
               for i, r in enumerate(report.series)]
    handles += [Patch(color="gray", alpha=0.2, label="baselines: prior .. best of prior/logistic/HistGB"),
                Line2D([], [], color="gray", ls=":", label="class prior")]
    axes[0].legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(f"Scaling: mean and 95% t-interval over {len(report.seeds)} seeds per budget")
    return fig


def _series_line(ax, r: SeriesResult, metric: str, color: str) -> None:
    ok = r.reported
    if not ok:
        return
    x = [s.entry.best.params for s in ok]
    iv = [s.metric(metric) for s in ok]
    y = [v.estimate for v in iv]
    # a missing interval (one seed) draws no bar rather than a made-up one
    low = [v.estimate - v.lo if math.isfinite(v.lo) else 0.0 for v in iv]
    high = [v.hi - v.estimate if math.isfinite(v.hi) else 0.0 for v in iv]
    ax.errorbar(x, y, yerr=[low, high], color=color, marker="o", capsize=4)
    for s, xi, yi in zip(ok, x, y, strict=True):
        ax.annotate(s.entry.budget, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)


def _baselines(ax, r: SeriesResult, metric: str, color: str) -> None:
    """The class prior as a dotted line, and a band from it to the best of the three baselines:
    the range that simple models already reach on these windows."""
    lower_is_better = METRICS[metric][1]
    scores = [baseline_metric(r.baselines, b, metric) for b in BASELINES]
    scores = [v for v in scores if math.isfinite(v)]
    prior = baseline_metric(r.baselines, "prior", metric)
    if not scores or not math.isfinite(prior):
        return
    best = min(scores) if lower_is_better else max(scores)
    pad = 0.002 * max(abs(prior), 1.0)  # keep the band visible when the prior is the best
    ax.axhspan(min(prior, best) - pad, max(prior, best) + pad, color=color, alpha=0.15, lw=0)
    ax.axhline(prior, color=color, ls=":", lw=1)


def learning_figure(report: Report, budget: str) -> Figure:
    """val/loss per epoch of each retrain of `budget` (and the search's trial), all series."""
    fig, (ax,) = _figure(7, 4.5)
    for i, r in enumerate(report.series):
        color = COLORS[i % len(COLORS)]
        for s in r.studies:
            if s.entry.budget != budget:
                continue
            curve = s.entry.best.curve
            if curve:
                epochs = sorted(curve)
                ax.plot(epochs, [curve[e] for e in epochs], color=color, ls="--", marker="x", lw=1, alpha=0.8)
            for run in s.runs:
                points = [(h["epoch"], h[MONITOR]) for h in run.history if MONITOR in h]
                if points:
                    ax.plot(*zip(*points, strict=True), color=color, lw=1.2, alpha=0.7)
                if MONITOR in run.val_best:
                    ax.plot(run.val_best["epoch"], run.val_best[MONITOR], "o", color=color, ms=4)
    handles = [Line2D([], [], color=COLORS[i % len(COLORS)], label=r.series.label) for i, r in enumerate(report.series)]
    handles += [Line2D([], [], color="gray", ls="--", marker="x", label="search trial"),
                Line2D([], [], color="gray", marker="o", ls="", label="best epoch (tested)")]
    ax.legend(handles=handles, fontsize=8)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(MONITOR)
    ax.set_title(f"Learning curves, budget {budget}: one line per seed")
    ax.grid(True, alpha=0.3)
    return fig


def budgets(report: Report) -> list[str]:
    """Budget labels that have a learning curve, smallest first."""
    seen: dict[str, int] = {}
    for r in report.series:
        for s in r.studies:
            if s.runs:
                seen.setdefault(s.entry.budget, s.entry.budget_size)
    return sorted(seen, key=seen.get)


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure as PNG atomically (the temporary name has no .png: say the format)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
