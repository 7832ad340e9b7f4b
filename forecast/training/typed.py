"""Lightning's Trainer and callbacks, their numeric options typed with the domains they accept.

LightningCLI builds `--trainer.*`, `--early_stopping.*` and `--checkpoint.*` from the signatures of
these classes, so `--trainer.accumulate_grad_batches 0` or `--early_stopping.patience -1` is refused
at parse time in one line (forecast.core.domains), not by a traceback from deep inside Lightning.
Each class only re-declares the typed parameters and hands everything to Lightning's own; options
not listed here keep Lightning's types (jsonargparse follows `**kwargs` into the parent's signature).

The classes keep Lightning's names: a callback's state in a checkpoint is keyed by its class name,
so checkpoints written before and after stay interchangeable.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import lightning.pytorch as L
from lightning.pytorch import callbacks
from lightning.pytorch.accelerators import Accelerator, AcceleratorRegistry
from lightning.pytorch.strategies import Strategy, StrategyRegistry

from forecast.core.domains import (
    CheckpointName,
    ClosedUnitInterval,
    CountOrAll,
    DeviceSpec,
    Duration,
    FiniteFloat,
    NonNegativeFiniteFloat,
    NonNegativeInt,
    PositiveInt,
    UnitFraction,
)
from forecast.core.metric_names import logged

# An int counts batches, a float is a fraction of them (Lightning's convention).
Batches = NonNegativeInt | UnitFraction | None


# What a validation epoch logs: a name outside it fails only after the first epoch, inside Lightning.
Monitored = Literal[logged("val")]  # type: ignore[valid-type]

# Names Lightning resolves through its registries (or "auto"): anything else fails inside Trainer().
# Strategies that start their processes by spawn or fork are left out: they send the module to and from
# the children by pickling, which a network built on `meta` and the run's history in the module do not
# survive (predict failed; fit left the parent's network unloaded). `ddp` runs the command once per device.
StrategyName = Literal[("auto", *sorted(  # type: ignore[valid-type]
    name for name in StrategyRegistry.available_strategies()
    if StrategyRegistry[name]["init_params"].get("start_method") not in ("spawn", "fork", "forkserver")))]
AcceleratorName = Literal[("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))]  # type: ignore[valid-type]


class TimeSpan(TypedDict, total=False):
    """A duration as Lightning takes it in a dict (`{hours: 2, minutes: 30}`)."""

    days: NonNegativeInt
    hours: NonNegativeInt
    minutes: NonNegativeInt
    seconds: NonNegativeInt


class Trainer(L.Trainer):
    """Lightning's Trainer (see its documentation for every option).

    Args:
        num_nodes: Machines for distributed training (>= 1).
        fast_dev_run: Run this many batches (true: 1) of train/val/test to find bugs; writes nothing.
        max_epochs: Stop after this many epochs (-1: no limit).
        min_epochs: Train at least this many epochs.
        max_steps: Stop after this many optimizer steps (-1: no limit).
        min_steps: Train at least this many optimizer steps.
        limit_train_batches: Batches per training epoch: an int counts them, a float in (0, 1] is a fraction.
        limit_val_batches: As limit_train_batches, for validation.
        limit_test_batches: As limit_train_batches, for test.
        limit_predict_batches: As limit_train_batches, for predict.
        overfit_batches: Train and validate on this many (int) or this fraction (float) of training batches.
        check_val_every_n_epoch: Validate every this many epochs (None: by val_check_interval only).
        num_sanity_val_steps: Validation batches run before training (-1: all).
        log_every_n_steps: Log every this many training steps.
        accumulate_grad_batches: Micro-batches accumulated per optimizer step.
        gradient_clip_val: Clip gradients at this value (None or 0: no clipping).
        gradient_clip_algorithm: "norm" or "value".
        reload_dataloaders_every_n_epochs: Rebuild the dataloaders every this many epochs (0: never).
        max_time: Stop after this long: "DD:HH:MM:SS" or {days, hours, minutes, seconds}.
        val_check_interval: Validate every this many batches (int), this fraction of an epoch
            (float), or this long (a duration).
        devices: Devices to use: "auto", a count, -1 for all, or a list / "0,1" of ids.
        accelerator: "auto", "cpu", "gpu", "cuda", ... (Lightning's registry), or an Accelerator.
        strategy: "auto", "ddp", "fsdp", ... (Lightning's registry), or a Strategy.
    """

    def __init__(
        self,
        *,
        num_nodes: PositiveInt = 1,
        fast_dev_run: bool | NonNegativeInt = False,
        max_epochs: CountOrAll | None = None,
        min_epochs: NonNegativeInt | None = None,
        max_steps: CountOrAll = -1,
        min_steps: NonNegativeInt | None = None,
        limit_train_batches: Batches = None,
        limit_val_batches: Batches = None,
        limit_test_batches: Batches = None,
        limit_predict_batches: Batches = None,
        overfit_batches: NonNegativeInt | ClosedUnitInterval = 0.0,
        check_val_every_n_epoch: PositiveInt | None = 1,
        num_sanity_val_steps: CountOrAll | None = None,
        log_every_n_steps: PositiveInt | None = None,
        accumulate_grad_batches: PositiveInt = 1,
        gradient_clip_val: NonNegativeFiniteFloat | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] | None = None,
        reload_dataloaders_every_n_epochs: NonNegativeInt = 0,
        max_time: Duration | TimeSpan | None = None,
        val_check_interval: PositiveInt | UnitFraction | Duration | TimeSpan | None = None,
        devices: list[NonNegativeInt] | PositiveInt | Literal[-1] | DeviceSpec = "auto",
        accelerator: AcceleratorName | Accelerator = "auto",
        strategy: StrategyName | Strategy = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_nodes=num_nodes, fast_dev_run=fast_dev_run, max_epochs=max_epochs, min_epochs=min_epochs,
            max_steps=max_steps, min_steps=min_steps, limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches, limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches, overfit_batches=overfit_batches,
            check_val_every_n_epoch=check_val_every_n_epoch, num_sanity_val_steps=num_sanity_val_steps,
            log_every_n_steps=log_every_n_steps, accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm,
            reload_dataloaders_every_n_epochs=reload_dataloaders_every_n_epochs, max_time=max_time,
            val_check_interval=val_check_interval, devices=devices, accelerator=accelerator, strategy=strategy,
            **kwargs,
        )


class EarlyStopping(callbacks.EarlyStopping):
    """Lightning's EarlyStopping.

    Args:
        monitor: The metric watched.
        min_delta: Smallest change that counts as an improvement (>= 0).
        patience: Validation checks without improvement before stopping (>= 0).
        mode: "min" or "max".
        stopping_threshold: Stop once the metric reaches this value.
        divergence_threshold: Stop once the metric is worse than this value.
    """

    def __init__(
        self,
        monitor: Monitored,
        min_delta: NonNegativeFiniteFloat = 0.0,
        patience: NonNegativeInt = 3,
        mode: Literal["min", "max"] = "min",
        stopping_threshold: FiniteFloat | None = None,
        divergence_threshold: FiniteFloat | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(monitor=monitor, min_delta=min_delta, patience=patience, mode=mode,
                         stopping_threshold=stopping_threshold, divergence_threshold=divergence_threshold,
                         **kwargs)


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint.

    Args:
        monitor: The metric the best checkpoints are chosen by.
        filename: The best checkpoints' file name, without `.ckpt` (`forecast test` finds `best-*`).
        mode: "min" or "max".
        save_top_k: Best checkpoints kept (-1: all, 0: none).
        every_n_train_steps: Save every this many training steps (None or 0: off).
        every_n_epochs: Save every this many epochs (None: every epoch, 0: off).
    """

    def __init__(
        self,
        monitor: Monitored | None = None,
        filename: CheckpointName | None = None,
        mode: Literal["min", "max"] = "min",
        save_top_k: CountOrAll = 1,
        every_n_train_steps: NonNegativeInt | None = None,
        every_n_epochs: NonNegativeInt | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(monitor=monitor, filename=filename, mode=mode, save_top_k=save_top_k,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs, **kwargs)
