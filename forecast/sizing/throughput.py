"""Training throughput of every run: samples/s, tokens/s, FLOP/s and MFU.

`Throughput` is a plain Lightning `Callback` around Fabric's public `Throughput` meter: rolling rates
in TensorBoard as `train/device/samples_per_sec`, `.../items_per_sec` (tokens), `.../flops_per_sec`,
`.../mfu`, plus the whole run's averages over its training time (validation excluded), which
`forecast fit` writes to fit_summary.json and the search records per trial.

The clock is read (and a CUDA device synchronised) only on the steps whose metrics are logged
(`trainer.log_every_n_steps`) and at each epoch's last batch; the batches between are counted, so a
small, launch-bound model keeps the GPU's queue full instead of draining it every step. The same
code runs on every device: on the CPU the synchronisation is a no-op.

FLOPs are the model's training matmul FLOPs (`Forecaster.flops_per_batch`, from
`forecast.sizing.budget.training_flops_per_sample`); MFU divides them by a peak: the one given
(`--throughput.peak_tflops`, which lets a CPU run compute an MFU as well), else the device's dense
peak for the run's compute dtype. Lightning's table has no entry for the name an H200 reports
("NVIDIA H200") and lists its sparse figures, so the H200's dense peaks are given here.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.utilities.throughput import Throughput as Meter
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.utilities import rank_zero_only

# Timed batches per rolling rate in TensorBoard (Lightning's default of 100 is more than a 2M epoch);
# a batch is timed every `log_every_n_steps`, so a rate spans WINDOW x that many batches.
WINDOW = 10
# Dense peaks (FLOP/s) of the H200 SXM: the H100 SXM's GH100 at the same clocks (NVIDIA datasheets).
H200_DENSE = {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}
PREFIX = "train/"


def _samples(batch: Any) -> int:
    return len(batch[1])  # (x [B, L, F], y [B])


class Throughput(L.Callback):
    """Samples/s, tokens/s, FLOP/s and MFU of training, logged on logging steps; `summary()` of the run.

    Args:
        window: timed batches per rolling rate logged to TensorBoard (at least 2).
        peak_flops: the peak FLOP/s MFU divides by (e.g. a CPU's measured rate); None: the
            device's dense peak where it is known (CUDA), else no MFU.
    """

    def __init__(self, window: int = WINDOW, peak_flops: float | None = None) -> None:
        self.window = max(2, window)
        self.peak_flops = peak_flops
        self.available_flops: float | None = None
        self.tokens_per_sample = 1
        self.flops_per_sample: int | None = None
        self.meter: Meter | None = None  # Fabric's rolling-window meter of this fit
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.batches = self.samples = self.tokens = 0
        self.pending_flops = 0  # FLOPs of the batches since the last timed one
        self.timed_seconds = 0.0  # training time at the last timed batch
        self.timed_samples = 0
        self.start = 0.0
        self.timed_at: list[int] = []  # the batch count at every timed batch (the clock read, the device synced)

    # -- hooks ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self.available_flops = self.peak_flops or device_peak(device, compute_dtype(str(trainer.precision)))
        net = getattr(pl_module, "net", None)
        self.tokens_per_sample = tokens_per_sample(net) if net is not None else 1
        self.flops_per_sample = getattr(pl_module, "flops_per_sample", None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter = Meter(available_flops=self.available_flops, world_size=trainer.world_size,
                           window_size=self.window)
        self._reset_counts()
        _synchronize(trainer.strategy.root_device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = _samples(batch)
        self.batches += 1
        self.samples += n
        self.tokens += n * self.tokens_per_sample
        self.pending_flops += getattr(pl_module, "flops_per_batch", None) or 0
        if self._due(trainer):
            self._time(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.meter is not None and self.samples > self.timed_samples:  # a run cut by max_steps
            self._time(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.meter is None:
            return
        _synchronize(trainer.strategy.root_device)  # training's queued work is training's time
        self.paused = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.meter is None or not hasattr(self, "paused"):
            return
        _synchronize(trainer.strategy.root_device)
        self.start += time.perf_counter() - self.paused  # validation's time is not training's
        del self.paused

    # -- timing -----------------------------------------------------------------------------
    def _due(self, trainer: L.Trainer) -> bool:
        """Time this batch: metrics are logged at it (as Lightning counts), or the epoch ends."""
        every = trainer.log_every_n_steps
        return bool(trainer.is_last_batch or (every and self.batches % every == 0))

    def _time(self, trainer: L.Trainer) -> None:
        _synchronize(trainer.strategy.root_device)
        seconds = time.perf_counter() - self.start
        if seconds <= self.timed_seconds:  # the meter needs strictly increasing times
            return
        self.meter.update(time=seconds, batches=self.batches, samples=self.samples, lengths=self.tokens,
                          flops=self.pending_flops or None)
        self.pending_flops = 0
        self.timed_seconds, self.timed_samples = seconds, self.samples
        self.timed_at.append(self.batches)
        self._log(trainer, self.meter.compute())

    @rank_zero_only
    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        rates = {f"{PREFIX}{k}": v for k, v in metrics.items() if k.endswith(("_per_sec", "mfu"))}
        if not rates:
            return
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=trainer.global_step)

    # -- results ----------------------------------------------------------------------------
    def steady(self) -> dict[str, float]:
        """The rolling rates over the last `window` timed batches (empty until the window is full)."""
        if self.meter is None:
            return {}
        return {k: v for k, v in self.meter.compute().items() if k.startswith("device/")}

    def summary(self) -> dict[str, float | None]:
        """Averages over the whole training time of the run (validation excluded)."""
        if self.timed_seconds <= 0 or self.timed_samples == 0:
            return {"train_samples_per_sec": None, "train_tokens_per_sec": None, "train_mfu": None}
        rate = self.timed_samples / self.timed_seconds
        flops = None if self.flops_per_sample is None else rate * self.flops_per_sample
        return {"train_samples_per_sec": rate, "train_tokens_per_sec": rate * self.tokens_per_sample,
                "train_flops_per_sec": flops,
                "train_mfu": flops / self.available_flops if flops is not None and self.available_flops else None}


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compute_dtype(precision: str) -> torch.dtype | str:
    """The dtype matmuls run in under a Lightning precision ("tfloat32" for fp32 with TF32 allowed)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return "tfloat32" if torch.get_float32_matmul_precision() != "highest" else torch.float32


def device_peak(device: torch.device, dtype: torch.dtype | str) -> float | None:
    """The dense peak FLOP/s of `device` for `dtype`: the H200's here, else Lightning's table (None
    for a CPU). The name is read from the run's own device, never from cuda:0."""
    if device.type != "cuda":
        return None
    return dense_peak(torch.cuda.get_device_name(device), dtype, get_available_flops(device, dtype))


def dense_peak(device_name: str, dtype: torch.dtype | str, lightning_peak: int | None) -> int | None:
    """The peak FLOP/s MFU divides by: the H200's dense figures, else Lightning's."""
    if "h200" in device_name.lower():
        return int(H200_DENSE[dtype]) if dtype in H200_DENSE else None
    return lightning_peak


def tokens_per_sample(net: torch.nn.Module) -> int:
    """Tokens one sample puts through the encoder: N patches, times F sequences in independent mode."""
    patches = getattr(net, "n_patches", 1)
    return patches * (net.n_features if getattr(net, "patch_mode", "mixing") == "independent" else 1)
