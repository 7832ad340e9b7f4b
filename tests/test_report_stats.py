"""The report's statistics: paired block bootstrap, verdicts and their error rates, power law,
baselines and the VIX regime view. Pure functions and small sklearn fits; no training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from forecast.report.regimes import LEVELS, regimes, vix_at_test_windows
from forecast.report.stats import (
    BETTER,
    HELPS,
    HURTS,
    NO_EVIDENCE,
    Arm,
    Interval,
    auroc_rows,
    block_length,
    clipped,
    compare,
    fit_power_law,
    paired_bootstrap,
    power_law,
    scaling_verdict,
    t_interval,
)
from forecast.training.baselines import fit_baselines, stationary_features

BUDGETS = [2e6, 2e7, 2e8, 2e9]


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


def test_clipped_keeps_bounds_inside_the_range():
    iv = clipped(Interval(0.9, 0.7, 1.1, 3), 0.0, 1.0)
    assert (iv.estimate, iv.lo, iv.hi) == (0.9, 0.7, 1.0)



def test_auroc_rows_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    probs = np.round(rng.random((3, 300)), 1)  # many ties
    expected = [roc_auc_score(y, p) for p in probs]
    np.testing.assert_allclose(auroc_rows(y, probs), expected, rtol=1e-12)


def test_block_length_grows_with_autocorrelation():
    rng = np.random.default_rng(1)
    white = rng.normal(size=1000)
    smooth = np.convolve(rng.normal(size=1040), np.ones(40) / 40, mode="valid")[:1000]
    assert block_length([white]) <= 3 < block_length([smooth])


# -- simulated prediction sets: the verdict's error rates ------------------------------------
def _ar1(rng, shape, rho):
    e = rng.normal(size=shape)
    out = np.empty(shape)
    out[..., 0] = e[..., 0]
    for t in range(1, shape[-1]):
        out[..., t] = rho * out[..., t - 1] + math.sqrt(1 - rho**2) * e[..., t]
    return out


def _simulated(rng, effect: float, dates: int = 500, budgets: int = 2, seeds: int = 2, h: int = 5):
    """Labels like an h=5 threshold task (overlapping targets: neighbouring labels share 4 days),
    and budgets x seeds whose prediction errors are AR(1) with rho 0.8. With effect 0 the budgets
    are exchangeable; with effect e the largest budget's error scale is (1 - e) times the smallest's."""
    r = rng.normal(size=dates + h)
    future = np.lib.stride_tricks.sliding_window_view(r[1:], h)[:dates].sum(axis=1) / math.sqrt(h)
    y = (future > 0.5).astype(float)  # ~31% positive
    known = future + 1.5 * rng.normal(size=dates)  # what a model could know at t
    arms = []
    for b in range(budgets):
        scale = 1.0 - effect * b / (budgets - 1)
        logit = -0.9 + 0.6 * known + scale * _ar1(rng, (seeds, dates), 0.8)
        arms.append(Arm(f"{10 ** (6 + b)}", 1 / (1 + np.exp(-logit)), params=10.0 ** (6 + b)))
    return y, arms


def _verdict_rate(effect: float, sims: int, draws: int = 200) -> float:
    rng = np.random.default_rng(123)
    decided = 0
    for i in range(sims):
        y, arms = _simulated(rng, effect)
        d = paired_bootstrap(y, arms, draws=draws, seed=i, auroc=False)
        decided += scaling_verdict(compare(d, arms, [], metrics=("loss",)), len(arms))[0] != NO_EVIDENCE
    return decided / sims


def test_exchangeable_budgets_are_called_different_at_most_7_percent_of_the_time():
    """200 simulated studies with no size effect and autocorrelated errors: a 5% test may say
    "helps"/"hurts" at most 7% of the time (measured: 1.5%; seed resampling makes it conservative)."""
    assert _verdict_rate(0.0, sims=200) <= 0.07


def test_a_planted_effect_is_found_at_least_80_percent_of_the_time():
    """Largest budget's error scale 0.3x the smallest's: test loss lower by ~0.076 nats (measured on
    400K simulated dates), found on 500 dates with 2 seeds per budget (measured: 88%)."""
    assert _verdict_rate(0.7, sims=100) >= 0.80


def test_one_seed_or_identical_seeds_never_decide():
    rng = np.random.default_rng(3)
    y, arms = _simulated(rng, effect=0.95, seeds=1)
    d = paired_bootstrap(y, arms, draws=200, auroc=False)
    loss = [c for c in compare(d, arms, [], metrics=("loss",)) if c.kind == "scaling"]
    assert all(c.hi < 0 for c in loss)  # the interval alone would say "helps"...
    assert {c.verdict for c in loss} == {NO_EVIDENCE}  # ...but one seed never decides
    same = Arm("a", np.full((2, len(y)), 0.3), params=1e6)
    twin = Arm("b", np.full((2, len(y)), 0.3), params=1e7)
    d = paired_bootstrap(y, [same, twin], draws=50, auroc=False)
    c = compare(d, [same, twin], [], metrics=("loss",))[0]
    assert c.lo == c.hi == 0 and c.verdict == NO_EVIDENCE  # zero width: no verdict


def test_joint_draws_give_slope_difference_and_baseline_claims():
    rng = np.random.default_rng(4)
    y, arms = _simulated(rng, effect=0.9, budgets=3, seeds=3, dates=800)
    prior = Arm("prior", np.full((1, len(y)), y.mean()))
    d = paired_bootstrap(y, [*arms, prior], draws=300)
    claims = {(c.comparison, c.metric): c for c in compare(d, arms, [prior])}
    slope = claims[("slope per 10x params", "loss")]
    assert slope.verdict == HELPS and slope.hi < 0 and "block" in slope.method
    assert claims[("slope per 10x params", "auroc")].lo > 0  # AUROC rises with size
    big_minus_small = claims[(f"{arms[-1].name} - {arms[0].name}", "loss")]
    assert big_minus_small.estimate == pytest.approx(d.loss[2] - d.loss[0])
    assert claims[(f"{arms[-1].name} - prior", "loss")].verdict == BETTER
    assert scaling_verdict(list(claims.values()), 3)[0] == HELPS
    assert scaling_verdict([], 1)[0] == NO_EVIDENCE


def test_reversed_sizes_hurt():
    rng = np.random.default_rng(5)
    y, arms = _simulated(rng, effect=0.9, seeds=3, dates=800)
    flipped = [Arm(a.name, a.probs, params=p) for a, p in zip(arms, (1e7, 1e6), strict=True)]
    d = paired_bootstrap(y, flipped, draws=300, auroc=False)
    assert scaling_verdict(compare(d, flipped, [], metrics=("loss",)), 2)[0] == HURTS


# -- power law (descriptive, >= 4 budgets) ------------------------------------------------------
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



# -- baselines on a set whose answer is known -------------------------------------------------
def _fake_datamodule(n: int = 900, seed: int = 0) -> SimpleNamespace:
    """A random-walk close whose next label is 1 exactly when the last 1-day return is positive:
    learnable from stationary inputs; price levels drift far outside the training range."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.002, 0.01, n)))
    ret = np.r_[0.0, np.diff(np.log(close))]
    y = (ret > 0).astype(np.float32)
    raw = np.stack([close, close * 1.01, close * 0.99, rng.uniform(20, 80, n)], axis=1)
    ends = np.arange(30, n)
    splits = {s: SimpleNamespace(ends=e) for s, e in zip(("train", "val", "test"), np.array_split(ends, 3), strict=True)}
    return SimpleNamespace(raw_features=raw, feature_names=["close", "sma_12", "dema_9", "rsi_14"],
                           targets=torch.from_numpy(y), splits=splits)


