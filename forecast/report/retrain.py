"""Retrain a study's best config per walk-forward fold and seed; test each once, from its best checkpoint.

A retrain is one LightningCLI run of the best trial's complete config (`run=False`, then
`trainer.fit`) with the fold's data flags (`--data.folds K --data.fold k --data.test_end ...`),
logged to `<out>/runs/<study>/fold<k>-seed<s>/`; it is then tested ONCE on the fold's test block
from its best-val checkpoint (`ckpt_path="best"`), and the same checkpoint's per-sample test
probabilities are kept (with their dates and labels) for the paired statistics. `result.json` in
that folder records the outcome with a key of everything that decides it (config files' text,
flags, fold, seed, trial, and a fingerprint of the data the model sees); the same record is the
result of the retrain's task in the study storage (`forecast.report.jobs`), so a rerun of the
report, on any machine, reuses finished retrains and never tests a model twice.

No search per fold: each budget's configuration was chosen once, on the study's validation
period, which lies before every fold's test block; searching again per fold would multiply the
cost by K and choose on data that later folds test on.

Seeds are 0..K-1: never the search's own seed (42 by default), so the best trial's lucky draw
does not come back in its own confirmation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from forecast.core.errors import ForecastError
from forecast.core.files import write_json_atomic
from forecast.report.collect import StudyEntry
from forecast.sizing.devices import one_device
from forecast.training.config import differences, recorded_data, resolve

RESULT = "result.json"
# Flags a retrain may add to the best config: an ALLOWLIST of how it runs (hardware, data location and
# loaders, progress display, planner memory), each in `UNMEASURED`. One exception, documented: shorter
# epochs (`trainer.max_epochs`), for a quick report; the report's header shows the flags it ran with.
ALLOWED_KEYS = ("trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.precision",
                "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                "trainer.benchmark", "trainer.max_epochs", "planner.memory_gb",
                "data.data_dir", "data.num_workers", "data.eval_batch_size")
QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
WEIGHTS_ONLY = ("--checkpoint.save_weights_only=true", "--checkpoint.save_last=false")  # tested once, never resumed
ONE_DEVICE = "--trainer.devices=1"  # before the user's flags, which `check_overrides` holds to one device


@dataclass
class SeedRun:
    """One retrain: its test metrics (best checkpoint), val curve and per-sample test predictions."""

    seed: int
    folder: str
    test: dict[str, float]
    val_best: dict[str, float]  # the best epoch's val metrics (that checkpoint's)
    history: list[dict[str, float]]  # val metrics per epoch
    params: int
    epochs_run: int
    wall_s: float
    probs: list[float] = field(repr=False)
    dates: list[str] = field(default_factory=list, repr=False)  # test prediction days t, ISO
    labels: list[int] = field(default_factory=list, repr=False)
    fold: int = 0
    key: str = ""
    cached: bool = False


FOLD_KEYS = ("folds", "fold", "test_end")  # set by the report per fold, not by the study


def check_overrides(args: Sequence[str]) -> None:
    """Refuse flags that would change what the study measured (labels, splits, model).

    Raises:
        ForecastError: a flag outside `ALLOWED_KEYS`, or device flags asking for more than one device.
    """
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        values[key] = value if eq else (args[i + 1] if i + 1 < len(args) else "")
        if key not in ALLOWED_KEYS:
            raise ForecastError(f"--{key}: not an option of forecast report, and not a flag a retrain may add "
                                f"(only --{', --'.join(ALLOWED_KEYS)}; a flag that could change what a study "
                                "measured is refused)")
    one_device({"devices": values.get("trainer.devices", 1), "num_nodes": values.get("trainer.num_nodes", 1)},
               "report retrains")


def resolve_best(entry: StudyEntry, overrides: Sequence[str]) -> dict[str, Any]:
    """Resolve the best config through the real parser and check it against the study.

    Raises:
        ForecastError: the config no longer parses, or its data settings differ from what the
            study recorded.
    """
    config = resolve([*entry.config_args, ONE_DEVICE, *overrides])
    data = {k: v for k, v in recorded_data(config["data"]).items() if k not in FOLD_KEYS}
    recorded = {k: v for k, v in recorded_data(entry.data).items() if k not in FOLD_KEYS}
    diff = differences(recorded, json.loads(json.dumps(data, default=str)), "data.")
    if diff:
        raise ForecastError(f"the best config's data differ from the study's ({diff[0]})")
    return config


def fold_args(folds: int, fold: int, test_start: str, test_end: str | None) -> list[str]:
    """The data flags that make a run fold `fold` of `folds` (what `forecast fit` takes too)."""
    args = [f"--data.folds={folds}", f"--data.fold={fold}", f"--data.test_start={test_start}"]
    return args + ([f"--data.test_end={test_end}"] if test_end else [])


def run_key(entry: StudyEntry, overrides: Sequence[str], seed: int, data: str) -> str:
    """md5 of everything that decides a retrain's outcome: config files by content, and `data`,
    the data module's fingerprint, so a rebuilt or re-downloaded tier retrains instead of reusing."""
    parts: list[str] = [entry.name, str(entry.best.number), str(seed), data, *overrides]
    args = entry.config_args
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--config" and Path(arg).is_file():
            parts.append(Path(arg).read_text())
        else:
            parts.append(arg)
    return hashlib.md5("\0".join(parts).encode()).hexdigest()


