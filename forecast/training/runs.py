"""Run folders: where a run's files live, which run a config or checkpoint belongs to, what a fit and an
evaluation write there, and how evaluations are named so that none is ever overwritten.

Every run lives in one folder, `<save_dir>/<name>/version_N/`: TensorBoard events, the resolved
`config.yaml`, `checkpoints/best-*.ckpt` and `checkpoints/last.ckpt`, and what `test`, `validate`
and `predict` write, named by split, date range and data fingerprint and never overwritten
(`test_<first>_<last>_<md5[:8]>.json`, `predictions_<split>_<first>_<last>_<md5[:8]>.csv`; a second
evaluation of the same samples gets `-2`, `-3`, ...). `test`, `validate` and `predict` default to
the BEST checkpoint of that run and log into the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from forecast.core.errors import ForecastError
from forecast.core.files import write_json_atomic
from forecast.core.metric_names import MONITOR
from forecast.data.datamodule import ForecastDataModule
from forecast.sizing.throughput import Throughput
from forecast.training.checkpoints import checkpoint_in

DEFAULT_SAVE_DIR = "logs"  # the loggers' save_dir in configs/trainer/default.yaml


def follow_root_dir(config: Any) -> None:
    """`--trainer.default_root_dir DIR` moves the run folders there, unless a logger's save_dir
    other than the default (`DEFAULT_SAVE_DIR`, configs/trainer/default.yaml) was given."""
    root = config.trainer.get("default_root_dir")
    init = getattr(config.trainer.get("logger"), "init_args", None)
    if root and init is not None and str(init.get("save_dir")) == DEFAULT_SAVE_DIR:
        init.save_dir = str(root)


def run_folders(config: Any) -> list[Path]:
    """The local folders a run will write into: its logger's run folder and a set checkpoint folder
    (none for a smoke test, which writes no files)."""
    if config.trainer.get("fast_dev_run"):
        return []
    logger, ckpt = config.trainer.get("logger"), config.get("checkpoint")
    folders = [getattr(logger, "log_dir", None), getattr(ckpt, "dirpath", None)]
    return [Path(str(f)) for f in folders if f and "://" not in str(f)]


def evaluation_path(run: Path, kind: str, dm: ForecastDataModule, split: str, suffix: str) -> Path:
    """`<run>/<kind>_<first>_<last>_<md5[:8]><suffix>` for the samples of `split` (kind "test"
    and "val" name the split already), with `-2`, `-3`, ... when that name is taken: an earlier
    evaluation is never overwritten."""
    dates = dm.splits[split].dates
    kind = kind if kind in ("test", "val") else f"{kind}_{split}"
    stem = f"{kind}_{dates[0].date()}_{dates[-1].date()}_{dm.fingerprint()[:8]}"
    path, n = run / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = run / f"{stem}-{n}{suffix}"
    return path


def write_fit_summary(trainer: Any, model: Any, datamodule: Any) -> None:
    """After a fit: fit_summary.json in the run folder (the BEST epoch's val metrics, epochs run, parameters,
    throughput, the training years kept), and where the best checkpoint and the run folder are."""
    ckpt = trainer.checkpoint_callback
    best = model.best_epoch() or {}
    monitors = [c for c in trainer.callbacks if isinstance(c, Throughput)]
    summary = {
        "best_checkpoint": ckpt.best_model_path if ckpt else None,
        "best_epoch": best.get("epoch"),
        "epochs_run": trainer.current_epoch,
        "num_parameters": model.num_parameters,
        **{k: v for k, v in best.items() if k != "epoch"},
        **(monitors[0].summary() if monitors else {}),  # samples/s, tokens/s, MFU
    }
    if isinstance(datamodule, ForecastDataModule):  # the training years it kept, and their samples
        summary["train_selection"] = datamodule.selection_summary()
    if trainer.log_dir is None or trainer.fast_dev_run:  # a smoke test writes no files (also without a logger)
        rank_zero_info("fast_dev_run: fit ran; no run folder, checkpoint or summary written")
        return
    run = Path(trainer.log_dir)
    write_json_atomic(run / "fit_summary.json", summary)
    shown = "  ".join(f"{k} {best[k]:.4f}" for k in (MONITOR, "val/auroc", "val/ap") if k in best)
    rank_zero_info(f"best epoch {best.get('epoch')}: {shown}")
    rank_zero_info(f"best checkpoint: {summary['best_checkpoint']}")
    rank_zero_info(f"run folder: {run}   see it: tensorboard --logdir {run.parent.parent}")


def write_metrics(trainer, stage: str, ckpt_path: str | None) -> None:
    """After validate or test: the split's metrics, named by its dates and data, in the run folder."""
    if trainer.log_dir is None or trainer.fast_dev_run:  # a smoke test writes no files (also without a logger)
        return
    dm: ForecastDataModule = trainer.datamodule
    split = "val" if stage == "validate" else "test"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    path = evaluation_path(Path(trainer.log_dir), split, dm, split, ".json")
    dates = dm.splits[split].dates
    write_json_atomic(path, {"checkpoint": ckpt_path, "split": split, "first": str(dates[0].date()),
                             "last": str(dates[-1].date()), "samples": dm.splits[split].size,
                             "folds": dm.folds, "fold": dm.fold, "data_fingerprint": dm.fingerprint(), **metrics})
    shown = "  ".join(f"{k.split('/')[1]} {metrics[k]:.4f}" for k in (f"{split}/auroc", f"{split}/loss") if k in metrics)
    rank_zero_info(f"{stage} ({split} {dates[0].date()}..{dates[-1].date()}, {ckpt_path}): {shown}")
    rank_zero_info(f"{stage} metrics: {path}")


