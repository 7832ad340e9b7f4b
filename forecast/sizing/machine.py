"""Does a run fit this machine? Checked before it starts, refused in one line with the figures.

- memory: every architecture a fit or search may run, at micro-batch 1 (the least it can use),
  against the device's memory, by the planner's estimate (`forecast.sizing.planner.estimate`); and a
  fixed micro-batch against the same memory.
- disk: the checkpoints a run holds at once against the free space where they are written.
- time (CPU): one epoch's training FLOPs at the CPU's measured matmul rate, printed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from forecast.core.errors import ForecastError
from forecast.sizing.budget import GB, training_flops_per_sample
from forecast.sizing.planner import (
    ADAM_MOMENTS,
    FP32,
    USABLE_FRACTION,
    estimate,
    normalize_precision,
)

FLOP_KEYS = ("n_features", "context_length", "patch_len", "stride", "d_model", "n_layers", "d_ff", "patch_mode")


# ------------------------------------------------------------------------------------- disk
WEIGHT_BYTES = {"float32": FP32, "bfloat16": 2}  # `Forecaster(weights_dtype=...)` of weights-only checkpoints


def checkpoint_bytes(params: int, weights_only: bool, weights_dtype: str = "float32") -> int:
    """Bytes of one checkpoint: the weights in `weights_dtype` when weights-only, else fp32 weights
    and AdamW's two fp32 moments, what a resume needs (hyperparameters and loop state add kilobytes)."""
    return params * (WEIGHT_BYTES[weights_dtype] if weights_only else FP32 * (1 + ADAM_MOMENTS))


def checkpoints_at_once(save_top_k: int, save_last: bool, max_epochs: int | None) -> int:
    """Most checkpoint files a run holds at a time: ModelCheckpoint writes a new best before it
    deletes the one it replaces (top-k + 1), and `last.ckpt` is one more file."""
    kept = (max_epochs or 1000) if save_top_k < 0 else save_top_k
    return kept + (1 if save_top_k != 0 else 0) + int(bool(save_last))


@dataclass(frozen=True)
class DiskPlan:
    """The checkpoints of one fit: best files and the last one, in bytes at most at once."""

    best_files: int
    best_bytes: int  # one best checkpoint
    last_bytes: int  # the last checkpoint (0: none)

    @property
    def total(self) -> int:
        return self.best_files * self.best_bytes + self.last_bytes


def disk_plan(params: int, save_top_k: int, save_last: bool, weights_only: bool, weights_dtype: str,
              max_epochs: int | None) -> DiskPlan:
    """What one fit's checkpoint settings write: best files (in `weights_dtype` when weights-only)
    and a last.ckpt, always resumable (fp32 + AdamW moments: `forecast.training.trainer.checkpoint_callbacks`)."""
    best_files = checkpoints_at_once(save_top_k, False, max_epochs)
    last = checkpoint_bytes(params, False) if save_last else 0
    return DiskPlan(best_files, checkpoint_bytes(params, weights_only, weights_dtype), last)


def free_bytes(path: str | os.PathLike) -> int:
    """Free disk space of the file system that holds `path` (or its nearest existing parent)."""
    folder = Path(path).resolve()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk(params: int, folder: str | os.PathLike, files: int, weights_only: bool, what: str,
               weights_dtype: str = "float32", free: int | None = None) -> None:
    """Refuse a run whose checkpoints may not fit on the disk under `folder`.

    Raises:
        ForecastError: the bytes needed, the bytes free, and the ways out.
    """
    if files <= 0:
        return
    one = checkpoint_bytes(params, weights_only, weights_dtype)
    need, free = files * one, free_bytes(folder) if free is None else free
    if need > free:
        kind = f"weights in {weights_dtype}" if weights_only else "weights + AdamW moments"
        raise ForecastError(
            f"not enough disk for the checkpoints of {what}: up to {files} x {one / GB:.2f} GB "
            f"({params:,} parameters, {kind}) = {need / GB:.2f} GB at once, {free / GB:.2f} GB free "
            f"under {folder}; free some space, or keep fewer (--checkpoint.save_last=false, "
            "--checkpoint.save_weights_only=true, --model.weights_dtype=bfloat16) or none "
            "(--trainer.enable_checkpointing=false)")


