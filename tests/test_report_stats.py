"""The report's arithmetic on inputs whose answers are known: intervals, power law, verdicts,
baselines and the VIX regime view. Pure functions; no training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from forecast.report.build import baselines_of
from forecast.report.regimes import LEVELS, regimes, vix_at_test_windows
from forecast.report.stats import (
    HELPS,
    HURTS,
    NO_EVIDENCE,
    Interval,
    bootstrap_alpha,
    clipped,
    fit_power_law,
    power_law,
    scaling,
    slope_interval,
    t_interval,
    verdict,
    welch_difference,
)

BUDGETS = [2e6, 2e7, 2e8, 2e9]
SPREAD = np.array([-0.004, 0.0, 0.004])  # three seeds, symmetric around each budget's mean


# -- intervals ------------------------------------------------------------------------------
def test_t_interval_of_three_seeds_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert iv.estimate == 2.0 and iv.n == 3
    assert iv.lo == pytest.approx(2.0 - half) and iv.hi == pytest.approx(2.0 + half)
    assert iv.text(2) == "2.00 [-0.48, 4.48]"


def test_t_interval_needs_two_values_and_skips_nan():
    one = t_interval([0.7, math.nan])
    assert one.estimate == 0.7 and math.isnan(one.lo) and math.isnan(one.hi) and one.text() == "0.7000"
    assert math.isnan(t_interval([]).estimate) and t_interval([]).text() == "n/a"
    same = t_interval([0.5, 0.5, 0.5])
    assert same.lo == same.hi == 0.5


def test_welch_difference_matches_scipy():
    a, b = [0.61, 0.63, 0.60, 0.64], [0.70, 0.66, 0.72]
    iv = welch_difference(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert iv.estimate == pytest.approx(np.mean(a) - np.mean(b))
    assert (iv.lo, iv.hi) == pytest.approx((ref.low, ref.high))
    assert math.isnan(welch_difference([1.0], [2.0]).lo)  # one value each: no spread to measure


def test_slope_interval_matches_linregress():
    n = [1e3, 1e3, 1e4, 1e4, 1e5, 1e5]
    y = [0.70, 0.69, 0.66, 0.67, 0.64, 0.62]
    iv = slope_interval(n, y)
    ref = sps.linregress(np.log10(n), y)
    half = sps.t.ppf(0.975, len(n) - 2) * ref.stderr
    assert iv.estimate == pytest.approx(ref.slope)
    assert (iv.lo, iv.hi) == pytest.approx((ref.slope - half, ref.slope + half))
    assert math.isnan(slope_interval([1e3, 1e3], [0.5, 0.6]).estimate)  # one size: no slope


def test_clipped_keeps_bounds_inside_the_range():
    iv = clipped(Interval(0.9, 0.7, 1.1, 3), 0.0, 1.0)
    assert (iv.estimate, iv.lo, iv.hi) == (0.9, 0.7, 1.0)


@pytest.mark.parametrize("iv,lower_is_better,expected", [
    (Interval(-0.02, -0.03, -0.01), True, HELPS),
    (Interval(0.02, 0.01, 0.03), True, HURTS),
    (Interval(-0.02, -0.05, 0.01), True, NO_EVIDENCE),  # a negative estimate alone decides nothing
    (Interval(-0.02, math.nan, math.nan), True, NO_EVIDENCE),
    (Interval(0.02, 0.01, 0.03), False, HELPS),  # AUROC: up is better
])
def test_verdict_reads_only_intervals(iv, lower_is_better, expected):
    assert verdict(iv, lower_is_better) == expected


# -- the scaling verdict on synthetic curves ---------------------------------------------------
def _seeds(curve, budgets=BUDGETS):
    return [curve(n) + SPREAD for n in budgets]


@pytest.mark.parametrize("budgets", [BUDGETS, BUDGETS[:2], BUDGETS[:3]])
def test_falling_rising_and_flat_curves(budgets):
    down = scaling(budgets, _seeds(lambda n: 0.5 + (1e5 / n) ** 0.3, budgets), draws=50)
    up = scaling(budgets, _seeds(lambda n: 0.6 + 0.02 * np.log10(n), budgets), draws=50)
    flat = scaling(budgets, _seeds(lambda n: 0.69, budgets), draws=50)
    assert (down.verdict, up.verdict, flat.verdict) == (HELPS, HURTS, NO_EVIDENCE)
    assert down.slope.hi < 0 < up.slope.lo and flat.slope.lo < 0 < flat.slope.hi
    assert down.difference.hi < 0 < up.difference.lo
    if len(budgets) < 4:  # too few points for 3 parameters: the slope test, said so
        assert down.fit is None and "only the log-linear slope test" in down.method and "needs 4" in down.method
    else:
        assert down.fit is not None and not down.fit.degenerate
        assert down.alpha.lo < 0.3 < down.alpha.hi
        assert up.fit is None or up.fit.degenerate  # no falling power law: alpha is not reported
        assert math.isnan(up.alpha.estimate) and "no falling power law" in up.method


def test_noise_as_large_as_the_effect_is_no_evidence():
    # the earlier project's trap: a 0.01 trend under seed noise of the same size
    rng = np.random.default_rng(0)
    seeds = [0.69 - 0.003 * np.log10(n) + rng.normal(0, 0.02, 3) for n in BUDGETS[:2]]
    assert scaling(BUDGETS[:2], seeds).verdict == NO_EVIDENCE


def test_a_pooled_slope_alone_does_not_decide():
    # real case (SPY h=5, 2 seeds): the 20M seeds agree by luck, so the pooled slope interval
    # excludes 0 while Welch's interval of the difference does not
    seeds = [[0.6329, 0.6397], [0.6528, 0.6516]]
    result = scaling([2.18e6, 1.91e7], seeds)
    assert result.slope.lo > 0 and result.difference.lo < 0 < result.difference.hi
    assert result.verdict == NO_EVIDENCE and "Welch interval includes 0" in result.method


def test_one_budget_is_no_evidence():
    only = scaling([2e6], [[0.69, 0.70, 0.68]])
    assert only.verdict == NO_EVIDENCE and "one budget" in only.method


# -- power law ----------------------------------------------------------------------------------
def test_power_law_fit_recovers_known_parameters():
    n = np.array(BUDGETS)
    fit = fit_power_law(n, power_law(n, 0.5, math.log(1e5), 0.3))
    assert fit is not None and not fit.degenerate
    assert (fit.l_inf, fit.alpha) == pytest.approx((0.5, 0.3), rel=1e-3)
    assert fit.n0 == pytest.approx(1e5, rel=1e-2)
    assert fit(2e6) == pytest.approx(0.5 + (1e5 / 2e6) ** 0.3, rel=1e-6)


def test_power_law_refuses_too_few_budgets_and_flags_flat_curves():
    assert fit_power_law(BUDGETS[:3], [0.7, 0.6, 0.55]) is None
    flat = fit_power_law(BUDGETS, [0.69] * 4)
    assert flat is None or flat.degenerate


def test_bootstrap_alpha_is_reproducible_and_covers_the_truth():
    rng = np.random.default_rng(1)
    seeds = [0.5 + (1e5 / n) ** 0.3 + rng.normal(0, 0.003, 3) for n in BUDGETS]
    a, ok = bootstrap_alpha(BUDGETS, seeds, draws=100, seed=7)
    b, _ = bootstrap_alpha(BUDGETS, seeds, draws=100, seed=7)
    assert a == b and ok >= 95
    assert a.lo < 0.3 < a.hi and a.lo < a.estimate < a.hi


# -- baselines on a set whose answer is known -------------------------------------------------
def _fake_datamodule(n: int = 600, seed: int = 0) -> SimpleNamespace:
    """Labels are 1 exactly when feature 0 of the window's last day is positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    ends = np.arange(10, n)
    splits = {s: SimpleNamespace(ends=e) for s, e in zip(("train", "val", "test"), np.array_split(ends, 3), strict=True)}
    return SimpleNamespace(features=torch.from_numpy(x), targets=torch.from_numpy(y), splits=splits)


