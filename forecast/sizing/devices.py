"""How many devices a run uses: the search, the report and evaluation each need exactly one."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

from forecast.core.errors import ForecastError

# A CUDA (or ROCm) device is reached through one of these nodes on Linux (WSL2: /dev/dxg); where none
# exists torch can see no device, and a `--jobs` parent need not load torch (about 2 s) to know it.
GPU_NODES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def device_count(devices: Any) -> int:
    """How many devices a `trainer.devices` value asks for ("auto" and -1 count as more than one)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text == "auto":
        return -1
    try:
        count = int(text)
    except ValueError:
        raise ForecastError(f"--trainer.devices={devices}: expected a count, a list of device ids, or auto") from None
    return count


def one_device(trainer: Any, what: str) -> None:
    """Refuse a trainer config that runs on more than one device or node (`what` says who needs one).

    Raises:
        ForecastError: `devices` other than 1 (or one id), or `num_nodes` > 1.
    """
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if device_count(devices) != 1 or int(nodes) != 1:
        raise ForecastError(f"{what} run on one device (got --trainer.devices={devices}, --trainer.num_nodes={nodes}): "
                            "under DDP the shards are padded with repeated windows and each rank holds part "
                            "of the predictions; train on several devices with `forecast fit`")


def accelerator_kind(accelerator: Any, cuda_available: bool | None = None) -> str:
    """What `trainer.accelerator` will run on: "cuda", "cpu" or another Lightning name ("mps"...).

    "auto" and "gpu" mean CUDA when a CUDA device is visible (as Lightning resolves them).
    """
    import torch

    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    text = str(accelerator).lower()
    if text in ("auto", "gpu"):
        return "cuda" if cuda else "cpu"
    return text


# What says that this process is one node of several: a cluster Lightning detects, or the variables
# a manual multi-node launch sets on every node (Lightning's own environment reads these).
NODE_VARIABLES = ("NODE_RANK", "MASTER_ADDR", "GROUP_RANK")


def check_nodes(num_nodes: int, env: dict[str, str] | None = None) -> None:
    """Refuse, in one line, `num_nodes` > 1 where nothing launched this process as one of several nodes:
    rank 0 would otherwise wait in torch.distributed's store for nodes that never come (30 minutes,
    in C++, where no Ctrl-C or alarm reaches it)."""
    if num_nodes <= 1:
        return
    env = dict(os.environ) if env is None else env
    if any(env.get(name) for name in NODE_VARIABLES) or _cluster_detected():
        return
    raise ForecastError(f"trainer.num_nodes={num_nodes}, but no cluster launched this process as one of "
                        f"{num_nodes} nodes; on each node set MASTER_ADDR, MASTER_PORT and NODE_RANK (or "
                        "launch with SLURM or torchrun), or drop --trainer.num_nodes")


def _cluster_detected() -> bool:
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    for environment in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment, MPIEnvironment):
        try:
            if environment.detect():
                return True
        except Exception:  # noqa: BLE001 - an environment whose detection needs a package (mpi4py)
            continue
    return False


def check_visible(kind: str, cuda_available: bool | None = None) -> None:
    """Refuse, in one line, a run asked for CUDA where no CUDA device is visible (a GPU config on a
    laptop): torch's own answer is an AssertionError from deep inside the first CUDA query."""
    import torch

    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if kind == "cuda" and not cuda:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ForecastError(f"trainer.accelerator asks for CUDA, but no CUDA device is visible here (torch "
                            f"{torch.__version__}, {build}); use --trainer.accelerator auto or cpu")


def default_precision(kind: str, bf16_supported: bool = True) -> str:
    """The precision of a run whose config sets none: bf16-mixed on CUDA (16-mixed where the GPU
    has no bf16), 32-true anywhere else. Decided from the accelerator the run USES, so
    `--trainer.accelerator cpu` on a GPU machine trains in fp32."""
    if kind != "cuda":
        return "32-true"
    return "bf16-mixed" if bf16_supported else "16-mixed"


def use_tensor_cores(kind: str) -> None:
    """On CUDA, let the fp32 matmuls that remain (all of them under 32-true; the optimizer-side and
    fp32-kept ops under autocast) use TF32 tensor cores."""
    import torch

    if kind == "cuda":
        torch.set_float32_matmul_precision("high")


def release_memory() -> None:
    """Give back what a finished (or failed) run held before the next one allocates (a search's next trial,
    a report's next retrain): Python's garbage, then the CUDA caching allocator's free blocks."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def freeze_heap() -> None:
    """Keep what is alive now (the libraries' modules and classes, a loaded plan and its data) out of
    the garbage collector's passes from here on, once its garbage is collected. With torch and
    Lightning loaded a full collection walks about a million objects (0.2 s, at each `release_memory`
    between runs and several times as the interpreter exits: 1.2 s against 0.2 s frozen); what later
    runs create is collected as before."""
    gc.collect()
    gc.freeze()


def cuda_index(devices: Any = None, local_rank: int | None = None) -> int:
    """The CUDA device index this process trains on, before Lightning has set it: the
    `local_rank`-th of the `trainer.devices` ids (a list or "0,2"), else index `local_rank`.

    Under DDP every rank runs the CLI; asking `torch.cuda` without an index would query (and
    create a context on) cuda:0 from every rank. `local_rank` defaults to the LOCAL_RANK that
    Lightning's launcher gives each rank (0 in the first process).
    """
    import os

    if local_rank is None:
        value = os.environ.get("LOCAL_RANK", "0")
        local_rank = int(value) if value.isdigit() else 0
    ids: list[int] = []
    if isinstance(devices, (list, tuple)):
        ids = [int(d) for d in devices]
    elif isinstance(devices, str) and "," in devices:
        ids = [int(d) for d in devices.split(",") if d.strip()]
    return ids[local_rank] if local_rank < len(ids) else local_rank


def bf16_capable(index: int) -> bool:
    """Whether CUDA device `index` computes in bf16 (compute capability 8.0+, Ampere on), read from
    its properties: no tensor is made there (`torch.cuda.is_bf16_supported` asks the current
    device, cuda:0 before Lightning sets a rank's device, and may allocate on it)."""
    import torch

    return torch.cuda.get_device_capability(index) >= (8, 0)


def device_ids(devices: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES values for the workers, in turn ([] on a machine without CUDA).

    Args:
        devices: `--devices`, e.g. "0,1" or "0,0,1"; ids count among the visible devices.

    Raises:
        ForecastError: an id that is not a visible device.
    """
    count = cuda_device_count()
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    names = visible[:count] if visible else [str(i) for i in range(count)]
    if devices is None:
        return names
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    bad = [d for d in ids if not d.isdigit() or int(d) >= count]
    if not ids or bad:
        raise ForecastError(f"--devices {devices}: {count} CUDA device(s) visible here, so ids are 0..{count - 1}"
                            if count else f"--devices {devices}: no CUDA device is visible here")
    return [names[int(d)] for d in ids]


def cuda_device_count() -> int:
    """CUDA devices visible to this process: 0 without asking torch on a Linux machine with no GPU
    device node (`GPU_NODES`), else torch's count."""
    if sys.platform == "linux" and not any(Path(node).exists() for node in GPU_NODES):
        return 0
    import torch

    return torch.cuda.device_count()


def default_device() -> str | None:
    """The CUDA device a process uses by default (the first visible one's name), or None without CUDA."""
    return next(iter(device_ids(None)), None)
