"""One trial = one `forecast fit` run built by LightningCLI (`run=False`) from the study's configs
plus the trial's sampled values, with Optuna's pruning callback added through `trainer_defaults`.

Failures are data. Every trial ends with a user attr `reason`:
  complete   COMPLETE, value = the best monitored score over its epochs (the best checkpoint's)
  pruned     PRUNED by the pruner
  diverged   PRUNED: the loss became NaN or infinite
  oom        FAIL: out of memory (CUDA or host); memory is released before the next trial
  error      FAIL: any other exception (its first line in `message`, the traceback in error.txt)
  aborted    FAIL: a second Ctrl-C ended it
  refused    FAIL: an enqueued trial fixes a value outside the search space; it never runs
  interrupted  (set at the start) FAIL when its process died and the trial was found stale

and its speed and memory (columns of trials.csv too): samples_per_sec, tokens_per_sec and mfu over
its training time, peak_memory_gb (CUDA's max allocated) and planner_peak_gb (the planner's estimate);
`compiled` says whether those figures are of the compiled network (False without --model.compile, or
where dynamo fell back to eager) and compiled_graphs how many graphs dynamo captured.
"""

from __future__ import annotations

import math
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import optuna
import torch
from lightning.pytorch.callbacks import DeviceStatsMonitor
from optuna_integration import PyTorchLightningPruningCallback

from forecast.core.errors import ForecastError
from forecast.core.files import write_text_atomic
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.hpo.display import Display
from forecast.hpo.space import OutsideSpace, Sample, SearchSpace
from forecast.hpo.stop import AbortTrial, StopControl
from forecast.hpo.storage import WORKER_ATTR, worker_id
from forecast.sizing.budget import GB
from forecast.sizing.devices import release_memory
from forecast.sizing.planner import estimate
from forecast.sizing.throughput import Throughput

OOM_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)
TRAIN_LOSS = "train/loss"
CHECK_EVERY = 32  # training steps between divergence checks (each check is one device sync)
ExtraCallbacks = Callable[[optuna.Trial], Sequence[L.Callback]]


class Diverged(Exception):
    """The loss became NaN or infinite."""


class TrialFailed(Exception):
    """A trial failed in a way the study records and moves past (the only error it catches)."""


def better(a: float, b: float | None) -> bool:
    """Whether score `a` beats `b` in the monitored metric's direction."""
    return b is None or (a < b if MONITOR_MODE == "min" else a > b)