def test_baselines_on_a_known_answer():
    dm = _fake_datamodule()
    out = baselines_of(dm)
    for split in ("val", "test"):
        assert out["prior"][split]["auroc"] == 0.5  # one constant score: no ranking at all
        assert out["logistic"][split]["auroc"] > 0.99 and out["hist_gb"][split]["auroc"] > 0.97
        assert out["logistic"][split]["loss"] < out["prior"][split]["loss"]
        rate = dm.targets[dm.splits[split].ends].mean().item()
        assert out["prior"][split]["brier"] == pytest.approx(rate * (1 - rate), abs=0.01)


# -- regime view ----------------------------------------------------------------------------
def test_regimes_split_at_15_and_25_and_score_each_level():
    vix = np.array([10, 12, 14, 14.9, 15, 20, 25, 24, 26, 30, 40, 35], dtype=float)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    perfect = y.astype(float)  # AUROC 1 everywhere
    inverted = 1 - perfect  # AUROC 0 everywhere
    out = regimes(vix, y, [perfect, perfect, inverted])
    assert [g.name for g in out] == [name for name, _, _ in LEVELS]
    assert [g.windows for g in out] == [4, 4, 4]  # 15 and 25 belong to the middle level
    assert all(g.auroc.estimate == pytest.approx(2 / 3) for g in out)
    assert all(0.0 <= g.auroc.lo and g.auroc.hi <= 1.0 for g in out)  # kept inside AUROC's range
    one_class = regimes(np.array([10.0, 11.0, 30.0, 31.0]), np.array([1, 1, 0, 1]), [[0.2, 0.8, 0.1, 0.9]])
    assert math.isnan(one_class[0].auroc.estimate) and one_class[1].windows == 0


def test_vix_is_unscaled_from_the_tier_column():
    raw_vix = np.array([12.0, 18.0, 30.0, 22.0, 14.0])
    mean, std = np.array([0.0, 20.0]), np.array([1.0, 5.0])
    features = (np.stack([np.zeros(5), raw_vix], axis=1) - mean) / std
    dm = SimpleNamespace(feature_names=["ret_1", "vix_close"], features=torch.tensor(features, dtype=torch.float32),
                         scale_mean=mean, scale_std=std, splits={"test": SimpleNamespace(ends=np.array([1, 2, 4]))})
    np.testing.assert_allclose(vix_at_test_windows(dm), [18.0, 30.0, 14.0], rtol=1e-6)
    dm.feature_names = ["ret_1", "other"]
    assert vix_at_test_windows(dm) is None


def test_interval_text_formats():
    assert Interval(0.5, 0.4, 0.6).text(2) == "0.50 [0.40, 0.60]"
    assert pd.isna(Interval(math.nan, math.nan, math.nan).estimate)
