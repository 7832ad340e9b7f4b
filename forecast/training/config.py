"""A run's config as data: what `forecast fit` would run with, resolved by its own parser (nothing built),
and the helpers that compare and look into such configs (the search's trials and the report's retrains use them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecast.training.cli import ParsedRun

# Data settings that do not change what a trial learns from (where files live, loader workers).
OPERATIONAL_DATA_KEYS = ("data_dir", "num_workers", "eval_batch_size", "batch_size", "predict_split")
# Data settings left out of a study's record while at these defaults: settings added after studies
# were recorded, so that those studies still resume and their best configs still match.
DEFAULT_DATA = {"inputs": "tier", "train_years": None, "train_design": "trailing", "train_draw": 0,
                "train_epoch": "all_years"}


def recorded_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data settings a study records and is compared on: without the operational keys, and
    without a later-added setting at its default (`DEFAULT_DATA`)."""
    return {k: v for k, v in data.items()
            if k not in OPERATIONAL_DATA_KEYS and not (k in DEFAULT_DATA and v == DEFAULT_DATA[k])}
# Settings that cannot change what a run measures: where its files go, how it shows progress, which
# hardware runs it (a study's workers may run on CPUs and GPUs alike). An ALLOWLIST: every other setting,
# a Trainer argument a later Lightning adds included, counts as measured. Dotted keys; a key covers its children.
UNMEASURED = (
    "data.data_dir", "data.num_workers", "data.eval_batch_size", "data.predict_split",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.precision",
    "trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "trainer.enable_checkpointing", "trainer.enable_autolog_hparams",
    "trainer.model_registry", "trainer.profiler", "trainer.num_sanity_val_steps", "trainer.benchmark",
    "trainer.inference_mode", "trainer.detect_anomaly",
    "checkpoint",  # which checkpoints are kept; the val metrics a trial reports do not depend on it
    "early_stopping.verbose", "early_stopping.log_rank_zero_only",
    "model.compile", "model.train_metrics",  # the same numbers, faster or with fewer training metrics
    "planner.memory_gb",  # the micro-batch changes, the effective batch the planner keeps does not
    "config", "ckpt_path",
)


def is_unmeasured(key: str) -> bool:
    """Whether the dotted setting `key` is in `UNMEASURED` (itself or under one of its keys)."""
    return any(key == k or key.startswith(k + ".") for k in UNMEASURED)


def measured_settings(config: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every setting of a resolved config that can change what a run measures, flattened to dotted keys,
    less the keys (and their children) in `skip`."""
    from forecast.training.resume import flatten

    return {k: v for k, v in flatten(config).items()
            if not is_unmeasured(k) and not any(k == s or k.startswith(s + ".") for s in skip)}


def resolve(args: Sequence[str]) -> dict[str, Any]:
    """Parse `args` as `forecast fit` would and return the resolved config as a dict.

    Args:
        args: `--config FILE` and `--key=value` flags, without a subcommand.

    Raises:
        ForecastError: the parser's complaint, in one line.
    """
    return parse_run(args).config


def parse_run(args: Sequence[str]) -> ParsedRun:
    """`args` parsed as `forecast fit` would, nothing built; further flags are checked over them with the
    same parser (`ParsedRun.check`). `args` as for `resolve`.

    Raises:
        ForecastError: the parser's complaint, in one line.
    """
    from forecast.training.cli import ParsedRun

    return ParsedRun(args)


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


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (for an error message)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]