def test_stationary_features_hold_no_price_level():
    dm = _fake_datamodule()
    x, names = stationary_features(dm)
    assert "close" not in names and {"ret_1", "ret_1_lag1", "sma_12_rel", "dema_9_rel", "rsi_14"} <= set(names)
    np.testing.assert_allclose(x[:, names.index("sma_12_rel")], 0.01, atol=1e-12)
    assert np.abs(x[-100:]).max() < 100  # the close grew ~6x; no input grew with it


def test_baselines_on_a_known_answer_tune_on_validation():
    dm = _fake_datamodule()
    fitted = fit_baselines(dm)
    scores = fitted.scores(dm)
    for split in ("val", "test"):
        assert scores["prior"][split]["auroc"] == 0.5  # one constant score: no ranking at all
        assert scores["logistic"][split]["auroc"] > 0.99 and scores["hist_gb"][split]["auroc"] > 0.97
        assert scores["logistic"][split]["loss"] < scores["prior"][split]["loss"]
        rate = dm.targets[dm.splits[split].ends].mean().item()
        assert scores["prior"][split]["brier"] == pytest.approx(rate * (1 - rate), abs=0.01)
    assert fitted.chosen["logistic"].startswith("C=") and "max_leaf_nodes" in fitted.chosen["hist_gb"]


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


def test_vix_is_the_unscaled_tier_column_at_each_test_sample():
    raw_vix = np.array([12.0, 18.0, 30.0, 22.0, 14.0])
    dm = SimpleNamespace(feature_names=["ret_1", "vix_close"], raw_features=np.stack([np.zeros(5), raw_vix], axis=1),
                         splits={"test": SimpleNamespace(ends=np.array([1, 2, 4]))})
    np.testing.assert_allclose(vix_at_test_windows(dm), [18.0, 30.0, 14.0])
    dm.feature_names = ["ret_1", "other"]
    assert vix_at_test_windows(dm) is None


def test_interval_text_formats():
    assert Interval(0.5, 0.4, 0.6).text(2) == "0.50 [0.40, 0.60]"
    assert pd.isna(Interval(math.nan, math.nan, math.nan).estimate)
