"""report.md: the answer first, then per horizon the folds, the pooled claims and the evidence."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from datetime import datetime

from forecast.report.build import Report, SeriesResult
from forecast.report.data_scaling import DataResult
from forecast.report.equivalence import verdict_text
from forecast.report.law import EXPONENTS, HUBER_DELTA, MIN_POINTS, AxisLaw, HeldOut
from forecast.report.limits import MIN_PER_CLASS, TOO_FEW, enough, too_few_text
from forecast.report.stats import LEVEL, MIN_SEEDS, Comparison, Interval
from forecast.report.sufficiency import MIN_TRIALS
from forecast.report.tables import series_folds
from forecast.training.baselines import BASELINES
from forecast.training.runs import epoch_number

BASELINE_NAMES = {"prior": "class prior", "logistic": "logistic regression", "hist_gb": "HistGradientBoosting"}


def render(report: Report, files: Sequence[str]) -> str:
    """The whole report.md."""
    lines = _header(report) + _answer(report) + _how_to_read(report)
    for r in report.series:
        lines += _series(r)
    for res in report.data:
        lines += _data_section(res)
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
    head = ["series", "budgets", "verdict", "test-loss slope per 10x params [95% CI] (MDE)",
            "largest - smallest, test loss", "largest - logistic, test loss", "largest - logistic, test AUROC",
            "search"]
    rows = []
    for r in report.series:
        ok = r.reported
        big = ok[-1].entry.budget if ok else None
        small = ok[0].entry.budget if ok else None
        slope = r.claim("slope per 10x params", "loss")
        shown = _verdict(slope) if slope is not None else r.verdict
        rows.append([r.series.label, ", ".join(s.entry.budget for s in ok) or "none", f"**{shown}**",
                     _claim(slope, mde=True),
                     _claim(r.claim(f"{big} - {small}", "loss")) if len(ok) > 1 else "n/a",
                     _claim(r.claim(f"{big} - logistic", "loss")), _claim(r.claim(f"{big} - logistic", "auroc")),
                     _search_word(r)])
    o = report.options
    return ["## Answer", "", *_table(head, rows), "",
            "Differences are pooled over every fold's test samples: negative loss (positive AUROC) differences "
            "favour the first-named model. A verdict is \"better\"/\"worse\" only where its interval excludes 0, "
            f"\"equivalent\" only where it lies inside the margin (±{o.equivalence_loss:g} nats, "
            f"±{o.equivalence_auroc:g} AUROC); MDE = the smallest effect this design finds 80% of the time.", ""]


def _search_word(r: SeriesResult) -> str:
    weak = [s.entry.budget for s in r.studies if s.search is not None and s.search.unconverged]
    return f"unconverged: {', '.join(weak)}" if weak else "converged"


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
        f"- **Verdict**: \"larger helps\" / \"larger hurts\" (\"model better\" / \"model worse\" against a "
        "baseline) only when the claim's interval excludes 0 and every model in it has at least "
        f"{MIN_SEEDS} seeds; \"equivalent within ±δ\" when the whole interval lies inside ±δ "
        f"(δ = {o.equivalence_loss:g} nats of log loss, per 10x parameters for the slope, and "
        f"{o.equivalence_auroc:g} AUROC: `--equivalence-loss`, `--equivalence-auroc`); otherwise \"no evidence\", "
        "with the largest effect the interval still allows. Point estimates never decide.",
        "- **MDE** (minimum detectable effect): the smallest true effect this design (these dates, block "
        "length and seeds) would call at 5% with 80% power, from the claim's own interval: "
        "MDE = (1.96 + 0.84) x se, se = the interval's width / 3.92. An effect below it can hide in "
        "\"no evidence\".",
        f"- **Search sufficiency**: a study is *unconverged* when fewer than {MIN_TRIALS} trials finished, when "
        "its best value last improved (by more than 0.001) within the last quarter of its trials, or when its "
        "best trial's best epoch was the last one allowed. A claim resting on such a study says so.",
        f"- **Descriptive cells** (folds, VIX levels) with fewer than {MIN_PER_CLASS} positive or negative "
        "samples show \"too few\"; an interval over fewer than 2 distinct values is not printed.",
        "- **Baselines** are fitted per fold on the same training split and scored on the same samples: the class "
        "prior; logistic regression and HistGradientBoosting on stationary inputs (returns, ranges, indicators "
        "relative to price, a few lagged returns), their regularisation chosen on the fold's validation period.",
        f"- **Scaling law** L(N) = E + A/N^alpha: fitted with at least {MIN_POINTS} budgets (else descriptive), "
        f"by the summed Huber loss (delta = {HUBER_DELTA:g}) of log loss, minimised by variable projection (a grid "
        "over alpha, non-negative least squares for E and A) and L-BFGS-B; refitted on every joint draw above for "
        f"its intervals. alpha is claimed only when its interval lies above 0, the loss's slope per decade has an "
        f"interval below 0, and the fit hits no bound (E = 0, A = 0, alpha at {EXPONENTS[0]:g} or "
        f"{EXPONENTS[1]:g}); the *degenerate share* is the share of draws whose "
        "fit hits one. The **held-out check** fits the law without the largest budget and predicts it: it passes "
        "when the interval of observed - predicted (paired by draw) covers 0. Details: `law.json`.", "",
    ]


def _series(r: SeriesResult) -> list[str]:
    slope = r.claim("slope per 10x params", "loss")
    said = _verdict(slope) if slope is not None else r.verdict
    weak = r.search_note(slope) if slope is not None else ""
    lines = [f"## {r.series.label}", "", f"Verdict: **{said}** ({r.method})." + (f" This verdict {weak}." if weak else "")]
    if r.draws is not None:
        lines.append(f"Block length {r.draws.block} days over {r.draws.dates} test dates; "
                     f"{len(r.draws.loss_draws)} joint draws.")
    lines += _inputs(r)
    lines.append("")
    law = law_lines(r.law, "parameters", "budget") if r.law is not None else []
    return (lines + _fold_table(r) + _claims_table(r) + law + _best_table(r) + _search_table(r) + _regime_table(r)
            + _notes(r))


def law_lines(law: AxisLaw, what: str, unit: str) -> list[str]:
    """The law section of one axis: its first line says a failed held-out check, else the law's status.

    Args:
        law: the axis' law.
        what: the axis in words ("parameters").
        unit: one point in words ("budget").
    """
    head = [f"### Scaling law in {what}: L({law.axis}) = E + A/{law.axis}^alpha", ""]
    lines = [*head, f"**{law.status}**: {law.why}.", ""]
    if law.failed and law.check is not None:  # a failed check is said first
        lines.insert(len(head), f"**The law's held-out check fails**: {_held_out(law.check, law.axis, unit)}.")
        lines.insert(len(head) + 1, "")
    if law.fit is not None:
        f = law.fit
        share = f"{f.degenerate_share:.1%}" if len(f.draws) else "n/a"
        rows = [["E", f.irreducible.text(4)], ["A", _sci(f.coefficient(0))], ["alpha", f.exponent(0).text(3)],
                ["draws whose fit hits a bound", f"{share} of {len(f.draws)}"]]
        lines += [*_table(["parameter", f"estimate [{LEVEL:.0%} CI]"], rows), ""]
    if law.check is not None and not law.failed:
        lines.append(f"Held-out check {'passes' if law.check.passed else 'has no interval'}: "
                     f"{_held_out(law.check, law.axis, unit)}.")
    elif law.check is None and law.fit is not None:
        lines.append(f"No held-out check: it {law.check_note}.")
    lines += [f"Left out: {p['name']} ({p['reason']})." for p in law.excluded]
    return [*lines, ""] if lines[-1] else lines  # one blank line closes the section


def _held_out(check: HeldOut, axis: str, unit: str) -> str:
    return (f"fitted without the largest {unit} ({axis} = {check.at:.3g}), the law predicts "
            f"{check.predicted.text(4)}, observed {check.observed.text(4)}; observed - predicted "
            f"{check.difference.text(4)}")


def _sci(iv: Interval) -> str:
    """A coefficient that may span decades: `3.1e+00 [1.2e+00, 6.0e+00]`."""
    if not math.isfinite(iv.estimate):
        return "n/a"
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{iv.estimate:.2e}"
    return f"{iv.estimate:.2e} [{iv.lo:.2e}, {iv.hi:.2e}]"


def _inputs(r: SeriesResult) -> list[str]:
    """Which inputs each model had (the transformer's depend on the studies' `data.inputs`)."""
    from forecast.data.stationary import stationary_names
    from forecast.data.tiers import TIERS

    if r.series.tier not in TIERS:
        return []
    columns = TIERS[r.series.tier].columns
    stationary = f"the {len(stationary_names(columns))} stationary inputs (returns, ranges, indicators relative to price)"
    model = stationary if r.series.inputs == "stationary" else f"the tier's {len(columns)} columns"
    return [f"Inputs: PatchTST saw {model}, scaled on training rows and normalised per window (RevIN); "
            f"logistic regression and HistGradientBoosting saw {stationary}."]


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
            if not enough(f.labels):
                cells.append(too_few_text(f.labels))
                continue
            cells.append(f"{m['auroc'].mean():.3f} / {m['loss'].mean():.4f}" if len(m) else "n/a")
        rows.append([str(f.index), f"{f.test[0]}..{f.test[1]}", str(len(f.dates)), f"{f.labels.mean():.1%}", *cells])
    return ["### Per fold (models: mean over seeds)", "", *_table(head, rows), ""]


def _claims_table(r: SeriesResult) -> list[str]:
    if not r.comparisons:
        return []
    head = ["claim", "metric", "estimate [95% CI]", "MDE", "verdict", "search"]
    rows = [[c.comparison, c.metric, _claim(c), _number(c.mde), _verdict(c), r.search_note(c) or "converged"]
            for c in r.comparisons]
    return ["### Pooled paired differences", "", *_table(head, rows), "",
            f"Method: {r.comparisons[0].method}.", ""]


def _best_table(r: SeriesResult) -> list[str]:
    head = ["budget", "params", "architecture", "study", "trial", "val/loss in search", "best epoch"]
    rows = [[s.entry.budget, f"{s.entry.best.params:,}", s.entry.best.arch, f"`{s.entry.name}`",
             str(s.entry.best.number), f"{s.entry.best.value:.4f}", epoch_number(s.entry.best.best_epoch)] for s in r.studies]
    return ["### Best trial of each budget (chosen on the search's validation period)", "", *_table(head, rows), ""]


def _search_table(r: SeriesResult) -> list[str]:
    shown = [s for s in r.studies if s.search is not None]
    if not shown:
        return []
    head = ["budget", "trials complete / pruned / failed", "best trial", "best epoch", "unconverged because",
            "warnings"]
    rows = [[s.entry.budget, f"{q.complete} / {q.pruned} / {q.failed}",
             f"{q.best_trial} (#{q.best_at} of {q.finished} finished)", q.epoch_text,
             "; ".join(q.reasons) or "converged", "; ".join(q.warnings) or "-"]
            for s in shown if (q := s.search) is not None]
    return ["### Search sufficiency (was each budget searched and trained enough?)", "", *_table(head, rows), "",
            "Best-so-far validation loss per trial: `search.png`.", ""]


def _regime_table(r: SeriesResult) -> list[str]:
    shown = [s for s in r.studies if s.regimes]
    if not shown:
        return []
    head = ["budget", *(g.name for g in shown[0].regimes)]
    rows = [["test samples (positive rate)",
             *(f"{g.windows} ({g.positive_rate:.1%})" if g.windows else "0" for g in shown[0].regimes)]]
    rows += [[s.entry.budget, *(f"{TOO_FEW} ({g.positives} positive)" if g.too_few else g.auroc.text(3)
                                for g in s.regimes)] for s in shown]
    return ["### Test AUROC by VIX level, all folds (mean and t-interval over seeds; descriptive)", "",
            *_table(head, rows), ""]


def _notes(r: SeriesResult) -> list[str]:
    notes = [f"- {s.entry.budget}: {n}" for s in r.studies for n in s.notes]
    notes += [f"- {s.entry.budget}: {s.entry.config_note}" for s in r.studies if s.entry.config_note]
    chosen = {b: sorted({f.chosen.get(b, "") for f in r.folds}) for b in ("logistic", "hist_gb")}
    notes += [f"- {BASELINE_NAMES[b]} chose per fold: {'; '.join(v)}" for b, v in chosen.items() if any(v)]
    return (["Notes:", "", *notes, ""]) if notes else []


def _data_section(res: DataResult) -> list[str]:
    """Scaling in data: each cell's pooled test loss and AUROC, then the doubling and recency claims."""
    lines = [f"## {res.family.family_label}: scaling in training years", ""]
    if res.problem is not None:
        return [*lines, f"Not compared: {res.problem}.", ""]
    head = ["model", "design", "years", "draws", "train samples", "test loss [95% CI]", "test AUROC [95% CI]"]
    rows = []
    for c in res.cells:
        loss, auroc = res.interval(c, "loss"), res.interval(c, "auroc")
        rows.append([c.model, c.design if c.years is not None else "all", c.years_text, str(c.draws),
                     f"{c.samples:.0f}", _interval(loss), _interval(auroc, 3)])
    claims = [[c.comparison, c.metric, _claim(c), _number(c.mde), _verdict(c), res.search_note(c) or "converged"]
              for c in res.comparisons]
    return [*lines, "Every training selection is tested on the same dates; the baselines are fitted on the same "
            "kept years. Blocks draws are pooled as seeds.", "", *_table(head, rows), "",
            "Claims: per doubling of training years (OLS slope of the metric on log2 of the kept training samples), "
            "and trailing minus blocks at equal years (negative loss = the recent years train better).", "",
            *_table(["claim", "metric", "estimate [95% CI]", "MDE", "verdict", "search"], claims), "",
            f"Method: {res.comparisons[0].method}." if res.comparisons else "", "`data_scaling.png`, `data_scaling.csv`.",
            ""]


def _interval(found: tuple[float, float, float], digits: int = 4) -> str:
    est, lo, hi = found
    if not math.isfinite(est):
        return "n/a"
    return f"{est:.{digits}f}" + (f" [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else "")


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


def _claim(c: Comparison | None, mde: bool = False) -> str:
    if c is None or not math.isfinite(c.estimate):
        return "n/a"
    if not (math.isfinite(c.lo) and math.isfinite(c.hi)) or c.lo == c.hi:  # zero width: nothing measured
        return f"{c.estimate:+.4f} (no interval)"
    return f"{c.estimate:+.4f} [{c.lo:+.4f}, {c.hi:+.4f}]" + (f" (MDE {c.mde:.4f})" if mde else "")


def _number(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "n/a"


def _verdict(c: Comparison) -> str:
    return verdict_text(c.verdict, c.lo, c.hi, c.delta)
