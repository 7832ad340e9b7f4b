"""The run every trial starts from: the user's configs and flags, resolved once before any trial.

Resolution goes through the real `forecast fit` parser (parsed, nothing built), so a typo in a flag or
a search-space key that the model does not have is reported before a trial starts, in the
parser's own words.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from forecast.errors import ForecastError

# Settings every trial gets unless the user's flags say otherwise: no per-step progress bar
# (the search shows its own display), no model table per trial, and only the best checkpoint's
# weights (no last.ckpt, no AdamW moments: a 2B trial's best is 8 GB, not 24 GB plus a last one).
TRIAL_DEFAULTS = (
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--checkpoint.save_last=false",
    "--checkpoint.save_weights_only=true",
    "--trainer.devices=1",  # a trial is one process: the pruning callback and the objective read one rank
)
# Data settings that do not change what a trial learns from (where files live, loader workers).
OPERATIONAL_DATA_KEYS = ("data_dir", "num_workers", "eval_batch_size", "batch_size", "predict_split")


def resolve(args: Sequence[str]) -> dict[str, Any]:
    """Parse `args` as `forecast fit` would and return the resolved config as a dict.

    Args:
        args: `--config FILE` and `--key=value` flags, without a subcommand.

    Raises:
        ForecastError: the parser's complaint, in one line.
    """
    from forecast.train import resolve_config

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return resolve_config(list(args))
    except SystemExit:
        raise ForecastError(f"invalid trial config: {parser_error(err.getvalue()) or 'nothing parsed'}") from None
    except ForecastError as error:  # the CLI's own one-line parse errors (forecast.train)
        raise ForecastError(f"invalid trial config: {error}") from None


def parser_error(stderr: str) -> str:
    """The jsonargparse error message after its usage text, folded into one line."""
    text = stderr.split("error:", 1)[-1] if "error:" in stderr else stderr
    return re.sub(r"\s+", " ", text).strip()


def lookup(config: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a nested config dict."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def flag_keys(args: Sequence[str]) -> set[str]:
    """Dotted keys set by `--key=value` / `--key value` flags (not `--config`)."""
    keys = set()
    for arg in args:
        if arg.startswith("--") and arg != "--config":
            keys.add(arg[2:].split("=", 1)[0])
    return keys


def study_name(config: Mapping[str, Any], budget: str) -> str:
    """`SPY-a25-threshold0.01-h1-2M`: everything that tells two studies' targets apart."""
    data = config["data"]
    task = data["task"] + (f"{data['threshold']:g}" if data["task"] == "threshold" else "")
    return f"{data['symbol']}-{data['tier']}-{task}-h{data['horizon']}-{budget}"


def fingerprint(config: Mapping[str, Any], budget: str, space: Mapping[str, Any]) -> dict[str, Any]:
    """What must not change when a study is resumed: targets, data shape, budget, space.

    Epochs, batch size or file locations may change between runs; the labels, the splits, the
    inputs and the architecture grid may not, or the trials would not be comparable.
    """
    data = {k: v for k, v in config["data"].items() if k not in OPERATIONAL_DATA_KEYS}
    net = config["model"]["net"]["init_args"]
    shape = {k: net.get(k) for k in ("patch_len", "stride", "patch_mode", "revin")}
    return {"data": data, "shape": shape, "budget": budget, "space": dict(space),
            "seed_everything": config.get("seed_everything")}


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (for an error message)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]
