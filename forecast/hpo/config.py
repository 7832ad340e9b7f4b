"""The run every trial starts from: the user's configs and flags, resolved once before any trial
(`forecast.training.config.resolve`), the settings every trial adds, and what names and fingerprints a study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from forecast import configs
from forecast.training.config import measured_settings, recorded_data

DEFAULT_SPACE = configs.path("hpo/search_space.yaml")
Pruner = Literal["median", "hyperband", "none"]  # `--pruner` (forecast.hpo.opening.make_pruner)

MEASURED = "measured"  # key of the study fingerprint: the trainer, model and callback settings trials share

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


def study_name(config: Mapping[str, Any], budget: str) -> str:
    """`SPY-a25-threshold0.01-h1-2M`: everything that tells two studies' targets apart,
    `SPY-a25-stationary-threshold0.01-h1-2M` when the network sees the stationary inputs and
    `SPY-a25-threshold0.01-h1-y4-2M` when it trains on the 4 years before validation (`train_tag`)."""
    data = config["data"]
    task = data["task"] + (f"{data['threshold']:g}" if data["task"] == "threshold" else "")
    inputs = "" if data.get("inputs", "tier") == "tier" else f"-{data['inputs']}"
    return f"{data['symbol']}-{data['tier']}{inputs}-{task}-h{data['horizon']}{train_tag(data)}-{budget}"


def train_tag(data: Mapping[str, Any]) -> str:
    """The training selection in a study name: `` (every year), `-y4` (the 4 trailing years) or
    `-y4b1` (4 calendar years of blocks draw 1)."""
    years = data.get("train_years")
    if years is None:
        return ""
    tag = f"-y{float(years):g}"
    return tag + (f"b{int(data.get('train_draw', 0))}" if data.get("train_design") == "blocks" else "")


def fingerprint(config: Mapping[str, Any], budget: str, space: Mapping[str, Any],
                searched: Sequence[str] = ()) -> dict[str, Any]:
    """What must not change when a study is resumed: targets, data shape, budget, space, and every
    setting that changes what a trial measures (epochs, batch, clipping, early stopping, optimizer, ...).

    Only the settings in `forecast.training.config.UNMEASURED` (file locations, progress display,
    hardware) and the `searched` keys, which each trial draws, may differ; otherwise trials of one
    study would not be comparable.
    """
    data = recorded_data(config["data"])  # a later-added setting at its default: older studies still resume
    net = config["model"]["net"]["init_args"]
    shape = {k: net.get(k) for k in ("patch_len", "stride", "patch_mode", "revin")}
    measured = measured_settings(config, skip=("data", "seed_everything", *searched))
    if "data.batch_size" not in searched:  # a loader setting, but the batch changes what is learned
        measured["data.batch_size"] = config["data"].get("batch_size")
    return {"data": data, "shape": shape, "budget": budget, "space": dict(space),
            "seed_everything": config.get("seed_everything"), MEASURED: measured}


