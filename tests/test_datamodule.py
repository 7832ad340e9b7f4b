"""forecast.data.datamodule: windows, splits, loaders and the scaler on a small synthetic tier."""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_run import SYMBOL, TEST_START, VAL_START, data_dir, dm_kwargs, synthetic_raw  # noqa: F401  (fixtures)

from forecast.data.datamodule import ForecastDataModule
from forecast.data.manifest import load_manifest, write_tracked
from forecast.data.raw import forward_adjust, read_raw, write_raw
from forecast.data.targets import threshold_targets
from forecast.data.tiers import build_and_write


@pytest.mark.parametrize("horizon,gap", [(1, 0), (5, 0), (3, 7)])
def test_no_target_crosses_a_split_boundary_and_no_split_loses_its_first_days(data_dir, horizon, gap):
    dm = ForecastDataModule(**dm_kwargs(data_dir, horizon=horizon, gap=gap))
    bounds = {"train": (pd.Timestamp.min, pd.Timestamp(VAL_START)),
              "val": (pd.Timestamp(VAL_START), pd.Timestamp(TEST_START)),
              "test": (pd.Timestamp(TEST_START), pd.Timestamp.max)}
    for name, split in dm.splits.items():
        lo, hi = bounds[name]
        prediction_day, last_target_day = dm.dates[split.ends], dm.dates[split.ends + horizon]
        assert (prediction_day >= lo).all() and (last_target_day < hi).all(), name
        assert split.size >= 20
    # the context reaches back: the first val sample is the first val day (+ gap), not L days later
    val_rows = np.flatnonzero(dm.dates >= pd.Timestamp(VAL_START))
    assert dm.splits["val"].ends[0] == val_rows[0] + gap
    # purged: the last training sample's last target day is the day before validation begins
    assert dm.splits["train"].ends[-1] + horizon == val_rows[0] - 1


def test_targets_come_from_unscaled_forward_adjusted_prices(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir, horizon=3, threshold=0.02))
    prices = forward_adjust(read_raw(data_dir, SYMBOL)).set_index("Date").loc[dm.dates]
    expected = threshold_targets(prices["High"].to_numpy(), prices["Close"].to_numpy(), 3, 0.02)
    for split in dm.splits.values():
        np.testing.assert_array_equal(dm.targets[split.ends].numpy(), expected[split.ends])


