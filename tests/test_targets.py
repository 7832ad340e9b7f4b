"""Targets are pure functions of unscaled prices; checked against hand-computed labels."""

import numpy as np
import pytest

from forecast.data.targets import direction_targets, make_targets, threshold_targets

# A 10-row frame small enough to label by hand.
CLOSE = np.array([100.0, 101.0, 99.0, 100.0, 102.0, 101.0, 103.0, 100.0, 100.0, 104.0])
HIGH = np.array([100.5, 102.0, 100.0, 101.0, 103.5, 101.5, 103.2, 101.0, 100.9, 105.0])


def test_threshold_h1_by_hand():
    # t=0: High[1]=102 >= 101 -> 1; t=1: 100 >= 102.01 -> 0; t=2: 101 >= 99.99 -> 1;
    # t=3: 103.5 >= 101 -> 1; t=4: 101.5 >= 103.02 -> 0; t=5: 103.2 >= 102.01 -> 1;
    # t=6: 101 >= 104.03 -> 0; t=7: 100.9 >= 101 -> 0; t=8: 105 >= 101 -> 1; t=9: unknown
    expected = [1, 0, 1, 1, 0, 1, 0, 0, 1, np.nan]
    np.testing.assert_array_equal(threshold_targets(HIGH, CLOSE, 1, 0.01), expected)


def test_threshold_h3_looks_at_the_next_three_highs_only():
    # thr 2.5%: t=2 needs 101.475; High[3]=101 misses, High[4]=103.5 (two days on) reaches it.
    # t=3: 103.5 >= 102.5 -> 1; t=5: max(103.2, 101, 100.9) < 103.525 -> 0; last 3 unknown.
    expected = [0, 0, 1, 1, 0, 0, 0, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(threshold_targets(HIGH, CLOSE, 3, 0.025), expected)
    # the same threshold at h=1 says 0 at t=2: the horizon changes the label
    assert threshold_targets(HIGH, CLOSE, 1, 0.025)[2] == 0


def test_threshold_uses_high_not_close():
    high = np.array([10.0, 10.5, 10.0])
    close = np.array([10.0, 10.0, 10.0])  # Close never rises, the High does
    np.testing.assert_array_equal(threshold_targets(high, close, 1, 0.04), [1, 0, np.nan])


def test_direction_by_hand():
    expected = [1, 0, 1, 1, 0, 1, 0, 0, 1, np.nan]
    np.testing.assert_array_equal(direction_targets(CLOSE, 1), expected)
    y2 = direction_targets(CLOSE, 2)
    np.testing.assert_array_equal(y2[:3], [0, 0, 1])
    assert np.isnan(y2[-2:]).all()


def test_make_targets_rejects_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        make_targets(HIGH, CLOSE, "close", 1, 0.01)