class TrialMonitor(L.Callback):
    """Watches one trial's fit: divergence, best epoch, time to the first step, the display.

    Args:
        started: `time.time()` when the trial started (for the first-step overhead).
        on_epoch: called with (epoch, max_epochs) as each training epoch starts.
        stop: re-installs its signal handlers once Lightning has put in its own.
    """

    def __init__(self, started: float, on_epoch: Callable[[int, int], None], stop: StopControl | None) -> None:
        self.started = started
        self.on_epoch = on_epoch
        self.stop = stop
        self.first_step_s: float | None = None
        self.nonfinite: torch.Tensor | None = None  # count of NaN/inf step losses, kept on the device
        self.epochs_run = 0
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.plan: dict[str, Any] = {}
        self.measured: dict[str, Any] = {}  # throughput and peak device memory of the trial

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_signals_back()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_signals_back()
        batch = getattr(trainer.datamodule, "batch_size", None)
        self.plan = {"params": pl_module.num_parameters, "micro_batch": batch if isinstance(batch, int) else None,
                     "accumulate": int(trainer.accumulate_grad_batches),
                     "planner_peak_gb": _planner_peak_gb(trainer, pl_module, batch)}
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def measure(self, trainer: L.Trainer) -> None:
        """Throughput (samples/s, tokens/s, MFU) and peak device memory of the trial's training."""
        found = [c for c in trainer.callbacks if isinstance(c, Throughput)]
        summary = found[0].summary() if found else {}
        device = trainer.strategy.root_device
        peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None
        self.measured = {"samples_per_sec": summary.get("train_samples_per_sec"),
                         "tokens_per_sec": summary.get("train_tokens_per_sec"), "mfu": summary.get("train_mfu"),
                         "peak_memory_gb": peak}
        record = getattr(trainer.lightning_module, "compile_record", None)
        if record is not None:  # whether the speed above is the compiled program's (Forecaster.compile_record)
            compiled = record()
            self.measured.update({k: compiled[k] for k in ("compile", "compiled", "compiled_graphs")})

    def _take_signals_back(self) -> None:
        # Lightning installs its own SIGTERM handler right before the first loop; it would end
        # the trial at the next batch (SIGTERMException, which Optuna leaves RUNNING).
        if self.stop is not None:
            self.stop.install_signals()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_epoch(trainer.current_epoch, trainer.max_epochs)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.started

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        bad = (~torch.isfinite(loss.detach())).sum()  # no sync: stays on the device
        self.nonfinite = bad if self.nonfinite is None else self.nonfinite + bad
        if (batch_idx + 1) % CHECK_EVERY == 0:
            self._check_training(trainer, pl_module, weights=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the validation metrics see NaN probabilities: a diverged model ends here.
        if not trainer.sanity_checking:
            self._check_training(trainer, pl_module, weights=True)

    def _check_training(self, trainer: L.Trainer, pl_module: L.LightningModule, weights: bool) -> None:
        if self.nonfinite is not None and int(self.nonfinite) > 0:
            raise Diverged(f"{TRAIN_LOSS} became nan/inf in epoch {trainer.current_epoch}")
        if weights and not bool(torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all()):
            raise Diverged(f"weights became nan/inf in epoch {trainer.current_epoch}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.epochs_run = trainer.current_epoch + 1  # this epoch's training is done (even if pruned now)
        score = _metric(trainer, MONITOR)
        if score is None:
            return
        if not math.isfinite(score):
            raise Diverged(f"{MONITOR} is {score} at epoch {trainer.current_epoch}")
        if better(score, self.best_score):
            self.best_score, self.best_epoch = score, trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs_run = trainer.current_epoch + 1
        loss = _metric(trainer, TRAIN_LOSS)
        if loss is not None and not math.isfinite(loss):
            raise Diverged(f"{TRAIN_LOSS} is {loss} at epoch {trainer.current_epoch}")


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


def _planner_peak_gb(trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> float | None:
    """The memory planner's estimate of this trial's peak (GB), beside the measured one."""
    args = getattr(getattr(pl_module, "net", None), "init_args", None)
    if args is None or not isinstance(batch, int):
        return None
    device = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
    try:
        plan = estimate(**args, precision=str(trainer.precision), device=device, micro_batch=batch,
                        accumulate=int(trainer.accumulate_grad_batches))
    except ForecastError:  # a precision the planner does not model
        return None
    return plan.peak_bytes / GB


@dataclass
class TrialSetup:
    """What every trial of a study shares.

    Args:
        base_args: configs, trial defaults and the user's flags, as LightningCLI arguments.
        replay_args: the user's own configs and flags (what a replay command repeats).
        space: the search space bound to the budget.
        log_root: TensorBoard save_dir (the `--log-dir`).
        study: the study name (TensorBoard name; trials log to `<log_root>/<study>/trial_NNNN`).
    """

    base_args: list[str]
    replay_args: list[str]
    space: SearchSpace
    log_root: Path
    study: str
    extra_callbacks: ExtraCallbacks | None = field(default=None, repr=False)

    def trial_dir(self, number: int) -> Path:
        return self.log_root / self.study / f"trial_{number:04d}"

    def trial_args(self, sample: Sample, number: int) -> list[str]:
        """Full LightningCLI arguments of one trial: base, draw, then where it logs."""
        logger = "--trainer.logger.init_args."
        return [*self.base_args, *sample.overrides,
                f"{logger}save_dir={self.log_root}", f"{logger}name={self.study}",
                f"{logger}version=trial_{number:04d}", f"{logger}default_hp_metric=false"]

    def replay(self, sample: Sample) -> str:
        return "forecast fit " + shlex.join([*self.replay_args, *sample.overrides])


class Objective:
    """The function `study.optimize` calls: run one trial, record it, return its score.

    Args:
        setup: what the trials share.
        display: where progress goes.
        stop: the stop control (knows when a trial is training, for the second Ctrl-C).
    """

    def __init__(self, setup: TrialSetup, display: Display, stop: StopControl | None = None) -> None:
        self.setup = setup
        self.display = display
        self.stop = stop

    def __call__(self, trial: optuna.Trial) -> float:
        started = time.time()
        try:
            sample = self.setup.space.suggest(trial)
        except OutsideSpace as err:  # stored parameters are data: checked against the space, never run
            trial.set_user_attr("reason", "refused")
            trial.set_user_attr("message", str(err))
            raise TrialFailed(f"refused: {err}") from None
        folder = self.setup.trial_dir(trial.number)
        self._record_start(trial, sample, folder)
        label = f"#{trial.number} {sample.arch.id}"
        self.display.update(trial=label, epoch="starting")
        monitor = TrialMonitor(started, lambda e, n: self.display.update(epoch=f"epoch {e + 1}/{n}"), self.stop)
        shown = {**sample.values, **sample.arch.model_kwargs(), "arch": sample.arch.id, "trial": trial.number}
        value, reason, message = None, "complete", ""
        try:
            value = self._fit(trial, self.setup.trial_args(sample, trial.number), monitor, shown)
            if value is None:
                reason, message = "error", f"no {MONITOR} was logged (is there a validation split?)"
        except optuna.TrialPruned as err:
            reason, message = "pruned", str(err)
        except Diverged as err:
            reason, message = "diverged", str(err)
        except OOM_ERRORS as err:
            reason, message = "oom", _first_line(err) or type(err).__name__
        except AbortTrial as err:
            reason, message = "aborted", str(err)
        except Exception as err:
            if self.stop is not None and self.stop.aborted:
                # after a second stop any error is the abort's own (Lightning's teardown, for one,
                # fails on a network still on `meta` when the abort came before the model was built)
                reason, message = "aborted", f"aborted by a second {self.stop.abort_signal} ({type(err).__name__} after it)"
            else:
                reason, message = "error", f"{type(err).__name__}: {_first_line(err)}"
                _write_traceback(folder)
        # Out of the except blocks the traceback, and the model and optimizer its frames hold,
        # are gone; only now can the memory really be given back.
        release_memory()
        self._record_end(trial, monitor, reason, message, started)
        self.display.update(trial="-", epoch="")
        return _outcome(value, reason, message)

    def _fit(self, trial: optuna.Trial, args: list[str], monitor: TrialMonitor,
             shown: dict[str, Any]) -> float | None:
        """Build the trial's run and fit it; `shown` joins the run's HParams (the trial's draw)."""
        from forecast.training.cli import cli_main

        extra = list(self.setup.extra_callbacks(trial)) if self.setup.extra_callbacks else []
        pruning = PyTorchLightningPruningCallback(trial, monitor=MONITOR)
        try:
            cli = cli_main(args, run=False, trainer_defaults={"callbacks": [monitor, pruning, *extra]})
        except SystemExit as exit_:  # the parser rejected this draw (its message is on stderr)
            raise RuntimeError(f"the trial's arguments were rejected by the parser (exit {exit_.code})") from None
        cli.model.shown_hparams.update(shown)
        if self.stop is not None:
            self.stop.in_trial = True
        if cli.trainer.strategy.root_device.type == "cuda":  # device memory in TensorBoard as it trains
            cli.trainer.callbacks.append(DeviceStatsMonitor(cpu_stats=False))
        try:
            cli.trainer.fit(cli.model, cli.datamodule)
        finally:
            monitor.measure(cli.trainer)
            if self.stop is not None:
                self.stop.in_trial = False
        ckpt = cli.trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_score is not None:
            return float(ckpt.best_model_score)
        return monitor.best_score  # a config without ModelCheckpoint: the monitor saw every epoch

    def _record_start(self, trial: optuna.Trial, sample: Sample, folder: Path) -> None:
        arch = sample.arch
        attrs = {
            WORKER_ATTR: worker_id(), "reason": "interrupted", "message": "",
            "arch_id": arch.id, "d_model": arch.d_model, "n_layers": arch.n_layers, "n_heads": arch.n_heads,
            "d_ff": arch.d_ff, "ffn_ratio": arch.ffn_ratio, "params": arch.params,
            "replay": self.setup.replay(sample), "log_dir": str(folder),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _record_end(self, trial: optuna.Trial, monitor: TrialMonitor, reason: str, message: str,
                    started: float) -> None:
        attrs = {
            **monitor.plan, **monitor.measured, "reason": reason, "message": message, "epochs_run": monitor.epochs_run,
            "best_epoch": monitor.best_epoch, "wall_s": round(time.time() - started, 3),
            "first_step_s": None if monitor.first_step_s is None else round(monitor.first_step_s, 3),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def _outcome(value: float | None, reason: str, message: str) -> float:
    """Turn a trial's end into Optuna's terms: a value, TrialPruned, or a caught failure."""
    if reason == "complete" and value is not None:
        return value
    if reason in ("pruned", "diverged"):
        raise optuna.TrialPruned(message)
    if reason == "aborted":
        raise AbortTrial(message)  # not caught by optimize: the trial FAILs and the search ends
    raise TrialFailed(f"{reason}: {message}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _write_traceback(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "error.txt", traceback.format_exc())
    except OSError:
        pass  # the record in the study is what matters