def check_fit_disk(trainer: Any, params: int, weights_dtype: str = "float32") -> str | None:
    """The disk check of one `Trainer.fit`, from its ModelCheckpoint callbacks. A last.ckpt is kept
    only where the disk allows it: when the best checkpoints fit but not the last one too, the last
    is turned off (`save_last = False`) and the returned line says so; when the best ones do not
    fit, the run is refused (`check_disk`)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if c.save_top_k != 0 or c.save_last]
    if not callbacks or trainer.fast_dev_run:  # a smoke run saves no checkpoint (and has no log folder)
        return None
    first = callbacks[0]
    folder = first.dirpath or (trainer.logger.save_dir if trainer.logger is not None else trainer.default_root_dir)
    plans = [disk_plan(params, c.save_top_k, bool(c.save_last), c.save_weights_only, weights_dtype,
                       trainer.max_epochs) for c in callbacks]
    free = free_bytes(folder)
    best = sum(p.best_files * p.best_bytes for p in plans)
    last = sum(p.last_bytes for p in plans)
    note = None
    if best + last > free and last and best <= free:
        for c in callbacks:
            c.save_last = False
        note = (f"no last.ckpt (for a resume) in this run: with it the checkpoints need {(best + last) / GB:.2f} GB "
                f"and {free / GB:.2f} GB is free under {folder}; the best checkpoint is kept")
    elif best + last > free:
        plan = plans[0]
        files = plan.best_files + (1 if plan.last_bytes else 0)
        check_disk(params, folder, files, first.save_weights_only, "this run", weights_dtype, free)
    return note


# ----------------------------------------------------------------------------------- memory
def memory_bytes(device: str, memory_gb: float | None = None, index: int | None = None) -> int:
    """Memory a run may use: `memory_gb` when given, else the free memory of CUDA device `index`
    (default: this rank's, `forecast.sizing.devices.cuda_index`) or the host's available memory (MemAvailable)."""
    if memory_gb is not None:
        return int(memory_gb * GB)
    if device == "cuda":
        from forecast.sizing.devices import cuda_index

        return int(torch.cuda.mem_get_info(cuda_index() if index is None else index)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(archs: Sequence[dict[str, Any]], precision: str, device: str, memory: int, what: str,
                 micro_batch: int | None = None) -> None:
    """Refuse when an architecture does not fit at micro-batch 1, or at the fixed `micro_batch`.

    Args:
        archs: `PatchTST` keyword arguments of every architecture the run may build.
        precision: Lightning precision of the run.
        device: "cuda" or "cpu".
        memory: bytes of the device's memory to check against (the planner uses a share of it).
        what: the run, for the message ("budget 2B", "this model").
        micro_batch: the configured batch size (None: `auto`, the planner chooses).

    Raises:
        ForecastError: the largest architecture that does not fit, its estimate, the memory, the ways out.
    """
    try:
        precision = normalize_precision(precision)
    except ForecastError:
        return  # the planner models 32-true and the mixed precisions only
    usable = int(memory * USABLE_FRACTION[device])
    need = [(estimate(**a, precision=precision, device=device, micro_batch=1).peak_bytes, a) for a in archs]
    worst, arch = max(need, key=lambda n: n[0])
    where = f"{usable / GB:.1f} GB usable of {memory / GB:.1f} GB ({device}, {precision})"
    if worst > usable:
        too_big = sum(n > usable for n, _ in need)
        raise ForecastError(
            f"{what} does not fit this machine: {too_big} of {len(archs)} architectures exceed {where}; "
            f"the largest, {arch_name(arch)}, needs {worst / GB:.1f} GB at micro-batch 1; "
            "use a GPU with more memory (--trainer.accelerator gpu), a smaller budget, or "
            "--trainer.precision bf16-mixed / --model.net.init_args.activation_checkpointing=true")
    if micro_batch is not None:
        peak, arch = max(((estimate(**a, precision=precision, device=device, micro_batch=micro_batch).peak_bytes, a)
                          for a in archs), key=lambda n: n[0])
        if peak > usable:
            raise ForecastError(
                f"{what} does not fit this machine at --data.batch_size={micro_batch}: {arch_name(arch)} "
                f"needs {peak / GB:.1f} GB, {where}; use --data.batch_size auto (the planner picks the "
                "micro-batch and accumulation) or a smaller batch")


def arch_name(arch: dict[str, Any]) -> str:
    return f"d{arch['d_model']}-l{arch['n_layers']}-h{arch['n_heads']}-ff{arch['d_ff']}"


# ------------------------------------------------------------------------------------- time
def matmul_flops_per_sec(size: int = 512, seconds: float = 0.1) -> float:
    """This CPU's fp32 matmul rate (FLOP/s) with this process's threads: the best of repeated
    size^3 products within `seconds` (the best, since a neighbour can slow a product, never speed
    it up; a fixed few products read anywhere from 152 to 274 GFLOP/s on a shared machine)."""
    a = torch.full((size, size), 0.5)  # not random: the global RNG must not move (seeded runs replay)
    out = torch.empty(size, size)
    torch.mm(a, a, out=out)  # warm-up: thread pool, kernels, pages of `out`
    best, end = float("inf"), time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        torch.mm(a, a, out=out)
        best = min(best, time.perf_counter() - start)
        if start >= end:
            return 2 * size**3 / best


def epoch_estimate(arch: dict[str, Any], train_windows: int, rate: float | None = None) -> str:
    """One line: the training FLOPs of one epoch and the least time they take at the matmul rate."""
    flops = train_windows * training_flops_per_sample(**{k: arch[k] for k in FLOP_KEYS})
    rate = rate or matmul_flops_per_sec()
    return (f"CPU: one epoch of {arch_name(arch)} is {train_windows:,} windows x "
            f"{flops / train_windows / 1e9:.3g} GFLOP = {flops / 1e12:.3g} TFLOP; at this CPU's fp32 matmul "
            f"rate ({rate / 1e9:.0f} GFLOP/s) that is at least {_duration(flops / rate)}")


def _duration(seconds: float) -> str:
    if seconds < 10:  # a demo epoch is a tenth of a second: never "at least 0 s"
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------- a search
def check_search(config: dict[str, Any], archs: Sequence[Any], n_features: int, epoch_samples: int,
                 log_dir: Path, keep_checkpoints: bool, trials: int, what: str) -> str | None:
    """Memory and disk checks of a whole search, before its first trial (see `check_memory`).

    Args:
        config: the resolved trial config (`forecast.hpo.config.resolve`).
        archs: the budget's architectures (`forecast.sizing.budget.Arch`).
        n_features: features of the tier.
        epoch_samples: training samples one epoch draws (`ForecastDataModule.epoch_samples`: with a
            `data.train_years` selection, as many as every training year holds unless
            `data.train_epoch` is `kept`).
        log_dir: where the trials write their checkpoints.
        keep_checkpoints: every trial keeps its checkpoint (else only the best trial's).
        trials: the number of trials.
        what: the search, for the messages.

    Returns:
        On CPU, the line with the estimated time of one epoch of the largest architecture.
    """
    from forecast.sizing.devices import (
        accelerator_kind,
        bf16_capable,
        cuda_index,
        default_precision,
    )

    trainer, data = config["trainer"], config["data"]
    kind = "cuda" if accelerator_kind(trainer.get("accelerator", "auto")) == "cuda" else "cpu"
    index = cuda_index(trainer.get("devices")) if kind == "cuda" else None
    precision = trainer.get("precision") or default_precision(kind, kind == "cuda" and bf16_capable(index))
    net = {**config["model"]["net"]["init_args"], "n_features": n_features, "context_length": data["context_length"]}
    shapes = [{**net, **a.model_kwargs()} for a in archs]
    memory = memory_bytes(kind, (config.get("planner") or {}).get("memory_gb"), index)
    batch = data.get("batch_size")
    check_memory(shapes, precision, kind, memory, what, batch if isinstance(batch, int) else None)
    ckpt = config.get("checkpoint") or {}
    if trainer.get("enable_checkpointing", True) is not False:
        files = checkpoints_at_once(ckpt.get("save_top_k", 1), ckpt.get("save_last", False), trainer.get("max_epochs"))
        files += trials if keep_checkpoints else 1  # the trials' kept checkpoints (else the best one's)
        dtype = (config.get("model") or {}).get("weights_dtype") or "float32"
        check_disk(max(a.params for a in archs), log_dir, files, bool(ckpt.get("save_weights_only")), what, dtype)
    if kind != "cpu":
        return None
    largest = max(shapes, key=lambda a: training_flops_per_sample(**{k: a[k] for k in FLOP_KEYS}))
    return epoch_estimate(largest, epoch_samples)
