"""Training throughput of every run: samples/s, tokens/s, FLOP/s and MFU.

`Throughput` is Lightning's `ThroughputMonitor` (rolling rates in TensorBoard as
`train/device/samples_per_sec`, `.../items_per_sec` (tokens), `.../flops_per_sec`, `.../mfu`)
plus the whole run's averages over its training time (validation excluded), which `forecast fit`
writes to fit_summary.json and the search records per trial. On CUDA it synchronises only on the
steps it logs (Lightning's synchronises after every batch).

FLOPs are the model's training matmul FLOPs (`Forecaster.flops_per_batch`, from
`forecast.sizing.budget.training_flops_per_sample`); MFU divides them by the device's dense peak for the
run's compute dtype. Lightning's table has no entry for the name an H200 reports ("NVIDIA H200")
and lists its sparse figures, so the H200's dense peaks are given here.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage

# Timed batches per rolling rate in TensorBoard (Lightning's default of 100 is more than a 2M epoch);
# on CUDA a batch is timed every `log_every_n_steps`, so a rate there spans WINDOW x that many.
WINDOW = 10
# Dense peaks (FLOP/s) of the H200 SXM: the H100 SXM's GH100 at the same clocks (NVIDIA datasheets).
H200_DENSE = {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}


def _samples(batch: Any) -> int:
    return len(batch[1])  # (x [B, L, F], y [B])


class Throughput(ThroughputMonitor):
    """ThroughputMonitor for `Forecaster` batches, with `summary()` of the whole run.

    Args:
        window: timed batches per rolling rate logged to TensorBoard.
    """

    def __init__(self, window: int = WINDOW) -> None:
        super().__init__(batch_size_fn=_samples, length_fn=self._tokens, window_size=window)
        self.tokens_per_sample = 1
        self.flops_per_sample: int | None = None

    def _tokens(self, batch: Any) -> int:
        return _samples(batch) * self.tokens_per_sample

    def _start(self, trainer: L.Trainer) -> None:
        # private API: ThroughputMonitor's start-of-stage hook is private (#18 replaces this)
        super()._start(trainer)
        self._pending_flops = 0

    @torch.inference_mode()
    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, iter_num: int) -> None:
        """As Lightning's, but on CUDA a training batch is timed (which synchronises the device)
        only when the rates are logged or an epoch ends; batches between are counted, so a small,
        launch-bound model keeps the GPU's queue full instead of draining it every step."""
        stage = trainer.state.stage
        # private API: ThroughputMonitor has no public hook to count a batch without timing it (#18 replaces this)
        self._samples[stage] += self.batch_size_fn(batch)
        self._lengths[stage] += self.length_fn(batch)
        # private API: as above
        self._batches[stage] += 1
        self._pending_flops += getattr(pl_module, "flops_per_batch", None) or 0
        cuda = trainer.strategy.root_device.type == "cuda"
        if cuda and stage == RunningStage.TRAINING and not (  # private API: no public "logs this step" flag
                trainer._logger_connector.should_update_logs or trainer.is_last_batch):
            return
        if cuda:
            torch.cuda.synchronize()
        # private API: the monitor's per-stage Throughput objects and start times have no public accessor
        self._throughputs[stage].update(time=time.perf_counter() - self._t0s[stage], batches=self._batches[stage],
                                        samples=self._samples[stage], lengths=self._lengths[stage],
                                        flops=self._pending_flops or None)
        self._pending_flops = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.available_flops = dense_peak(torch.cuda.get_device_name(device), _compute_dtype(trainer),
                                              self.available_flops)
        net = getattr(pl_module, "net", None)
        self.tokens_per_sample = tokens_per_sample(net) if net is not None else 1
        self.flops_per_sample = getattr(pl_module, "flops_per_sample", None)

    def summary(self) -> dict[str, float | None]:
        """Averages over the whole training time of the run (validation excluded)."""
        # private API: the per-stage Throughput objects and their time/sample histories have no public accessor
        monitor = self._throughputs.get(RunningStage.TRAINING)
        timed = monitor is not None and monitor._time
        # private API: as above (at the last timed batch)
        seconds, samples = (monitor._time[-1], monitor._samples[-1]) if timed else (0.0, 0)
        if seconds <= 0 or samples == 0:
            return {"train_samples_per_sec": None, "train_tokens_per_sec": None, "train_mfu": None}
        rate = samples / seconds
        flops = None if self.flops_per_sample is None else rate * self.flops_per_sample
        return {"train_samples_per_sec": rate, "train_tokens_per_sec": rate * self.tokens_per_sample,
                "train_flops_per_sec": flops,
                "train_mfu": flops / self.available_flops if flops is not None and self.available_flops else None}


def dense_peak(device_name: str, dtype: torch.dtype | str, lightning_peak: int | None) -> int | None:
    """The peak FLOP/s MFU divides by: the H200's dense figures, else Lightning's."""
    if "h200" in device_name.lower():
        return int(H200_DENSE[dtype]) if dtype in H200_DENSE else None
    return lightning_peak


def tokens_per_sample(net: torch.nn.Module) -> int:
    """Tokens one sample puts through the encoder: N patches, times F sequences in independent mode."""
    patches = getattr(net, "n_patches", 1)
    return patches * (net.n_features if getattr(net, "patch_mode", "mixing") == "independent" else 1)


def _compute_dtype(trainer: L.Trainer) -> torch.dtype | str:
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tfloat32"
    return dtype
