"""report.md: the answer first, then per horizon the folds, the pooled claims and the evidence."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from datetime import datetime

from forecast.report.build import Report, SeriesResult
from forecast.report.stats import LEVEL, MIN_BUDGETS_FOR_FIT, MIN_SEEDS, Comparison
from forecast.report.tables import series_folds
from forecast.training.baselines import BASELINES

BASELINE_NAMES = {"prior": "class prior", "logistic": "logistic regression", "hist_gb": "HistGradientBoosting"}


def render(report: Report, files: Sequence[str]) -> str:
    """The whole report.md."""
    lines = _header(report) + _answer(report) + _how_to_read(report)
    for r in report.series:
        lines += _series(r)
    lines += _problems(report) + _files(files)
    return "\n".join(lines).rstrip() + "\n"


def _header(report: Report) -> list[str]:
    o = report.options
    flags = f" with `{shlex.join(o.overrides)}`" if o.overrides else ""
    runs = [run for r in report.series for s in r.studies for run in s.runs]
    reused = sum(run.cached for run in runs)
    n = sum(len(r.studies) for r in report.series)
    return [
        "# Does a bigger model forecast better? Scaling report", "",
        f"- storage `{report.storage}`: {n} studies in {len(report.series)} series",
        f"- each study's best trial retrained on {o.folds} walk-forward folds x seeds "
        f"{', '.join(map(str, report.seeds))}{flags}; each retrain tested once on its fold's test block, "
        "from its best-validation checkpoint",
        f"- {len(runs)} retrains took {sum(r.wall_s for r in runs):.0f} s of training and testing"
        + (f" ({reused} reused from an earlier report)" if reused else ""),
        f"- written {datetime.now().isoformat(timespec='seconds')} in {report.wall_s:.0f} s; "
        f"`tensorboard --logdir {o.out}` shows the retrains and these figures", "",
    ]


def _answer(report: Report) -> list[str]:
    head = ["series", "budgets", "verdict", "test-loss slope per 10x params [95% CI]",
            "largest - smallest, test loss", "largest - logistic, test loss", "largest - logistic, test AUROC"]
    rows = []
    for r in report.series:
        ok = r.reported
        big = ok[-1].entry.budget if ok else None
        small = ok[0].entry.budget if ok else None
        rows.append([r.series.label, ", ".join(s.entry.budget for s in ok) or "none", f"**{r.verdict}**",
                     _claim(r.claim("slope per 10x params", "loss")),
                     _claim(r.claim(f"{big} - {small}", "loss")) if len(ok) > 1 else "n/a",
                     _claim(r.claim(f"{big} - logistic", "loss")), _claim(r.claim(f"{big} - logistic", "auroc"))])
    return ["## Answer", "", *_table(head, rows), "",
            "Differences are pooled over every fold's test samples: negative loss (positive AUROC) differences "
            "favour the first-named model. A verdict is given only where its interval excludes 0.", ""]


def _how_to_read(report: Report) -> list[str]:
    o = report.options
    return [
        "## How to read this", "",
        "- A **series** is one symbol, feature tier, target and horizon; its **budgets** are separate "
        "searches, each over architectures of about that many parameters (`params` = the exact count).",
        f"- **Walk-forward folds**: the study's test period is cut into {o.folds} consecutive blocks. Fold k "
        "tests on block k, early-stops on the validation length right before it and trains on everything "
        "earlier (expanding window; training targets that reach into validation are purged). Configurations "
        "were chosen once, by the search on its own validation period, which precedes every fold: there is no "
        "search per fold.",
        f"- **Intervals** are {LEVEL:.0%} percentile intervals of a joint bootstrap: dates resampled in "
        "stationary blocks (length from the Politis-White rule, shown per series), because overlapping h-day "
        "targets and volatility make neighbouring days' errors alike, and each budget's seeds resampled with "
        "replacement. Every claim of a series uses the same draws, so they are paired by date.",
        f"- **Verdict**: \"larger helps\" / \"larger hurts\" only when the interval of the slope of pooled test "
        f"loss against log10(parameters) excludes 0 and every budget has at least {MIN_SEEDS} seeds; otherwise "
        "\"no evidence\". Point estimates never decide.",
        "- **Baselines** are fitted per fold on the same training split and scored on the same samples: the class "
        "prior; logistic regression and HistGradientBoosting on stationary inputs (returns, ranges, indicators "
        "relative to price, a few lagged returns), their regularisation chosen on the fold's validation period.",
        f"- **Power law** L(N) = L_inf + (N0/N)^alpha is fitted only with at least {MIN_BUDGETS_FOR_FIT} budgets, "
        "and is descriptive: no interval, no verdict.", "",
    ]


def _series(r: SeriesResult) -> list[str]:
    lines = [f"## {r.series.label}", "", f"Verdict: **{r.verdict}** ({r.method})."]
    if r.draws is not None:
        lines.append(f"Block length {r.draws.block} days over {r.draws.dates} test dates; "
                     f"{len(r.draws.loss_draws)} joint draws.")
    if r.fit is not None:
        shape = "no falling power law" if r.fit.degenerate else f"alpha {r.fit.alpha:.3f}, L_inf {r.fit.l_inf:.4f}"
        lines.append(f"Power law (descriptive): {shape}.")
    lines.append("")
    return lines + _fold_table(r) + _claims_table(r) + _best_table(r) + _regime_table(r) + _notes(r)


def _fold_table(r: SeriesResult) -> list[str]:
    frame = series_folds(r)
    if frame.empty:
        return []
    names = [s.entry.budget for s in r.reported] + list(BASELINES)
    head = ["fold", "test period", "samples", "positive", *(f"{n} AUROC / loss" for n in names)]
    rows = []
    for f in r.folds:
        own = frame[frame["fold"] == f.index]
        cells = []
        for n in names:
            m = own[own["budget"] == n]
            cells.append(f"{m['auroc'].mean():.3f} / {m['loss'].mean():.4f}" if len(m) else "n/a")
        rows.append([str(f.index), f"{f.test[0]}..{f.test[1]}", str(len(f.dates)), f"{f.labels.mean():.1%}", *cells])
    return ["### Per fold (models: mean over seeds)", "", *_table(head, rows), ""]


def _claims_table(r: SeriesResult) -> list[str]:
    if not r.comparisons:
        return []
    head = ["claim", "metric", "estimate [95% CI]", "verdict"]
    rows = [[c.comparison, c.metric, _claim(c), c.verdict] for c in r.comparisons]
    return ["### Pooled paired differences", "", *_table(head, rows), "",
            f"Method: {r.comparisons[0].method}.", ""]


def _best_table(r: SeriesResult) -> list[str]:
    head = ["budget", "params", "architecture", "study", "trial", "val/loss in search", "best epoch"]
    rows = [[s.entry.budget, f"{s.entry.best.params:,}", s.entry.best.arch, f"`{s.entry.name}`",
             str(s.entry.best.number), f"{s.entry.best.value:.4f}", str(s.entry.best.best_epoch)] for s in r.studies]
    return ["### Best trial of each budget (chosen on the search's validation period)", "", *_table(head, rows), ""]


def _regime_table(r: SeriesResult) -> list[str]:
    shown = [s for s in r.studies if s.regimes]
    if not shown:
        return []
    head = ["budget", *(g.name for g in shown[0].regimes)]
    rows = [["test samples (positive rate)",
             *(f"{g.windows} ({g.positive_rate:.1%})" if g.windows else "0" for g in shown[0].regimes)]]
    rows += [[s.entry.budget, *(g.auroc.text(3) for g in s.regimes)] for s in shown]
    return ["### Test AUROC by VIX level, all folds (mean and t-interval over seeds; descriptive)", "",
            *_table(head, rows), ""]


def _notes(r: SeriesResult) -> list[str]:
    notes = [f"- {s.entry.budget}: {n}" for s in r.studies for n in s.notes]
    notes += [f"- {s.entry.budget}: {s.entry.config_note}" for s in r.studies if s.entry.config_note]
    chosen = {b: sorted({f.chosen.get(b, "") for f in r.folds}) for b in ("logistic", "hist_gb")}
    notes += [f"- {BASELINE_NAMES[b]} chose per fold: {'; '.join(v)}" for b, v in chosen.items() if any(v)]
    return (["Notes:", "", *notes, ""]) if notes else []


def _problems(report: Report) -> list[str]:
    if not report.problems:
        return []
    lines = ["## Could not be reported", ""]
    lines += [f"- `{name}`: {problem}" for name, problem in report.problems]
    return lines + ["", "Their rows in scaling.csv carry the same reason in `status`.", ""]


def _files(files: Sequence[str]) -> list[str]:
    return ["## Files", "", *(f"- `{f}`" for f in files), ""]


# ---------------------------------------------------------------------------- formatting


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"

    return [row(head), row(["---"] * len(head)), *map(row, rows)]


def _claim(c: Comparison | None) -> str:
    if c is None or not math.isfinite(c.estimate):
        return "n/a"
    if not (math.isfinite(c.lo) and math.isfinite(c.hi)):
        return f"{c.estimate:+.4f} (no interval)"
    return f"{c.estimate:+.4f} [{c.lo:+.4f}, {c.hi:+.4f}]"
