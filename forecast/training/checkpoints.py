"""Checkpoint files: vetted before anything reads them (weights-only: tensors and plain data, never code),
and found in a run folder by name."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from forecast.core.domains import BEST_PREFIX  # best checkpoints: checkpoints/best-<epoch>.ckpt
from forecast.core.errors import ForecastError
from forecast.core.files import atomic_path

__all__ = ["BEST_PREFIX", "AtomicCheckpointIO", "check_checkpoint", "checkpoint_in"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but a local checkpoint is written to a hidden temporary file in its
    folder and renamed only once complete: a full disk or a kill mid-write never leaves a truncated
    `best-*.ckpt` that `test` or `predict` would pick (the temporary name matches no checkpoint glob).
    Remote paths (`s3://...`) go through Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()  # serialised first, as Lightning's own writer does: a failed write is an OSError
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Refuse, in one line, a file that is not a Lightning checkpoint loadable weights-only.

    `mmap=True` maps the tensors instead of reading them, so even a 2B checkpoint costs only its
    small pickle: a text file, a truncated file or pickled code fails here, not deep in `fit`.

    Returns:
        The checkpoint as loaded (tensors mapped, not read), for the checks that compare it with the run.
    """
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises several types for these; none is the user's bug
        raise ForecastError(
            f"{path}: not a loadable checkpoint ({type(err).__name__}; a text file, a truncated "
            "file or one holding code); pass a .ckpt written by `forecast fit`"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ForecastError(f"{path}: a torch file but not a Lightning checkpoint (no state_dict)")
    problem = _malformed(ckpt)
    if problem:
        raise ForecastError(f"{path}: a damaged Lightning checkpoint ({problem}); pass a .ckpt written by `forecast fit`")
    return ckpt


# The types of the fields Lightning reads from a checkpoint (weights-only loading lets any plain data through).
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "global_step": int, "pytorch-lightning_version": str, "callbacks": dict, "hyper_parameters": dict,
    "optimizer_states": list, "lr_schedulers": list, "loops": dict, "datamodule_hyper_parameters": dict}


def _malformed(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's inner fields, or None."""
    weights = ckpt["state_dict"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in weights.items()):
        return "state_dict is not a mapping of names to tensors"
    for name, kind in _FIELDS.items():
        value = ckpt.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0))):
            return f"{name} is {type(value).__name__} {str(value)[:40]!r}"
    version = ckpt.get("pytorch-lightning_version")
    if version is not None and not re.fullmatch(r"\d+(\.\d+)*\S*", version):
        return f"pytorch-lightning_version {version[:40]!r} is not a version"
    return None


def checkpoint_in(run: Path, which: str) -> Path:
    folder = run / "checkpoints"
    if not folder.is_dir():
        raise ForecastError(f"run {run} saved no checkpoints (trained with checkpointing off); "
                            "pass --ckpt_path FILE")
    found = sorted(folder.glob(f"{BEST_PREFIX}-*.ckpt")) if which == "best" else [folder / "last.ckpt"]
    found = [p for p in found if p.is_file()]
    if not found:
        raise ForecastError(f"no {which} checkpoint in {folder}")
    return found[-1]
