"""Was the search enough? Each study's trials, best-so-far curve, and a plain "unconverged" flag.

A verdict is only as good as the configurations it compares: a 3-trial, 4-epoch search that
picked the widest architecture at its first epoch says little about what that budget can do.
`sufficiency` reads what the search recorded (`collect.TrialRecord`, the best trial's edges) and
the epoch limit of the best config, and states:

- trials finished: complete / pruned / failed;
- the best-so-far curve (best complete value after each finished trial, in trial order);
- the trial and the epoch at which the best was found, and whether that epoch is the first or the
  last one allowed (`trainer.max_epochs`);
- the best trial's draws on the edge of the budget's grid or of the search space (`collect.edges`).

The rule for UNCONVERGED (any one is enough):
  1. fewer than `MIN_TRIALS` (10) trials finished: TPE draws its first 10 at random (after the
     enqueued widest/narrowest/deepest/shallowest architectures), so nothing was searched yet;
  2. the best-so-far value last improved by more than `MIN_GAIN` (0.001 nats, the early-stopping
     min_delta) within the last quarter of the finished trials: the curve was still falling;
  3. the best trial's best epoch was its last allowed one: it was still improving when training
     stopped (under-trained).
A best epoch at the first epoch and edge draws are shown as warnings, not as part of the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from forecast.report.collect import StudyEntry, TrialRecord

MIN_TRIALS = 10  # TPE's n_startup_trials: the trials it draws at random before it models anything
MIN_GAIN = 0.001  # nats; the trainer's early-stopping min_delta (configs/trainer/default.yaml)
LAST_SHARE = 0.25  # "within the last quarter of the trials"
FINISHED = ("complete", "pruned", "failed")


@dataclass(frozen=True)
class Sufficiency:
    """How far one study's search went, and whether it looks unconverged (see the module rule)."""

    complete: int
    pruned: int
    failed: int
    curve: list[tuple[int, float]]  # (trial number, best complete value so far) per finished trial
    best_trial: int
    best_at: int  # 1-based position of the best trial among the finished ones
    best_epoch: int | None  # 0-based, as recorded
    max_epochs: int | None
    edges: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it looks unconverged (empty: converged)
    warnings: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def unconverged(self) -> bool:
        return bool(self.reasons)

    @property
    def epoch_text(self) -> str:
        """`epoch 1 of 4 (the first)`, `epoch 4 of 4 (the limit)`, or `epoch 3 of 50`."""
        if self.best_epoch is None:
            return "n/a"
        limit = f" of {self.max_epochs}" if self.max_epochs else ""
        where = (" (the limit)" if self.at_limit else "") or (" (the first)" if self.best_epoch == 0 else "")
        return f"epoch {self.best_epoch + 1}{limit}{where}"

    @property
    def at_limit(self) -> bool:
        return self.best_epoch is not None and bool(self.max_epochs) and self.best_epoch >= self.max_epochs - 1


def best_so_far(trials: Sequence[TrialRecord]) -> list[tuple[int, float]]:
    """(trial number, lowest complete value up to it) for every finished trial, in trial order
    (NaN until the first complete trial)."""
    out, best = [], math.inf
    for t in trials:
        if t.state not in FINISHED:
            continue
        if t.state == "complete" and t.value is not None and t.value < best:
            best = t.value
        out.append((t.number, best if math.isfinite(best) else math.nan))
    return out


def last_gain_at(curve: Sequence[tuple[int, float]], min_gain: float = MIN_GAIN) -> int:
    """1-based position in `curve` of the last improvement larger than `min_gain` (the first
    finite value counts as one): where the search last found something clearly better."""
    at, ref = 0, math.inf
    for i, (_, value) in enumerate(curve, start=1):
        if math.isfinite(value) and (not math.isfinite(ref) or value < ref - min_gain):
            at, ref = i, value
    return at


def sufficiency(entry: StudyEntry, max_epochs: int | None) -> Sufficiency:
    """The search-sufficiency view of one study.

    Args:
        entry: the study as collected (its trials and best trial).
        max_epochs: `trainer.max_epochs` of its best config (None when unknown or unlimited).
    """
    curve = best_so_far(entry.trials)
    n = len(curve)
    best = entry.best
    best_at = next((i for i, (num, _) in enumerate(curve, start=1) if num == best.number), n)
    tally = {s: sum(t.state == s for t in entry.trials) for s in FINISHED}
    limit = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None
    found = Sufficiency(tally["complete"], tally["pruned"], tally["failed"], curve, best.number, best_at,
                        best.best_epoch, limit, list(best.edges))
    reasons, warnings = found.reasons, found.warnings
    if n < MIN_TRIALS:
        reasons.append(f"only {n} trials finished (< {MIN_TRIALS}: the sampler's random start-up)")
    gain = last_gain_at(curve)
    if n and gain > math.floor((1 - LAST_SHARE) * n):  # of 3 trials the 3rd, of 8 the 7th and 8th
        reasons.append(f"the best improved at trial {gain} of {n}, within the last quarter")
    if found.at_limit:
        reasons.append(f"the best trial's best epoch was its last allowed, epoch {best.best_epoch + 1} of {limit}: "
                       "still improving")
    if best.best_epoch == 0 and not found.at_limit:
        warnings.append("the best trial's best epoch was its first: later epochs only got worse")
    if found.edges:
        warnings.append("on the edge of the search: " + "; ".join(found.edges))
    return found


def unconverged_budgets(budgets: Sequence[str], searches: dict[str, Sufficiency]) -> list[str]:
    """Of `budgets`, those whose study looks unconverged."""
    return [b for b in budgets if b in searches and searches[b].unconverged]