def epoch_number(index: Any) -> str:
    """An epoch as the progress lines and tables count it (1-based), from Lightning's recorded 0-based
    index (fit_summary.json, a trial's `best_epoch`); "-" when none was recorded."""
    return str(index + 1) if isinstance(index, int) else "-"


def point_at_run(config) -> None:
    """Resolve `ckpt_path` (default: best) to a file, and log into the run that produced it."""
    logger = config.trainer.get("logger")
    run = find_run(config)
    ckpt = config.get("ckpt_path") or "best"
    if ckpt in ("best", "last"):
        if run is None:
            raise ForecastError("no finished run found for this config; run `forecast fit` first or pass --ckpt_path FILE")
        ckpt = str(checkpoint_in(run, ckpt))
    elif not Path(ckpt).is_file():
        raise ForecastError(f"checkpoint not found: {ckpt}")
    else:
        folder = Path(ckpt).resolve().parent
        # A run's own checkpoint logs into that run; one from anywhere else (a copy, a download) into
        # a new version of this config's logger, never into the folders above the file.
        run = folder.parent if folder.name == "checkpoints" and is_run(folder.parent) else None
    config.ckpt_path = ckpt
    if run is not None and (isinstance(logger, dict) or hasattr(logger, "init_args")):
        logger.init_args.version = run.name
        logger.init_args.save_dir = str(run.parent.parent)
        logger.init_args.name = run.parent.name
    rank_zero_info(f"checkpoint: {ckpt}")


def find_run(config) -> Path | None:
    """The run a config belongs to: the folder of a saved run config, else the newest run of its logger."""
    for cfg in reversed(config.get("config") or []):
        folder = Path(str(cfg)).resolve().parent
        if is_run(folder):
            return folder
    logger = config.trainer.get("logger")
    init = getattr(logger, "init_args", None)
    if init is None:
        return None
    experiment = Path(init.save_dir) / (init.name or "")
    runs = sorted((p for p in experiment.glob("version_*") if is_run(p)), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def is_run(folder: Path) -> bool:
    """A fit ran here: it saved checkpoints, or finished (with checkpointing off, only the summary)."""
    return (folder / "checkpoints").is_dir() or (folder / "fit_summary.json").is_file()
