"""The LightningDataModule: a processed tier -> windows and targets, split by date.

All rows of the tier live in ONE float32 tensor [rows, features]; a sample is the row index t
where its window ends. A batch is gathered in one indexing op (`X[t - L + 1 .. t]` for every t
in the batch), so there is no per-sample Python anywhere in the loop.

Split rule (`split_bounds`, `split_samples`): a SAMPLE belongs to the split that holds its
prediction day t and all of its target days t+1..t+h; its context rows t-L+1..t may reach back into
earlier splits (the past is known at t), so no split loses its first `context_length` days. A
training sample whose target days reach into validation is purged, and likewise validation into
test. Walk-forward folds (`folds`, `fold`) cut the test period into consecutive blocks; fold k
tests on block k, validates on the validation length right before it and trains on everything
earlier. The scaler is fitted on training rows only.

Training years (`train_years`, `train_design`, `train_draw`; `forecast.data.selection`): the training
samples may be thinned to the Y years before the (fold's) validation period or to Y whole calendar
years drawn at random; validation and test never move, and the scaler is fitted on the kept rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from forecast.core.domains import (
    Date,
    NonNegativeInt,
    NonNegativeSize,
    PositiveInt,
    Size,
    Symbol,
    Threshold,
    Years,
)
from forecast.core.errors import ForecastError
from forecast.data.manifest import read_verified
from forecast.data.paths import raw_path, resolve_data_dir, tier_path
from forecast.data.raw import forward_adjust, read_raw
from forecast.data.selection import (
    RepeatedPermutations,
    TrainDesign,
    TrainEpoch,
    TrainSelection,
    check_selection,
    epoch_samples,
    select_training,
    selection_summary,
)
from forecast.data.stationary import Inputs, stationary_features, stationary_names
from forecast.data.targets import Task, make_targets
from forecast.data.tiers import TIERS

TierName = Literal[tuple(TIERS)]  # type: ignore[valid-type]  # the registered tiers (forecast.data.tiers)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """The samples of one split: window-end rows and their dates."""

    name: str
    ends: np.ndarray  # int64 row indices t of the window ends
    dates: pd.DatetimeIndex

    @property
    def size(self) -> int:
        return len(self.ends)


class WindowDataset(Dataset):
    """Windows gathered from one tensor; a whole batch comes from one `__getitems__` call.

    The rows of the tier are contiguous in memory, so the window starting at row w is the
    contiguous run of L*F floats from w*F: an `as_strided` view [rows-L+1, L*F] over the same
    storage names every window without copying, and one `index_select` of B of its rows copies a
    batch (whole 4*L*F-byte runs, ~10x faster on CPU than fancy-indexing [B, L] row numbers).
    The DataLoader hands `__getitems__` the batch sampler's list of positions (PyTorch's batched
    fetch), so the loader stays a standard one that Lightning can re-shard for DDP. The gather runs
    where `features` live: on the GPU when the data module put them there, so a batch is never
    copied from the host.
    """

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, ends: np.ndarray, context_length: int):
        features = features.contiguous()  # [rows, F]
        rows, n_features = features.shape
        self.shape = (context_length, n_features)
        # [rows-L+1, L*F] view: row w is features[w : w+L] flattened (stride F floats between windows)
        self.windows = features.as_strided((rows - context_length + 1, context_length * n_features), (n_features, 1))
        self.targets = targets  # [rows] float32
        self.ends = torch.as_tensor(ends, dtype=torch.long, device=features.device)  # [N] window-end rows t
        self.starts = self.ends - (context_length - 1)  # [N] window-start rows t-L+1

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample: window [L, F] (a view) and target."""
        return self.windows[self.starts[i]].view(self.shape), self.targets[self.ends[i]]

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: windows [B, L, F] (one copy) and targets [B]."""
        index = batch_index(index, self.starts.device)  # [B]
        x = torch.index_select(self.windows, 0, self.starts[index])  # [B, L*F]
        return x.view(len(index), *self.shape), self.targets[self.ends[index]]


def batch_index(index: list[int], device: torch.device) -> torch.Tensor:
    """The sampler's positions as a long tensor on `device`, without a host sync.

    A plain copy of host memory to a GPU waits for it (a sync every step); from pinned memory it is
    queued behind the step's other work (`non_blocking`), and PyTorch's pinned-memory cache keeps the
    buffer alive until the copy is done. Pinned memory exists only beside a GPU, so elsewhere the
    positions are made on the device directly.
    """
    positions = torch.as_tensor(index, dtype=torch.long)  # [B] on the host
    if device.type == "cuda":
        return positions.pin_memory().to(device, non_blocking=True)
    return positions.to(device)


def _as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn: `WindowDataset.__getitems__` already returns the batch."""
    return batch


