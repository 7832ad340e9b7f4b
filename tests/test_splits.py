"""Samples, not windows, belong to splits; walk-forward folds; nothing a sample sees comes after t."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_run import SYMBOL, data_dir, dm_kwargs  # the same synthetic tier and settings

from forecast.core.errors import ForecastError
from forecast.core.files import md5_file
from forecast.data.datamodule import ForecastDataModule, split_bounds, split_samples
from forecast.data.manifest import load_manifest, write_manifest
from forecast.model import PatchTST

__all__ = ["data_dir"]  # a module-scoped fixture shared with test_train

TEST_END = "2018-12-31"


def test_split_samples_hold_their_targets_inside_their_split_for_any_bounds():
    """Property over random bounds, context, horizon and gap: every sample's prediction day and
    target days lie in its split, its context starts at or after row 0, and no such day is missed."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(30, 400))
        a, b = sorted(rng.choice(np.arange(2, n - 1), size=2, replace=False))
        bounds = {"train": (0, int(a)), "val": (int(a), int(b)), "test": (int(b), n)}
        L, h, gap = int(rng.integers(1, 40)), int(rng.integers(1, 8)), int(rng.integers(0, 4))
        y = rng.integers(0, 2, n).astype(float)
        y[n - h:] = np.nan  # the future past the data
        y[rng.integers(0, n, 3)] = np.nan  # and a few days without a label
        ends = split_samples(bounds, y, L, h, gap)
        for name, (lo, hi) in bounds.items():
            t = ends[name]
            first = lo + (gap if name != "train" else 0)
            assert ((t >= first) & (t + h < hi) & (t - L + 1 >= 0)).all(), (name, bounds, L, h)
            expected = [d for d in range(max(first, L - 1), hi - h) if not np.isnan(y[d])]
            assert t.tolist() == expected


