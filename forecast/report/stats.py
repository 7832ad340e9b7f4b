"""The report's statistics, as pure functions of numbers (no files, no models).

Claims are PAIRED BY DATE: every model (budget) and baseline is scored on the same test samples,
pooled over the walk-forward folds, so a comparison is a difference per date and its noise is the
test set's own sampling noise plus the seeds' spread.

- `paired_bootstrap`: B joint resamples. Dates come from a stationary block bootstrap
  (`arch.bootstrap.StationaryBootstrap`, block length from `arch.bootstrap.optimal_block_length`
  of the per-date loss differences: overlapping h > 1 targets and volatility clusters make
  neighbouring days' errors alike); within each draw every model's seeds are resampled with
  replacement as well, so an interval holds both sources of noise. The same draw serves every
  comparison and the slope, so they are joint.
- `compare`: model vs model, model vs baseline and the slope of loss (or AUROC) against
  log10(parameters), each with its percentile interval, its minimum detectable effect and a
  three-way verdict (`forecast.report.equivalence`): better / worse where that interval excludes 0,
  equivalent where it lies inside the metric's margin, else no evidence; a verdict needs every
  model in it to have at least two seeds (`MIN_SEEDS`): never from a zero-width or one-seed interval.
- `t_interval`: mean and t-interval over seeds, for descriptive per-fold tables only.
- The scaling law L(N) and its intervals, refitted on these draws: `forecast.report.law`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from arch.bootstrap import StationaryBootstrap, optimal_block_length
from scipy import stats as sps

from forecast.report.equivalence import EQUIVALENT, NO_EVIDENCE, Margins, mde, verdict

LEVEL = 0.95
MIN_SEEDS = 2  # a verdict needs seed spread in every model it compares
EPS = 1e-7
HELPS, HURTS = "larger helps", "larger hurts"
BETTER, WORSE = "model better", "model worse"
LOWER_IS_BETTER = {"loss": True, "auroc": False}


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (lo/hi are NaN when it cannot be formed)."""

    estimate: float
    lo: float
    hi: float
    n: int = 0

    def excludes_zero(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi) and (self.lo > 0 or self.hi < 0)

    def text(self, digits: int = 4) -> str:
        """`0.6931 [0.6900, 0.6962]`, or just the estimate when there is no interval."""
        if not math.isfinite(self.estimate):
            return "n/a"
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{self.estimate:.{digits}f}"
        return f"{self.estimate:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and the Student-t interval over independent replicates (seeds).

    Args:
        values: one number per seed; NaNs are dropped.
        level: coverage of the interval.

    Returns:
        mean +- t_{(1+level)/2, n-1} * s / sqrt(n); lo/hi are NaN for fewer than 2 DISTINCT values
        (a zero-width interval would claim a certainty nothing measured).
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(np.unique(x)) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    half = float(sps.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


def clipped(iv: Interval, low: float = -math.inf, high: float = math.inf) -> Interval:
    """`iv` with its bounds kept inside a metric's range (an AUROC interval never passes 1)."""
    return Interval(iv.estimate, max(iv.lo, low), min(iv.hi, high), iv.n) if math.isfinite(iv.lo) else iv


# ------------------------------------------------------------------------- paired by date


@dataclass(frozen=True)
class Arm:
    """One model (a budget, several seeds) or baseline (one row) on the common test dates.

    Attributes:
        name: "2M", "logistic", ...
        probs: [seeds, dates] predicted probabilities.
        params: exact parameter count (models); None for a baseline.
    """

    name: str
    probs: np.ndarray
    params: float | None = None

    @property
    def seeds(self) -> int:
        return int(self.probs.shape[0])


def log_loss_per_date(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of every row of `probs` [S, D] at every date: [S, D]."""
    p = np.clip(probs, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def auroc_rows(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """AUROC of every row of `probs` [S, D] against labels y [D] (Mann-Whitney, ties halved): [S]."""
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return np.full(probs.shape[0], np.nan)
    ranks = sps.rankdata(probs, axis=1)
    return (ranks[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def block_length(differences: Sequence[np.ndarray]) -> int:
    """Stationary-bootstrap block length for the per-date series: the largest of
    `optimal_block_length` (Politis-White) over the given differences, rounded up, at least 1."""
    found = [float(optimal_block_length(np.asarray(d, dtype=float))["stationary"].iloc[0])
             for d in differences if len(d) > 8 and np.std(d) > 0]
    return max([1, *(math.ceil(b) for b in found if math.isfinite(b))])


@dataclass(frozen=True)
class Draws:
    """Full-sample values and bootstrap draws of each arm's mean loss and AUROC."""

    names: list[str]
    loss: np.ndarray  # [A] full sample (seeds averaged)
    auroc: np.ndarray  # [A]
    loss_draws: np.ndarray  # [B, A]
    auroc_draws: np.ndarray  # [B, A] (NaN when not computed)
    block: int
    dates: int

    def column(self, metric: str, name: str, draws: bool = False) -> np.ndarray | float:
        i = self.names.index(name)
        if metric == "loss":
            return self.loss_draws[:, i] if draws else float(self.loss[i])
        return self.auroc_draws[:, i] if draws else float(self.auroc[i])


def paired_bootstrap(y: np.ndarray, arms: Sequence[Arm], draws: int = 1000, block: int | None = None,
                     seed: int = 0, auroc: bool = True) -> Draws:
    """Joint resamples of dates (stationary blocks) and, per model, of its seeds.

    Args:
        y: labels per date [D], the same for every arm.
        arms: models and baselines, each [S, D] probabilities on those dates.
        draws: bootstrap resamples B.
        block: mean block length (default: `block_length` of the per-date loss differences of
            every arm against the first).
        seed: random seed (the report is reproducible).
        auroc: resample AUROC too (slower: one rank per seed per draw).
    """
    y = np.asarray(y, dtype=float)
    losses = [log_loss_per_date(y, a.probs) for a in arms]  # each [S, D]
    if block is None:
        ref = losses[0].mean(axis=0)
        block = block_length([x.mean(axis=0) - ref for x in losses[1:]] or [ref])
    rng = np.random.default_rng(seed)
    dates = StationaryBootstrap(block, np.arange(len(y)), seed=np.random.default_rng(seed + 1))
    full_loss = np.array([x.mean() for x in losses])
    full_auroc = np.array([np.nanmean(auroc_rows(y, a.probs)) for a in arms])
    loss_draws = np.empty((draws, len(arms)))
    auroc_draws = np.full((draws, len(arms)), np.nan)
    for b in range(draws):
        idx = dates.update_indices()
        yb = y[idx]
        for j, (arm, loss) in enumerate(zip(arms, losses, strict=True)):
            chosen = rng.integers(0, arm.seeds, arm.seeds)  # seeds with replacement
            loss_draws[b, j] = loss[:, idx].mean(axis=1)[chosen].mean()
            if auroc:
                auroc_draws[b, j] = auroc_rows(yb, arm.probs[:, idx])[chosen].mean()
    return Draws([a.name for a in arms], full_loss, full_auroc, loss_draws, auroc_draws, block, len(y))


@dataclass(frozen=True)
class Comparison:
    """One claim with its interval: `estimate` of `comparison` on `metric`, and the verdict."""

    comparison: str
    kind: str  # "scaling" (slope or larger-smaller), "baseline", or "data" (training years)
    metric: str
    estimate: float
    lo: float
    hi: float
    verdict: str
    method: str
    mde: float = math.nan  # minimum detectable effect (80% power at 5%), from the same interval
    delta: float = math.nan  # the equivalence margin the verdict used

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.lo, self.hi)


def _percentiles(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def decide(lo: float, hi: float, seeds_ok: bool, lower_is_better: bool, words: tuple[str, str],
           delta: float = 0.0) -> str:
    """words[0] ("helps"/"better") or words[1] where [lo, hi] lies wholly on one side of 0 with real
    width and enough seeds; EQUIVALENT where it lies inside (-delta, delta); otherwise NO_EVIDENCE
    (`forecast.report.equivalence.verdict`)."""
    return verdict(lo, hi, seeds_ok, lower_is_better, delta, words)


def slope(log_params: np.ndarray, values: np.ndarray) -> np.ndarray:
    """OLS slope of `values` [..., M] against log10 parameters [M] (per decade), over the last axis."""
    x = log_params - log_params.mean()
    return ((values - values.mean(axis=-1, keepdims=True)) * x).sum(axis=-1) / (x**2).sum()


def bootstrap_method(d: Draws, level: float = LEVEL) -> str:
    """How a claim's interval was made, as verdicts.csv and report.md say it."""
    return (f"stationary block bootstrap over {d.dates} test dates (mean block {d.block} days) x seeds "
            f"resampled within each budget, {len(d.loss_draws)} draws, {level:.0%} percentile interval")


def judged(name: str, kind: str, metric: str, estimate: float, drawn: np.ndarray, seeds_ok: bool,
           words: tuple[str, str], method: str, margins: Margins, level: float = LEVEL) -> Comparison:
    """One claim from its full-sample `estimate` and its joint bootstrap draws: the percentile
    interval, its MDE and the three-way verdict with the metric's margin."""
    lo, hi = _percentiles(np.asarray(drawn, dtype=float), level)
    delta = margins.of(metric)
    return Comparison(name, kind, metric, float(estimate), lo, hi,
                      decide(lo, hi, seeds_ok, LOWER_IS_BETTER[metric], words, delta), method,
                      mde(lo, hi, level), delta)


def compare(d: Draws, models: Sequence[Arm], baselines: Sequence[Arm], metrics: Sequence[str] = ("loss", "auroc"),
            level: float = LEVEL, margins: Margins | None = None) -> list[Comparison]:
    """Every claim the report makes for one series, from one set of joint draws.

    - "slope per 10x params" (with >= 2 budgets): OLS of the metric on log10(parameters).
    - "<largest> - <smallest>": the largest budget minus the smallest.
    - "<model> - <baseline>": each budget minus each baseline.

    Each carries its MDE and the three-way verdict with the metric's margin (`margins`, default
    `Margins()`).
    """
    margins = margins or Margins()
    models = sorted(models, key=lambda a: a.params)
    method = bootstrap_method(d, level)
    out = []

    def claim(name: str, kind: str, metric: str, estimate: float, drawn: np.ndarray, seeds_ok: bool,
              words: tuple[str, str]) -> Comparison:
        return judged(name, kind, metric, estimate, drawn, seeds_ok, words, method, margins, level)

    for metric in metrics:
        if metric == "auroc" and not np.isfinite(d.auroc_draws).any():
            continue
        if len(models) >= 2:
            x = np.log10([m.params for m in models])
            names = [m.name for m in models]
            full = slope(x, np.array([d.column(metric, n) for n in names]))
            drawn = slope(x, np.stack([d.column(metric, n, draws=True) for n in names], axis=1))
            seeds_ok = all(m.seeds >= MIN_SEEDS for m in models)
            out.append(claim("slope per 10x params", "scaling", metric, full, drawn, seeds_ok, (HELPS, HURTS)))
            big, small = models[-1].name, models[0].name
            diff = d.column(metric, big, True) - d.column(metric, small, True)
            out.append(claim(f"{big} - {small}", "scaling", metric, d.column(metric, big) - d.column(metric, small),
                             diff, seeds_ok, (HELPS, HURTS)))
        for m in models:
            for b in baselines:
                diff = d.column(metric, m.name, True) - d.column(metric, b.name, True)
                out.append(claim(f"{m.name} - {b.name}", "baseline", metric,
                                 d.column(metric, m.name) - d.column(metric, b.name), diff, m.seeds >= MIN_SEEDS,
                                 (BETTER, WORSE)))
    return out


def scaling_verdict(comparisons: Sequence[Comparison], budgets: int) -> tuple[str, str]:
    """The series' answer: the verdict of the loss slope, and a sentence saying how it was reached."""
    if budgets < 2:
        return NO_EVIDENCE, "no budget could be reported" if not budgets else "one budget only: nothing to compare"
    found = [c for c in comparisons if c.comparison == "slope per 10x params" and c.metric == "loss"]
    if not found:
        return NO_EVIDENCE, "no slope could be formed"
    c = found[0]
    if c.verdict == EQUIVALENT:
        return (EQUIVALENT,
                f"slope of pooled test loss per 10x parameters, {c.method}: its interval lies inside "
                f"±{c.delta:g}; minimum detectable effect {c.mde:.4f}")
    why = ("its interval excludes 0" if c.verdict != NO_EVIDENCE
           else "its interval includes 0 but not only effects within the margin, or a budget has fewer than 2 seeds")
    return c.verdict, (f"slope of pooled test loss per 10x parameters, {c.method}: {why}; minimum detectable "
                       f"effect {c.mde:.4f}")
