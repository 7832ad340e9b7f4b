"""Checks that keep a run from lying about the checkpoint it starts from or tests.

Pure functions over a checkpoint loaded weights-only (plain dicts and tensors) and the run's resolved
settings; each says what is wrong in words, and `check_*` refuse the run with it (`forecast.training.checks`
calls them before the data are read or the Trainer starts):

- the checkpoint was trained for another task, horizon, threshold, tier, context or features than the
  run would test (its data module's saved settings and feature names against the run's);
- the model the run builds has other shapes than the checkpoint's weights (another architecture);
- a resumed fit whose run already finished (its epochs or steps are done, or it stopped early);
- a setting the checkpoint would silently put back over the user's own (`flag_conflicts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from forecast.core.errors import ForecastError
from forecast.training.checkpoints import check_checkpoint

# What a model is trained FOR: testing or resuming with another value measures something else.
IDENTITY_DATA_KEYS = ("task", "horizon", "tier", "context_length", "scaler")
# A resumed fit must also train on the same samples (splits, folds, purge gap) in the same batches.
RESUME_DATA_KEYS = (*IDENTITY_DATA_KEYS, "symbol", "val_start", "test_start", "test_end", "folds", "fold", "gap",
                    "batch_size", "train_years", "train_design", "train_draw", "train_epoch")
DATA_STATE = "ForecastDataModule"  # where Lightning keeps the data module's `state_dict()` in a checkpoint
LIGHTNING_DEFAULT_EPOCHS = 1000  # Trainer(max_epochs=None, max_steps=-1) trains this many


def _threshold_differs(saved: Mapping[str, Any], run: Mapping[str, Any]) -> bool:
    return run.get("task") == "threshold" and saved.get("threshold") != run.get("threshold")


def data_conflicts(saved: Mapping[str, Any] | None, run: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """`key: checkpoint value -> run value` for every data setting in `keys` that differs (the
    threshold only for the threshold task). A checkpoint without saved data settings has none."""
    if not isinstance(saved, Mapping):
        return []
    found = [f"data.{k}: {saved[k]!r} -> {run.get(k)!r}" for k in keys if k in saved and saved[k] != run.get(k)]
    if _threshold_differs(saved, run) and "threshold" in saved:
        found.append(f"data.threshold: {saved['threshold']!r} -> {run.get('threshold')!r}")
    return found


def feature_conflict(ckpt: Mapping[str, Any], names: list[str]) -> str | None:
    """The checkpoint's feature columns (recorded by the data module since this check exists)
    against the run's; None when equal or not recorded."""
    state = ckpt.get(DATA_STATE)
    saved = state.get("feature_names") if isinstance(state, Mapping) else None
    if not isinstance(saved, list) or saved == names:
        return None
    gone = [n for n in saved if n not in names][:3]
    new = [n for n in names if n not in saved][:3]
    detail = f"not in the run: {gone}; new: {new}" if gone or new else "another order"
    return f"features: {len(saved)} in the checkpoint, {len(names)} in the run ({detail})"


