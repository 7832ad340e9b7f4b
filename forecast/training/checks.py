"""What a run checks, in the order a run meets the checks; each refusal is one line (`ForecastError`).

1. Parsed (`check_parsed`): no setting is NaN or infinite; a `--ckpt_path` file is vetted and its saved
   model settings are data (the model's schema, the import allowlist) that may not replace a setting the
   user gave.
2. Before anything is built (`check_devices`, `check_checkpoint_matches`): the devices asked for exist;
   the checkpoint tested or resumed was trained for this run's data (and a resumed fit is unfinished).
3. The model built, the Trainer not yet (`check_before_trainer`): the checkpoint's weights have the
   model's shapes; the run folders are writable.
4. Model and Trainer built (`check_fits_machine`): the model and batch fit the device's memory, the
   best checkpoints fit the disk (where a last.ckpt does not fit beside them, it is turned off, and said).

The device's own settings and the memory plan are `forecast.training.planning`.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities import rank_zero_info

from forecast.core.allowlist import refused_import
from forecast.core.bounded_yaml import non_finite
from forecast.core.errors import ForecastError
from forecast.core.files import check_writable
from forecast.core.parsers import one_line
from forecast.sizing.devices import accelerator_kind, check_nodes, check_visible
from forecast.sizing.machine import check_fit_disk, check_memory, memory_bytes
from forecast.training.checkpoints import check_checkpoint
from forecast.training.messages import given_keys
from forecast.training.resume import (
    IDENTITY_DATA_KEYS,
    RESUME_DATA_KEYS,
    check_architecture,
    check_resumable,
    check_trained_for,
    flag_conflicts,
    flatten,
)
from forecast.training.runs import run_folders

# `--ckpt_path` values Lightning resolves itself (no file to vet here)
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")


# -- 1. parsed ------------------------------------------------------------------------------------
def check_parsed(parser: LightningArgumentParser, config: Any, args: list[str]) -> None:
    """The parsed config (`config`, with its subcommand when it has one) holds finite numbers only, and
    its `--ckpt_path` file's saved settings are allowed. Lightning loads that file's hyperparameters next
    (torch.load) and merges them over the config, so the file and its settings are checked first.

    Args:
        args: the command line, for which settings the user gave explicitly.
    """
    check_finite(config)
    ckpt = config[config.subcommand].get("ckpt_path") if config.get("subcommand") else None
    if ckpt and ckpt not in LIGHTNING_CKPT_NAMES:
        check_saved_settings(parser, config, check_checkpoint(ckpt), ckpt, args)


def check_finite(config: Any) -> None:
    """No setting is NaN or infinite (`--model.lr=1e400` reads as inf and would train NaN)."""
    bad = non_finite(config.as_dict())
    if bad:
        key, _, value = bad[0].partition("=")
        key = key.split(".", 1)[1] if config.get("subcommand") and "." in key else key
        raise ForecastError(f"{key}: {value} is not a finite number (every setting must be)")


def check_saved_settings(parser: LightningArgumentParser, config: Any, ckpt: dict[str, Any], path: str,
                         args: list[str]) -> None:
    """A checkpoint's saved model settings are data: parsed against the model's schema (so they
    name no class outside the allowlist), and refused where they would replace a setting the
    user gave explicitly (a flag or a --config file); where they only replace a default, said."""
    saved = ckpt.get("hyper_parameters")
    if not saved:
        return
    if not isinstance(saved, dict):
        raise ForecastError(f"{path}: its saved settings are not a mapping; pass a .ckpt written by `forecast fit`")
    saved = {k: v for k, v in saved.items() if k != "_instantiator"}  # as Lightning merges them
    sub = config.subcommand
    try:
        merged = parser.parse_object({sub: {"model": saved}}, config.clone())
    except Exception as err:  # jsonargparse: ArgumentError, or the refusal of a denied import path
        message = " ".join(str(err).split())
        raise ForecastError(f"{path}: its saved model settings are refused: "
                            f"{refused_import(message) or one_line(str(err))}") from None
    bad = non_finite(merged[sub].model.as_dict(), "model.")
    if bad:
        raise ForecastError(f"{path}: its saved model settings are refused: {bad[0]} is not a finite number")
    before = flatten(config[sub].model.as_dict(), "model.")
    after = flatten(merged[sub].model.as_dict(), "model.")
    refused, taken = flag_conflicts(before, after, given_keys(args))
    if refused:
        raise ForecastError(f"{path} was trained with other settings than this run sets ({refused[0]}); "
                            "drop the flag or config value, or start a new fit without --ckpt_path")
    if taken:
        rank_zero_info(f"from the checkpoint: {'; '.join(taken)}")


# -- 2. before anything is built ------------------------------------------------------------------
def check_devices(config: Any) -> str:
    """The accelerator asked for is visible and the nodes are ones this launch can run; its kind
    ("cuda", "cpu", ...)."""
    kind = accelerator_kind(config.trainer.accelerator)
    check_visible(kind)
    check_nodes(config.trainer.get("num_nodes") or 1)
    return kind


def check_checkpoint_matches(config: Any, subcommand: str | None) -> None:
    """validate/test/predict: the checkpoint (resolved by `planning.settle`) was trained for this run's
    task and data; a resumed fit also on the same samples, and it is not finished already."""
    if subcommand in ("validate", "test", "predict"):
        check_trained_for(check_checkpoint(config.ckpt_path), config, IDENTITY_DATA_KEYS)
    elif subcommand == "fit" and config.get("ckpt_path"):
        ckpt = check_checkpoint(config.ckpt_path)
        check_trained_for(ckpt, config, RESUME_DATA_KEYS)
        check_resumable(ckpt, config)


# -- 3. the model built, not the Trainer ----------------------------------------------------------
def check_before_trainer(ckpt_path: str | None, init: Any, model: Any) -> None:
    """The checkpoint's weights (`ckpt_path`, None: none) against the model's shapes, before the Trainer
    and its device lines; and the run's folders writable (`init`: the config, its classes built)."""
    if ckpt_path:
        check_architecture(ckpt_path, model)
    check_writable(run_folders(init))


# -- 4. model and Trainer built -------------------------------------------------------------------
def check_fits_machine(trainer: Any, model: Any, datamodule: Any, config: Any, planned: bool) -> None:
    """Before a fit (`forecast fit`, a search trial, a report retrain): refuse a model or batch that
    cannot fit the device's memory (a planned batch was checked by the planner), or checkpoints that
    cannot fit on the disk.

    Args:
        planned: the micro-batch came from the memory plan (`data.batch_size: auto`).
    """
    device = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
    arch = getattr(model.net, "init_args", None)
    if arch is not None:
        batch = None if planned else datamodule.batch_size
        index = trainer.strategy.root_device.index if device == "cuda" else None  # this rank's
        check_memory([arch], str(trainer.precision), device, memory_bytes(device, config.planner.memory_gb, index),
                     "this model", batch)
    note = check_fit_disk(trainer, model.num_parameters, model.hparams.get("weights_dtype", "float32"))
    if note:
        rank_zero_info(note)