def batch_loader(dataset: WindowDataset, batch_size: int, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """A standard DataLoader (sampler + BatchSampler) whose every fetch is one gather.

    Under DDP, Lightning swaps the sampler for a `DistributedSampler` and keeps the rest.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=_as_is)


class ForecastDataModule(L.LightningDataModule):
    """Windows of a feature tier with threshold or direction targets.

    Args:
        symbol: The symbol whose tier and raw prices are read (e.g. SPY, SP500).
        tier: The feature tier (see `forecast data build --tier`).
        data_dir: Data directory holding raw/ and processed/ (default: $FORECAST_DATA_DIR or ./data).
        context_length: Days in one input window; the window ends at day t.
        task: `threshold` (does High touch Close[t]*(1+threshold) within `horizon` days) or
            `direction` (is Close[t+horizon] above Close[t]).
        horizon: Days ahead the target looks (h >= 1).
        threshold: The rise the threshold task asks for (0.01 = +1%).
        val_start: First date of the validation split.
        test_start: First date of the test period.
        test_end: Last date of the test period (default: the last date of the data).
        folds: Walk-forward folds: the test period [test_start, test_end] is cut into this many
            consecutive blocks of (almost) equal trading days. 1 = one test split.
        fold: Which fold this run is (0 .. folds-1): it tests on block `fold`, validates on the
            trading days right before it (as many as [val_start, test_start) holds) and trains on
            every day before those (expanding window). Fold 0 validates on the study's own val period.
        gap: Trading days dropped at the start of val and test (extra distance from the
            previous split; 0 = none needed, since no target crosses a boundary).
        scaler: `standard` scales each feature by mean/std of the TRAINING rows only; `none` keeps raw values.
        inputs: What the network sees: `tier` = the tier's columns; `stationary` = the stationary
            inputs the baselines use (`forecast.data.stationary`: returns, ranges and indicators
            relative to price, ...), built from the same tier, so model and baselines can be compared
            on identical inputs. Either way they are then scaled by `scaler`.
        batch_size: Micro-batch size, or `auto` to let the memory planner choose it (`forecast fit`).
        eval_batch_size: Batch size for val/test/predict (default: 4 x batch_size).
        num_workers: DataLoader workers (0 is fastest here: a batch is one tensor gather).
        min_windows: Fewest samples a split may have before it is refused as too small.
        predict_split: The split `forecast predict` writes probabilities for.
        train_years: Train only on this many years of history (null = every training year): the
            years right before the (fold's) validation period (`trailing`), or as many whole
            calendar years drawn at random from the training span (`blocks`). Validation and test
            dates do not move; the scaler is fitted on the kept rows.
        train_design: `trailing` (the most recent years) or `blocks` (random whole calendar years,
            the same amount of history, to tell more data from more recent data).
        train_draw: Seed of the `blocks` draw (another draw, other years).
        train_epoch: What one training epoch is when `train_years` thins the data: `all_years` =
            as many samples as every training year holds, drawn from the kept ones in repeated
            random permutations, so every selection gets the all-years run's optimizer steps
            (max_epochs and patience mean the same training); `kept` = one pass over the kept samples.
    """

    def __init__(
        self,
        symbol: Symbol = "SPY",
        tier: TierName = "a25",
        data_dir: str | None = None,
        context_length: Size = 80,
        task: Task = "threshold",
        horizon: Size = 1,
        threshold: Threshold = 0.01,
        val_start: Date = "2018-01-01",
        test_start: Date = "2021-01-01",
        test_end: Date | None = None,
        folds: PositiveInt = 1,
        fold: NonNegativeInt = 0,
        gap: NonNegativeSize = 0,
        scaler: Literal["standard", "none"] = "standard",
        inputs: Inputs = "tier",
        batch_size: Size | Literal["auto"] = 64,
        eval_batch_size: Size | None = None,
        num_workers: NonNegativeInt = 0,
        min_windows: PositiveInt = 100,
        predict_split: Literal["train", "val", "test"] = "test",
        train_years: Years | None = None,
        train_design: TrainDesign = "trailing",
        train_draw: NonNegativeInt = 0,
        train_epoch: TrainEpoch = "all_years",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Each argument's domain is its type, which the run's parser enforces (LightningCLI reads these
        # annotations). Checked here are only the relations between arguments, which no type states, so a
        # data module built in Python (tests, the bench, the report's folds) is held to them too.
        check_selection(train_years, train_design, train_draw)
        check_relations(task, threshold, val_start, test_start, test_end, folds, fold)
        self.train_years, self.train_design, self.train_draw = train_years, train_design, train_draw
        self.train_epoch = train_epoch
        self.symbol, self.tier = symbol, tier
        self.data_dir = resolve_data_dir(data_dir)
        self.context_length, self.task, self.horizon, self.threshold = context_length, task, horizon, threshold
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.predict_split = predict_split
        self.inputs = inputs
        self.feature_names = list(TIERS[tier].columns)  # the tier's columns (raw_features; baselines, VIX)
        # what the network sees, known before any file is read
        self.input_names = stationary_names(self.feature_names) if inputs == "stationary" else list(self.feature_names)
        self.n_features = len(self.input_names)
        self.folds, self.fold = folds, fold
        test_end_ts = None if test_end is None else pd.Timestamp(test_end)
        self._load(pd.Timestamp(val_start), pd.Timestamp(test_start), test_end_ts, gap, scaler, min_windows)

    # -- building ---------------------------------------------------------------------------
    def _load(self, val_start: pd.Timestamp, test_start: pd.Timestamp, test_end: pd.Timestamp | None,
              gap: int, scaler: str, min_windows: int) -> None:
        frame = _read_tier(self.data_dir, self.symbol, self.tier)
        prices = _read_prices(self.data_dir, self.symbol, frame["Date"])
        self.dates = pd.DatetimeIndex(frame["Date"])
        _check_dates(self.dates, val_start, test_start, test_end, self.symbol, self.tier)

        y = make_targets(prices["High"].to_numpy(), prices["Close"].to_numpy(), self.task, self.horizon, self.threshold)
        self.bounds = split_bounds(self.dates, val_start, test_start, test_end, self.folds, self.fold)
        ends = split_samples(self.bounds, y, self.context_length, self.horizon, gap)
        self.selection: TrainSelection = select_training(self.dates, self.bounds["train"], self.context_length - 1,
                                                         self.train_years, self.train_design, self.train_draw)
        self.samples_all_years = len(ends["train"])  # the all-years run's training samples
        ends["train"] = ends["train"][self.selection.kept[ends["train"]]]  # the kept years' samples only
        self.splits = {name: Split(name, ends[name], self.dates[ends[name]]) for name in SPLITS}
        for split in self.splits.values():
            if split.size < min_windows:
                raise ForecastError(
                    f"{split.name} split{self._fold_text()} has {split.size} samples (< min_windows={min_windows}); "
                    f"move val_start/test_start/test_end, use fewer folds or lower data.min_windows"
                )

        self.raw_features = frame[self.feature_names].to_numpy(dtype=np.float64)  # [rows, F] unscaled
        seen = self.raw_features
        if self.inputs == "stationary":
            seen, names = stationary_features(self.raw_features, self.feature_names)  # [rows, G]
            assert names == self.input_names, "stationary_names and stationary_features disagree"
        self.scale_mean, self.scale_std = _fit_scaler(seen, self.selection.kept, scaler)  # kept training rows
        scaled = (seen - self.scale_mean) / self.scale_std
        self.features = torch.from_numpy(scaled.astype(np.float32))  # [rows, F]
        self.targets = torch.from_numpy(np.nan_to_num(y, nan=-1.0).astype(np.float32))  # [rows]; -1 never sampled
        self.balance = {name: float(y[s.ends].mean()) for name, s in self.splits.items()}
        _check_both_classes(self.balance, self.task, self.threshold, self.horizon)

    def _fold_text(self) -> str:
        return f" of fold {self.fold}/{self.folds}" if self.folds > 1 else ""

    def setup(self, stage: str | None = None) -> None:
        logger = self.trainer.logger if self.trainer is not None else None
        if logger is not None:
            logger.log_metrics(self.split_summary(), step=0)  # sizes and balance, in TensorBoard too
        for name, split in self.splits.items():
            rank_zero_info(
                f"{name:>5}: {split.size:5d} samples {split.dates[0].date()}..{split.dates[-1].date()}, "
                f"{100 * self.balance[name]:.1f}% positive{self._fold_text()}"
            )
        if self.train_years is not None:
            rank_zero_info(self.selection_line())

    def selection_line(self) -> str:
        """`train years: trailing 4 years = 2014..2017, 1006 samples`: what the training selection kept."""
        years = self.selection.calendar_years
        shown = f"{years[0]}..{years[-1]}" if self.train_design == "trailing" or len(years) < 2 else \
            ", ".join(map(str, years))
        kept, epoch = self.splits["train"].size, self.epoch_samples
        steps = (f"; epochs of {epoch} samples drawn from them (the all-years epoch: its optimizer steps)"
                 if epoch > kept else "")
        return f"train years: {self.selection.describe()} = {shown}, {kept} samples{steps}"

    @property
    def epoch_samples(self) -> int:
        """Samples one training epoch draws (`train_epoch`; `forecast.data.selection.epoch_samples`)."""
        return epoch_samples(self.splits["train"].size, self.samples_all_years, self.train_epoch)

    def selection_summary(self) -> dict[str, object]:
        """The training selection as fit_summary.json records it (`forecast.data.selection`)."""
        return selection_summary(self.selection, self.splits["train"].dates, self.samples_all_years,
                                 self.epoch_samples)

    def split_summary(self) -> dict[str, float]:
        """Size and class balance of each split, as loggable numbers."""
        out: dict[str, float] = {}
        for name, split in self.splits.items():
            out[f"data/{name}_windows"] = float(split.size)
            out[f"data/{name}_positive_rate"] = self.balance[name]
        return out

    def state_dict(self) -> dict[str, list[str]]:
        """Kept in every checkpoint (Lightning's hook): the feature columns the model learned from,
        which `forecast test` compares with the run's before it tests."""
        return {"feature_names": list(self.feature_names)}

    def fingerprint(self) -> str:
        """md5 of exactly what a model sees: scaled features, targets and every split's window ends.

        Two data modules with the same fingerprint train and evaluate on identical numbers, whatever
        files or settings produced them; a re-downloaded or rebuilt tier changes it.
        """
        digest = hashlib.md5(self.features.numpy().tobytes())
        digest.update(self.targets.numpy().tobytes())
        for name in SPLITS:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.splits[name].ends, dtype=np.int64).tobytes())
        return digest.hexdigest()

    # -- loaders ----------------------------------------------------------------------------
    def dataset(self, split: str, device: torch.device | str | None = None) -> WindowDataset:
        """The windows of a split, gathered on `device` (default: where the features are)."""
        features, targets = self.resident(device)
        return WindowDataset(features, targets, self.splits[split].ends, self.context_length)

    def resident(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [rows, F] and targets [rows] on `device`, copied there once and kept (the whole
        tier is a few MB); `self.features` and `self.targets` stay on the host."""
        device = torch.device(device) if device is not None else self.features.device
        if device == self.features.device:
            return self.features, self.targets
        kept = getattr(self, "_resident", None)
        if kept is None or kept[0].device != device:
            kept = self._resident = (self.features.to(device), self.targets.to(device))
        return kept

    def _loader_device(self) -> torch.device | None:
        """The Trainer's device, where batches are gathered; the host when loader workers (which
        cannot use CUDA) make the batches, or without a Trainer."""
        if self.trainer is None or self.num_workers > 0:
            return None
        return self.trainer.strategy.root_device

    def _eval_batch(self) -> int:
        if self.eval_batch_size:
            return self.eval_batch_size
        return 4 * self.batch_size if isinstance(self.batch_size, int) else 256

    def train_dataloader(self) -> DataLoader:
        if not isinstance(self.batch_size, int):
            raise ForecastError("data.batch_size is 'auto' but no memory plan was applied (use `forecast fit`)")
        dataset = self.dataset("train", self._loader_device())
        if self.epoch_samples == len(dataset):
            return batch_loader(dataset, self.batch_size, shuffle=True, num_workers=self.num_workers)
        # a thinned selection: the all-years epoch's samples, drawn from the kept ones (equal steps)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=RepeatedPermutations(len(dataset), self.epoch_samples),
                          num_workers=self.num_workers, collate_fn=_as_is)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.dataset("val", self._loader_device()), self._eval_batch(), shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.dataset("test", self._loader_device()), self._eval_batch(), shuffle=False, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        split = self.predict_split
        return batch_loader(self.dataset(split, self._loader_device()), self._eval_batch(), shuffle=False, num_workers=self.num_workers)


# -- pure helpers ---------------------------------------------------------------------------
def check_relations(task: str, threshold: float, val_start: str, test_start: str, test_end: str | None,
                    folds: int, fold: int) -> None:
    """The settings that depend on each other: the threshold task needs a rise (> 0); validation starts
    before test, and test ends after it starts; the fold is one of the folds (0 .. folds-1).

    Raises:
        ForecastError: the first relation broken, naming both settings.
    """
    if task == "threshold" and not threshold > 0:  # High >= Close*(1+thr) with thr <= 0: (almost) always 1
        raise ForecastError(f"threshold must be > 0 for the threshold task (0.01 = +1%), got {threshold}")
    val, test = pd.Timestamp(val_start), pd.Timestamp(test_start)
    if not val < test:
        raise ForecastError(f"val_start ({val.date()}) must be before test_start ({test.date()})")
    if not fold < folds:
        raise ForecastError(f"folds must be >= 1 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if test_end is not None and not test < pd.Timestamp(test_end):
        raise ForecastError(f"test_end ({pd.Timestamp(test_end).date()}) must be after test_start ({test.date()})")


def _check_both_classes(balance: dict[str, float], task: str, threshold: float, horizon: int) -> None:
    """A split whose labels are all 0 or all 1 has no AUROC and teaches nothing: refuse it by name."""
    for name, rate in balance.items():
        if rate in (0.0, 1.0):
            label = "positive (1)" if rate == 1.0 else "negative (0)"
            raise ForecastError(
                f"every {name} label is {label} (task {task}, threshold {threshold}, horizon {horizon}); "
                "choose a task/threshold whose labels take both values"
            )


def _read_tier(data_dir: Path, symbol: str, tier: str) -> pd.DataFrame:
    path = tier_path(data_dir, symbol, tier)
    rebuild = f"run `forecast data build --data-dir {data_dir} --symbol {symbol} --tier {tier}`"
    if not path.exists():
        raise ForecastError(f"missing processed file {path}; {rebuild}")
    frame = read_verified(data_dir, "processed", path, rebuild)
    missing = [c for c in ("Date", *TIERS[tier].columns) if c not in frame.columns]
    if missing:
        raise ForecastError(f"{path} lacks tier {tier!r} columns {missing}; rebuild it")
    return frame


def _read_prices(data_dir: Path, symbol: str, dates: pd.Series) -> pd.DataFrame:
    """Forward-adjusted prices on exactly the tier's dates (labels come from these, unscaled)."""
    if not raw_path(data_dir, symbol).exists():
        raise ForecastError(f"missing raw prices {raw_path(data_dir, symbol)} (targets are built from them)")
    prices = forward_adjust(read_raw(data_dir, symbol)).set_index("Date")
    missing = pd.DatetimeIndex(dates).difference(prices.index)
    if len(missing):
        raise ForecastError(f"tier dates missing from raw {symbol} prices (first {missing[0].date()}); rebuild the tier")
    return prices.loc[pd.DatetimeIndex(dates)]


def _check_dates(dates: pd.DatetimeIndex, val_start, test_start, test_end, symbol: str, tier: str) -> None:
    first, last = dates[0], dates[-1]
    for name, when in (("val_start", val_start), ("test_start", test_start), ("test_end", test_end)):
        if when is not None and not first < when <= last:
            raise ForecastError(
                f"{name} {when.date()} lies outside the {symbol} {tier} data ({first.date()}..{last.date()})"
            )


def split_bounds(dates: pd.DatetimeIndex, val_start: pd.Timestamp, test_start: pd.Timestamp,
                 test_end: pd.Timestamp | None = None, folds: int = 1, fold: int = 0) -> dict[str, tuple[int, int]]:
    """Row ranges [start, stop) of train, val and test (a pure function of dates).

    One fold: train < val_start <= val < test_start <= test <= test_end. With K folds the test
    period's trading days are cut into K consecutive blocks (`np.array_split`: sizes differ by at
    most one day); fold k tests on block k, validates on the V days right before it, V being the
    trading days in [val_start, test_start), and trains on every day before those.

    Raises:
        ForecastError: a fold with no test days, or no training days left before its validation.
    """
    stamps = dates.values.astype("datetime64[ns]")
    val0 = int(np.searchsorted(stamps, np.datetime64(val_start, "ns"), side="left"))
    test0 = int(np.searchsorted(stamps, np.datetime64(test_start, "ns"), side="left"))
    stop = len(dates) if test_end is None else int(np.searchsorted(stamps, np.datetime64(test_end, "ns"), side="right"))
    if folds > stop - test0:  # at most one fold per test day, checked before array_split builds a block per fold
        raise ForecastError(f"the test period has {stop - test0} trading days: too few for {folds} folds")
    block = np.array_split(np.arange(test0, stop), folds)[fold]
    start = int(block[0])
    val_len = test0 - val0
    if start - val_len <= 0:
        raise ForecastError(f"fold {fold}/{folds} leaves no training days before its validation period")
    return {"train": (0, start - val_len), "val": (start - val_len, start), "test": (start, int(block[-1]) + 1)}


def split_samples(bounds: dict[str, tuple[int, int]], y: np.ndarray, context_length: int, horizon: int,
                  gap: int = 0) -> dict[str, np.ndarray]:
    """Prediction days t of each split (int64 rows), for the split's row range [a, b).

    t belongs to a split when a <= t and its target days t+1..t+h lie in the split (t + h < b):
    the last h days of train and val are purged, since their targets reach into the next split.
    Its context t-L+1..t may reach back before a (the past is known at t) but not before row 0.
    `gap` drops the first days of val and test; samples without a label (NaN) are left out.
    """
    out = {}
    for name, (a, b) in bounds.items():
        first = max(a + (gap if name != "train" else 0), context_length - 1)
        ends = np.arange(first, b - horizon, dtype=np.int64)
        out[name] = ends[~np.isnan(y[ends])]
    return out


def _fit_scaler(x: np.ndarray, train_rows: np.ndarray, scaler: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean/std from training rows only; constant features keep std 1."""
    if scaler == "none":
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x[train_rows].mean(axis=0)
    std = x[train_rows].std(axis=0)
    return mean, np.where(std > 0, std, 1.0)
