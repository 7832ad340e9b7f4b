"""How big: each claim's minimum detectable effect (MDE) and its equivalence-aware verdict.

Both come from the claim's own interval of the joint bootstrap (`forecast.report.stats`), so they
hold the same sources of noise (dates in blocks, seeds) as the interval itself.

MDE. Read the interval as a normal sampling distribution of the estimate: its standard error is
se = (hi - lo) / (2 z_{(1+level)/2}) (for a 95% interval, the width over 3.92). A claim is decided
when its interval excludes 0, i.e. when |estimate| > z_{(1+level)/2} se. If the true effect is D,
the estimate is about N(D, se^2), so the chance of deciding is Phi(D / se - z_{(1+level)/2}) (the
far tail, deciding the wrong sign, is negligible). Setting that chance to `POWER` gives

    MDE = (z_{(1+level)/2} + z_{POWER}) * se  = 2.80 se = 1.43 x the interval's half-width

(level 95%, power 80%): the smallest effect this design (these dates, this block length, these
seeds) finds 80% of the time at 5%. tests/test_report_stats.py checks the formula against
simulated studies: the power it predicts for a planted effect is the power observed.

Verdict (three-way, one margin delta per metric):
  - better / worse ("larger helps" / "larger hurts" for scaling claims): the interval excludes 0;
  - equivalent within +-delta: the whole interval lies inside (-delta, +delta), so every effect a
    trader would care about is excluded (the 95% interval is the two one-sided tests at 2.5% each:
    conservative);
  - otherwise no evidence, and the largest effect still inside the interval is said
    ("effects up to X not excluded").
Either decision needs at least two seeds in every model compared and an interval of real width:
a zero-width or one-seed interval decides nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

POWER = 0.80
EQUIVALENT = "equivalent"
NO_EVIDENCE = "no evidence"
# Default margins: effects smaller than these are not worth a trader's attention.
# Log loss: 0.01 nats is ~2% of the class prior's loss at a 20-30% base rate (0.5-0.6 nats), about
#   what separates the prior from the best baselines on daily SPY; a slope is per 10x parameters.
# AUROC: 0.02, i.e. ranking 2 more pairs in 100 correctly; less is within fold-to-fold noise.
DEFAULT_MARGINS = {"loss": 0.01, "auroc": 0.02}


@dataclass(frozen=True)
class Margins:
    """Equivalence margins delta per metric (`forecast report --equivalence-loss/--equivalence-auroc`).

    Attributes:
        loss: log-loss margin in nats (per 10x parameters for the slope).
        auroc: AUROC margin.
    """

    loss: float = DEFAULT_MARGINS["loss"]
    auroc: float = DEFAULT_MARGINS["auroc"]

    def of(self, metric: str) -> float:
        return self.loss if metric == "loss" else self.auroc


def mde(lo: float, hi: float, level: float = 0.95, power: float = POWER) -> float:
    """Minimum detectable effect of a claim whose `level` interval is [lo, hi] (see the module
    docstring): (z_{(1+level)/2} + z_{power}) * (hi - lo) / (2 z_{(1+level)/2}); NaN without an interval."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    z = NormalDist().inv_cdf((1 + level) / 2)
    return (z + NormalDist().inv_cdf(power)) * (hi - lo) / (2 * z)


def not_excluded(lo: float, hi: float) -> float:
    """The largest effect size (either sign) still inside [lo, hi]."""
    return max(abs(lo), abs(hi))


def verdict(lo: float, hi: float, seeds_ok: bool, lower_is_better: bool, delta: float,
            words: tuple[str, str]) -> str:
    """words[0] ("better"/"larger helps") or words[1] where [lo, hi] lies wholly on one side of 0;
    EQUIVALENT where it lies wholly inside (-delta, delta); otherwise NO_EVIDENCE. Both need real
    width and enough seeds. A negative change is an improvement when lower is better."""
    if not (seeds_ok and math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        return NO_EVIDENCE
    if lo > 0 or hi < 0:
        improves = hi < 0 if lower_is_better else lo > 0
        return words[0] if improves else words[1]
    if -delta < lo and hi < delta:
        return EQUIVALENT
    return NO_EVIDENCE


def verdict_text(v: str, lo: float, hi: float, delta: float, digits: int = 4) -> str:
    """The verdict as report.md says it: `equivalent within ±0.01`, `no evidence (effects up to
    0.017 not excluded)`, or the verdict itself."""
    if v == EQUIVALENT:
        return f"equivalent within ±{delta:g}"
    if v == NO_EVIDENCE and math.isfinite(lo) and math.isfinite(hi):
        return f"no evidence (effects up to {not_excluded(lo, hi):.{digits}f} not excluded)"
    return v
