"""What a run decides before anything is built, written into its parsed config (`settle`).

- where it logs: `--trainer.default_root_dir` moves the run folders (`forecast.training.runs.follow_root_dir`);
- precision from the device when no config or flag chose one (bf16-mixed on a CUDA device that has
  it, else 32-true), and tensor cores on;
- `data.batch_size: auto`: the memory planner picks the micro-batch and `accumulate_grad_batches` that
  keep `--planner.effective_batch` on the device's memory;
- validate/test/predict: one device, and the checkpoint (best by default) and the run it belongs to;
- checkpoints load weights-only unless the user said otherwise.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from forecast.sizing.devices import (
    accelerator_kind,
    bf16_capable,
    cuda_index,
    default_precision,
    one_device,
    use_tensor_cores,
)
from forecast.sizing.machine import check_memory, memory_bytes
from forecast.training.runs import follow_root_dir, point_at_run

EVALUATIONS = ("validate", "test", "predict")


def settle(config: Any, subcommand: str | None, kind: str) -> bool:
    """Decide the run's settings in `config` (see the module); whether its batch is planned.

    Args:
        subcommand: None for a run built without one (a search trial, a report retrain: a fit).
        kind: the accelerator's kind (`forecast.training.checks.check_devices`).
    """
    follow_root_dir(config)
    if config.trainer.precision is None:  # no config or flag chose one: decide from the device used
        bf16 = kind == "cuda" and bf16_capable(cuda_index(config.trainer.devices))  # this rank's GPU
        config.trainer.precision = default_precision(kind, bf16)
    use_tensor_cores(kind)
    planned = config.data.batch_size == "auto"
    if planned:
        apply_memory_plan(config)
    if subcommand in EVALUATIONS:
        evaluate_on_one_device(config)
        point_at_run(config)
    if subcommand is not None and config.get("weights_only") is None:
        config.weights_only = True  # a checkpoint holds tensors and plain data, never code
    return planned


def apply_memory_plan(config: Any) -> None:
    """data.batch_size 'auto': the planner picks the micro-batch and accumulate_grad_batches."""
    from forecast.sizing.budget import tier_features
    from forecast.sizing.planner import GB, available_memory_bytes, plan

    net = dict(config.model.net.init_args)
    net.update(n_features=tier_features(config.data.tier, config.data.get("inputs", "tier")),
               context_length=config.data.context_length)
    device = "cuda" if accelerator_kind(config.trainer.accelerator) == "cuda" else "cpu"
    # this rank's device (never cuda:0 from every DDP rank); the host's 16 GB default on CPU
    memory = (int(config.planner.memory_gb * GB) if config.planner.memory_gb is not None
              else memory_bytes("cuda", None, cuda_index(config.trainer.devices)) if device == "cuda" else None)
    memory = memory if memory is not None else available_memory_bytes(device)
    # not even micro-batch 1: the same one line, with the ways out, as a fixed batch would get
    check_memory([net], str(config.trainer.precision), device, memory, "this model")
    chosen = plan(**net, precision=str(config.trainer.precision), memory_bytes=memory,
                  effective_batch=config.planner.effective_batch, device=device)
    config.data.batch_size = chosen.micro_batch
    config.trainer.accumulate_grad_batches = chosen.accumulate
    rank_zero_info(
        f"memory plan ({device}): micro-batch {chosen.micro_batch} x accumulate {chosen.accumulate} "
        f"= {chosen.effective_batch}, estimated peak {chosen.peak_bytes / GB:.2f} GB"
    )


def evaluate_on_one_device(config: Any) -> None:
    """Evaluate on one device ("auto" becomes 1)."""
    if str(config.trainer.devices) == "auto":
        config.trainer.devices = 1
    one_device(config.trainer, "validate, test and predict")
