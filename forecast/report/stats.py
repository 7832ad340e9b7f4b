"""The report's statistics, as pure functions of numbers (no files, no models).

- `t_interval`: mean and 95% t-interval over seeds (seeds are few: a normal interval or a
  bootstrap of 3 values would be far too narrow).
- `welch_difference`: the interval of a difference of two means with unequal variances.
- `slope_interval`: ordinary least squares of a metric on log10(parameters) over EVERY seed's run,
  with a t-interval for the slope. With the Welch interval of largest minus smallest budget it
  decides the verdict at any number of budgets >= 2 (both must exclude zero on one side).
- `fit_power_law` / `bootstrap_alpha`: L(N) = L_inf + (N0 / N)^alpha with scipy's curve_fit, and
  a percentile interval for alpha from resampling the seeds within each budget. Three free
  parameters need at least `MIN_BUDGETS_FOR_FIT` budgets to leave a degree of freedom.
- `verdict`: "larger helps" / "larger hurts" only when an interval excludes zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

LEVEL = 0.95
MIN_BUDGETS_FOR_FIT = 4  # L_inf, N0, alpha: 3 parameters; 4 budgets leave one degree of freedom
HELPS, HURTS, NO_EVIDENCE = "larger helps", "larger hurts", "no evidence"


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
        mean +- t_{(1+level)/2, n-1} * s / sqrt(n); lo/hi are NaN for fewer than 2 values.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(sps.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


def clipped(iv: Interval, low: float = -math.inf, high: float = math.inf) -> Interval:
    """`iv` with its bounds kept inside a metric's range (an AUROC interval never passes 1)."""
    return Interval(iv.estimate, max(iv.lo, low), min(iv.hi, high), iv.n) if math.isfinite(iv.lo) else iv


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's t-interval (no equal-variance assumption).

    A sample of one value contributes no variance; two such samples give no interval.
    """
    x, y = (np.asarray([v for v in s if math.isfinite(v)], dtype=float) for s in (a, b))
    if len(x) == 0 or len(y) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(x.mean() - y.mean())
    vx = x.var(ddof=1) / len(x) if len(x) > 1 else 0.0
    vy = y.var(ddof=1) / len(y) if len(y) > 1 else 0.0
    n = len(x) + len(y)
    dfs = [(v, len(s) - 1) for v, s in ((vx, x), (vy, y)) if len(s) > 1]
    if not dfs:  # one value each: no spread to measure
        return Interval(diff, math.nan, math.nan, n)
    if vx + vy == 0:  # replicates agree exactly: the difference carries no noise
        return Interval(diff, diff, diff, n)
    dof = (vx + vy) ** 2 / sum(v**2 / d for v, d in dfs)  # Welch-Satterthwaite
    half = float(sps.t.ppf((1 + level) / 2, dof) * math.sqrt(vx + vy))
    return Interval(diff, diff - half, diff + half, n)


def slope_interval(params: Sequence[float], values: Sequence[float], level: float = LEVEL) -> Interval:
    """Slope of `values` per decade of parameters (OLS on log10 N) with its t-interval.

    Args:
        params: parameter count of each run (one entry per seed per budget).
        values: the metric of each run.
        level: coverage.

    Returns:
        The slope (metric change per 10x parameters); lo/hi NaN without two distinct sizes and
        at least three runs (one residual degree of freedom).
    """
    pairs = [(math.log10(n), v) for n, v in zip(params, values, strict=True) if math.isfinite(v) and n > 0]
    x = np.asarray([p[0] for p in pairs])
    y = np.asarray([p[1] for p in pairs])
    if len(x) < 2 or np.ptp(x) == 0:
        return Interval(math.nan, math.nan, math.nan, len(x))
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
    if len(x) < 3:
        return Interval(slope, math.nan, math.nan, len(x))
    resid = y - y.mean() - slope * xc
    se = math.sqrt(float((resid**2).sum()) / (len(x) - 2) / float((xc**2).sum()))
    half = float(sps.t.ppf((1 + level) / 2, len(x) - 2) * se)
    return Interval(slope, slope - half, slope + half, len(x))


def verdict(change: Interval, lower_is_better: bool = True) -> str:
    """Read an interval of "metric change as models grow" as a plain answer.

    Args:
        change: interval of a slope over log N, or of (largest - smallest budget).
        lower_is_better: True for losses and the Brier score, False for AUROC and AP.

    Returns:
        HELPS or HURTS when the interval lies entirely on one side of zero, else NO_EVIDENCE
        (also when there is no interval at all): a point estimate alone never decides.
    """
    if not change.excludes_zero():
        return NO_EVIDENCE
    improves = change.hi < 0 if lower_is_better else change.lo > 0
    return HELPS if improves else HURTS


# ------------------------------------------------------------------------------ power law


@dataclass(frozen=True)
class PowerLaw:
    """L(N) = l_inf + (n0 / N)^alpha."""

    l_inf: float
    n0: float
    alpha: float
    degenerate: bool = False  # on a bound, or a vanishing N-term: the form does not describe the points

    def __call__(self, n: np.ndarray | float) -> np.ndarray | float:
        return power_law(np.asarray(n, dtype=float), self.l_inf, math.log(self.n0), self.alpha)


def power_law(n: np.ndarray, l_inf: float, log_n0: float, alpha: float) -> np.ndarray:
    """L(N) = l_inf + (N0/N)^alpha, written as exp(alpha * (log N0 - log N)) so that N0 can span
    many decades without overflowing (N0 is fitted in log space)."""
    return l_inf + np.exp(alpha * (log_n0 - np.log(n)))


def fit_power_law(params: Sequence[float], loss: Sequence[float],
                  sigma: Sequence[float] | None = None) -> PowerLaw | None:
    """Fit L(N) to one mean loss per budget with scipy.optimize.curve_fit.

    Starting values come from the data (L_inf just below the smallest loss, alpha 0.3, N0 so that
    the curve passes through the smallest model's loss); bounds keep L_inf in [0, min loss] and
    alpha in [0, 3], where the form means "loss falls with size and levels off".

    Args:
        params: parameter count per budget.
        loss: mean test loss per budget.
        sigma: standard error per budget (weights); ignored unless all are positive.

    Returns:
        The fit, or None with fewer than `MIN_BUDGETS_FOR_FIT` budgets or when it does not converge.
    """
    n = np.asarray(params, dtype=float)
    y = np.asarray(loss, dtype=float)
    if len(n) < MIN_BUDGETS_FOR_FIT or not np.isfinite(y).all() or len(set(n)) < len(n):
        return None
    floor = float(y.min())
    spread = max(float(np.ptp(y)), 1e-6 * max(abs(floor), 1.0))
    l0 = max(floor - 0.5 * spread, 0.0)
    a0 = 0.3
    top = float(y[np.argmin(n)]) - l0
    log_n0 = math.log(n.min()) + math.log(max(top, 1e-12)) / a0
    lower, upper = [0.0, -50.0, 0.0], [floor, 100.0, 3.0]
    start = np.clip([l0, log_n0, a0], lower, upper)
    s = np.asarray(sigma, dtype=float) if sigma is not None else None
    if s is not None and not (np.isfinite(s).all() and (s > 0).all()):
        s = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning on a flat curve: judged below
            best, _ = optimize.curve_fit(power_law, n, y, p0=start, sigma=s, bounds=(lower, upper),
                                         max_nfev=5000)
    except (RuntimeError, ValueError):
        return None
    if not np.isfinite(best).all():
        return None
    # L_inf may sit on 0 honestly. N0 or alpha on a bound, L_inf pinned to the smallest loss, or an
    # N-term that has vanished already at the smallest model mean the optimizer found no falling
    # power law (a flat or rising curve): alpha then means nothing.
    pinned = np.isclose(best[1:], lower[1:], atol=1e-6) | np.isclose(best[1:], upper[1:], atol=1e-6)
    term = float(power_law(np.array([n.min()]), 0.0, best[1], best[2])[0])
    degenerate = bool(pinned.any() or math.isclose(best[0], floor, rel_tol=1e-9, abs_tol=1e-12)
                      or term < 0.01 * max(float(np.ptp(y)), 1e-3 * abs(floor)))
    return PowerLaw(float(best[0]), float(math.exp(best[1])), float(best[2]), degenerate)


def bootstrap_alpha(params: Sequence[float], seed_losses: Sequence[Sequence[float]], draws: int = 1000,
                    level: float = LEVEL, seed: int = 0) -> tuple[Interval, int]:
    """Percentile interval for alpha: resample each budget's seeds with replacement, refit.

    Args:
        params: parameter count per budget.
        seed_losses: per budget, the test loss of each seed.
        draws: bootstrap resamples.
        level: coverage.
        seed: random seed (the report is reproducible).

    Returns:
        (interval around the fit on the full data, number of resamples whose fit converged).
    """
    full = fit_power_law(params, [float(np.mean(s)) for s in seed_losses])
    if full is None:
        return Interval(math.nan, math.nan, math.nan, 0), 0
    rng = np.random.default_rng(seed)
    samples = [np.asarray(s, dtype=float) for s in seed_losses]
    alphas = []
    for _ in range(draws):
        means = [float(rng.choice(s, size=len(s), replace=True).mean()) for s in samples]
        fit = fit_power_law(params, means)
        if fit is not None:
            alphas.append(fit.alpha)
    if len(alphas) < 2:
        return Interval(full.alpha, math.nan, math.nan, len(alphas)), len(alphas)
    lo, hi = np.quantile(alphas, [(1 - level) / 2, (1 + level) / 2])
    return Interval(full.alpha, float(lo), float(hi), len(alphas)), len(alphas)


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class Scaling:
    """What one series (symbol, tier, task, horizon) says about size.

    Attributes:
        verdict: HELPS, HURTS or NO_EVIDENCE: a side only when `slope` and `difference` both
            exclude zero on it (see `agreed_verdict`).
        slope: test loss change per 10x parameters, OLS over every seed's run, 95% t-interval.
        difference: mean test loss of the largest minus the smallest budget (Welch 95% interval).
        fit: the power law, when there were enough budgets and it converged.
        alpha: alpha with its bootstrap interval (NaN without a fit).
        method: one sentence saying which of these was possible and why.
    """

    verdict: str
    slope: Interval
    difference: Interval
    fit: PowerLaw | None
    alpha: Interval
    method: str


def agreed_verdict(slope: Interval, difference: Interval) -> tuple[str, str]:
    """The verdict when two tests agree, and a clause saying how it was reached.

    The slope test pools every seed's residual (it assumes equal spread at every size); Welch's
    interval for largest minus smallest budget does not. With a handful of seeds one budget's
    seeds can agree by luck and make the pooled test overconfident, so a side is taken only when
    both intervals exclude zero on that side.
    """
    by_slope, by_difference = verdict(slope), verdict(difference)
    if by_slope == by_difference:
        return by_slope, "the slope test and the largest-vs-smallest Welch interval agree"
    if by_slope == NO_EVIDENCE:
        return NO_EVIDENCE, "the slope interval includes 0"
    return NO_EVIDENCE, (f"the slope test alone says {by_slope!r}, but the largest-vs-smallest Welch "
                         "interval includes 0 (unequal seed spread): not enough")


def scaling(params: Sequence[float], seed_losses: Sequence[Sequence[float]], draws: int = 1000,
            seed: int = 0) -> Scaling:
    """The verdict and its evidence for one series.

    Args:
        params: exact parameter count of each budget's best model.
        seed_losses: per budget, the test loss of each retrained seed.
        draws: bootstrap resamples for alpha.
        seed: bootstrap seed.
    """
    order = np.argsort(params)
    params = [float(params[i]) for i in order]
    seed_losses = [list(seed_losses[i]) for i in order]
    flat_n = [n for n, s in zip(params, seed_losses, strict=True) for _ in s]
    flat_y = [v for s in seed_losses for v in s]
    slope = slope_interval(flat_n, flat_y)
    nan = Interval(math.nan, math.nan, math.nan, 0)
    if len(params) < 2:
        why = "no budget could be reported" if not params else "one budget only: nothing to compare"
        return Scaling(NO_EVIDENCE, slope, nan, None, nan, why)
    diff = welch_difference(seed_losses[-1], seed_losses[0])
    answer, how = agreed_verdict(slope, diff)
    if len(params) < MIN_BUDGETS_FOR_FIT:
        method = (f"{how}; {len(params)} budgets are too few for the 3-parameter power law (needs "
                  f"{MIN_BUDGETS_FOR_FIT}), so only the log-linear slope test was done")
        return Scaling(answer, slope, diff, None, nan, method)
    fit = fit_power_law(params, [float(np.mean(s)) for s in seed_losses])
    if fit is None or fit.degenerate:
        why = "did not converge" if fit is None else "found no falling power law (flat or rising points)"
        return Scaling(answer, slope, diff, fit, nan, f"{how}; the power law fit {why}")
    alpha, ok = bootstrap_alpha(params, seed_losses, draws, seed=seed)
    method = f"{how}; power law fitted, alpha interval from {ok}/{draws} converged bootstrap resamples of the seeds"
    return Scaling(answer, slope, diff, fit, alpha, method)
