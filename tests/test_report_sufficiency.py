"""Search sufficiency: studies in a real SQLite Optuna storage, read back through the report's
collector, judged by the "unconverged" rule (forecast.report.sufficiency). No training."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from forecast.report.collect import TrialRecord, collect
from forecast.report.sufficiency import MIN_GAIN, MIN_TRIALS, best_so_far, last_gain_at, sufficiency

STAMP = {"data": {"symbol": "SPY", "tier": "c", "task": "threshold", "threshold": 0.01, "horizon": 1},
         "budget": "2M"}
WIDTHS = CategoricalDistribution([64, 128, 192, 256])
LR = FloatDistribution(1e-5, 3e-3, log=True)


def _trial(value: float | None, state: TrialState = TrialState.COMPLETE, best_epoch: int = 2, d_model: int = 128,
           lr: float = 3e-4, reason: str = "complete") -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={"d_model": d_model, "lr": lr}, distributions={"d_model": WIDTHS, "lr": LR},
        intermediate_values={0: 0.7, 1: 0.69} if state == TrialState.PRUNED else {},
        user_attrs={"params": 2_000_000, "arch_id": f"d{d_model}", "best_epoch": best_epoch, "epochs_run": 4,
                    "reason": reason, "log_dir": "/nowhere/trial", "replay": "forecast fit --config x.yaml"})


def _entry(tmp_path, trials, name: str = "s"):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr("fingerprint", STAMP)
    for t in trials:
        study.add_trial(t)
    return collect(url, [name])[0]


def test_a_3_trial_study_is_flagged_and_says_where_its_best_lies(tmp_path):
    """The case from the issue: 3 trials of 4 epochs that chose the widest model at its first epoch."""
    entry = _entry(tmp_path, [_trial(0.52), _trial(0.50, best_epoch=0, d_model=256), _trial(0.51)])
    q = sufficiency(entry, max_epochs=4)
    assert (q.complete, q.pruned, q.failed, q.best_trial, q.best_at) == (3, 0, 0, 1, 2)
    assert q.unconverged and q.reasons == [f"only 3 trials finished (< {MIN_TRIALS}: the sampler's random start-up)"]
    assert q.epoch_text == "epoch 1 of 4 (the first)"
    assert any("first: later epochs only got worse" in w for w in q.warnings)
    assert any("d_model 256: the largest of 4 choices" in w for w in q.warnings)
    assert q.curve == [(0, 0.52), (1, 0.50), (2, 0.50)]


def test_a_long_search_that_stopped_improving_early_is_converged(tmp_path):
    values = [0.60, 0.55, 0.52, 0.50] + [0.51 + 0.001 * i for i in range(16)]
    trials = [_trial(v) for v in values]
    trials[7] = _trial(None, TrialState.PRUNED)
    trials[9] = _trial(None, TrialState.FAIL, reason="oom")  # a counted failure
    entry = _entry(tmp_path, trials)
    q = sufficiency(entry, max_epochs=10)
    assert (q.complete, q.pruned, q.failed) == (18, 1, 1)
    assert not q.unconverged and q.warnings == [] and q.epoch_text == "epoch 3 of 10"


@pytest.mark.parametrize("case,reason", [
    ("late", "the best improved at trial 19 of 20, within the last quarter"),
    ("limit", "the best trial's best epoch was its last allowed, epoch 10 of 10: still improving"),
    ("tiny_late_gain", None),
    ("edge_lr", None),
])
def test_the_unconverged_rule(tmp_path, case, reason):
    values = [0.60, 0.55] + [0.56] * 18  # 20 trials, the best found 2nd
    trials = [_trial(v) for v in values]
    if case == "late":
        trials[18] = _trial(0.50)
    if case == "limit":
        trials[1] = _trial(0.55, best_epoch=9)
    if case == "tiny_late_gain":
        trials[19] = _trial(0.55 - MIN_GAIN / 2)  # the best, but not by more than MIN_GAIN
    if case == "edge_lr":
        trials[1] = _trial(0.55, lr=2.9e-3)
    q = sufficiency(_entry(tmp_path, trials), max_epochs=10)
    assert q.reasons == ([reason] if reason else [])
    if case == "edge_lr":
        assert q.warnings == ["on the edge of the search: lr 0.0029: at the top of [1e-05, 0.003]"]


gains = st.lists(st.one_of(st.none(), st.floats(0.3, 0.8)), min_size=1, max_size=40)


@given(gains)
def test_last_gain_is_the_last_clear_improvement_of_the_best_so_far(values):
    """Generated trial sequences (None = pruned): `last_gain_at` is the last position where the
    best complete value fell by more than MIN_GAIN below the value it last fell to."""
    records = [TrialRecord(i, "complete" if v is not None else "pruned", v, None, None) for i, v in enumerate(values)]
    curve = best_so_far(records)
    assert len(curve) == len(values)
    finite = [b for _, b in curve if math.isfinite(b)]
    assert finite == sorted(finite, reverse=True)  # best so far never rises
    expected, ref = 0, math.inf
    for i, v in enumerate(values, start=1):
        if v is not None and (ref == math.inf or v < ref - MIN_GAIN):
            expected, ref = i, v
    assert last_gain_at(curve) == expected