def retrain(entry: StudyEntry, seed: int, root: Path, data: str, overrides: Sequence[str] = (),
            keep_checkpoints: bool = False, fold: int = 0) -> SeedRun:
    """Fit the best config with `seed`, test it once from its best checkpoint; its record also
    goes to `<folder>/result.json` (the storage's task queue decides reuse, `forecast.report.jobs`).

    Args:
        entry: the study.
        seed: `seed_everything` of this retrain.
        root: runs go to `<root>/<study>/fold<fold>-seed<seed>/`.
        data: fingerprint of the data the retrain must see (`ForecastDataModule.fingerprint()` of
            the fold's data module); part of the reuse key, and checked again when the retrain loads its data.
        overrides: the fold's data flags (`fold_args`) and extra `--trainer.*` flags (checked by
            `check_overrides`).
        keep_checkpoints: keep the checkpoint files (default: delete them once tested).
        fold: the fold index (names the folder; the fold itself is in `overrides`).
    """
    version = f"fold{fold}-seed{seed}"
    folder = root / entry.name / version
    key = run_key(entry, overrides, seed, data)
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished or outdated retrain of ours: start it clean
    started = time.time()
    run = _fit_and_test(entry, seed, root, overrides, data, version)
    run.fold = fold
    run.wall_s, run.key = round(time.time() - started, 3), key
    if not keep_checkpoints:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    write_json_atomic(folder / RESULT, asdict(run))
    return run


def _fit_and_test(entry: StudyEntry, seed: int, root: Path, overrides: Sequence[str], data: str,
                  version: str) -> SeedRun:
    from forecast.training.cli import cli_main
    from forecast.training.messages import quiet_lightning

    logger = "--trainer.logger.init_args."
    args = [*entry.config_args, ONE_DEVICE, f"--seed_everything={seed}", *QUIET, *WEIGHTS_ONLY, f"{logger}save_dir={root}",
            f"{logger}name={entry.name}", f"{logger}version={version}", *overrides]
    with quiet_lightning(stdout=True):
        cli = cli_main(args, run=False)
        if cli.datamodule.fingerprint() != data:
            raise ForecastError("the data changed on disk since the report began (rebuilt tier?); rerun the report")
        cli.trainer.fit(cli.model, cli.datamodule)
        epochs_run = int(cli.trainer.current_epoch)
        ckpt = cli.trainer.checkpoint_callback
        if ckpt is None or not ckpt.best_model_path:
            raise ForecastError("the config saves no best checkpoint (checkpointing is off or "
                                f"{ckpt and ckpt.monitor} was never logged)")
        test = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
        # the same checkpoint's probabilities on the same split: the regime view slices them
        probs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader(), ckpt_path="best")
    best = cli.model.best_epoch() or {}
    split = cli.datamodule.splits["test"]
    return SeedRun(seed=seed, folder=str(cli.trainer.log_dir), test={k: float(v) for k, v in test.items()},
                   val_best={k: float(v) for k, v in best.items()}, history=list(cli.model.history),
                   params=int(cli.model.num_parameters), epochs_run=epochs_run,
                   wall_s=0.0, probs=[round(float(p), 6) for p in torch.cat(probs).float()],
                   dates=[d.date().isoformat() for d in split.dates],
                   labels=[int(v) for v in cli.datamodule.targets[split.ends].tolist()])