def shape_conflicts(saved: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """Parameters whose shape differs, or that only one side has (the state dicts' keys and shapes)."""
    found = [f"{k} {list(saved[k].shape)} in the checkpoint, {list(model[k].shape)} here"
             for k in model if k in saved and hasattr(saved[k], "shape") and saved[k].shape != model[k].shape]
    found += [f"{k} only here" for k in model if k not in saved]
    found += [f"{k} only in the checkpoint" for k in saved if k not in model]
    return found


def finished(ckpt: Mapping[str, Any], max_epochs: int | None, max_steps: int | None) -> str | None:
    """Why a resumed fit would train nothing (its run is finished), or None.

    Args:
        ckpt: the checkpoint (weights-only load).
        max_epochs: the run's `trainer.max_epochs` (None: Lightning's default, -1: no limit).
        max_steps: the run's `trainer.max_steps` (None or -1: no limit).
    """
    epochs = _epochs_done(ckpt)
    steps = int(ckpt.get("global_step", 0) or 0)
    for name, state in (ckpt.get("callbacks") or {}).items():
        if str(name).startswith("EarlyStopping") and isinstance(state, Mapping) and _stopped(state):
            return (f"it stopped early after epoch {epochs} ({state.get('patience')} epochs without "
                    "improvement); resuming would stop again at once")
    limit = max_epochs if max_epochs is not None else (LIGHTNING_DEFAULT_EPOCHS if max_steps in (None, -1) else -1)
    if limit is not None and limit >= 0 and epochs >= limit:
        return f"its {epochs} epochs are done (trainer.max_epochs={limit})"
    if max_steps is not None and max_steps >= 0 and steps >= max_steps:
        return f"its {steps} steps are done (trainer.max_steps={max_steps})"
    return None


def _epochs_done(ckpt: Mapping[str, Any]) -> int:
    """Epochs done: the fit loop's own progress, else the saved epoch index + 1. A checkpoint saved
    at an epoch's end counts that epoch as processed but not yet completed; Lightning resumes after it."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(ckpt.get("epoch", -1)) + 1


def _stopped(state: Mapping[str, Any]) -> bool:
    reason = state.get("stopping_reason")
    value = getattr(reason, "value", reason)  # an enum in memory, an int once saved
    return bool(value) or int(state.get("stopped_epoch", 0) or 0) > 0


def restored_settings(ckpt: Mapping[str, Any], early_stopping: Mapping[str, Any] | None) -> list[str]:
    """Callback settings Lightning puts back from the checkpoint over the run's own on a resume
    (EarlyStopping restores its `patience`): `key: checkpoint -> run` where they differ."""
    if not early_stopping:
        return []
    for name, state in (ckpt.get("callbacks") or {}).items():
        if str(name).startswith("EarlyStopping") and isinstance(state, Mapping) and "patience" in state:
            if state["patience"] != early_stopping.get("patience"):
                return [f"early_stopping.patience: {state['patience']!r} -> {early_stopping.get('patience')!r}"]
    return []


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists and other values are leaves)."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def explicit(key: str, given: Iterable[str]) -> bool:
    """Whether dotted `key` was set by one of the `given` dotted keys (itself, a parent or a child)."""
    return any(g == key or key.startswith(g + ".") or g.startswith(key + ".") for g in given)


def flag_conflicts(before: Mapping[str, Any], after: Mapping[str, Any], given: Iterable[str]) -> tuple[list[str], list[str]]:
    """(refused, taken): settings the checkpoint changes (`before` -> `after`, flattened dicts), split
    into those the user set explicitly (a conflict) and those only defaulted (the checkpoint's win)."""
    given = list(given)
    refused, taken = [], []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        line = f"{key}: checkpoint {after.get(key)!r}, this run {before.get(key)!r}"
        (refused if explicit(key, given) else taken).append(line)
    return refused, taken


# -- the checks a run makes, over its resolved config (a jsonargparse Namespace) ---------------------
def check_trained_for(ckpt: Mapping[str, Any], config: Any, keys: tuple[str, ...]) -> None:
    """The checkpoint was trained for this run's task, horizon, tier, context and features (a resumed
    fit: also its splits and batch); else one line with the first difference.

    Raises:
        ForecastError: a difference.
    """
    from forecast.data.tiers import TIERS  # lazily: TA-Lib

    run = config.data.as_dict()
    found = data_conflicts(ckpt.get("datamodule_hyper_parameters"), run, keys)
    if not found and run.get("tier") in TIERS:
        found = [c for c in [feature_conflict(ckpt, list(TIERS[run["tier"]].columns))] if c]
    if found:
        raise ForecastError(f"{config.ckpt_path} was trained for other data than this run's ({found[0]}); "
                            "use the settings it was trained with (its run's config.yaml) or another checkpoint")


def check_resumable(ckpt: Mapping[str, Any], config: Any) -> None:
    """A resumed fit has something left to train, and Lightning will not put back a callback
    setting over the run's own.

    Raises:
        ForecastError: the checkpoint holds weights only, the run is finished, or a callback setting
            differs from the checkpoint's.
    """
    if "optimizer_states" not in ckpt or "loops" not in ckpt:  # Lightning would fail on a KeyError
        raise ForecastError(f"{config.ckpt_path} holds weights only (saved with --checkpoint.save_weights_only), "
                            "not a run to resume: resume from the run's last.ckpt, or test or predict with this one")
    done = finished(ckpt, config.trainer.get("max_epochs"), config.trainer.get("max_steps"))
    if done:
        raise ForecastError(f"{config.ckpt_path} is of a finished run: {done}. Nothing to resume; raise "
                            "--trainer.max_epochs to train longer, or fit anew without --ckpt_path")
    restored = restored_settings(ckpt, config.get("early_stopping"))
    if restored:
        raise ForecastError(f"{config.ckpt_path} would put back its own {restored[0]}; pass the checkpoint's "
                            "value, or fit anew without --ckpt_path")


def check_architecture(path: str, model: Any) -> None:
    """The weights fit the model this run builds (shapes compared before Lightning loads them).

    Raises:
        ForecastError: another architecture.
    """
    found = shape_conflicts(check_checkpoint(path)["state_dict"], model.state_dict())
    if found:
        raise ForecastError(f"{path} holds another architecture than this run builds ({found[0]}; "
                            f"{len(found)} differences); use the config it was trained with")
