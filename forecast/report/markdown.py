"""report.md: the answer first, then per series the evidence, written for a newcomer."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from datetime import datetime

from forecast.metrics import MONITOR
from forecast.report.build import (
    BASELINES,
    METRICS,
    Report,
    SeriesResult,
    StudyResult,
    baseline_metric,
)
from forecast.report.stats import LEVEL, MIN_BUDGETS_FOR_FIT, Interval

BASELINE_NAMES = {"prior": "class prior (train positive rate)", "logistic": "logistic regression",
                  "hist_gb": "HistGradientBoosting"}
SHOWN_VALUES = 6  # sampled settings shown per best trial


def render(report: Report, files: Sequence[str]) -> str:
    """The whole report.md."""
    lines = _header(report) + _answer(report) + _how_to_read(report)
    for r in report.series:
        lines += _series(r, len(report.seeds))
    lines += _problems(report) + _files(files)
    return "\n".join(lines).rstrip() + "\n"


def _header(report: Report) -> list[str]:
    o = report.options
    flags = f" with `{shlex.join(o.overrides)}`" if o.overrides else ""
    n = sum(len(r.studies) for r in report.series)
    runs = [run for r in report.series for s in r.studies for run in s.runs]
    reused = sum(run.cached for run in runs)
    return [
        "# Does a bigger model forecast better? Scaling report", "",
        f"- storage `{report.storage}`: {n} studies in {len(report.series)} series",
        f"- each study's best trial retrained with seeds {', '.join(map(str, report.seeds))}{flags}; "
        "each retrain tested once on the test split, from its best-validation checkpoint",
        f"- {len(runs)} retrains took {sum(r.wall_s for r in runs):.0f} s of training and testing"
        + (f" ({reused} reused from an earlier report)" if reused else ""),
        f"- written {datetime.now().isoformat(timespec='seconds')} in {report.wall_s:.0f} s; "
        f"`tensorboard --logdir {o.out}` shows the retrains and these figures", "",
    ]


def _answer(report: Report) -> list[str]:
    head = ["series", "budgets", "verdict", "test-loss change per 10x parameters [95% CI]",
            "largest minus smallest budget [95% CI]", "power law alpha [95% bootstrap]",
            "largest model minus best baseline [95% CI]"]
    rows = []
    for r in report.series:
        sc, ok = r.scaling, r.reported
        rows.append([r.series.label, ", ".join(s.entry.budget for s in ok) or "none",
                     f"**{sc.verdict}**", _signed(sc.slope), _signed(sc.difference), _alpha(r),
                     _signed(r.versus_baseline(ok[-1])) if ok else "n/a"])
    return ["## Answer", "", *_table(head, rows), "",
            "All columns are differences in test loss (binary cross-entropy): negative means the larger "
            "model, or the model against the baseline, has the lower loss.", ""]


def _how_to_read(report: Report) -> list[str]:
    k = len(report.seeds)
    pct = f"{LEVEL:.0%}"
    return [
        "## How to read this", "",
        "- A **series** is one symbol, feature tier, target and horizon; its **budgets** are "
        "separate searches, each over architectures of about that many parameters. `params` is "
        "the exact count of the budget's best model.",
        f"- Every number `m [lo, hi]` is the mean over the {k} retrained seeds and its {pct} "
        f"**Student-t interval** (mean +- t(0.975, {k - 1}) x sd / sqrt({k}), kept inside the metric's range). With few seeds these "
        "intervals are wide on purpose: seed-to-seed spread is real and often as large as the effects."
        + (" With one seed there is no interval." if k < 2 else ""),
        "- **Verdict** rests on two intervals: the slope of test loss against log10(parameters), fitted "
        "by least squares to every seed's run (t-interval), and the largest minus the smallest budget's "
        "mean test loss (Welch t-interval, no equal-spread assumption). \"larger helps\" only if both lie "
        "entirely below 0, \"larger hurts\" only if both lie above 0, otherwise \"no evidence\" -- point "
        "estimates never decide.",
        f"- **Power law** L(N) = L_inf + (N0/N)^alpha (scipy curve_fit on the per-budget means) needs "
        f"at least {MIN_BUDGETS_FOR_FIT} budgets; alpha's interval comes from resampling each budget's "
        "seeds with replacement and refitting. With fewer budgets only the slope test is done.",
        "- **Baselines** are fitted by the report on the same train split and scored on the same "
        "val/test windows and labels: the class prior, logistic regression and HistGradientBoosting "
        "on the last day's features. A model that does not beat them has learned nothing they could not.",
        "- AUROC 0.5 is chance; average precision (AP) of chance equals the positive rate; Brier and "
        "loss are lower-is-better.", "",
    ]


def _series(r: SeriesResult, k: int) -> list[str]:
    lines = [f"## {r.series.label}", "", f"Verdict: **{r.scaling.verdict}** ({r.scaling.method}).",
             f"Test AUROC change per 10x parameters: {_signed(r.auroc_slope)}.", ""]
    lines += _best_table(r.studies) + _test_table(r, k) + _baseline_table(r) + _regime_table(r.studies)
    lines += _trial_settings(r.studies) + _notes(r.studies)
    return lines


def _best_table(studies: Sequence[StudyResult]) -> list[str]:
    key = MONITOR
    head = ["budget", "params", "architecture", "study", "trial", f"{key} in search",
            f"{key} retrained (mean [CI])", "best epoch"]
    rows = []
    for s in studies:
        b = s.entry.best
        rows.append([s.entry.budget, f"{b.params:,}", b.arch, f"`{s.entry.name}`", str(b.number),
                     f"{b.value:.4f}", s.val_retrained().text(), str(b.best_epoch)])
    return ["### Best trial of each budget (chosen on validation)", "", *_table(head, rows), "",
            f"The search's {key} is the best of many trials and so optimistic; the retrained value "
            "shows what the same configuration gives with fresh seeds.", ""]


def _test_table(r: SeriesResult, k: int) -> list[str]:
    best = r.best_baseline
    head = ["model", "params", "seeds", "test loss", "test AUROC", "test AP", "test Brier",
            "test loss minus best baseline"]
    rows = []
    for s in r.studies:
        if not s.ok:
            rows.append([f"PatchTST {s.entry.budget}", f"{s.entry.best.params:,}", str(len(s.runs)),
                         "not reported (see below)", "", "", "", ""])
            continue
        rows.append([f"PatchTST {s.entry.budget}", f"{s.entry.best.params:,}", f"{len(s.runs)}/{k}",
                     *(s.metric(m).text() for m in METRICS), _signed(r.versus_baseline(s))])
    for b in BASELINES:
        mark = " (strongest)" if b == best else ""
        rows.append([BASELINE_NAMES[b] + mark, "", "", *(_num(baseline_metric(r.baselines, b, m)) for m in METRICS), ""])
    return ["### Test scores: models and baselines on identical windows and labels", "", *_table(head, rows), "",
            "The last column is negative where the model's test loss is below the strongest baseline's "
            "(lowest test loss: the conservative yardstick); its interval says whether the seeds agree.", ""]


def _baseline_table(r: SeriesResult) -> list[str]:
    head = ["baseline", "val loss", "val AUROC", "val AP", "val Brier"]
    rows = [[BASELINE_NAMES[b], *(_num(baseline_metric(r.baselines, b, m, "val")) for m in METRICS)]
            for b in BASELINES]
    if r.baselines is None:
        return []
    return ["Baselines on the validation split (the split the search chose by):", "", *_table(head, rows), ""]


def _regime_table(studies: Sequence[StudyResult]) -> list[str]:
    shown = [s for s in studies if s.regimes]
    if not shown:
        return []
    names = [g.name for g in shown[0].regimes]
    head = ["budget", *names]
    rows = [["test windows (positive rate)",
             *(f"{g.windows} ({g.positive_rate:.1%})" if g.windows else "0" for g in shown[0].regimes)]]
    rows += [[s.entry.budget, *(g.auroc.text(3) for g in s.regimes)] for s in shown]
    return ["### Test AUROC by VIX level (VIX close on the window's last day)", "", *_table(head, rows), "",
            "n/a: the level holds no window or only one class.", ""]


def _trial_settings(studies: Sequence[StudyResult]) -> list[str]:
    lines = []
    for s in studies:
        values = s.entry.best.values
        if not values:
            continue
        # d_model is the architecture's, shown with it; the rest are the trial's draws
        items = [(k, v) for k, v in values.items() if k != "d_model"][:SHOWN_VALUES]
        shown = ", ".join(f"{k}={_short(v)}" for k, v in items)
        lines.append(f"- {s.entry.budget} (trial {s.entry.best.number}): {shown}")
    return (["Settings of the best trials:", "", *lines, ""]) if lines else []


def _notes(studies: Sequence[StudyResult]) -> list[str]:
    notes = [f"- {s.entry.budget}: {n}" for s in studies for n in s.notes]
    notes += [f"- {s.entry.budget}: {s.entry.config_note}" for s in studies if s.entry.config_note]
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


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _signed(iv: Interval) -> str:
    if not math.isfinite(iv.estimate):
        return "n/a"
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{iv.estimate:+.4f} (no interval)"
    return f"{iv.estimate:+.4f} [{iv.lo:+.4f}, {iv.hi:+.4f}]"


def _alpha(r: SeriesResult) -> str:
    fit = r.scaling.fit
    if fit is None or fit.degenerate:
        return "not fitted" if len(r.reported) < MIN_BUDGETS_FOR_FIT else "no falling power law"
    return f"{r.scaling.alpha.text(3)} (L_inf {fit.l_inf:.4f})"


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