def test_batches_are_the_windows_they_claim(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    x, y = next(iter(dm.val_dataloader()))  # sequential: first val windows in order
    t = dm.splits["val"].ends[:3]
    assert x.shape == (dm._eval_batch(), 32, dm.n_features) and x.dtype == torch.float32
    for i, end in enumerate(t):
        torch.testing.assert_close(x[i], dm.features[end - 31 : end + 1])
        assert y[i] == dm.targets[end]


def on(tensor: torch.Tensor, device: str) -> bool:
    """Whether `tensor` lives on `device`: its type, and its index where `device` names one."""
    want = torch.device(device)
    return tensor.device.type == want.type and want.index in (None, tensor.device.index)


# cuda:0, as the Trainer's root device names it: torch.device("cuda") != torch.device("cuda:0")
@pytest.mark.parametrize("device", ["cpu", "meta", pytest.param("cuda:0", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_batches_are_gathered_where_the_features_live(data_dir, device):
    """The device-resident path: features and targets copied to the device once, every batch a
    gather there (on `meta` any step through the host would fail), the host copy untouched."""
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    features, targets = dm.resident(device)
    assert on(features, device) and on(targets, device) and dm.resident(device)[0] is features  # copied once
    assert dm.features.device.type == "cpu"  # fingerprint, predictions and baselines read the host copy
    on_device = dm.dataset("val", device)
    x, y = on_device.__getitems__([0, 5, 2])
    assert on(x, device) and on(y, device) and x.shape == (3, 32, dm.n_features)
    if device != "meta":
        hx, hy = dm.dataset("val").__getitems__([0, 5, 2])
        torch.testing.assert_close(x.cpu(), hx)
        torch.testing.assert_close(y.cpu(), hy)


def test_loaders_gather_on_the_trainers_device_unless_workers_make_the_batches(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    assert dm._loader_device() == torch.device("cpu")
    dm.num_workers = 2
    assert dm._loader_device() is None


def test_ddp_resharding_keeps_whole_batches_of_true_windows(data_dir):
    """What Lightning does to our loaders under DDP (a DistributedSampler swapped in, the rest
    rebuilt): each rank gets [B, L, F] batches of the right windows, and the ranks cover the split."""
    from lightning.pytorch.utilities.data import _update_dataloader  # Lightning's own re-sharding
    from torch.utils.data import DistributedSampler

    dm = ForecastDataModule(**dm_kwargs(data_dir))
    loader, ends = dm.val_dataloader(), dm.splits["val"].ends
    covered: set[int] = set()
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=False)
        positions = list(sampler)  # this rank's share of the split's samples
        xs, ys = zip(*_update_dataloader(loader, sampler), strict=True)
        assert all(b.shape[1:] == (32, dm.n_features) and len(b) <= loader.batch_size for b in xs)
        x, y = torch.cat(xs), torch.cat(ys)
        assert len(x) == len(positions)
        for i, p in enumerate(positions):
            t = ends[p]
            torch.testing.assert_close(x[i], dm.features[t - 31 : t + 1])
            assert y[i] == dm.targets[t]
        covered |= set(positions)
    assert covered == set(range(len(ends)))


def test_scaler_never_sees_validation_or_test_rows(data_dir, tmp_path):
    """Changing every val/test feature value must not move the scaler."""
    base = ForecastDataModule(**dm_kwargs(data_dir))
    tier_file = data_dir / "processed" / f"{SYMBOL}_a25.parquet"
    other = tmp_path / "data"
    write_raw(other, SYMBOL, read_raw(data_dir, SYMBOL), source="copy")
    frame = pd.read_parquet(tier_file)
    later = frame["Date"] >= pd.Timestamp(VAL_START)
    cols = [c for c in frame.columns if c != "Date"]
    frame.loc[later, cols] = frame.loc[later, cols] * 1000 + 7
    built = load_manifest(data_dir, "processed")[f"processed/{tier_file.name}"]
    tier_fields = {k: built[k] for k in ("tier", "tier_version", "sources")}
    write_tracked(other, "processed", other / "processed" / tier_file.name, frame, **tier_fields)  # vouched for
    moved = ForecastDataModule(**dm_kwargs(other))
    np.testing.assert_array_equal(base.scale_mean, moved.scale_mean)
    np.testing.assert_array_equal(base.scale_std, moved.scale_std)
    train_rows = base.dates < pd.Timestamp(VAL_START)
    assert abs(base.features[train_rows].mean()) < 0.05  # standardised on training rows
    assert abs(moved.features[~train_rows].mean()) > 10  # val/test were not refitted


def test_fingerprint_follows_the_numbers_a_model_sees(data_dir, tmp_path):
    """Same files and settings: same fingerprint; a rebuilt tier or other labels/splits: another."""
    base = ForecastDataModule(**dm_kwargs(data_dir)).fingerprint()
    assert ForecastDataModule(**dm_kwargs(data_dir, batch_size=7)).fingerprint() == base  # not data
    assert ForecastDataModule(**dm_kwargs(data_dir, horizon=3)).fingerprint() != base  # labels
    assert ForecastDataModule(**dm_kwargs(data_dir, val_start="2017-08-01")).fingerprint() != base  # splits
    rebuilt = tmp_path / "data"
    raw = synthetic_raw()
    raw.loc[raw.index[-1], "High"] *= 1.05  # one revised price on the last day
    write_raw(rebuilt, SYMBOL, raw, source="revised")
    build_and_write(rebuilt, SYMBOL, "a25")
    assert ForecastDataModule(**dm_kwargs(rebuilt)).fingerprint() != base