def test_folds_cut_the_test_period_into_consecutive_blocks_each_trained_on_the_past():
    dates = pd.bdate_range("2010-01-01", "2016-12-30")
    val, test, end = pd.Timestamp("2013-01-01"), pd.Timestamp("2014-01-01"), pd.Timestamp("2016-06-30")
    whole = split_bounds(dates, val, test, end)
    val_len = whole["val"][1] - whole["val"][0]
    blocks = [split_bounds(dates, val, test, end, folds=4, fold=k) for k in range(4)]
    assert blocks[0]["val"] == whole["val"] and blocks[0]["train"] == whole["train"]  # fold 0 = the search's val
    covered = [r for b in blocks for r in range(*b["test"])]
    assert covered == list(range(*whole["test"]))  # consecutive, disjoint, the whole test period
    sizes = [b["test"][1] - b["test"][0] for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    for b in blocks:
        assert b["val"][1] == b["test"][0] and b["val"][1] - b["val"][0] == val_len
        assert b["train"] == (0, b["val"][0])  # expanding window
    with pytest.raises(ForecastError, match="too few"):
        split_bounds(dates, val, test, pd.Timestamp("2014-01-03"), folds=5, fold=4)


def _with_changed_rows(data_dir: Path, out: Path, after: str) -> Path:
    """A copy of the data folder whose tier rows AFTER `after` are wildly different."""
    for sub in ("raw", "processed"):
        (out / sub).mkdir(parents=True)
        for f in (data_dir / sub).iterdir():
            (out / sub / f.name).write_bytes(f.read_bytes())
    path = out / "processed" / f"{SYMBOL}_a25.parquet"
    frame = pd.read_parquet(path)
    later = frame["Date"] > pd.Timestamp(after)
    cols = [c for c in frame.columns if c != "Date"]
    frame.loc[later, cols] = frame.loc[later, cols] * 1000 + 7
    frame.to_parquet(path)
    entries = load_manifest(out, "processed")  # keep the copy verifiable: its manifest names the new md5
    for entry in entries.values():
        entry["md5"] = md5_file(path)
    write_manifest(out, "processed", entries)
    return out


@pytest.mark.parametrize("folds,fold", [(1, 0), (3, 1), (3, 2)])
def test_a_prediction_at_t_is_unchanged_by_any_change_after_t(data_dir, tmp_path, folds, fold):
    """Rows after a test day t change wildly: the model's input and output at t, and the scaler,
    stay bit-for-bit the same (features, context and scaling use nothing after t)."""
    base = ForecastDataModule(**dm_kwargs(data_dir, test_end=TEST_END, folds=folds, fold=fold))
    test = base.splits["test"]
    t = int(test.ends[len(test.ends) // 2])
    moved = ForecastDataModule(**dm_kwargs(_with_changed_rows(data_dir, tmp_path / "d", str(base.dates[t].date())),
                                           test_end=TEST_END, folds=folds, fold=fold))
    np.testing.assert_array_equal(base.scale_mean, moved.scale_mean)
    np.testing.assert_array_equal(base.scale_std, moved.scale_std)
    i = int(np.flatnonzero(test.ends == t)[0])
    x0, _ = base.dataset("test")[i]
    x1, _ = moved.dataset("test")[i]
    torch.testing.assert_close(x0, x1, rtol=0, atol=0)
    net = PatchTST(n_features=base.n_features, context_length=32, patch_len=8, stride=8, d_model=16,
                   n_layers=1, n_heads=2, d_ff=16).eval()
    with torch.no_grad():
        assert net(x0[None]).item() == net(x1[None]).item()
    later = np.flatnonzero(base.dates > base.dates[t])
    assert not torch.equal(base.features[later], moved.features[later])  # the change did land


def test_the_scaler_of_a_fold_sees_only_its_training_rows(data_dir, tmp_path):
    fold = ForecastDataModule(**dm_kwargs(data_dir, test_end=TEST_END, folds=3, fold=2))
    val_first_day = fold.dates[fold.bounds["val"][0]]
    moved = ForecastDataModule(**dm_kwargs(
        _with_changed_rows(data_dir, tmp_path / "d", str((val_first_day - pd.Timedelta(days=1)).date())),
        test_end=TEST_END, folds=3, fold=2))
    np.testing.assert_array_equal(fold.scale_mean, moved.scale_mean)
    first = ForecastDataModule(**dm_kwargs(data_dir, test_end=TEST_END, folds=3, fold=0))
    assert not np.array_equal(first.scale_mean, fold.scale_mean)  # later folds train on more rows


def test_fold_splits_and_test_end_in_the_data_module(data_dir):
    folds = [ForecastDataModule(**dm_kwargs(data_dir, test_end=TEST_END, folds=3, fold=k)) for k in range(3)]
    tested = np.concatenate([f.splits["test"].ends for f in folds])
    # every test-period day is scored once, except each block's last h=1 day (its target is in the next block)
    period = [r for f in folds for r in range(f.bounds["test"][0], f.bounds["test"][1] - 1)]
    assert tested.tolist() == period
    assert folds[-1].splits["test"].dates[-1] < pd.Timestamp(TEST_END)  # the last day's target is past test_end
    assert len({f.fingerprint() for f in folds}) == 3
    for f in folds:
        assert f.splits["train"].ends[-1] + 1 < f.splits["val"].ends[0] + 1  # purged by h


@pytest.mark.parametrize("over,message", [
    (dict(folds=0), "folds must be"),
    (dict(folds=3, fold=3), "fold < folds"),
    (dict(test_end="2018-01-01"), "must be after test_start"),
    (dict(test_end="2031-01-01"), "lies outside"),
    (dict(folds=40, test_end=TEST_END), "min_windows"),
])
def test_bad_fold_settings_are_one_clear_error(data_dir, over, message):
    with pytest.raises(ForecastError, match=message):
        ForecastDataModule(**dm_kwargs(data_dir, **over))
