"""The Trainer a run gets: its callbacks, what depends on its logger, its checkpoint writer, its threads.

In the order they are built:
- `default_callbacks`: what every run has (learning rates, a line per epoch, throughput; predict also
  writes its CSV), plus the caller's (the search's pruning callback);
- `run_callbacks`: those, plus the checkpoint of `--checkpoint.*` unless checkpointing is off or the run
  is a smoke test;
- `finish_trainer`: no learning-rate monitor without a logger, `--throughput.peak_tflops` given to the
  throughput monitor, checkpoints written atomically;
- `start_threads`: the thread policy's choice for the model, and on the CPU a trial of the candidates on
  the fit's first steps (`forecast.core.threads`); on the CPU, how long an epoch will take.

The Trainer class itself, its options typed, is `forecast.training.typed.Trainer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from forecast.core.threads import POLICY
from forecast.sizing.machine import epoch_estimate
from forecast.sizing.throughput import Throughput
from forecast.training.callbacks import EpochLine, MeasuredThreads, PredictionCSV
from forecast.training.checkpoints import AtomicCheckpointIO
from forecast.training.typed import ModelCheckpoint


def default_callbacks(subcommand: str | None, extra: Iterable[Callback] = ()) -> list[Callback]:
    """The callbacks of every run (`trainer_defaults`), then `extra`."""
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="step"), EpochLine(), Throughput()]
    if subcommand == "predict":
        callbacks.append(PredictionCSV())
    return [*callbacks, *extra]


def run_callbacks(init: Any) -> list[Callback]:
    """The Trainer's callbacks from the built config `init`: those configured, and our ModelCheckpoint
    (`--checkpoint.*`) unless `--trainer.enable_checkpointing=false` (Lightning refuses a checkpoint
    callback then) or `--trainer.fast_dev_run` (its save_last would write ./checkpoints/last.ckpt)."""
    callbacks = init.trainer.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
    if init.trainer.get("enable_checkpointing") is not False and not init.trainer.get("fast_dev_run"):
        callbacks += checkpoint_callbacks(init.checkpoint)
    return callbacks


def checkpoint_callbacks(best: ModelCheckpoint) -> list[ModelCheckpoint]:
    """`--checkpoint.*`, and the last checkpoint always resumable: when the best checkpoints are
    weights-only (a large model's, evaluated and never resumed), `last.ckpt` comes from a second
    ModelCheckpoint that keeps the optimizer state, in the same folder."""
    if not (best.save_weights_only and best.save_last):
        return [best]
    last = ModelCheckpoint(dirpath=best.dirpath, save_top_k=0, save_last=best.save_last)
    best.save_last = False
    return [best, last]


def finish_trainer(trainer: Any, init: Any) -> None:
    """What depends on the built Trainer: no learning-rate monitor without a logger
    (`--trainer.logger=false`: Lightning refuses one), the throughput monitor's peak FLOP/s where
    `--throughput.peak_tflops` gives one (MFU on any device), and checkpoints written atomically
    (a user's own checkpoint plugin is left alone)."""
    if trainer.logger is None:
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
    peak = init.get("throughput.peak_tflops")
    for monitor in (c for c in trainer.callbacks if isinstance(c, Throughput)):
        monitor.peak_flops = None if peak is None else peak * 1e12
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def start_threads(trainer: Any, model: Any, datamodule: Any, fit: bool) -> None:
    """The threads a fit starts with: the policy's choice (or one measured before for this size); on
    the CPU, a trial of the candidates on the first steps (`MeasuredThreads`), except with compile,
    which trains on one thread there (`one_thread_for_cpu_inductor`). Then, for `forecast fit` on the
    CPU, how long an epoch will take.

    Args:
        fit: a `forecast fit` (the epoch estimate); False for a search trial or a report retrain.
    """
    cpu = trainer.strategy.root_device.type != "cuda"
    POLICY.apply(model.num_parameters)
    trial = POLICY.trial(model.num_parameters) if cpu and not model.hparams.get("compile") else None
    if trial is not None:
        trainer.callbacks.append(MeasuredThreads(trial, model.num_parameters))
    arch = getattr(model.net, "init_args", None)
    if fit and cpu and arch is not None:
        rank_zero_info(epoch_estimate(arch, datamodule.epoch_samples))  # a selection: the all-years epoch
