"""`forecast fit|validate|test|predict`: LightningCLI over `Forecaster` + `ForecastDataModule`.

`cli_main(args, run=False)` is how the search builds one trial: the same parser, the same
configs, then `cli.trainer.fit(cli.model, cli.datamodule)`.

Every run lives in one folder, `<save_dir>/<name>/version_N/`: TensorBoard events, the resolved
`config.yaml`, `checkpoints/best-*.ckpt` and `checkpoints/last.ckpt`, and what `test`, `validate`
and `predict` write, named by split, date range and data fingerprint and never overwritten
(`test_<first>_<last>_<md5[:8]>.json`, `predictions_<split>_<first>_<last>_<md5[:8]>.csv`; a second
evaluation of the same samples gets `-2`, `-3`, ...). `test`, `validate` and `predict` default to
the BEST checkpoint of that run and log into the same folder.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import re
import warnings
from argparse import ArgumentError
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from forecast.data.datamodule import ForecastDataModule
from forecast.devices import accelerator_kind, default_precision, one_device, use_tensor_cores
from forecast.errors import ForecastError
from forecast.io import atomic_path, write_json_atomic
from forecast.machine import check_fit_disk, check_memory, epoch_estimate, memory_bytes
from forecast.metrics import MONITOR, MONITOR_MODE
from forecast.module import Forecaster
from forecast.throughput import Throughput

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "trainer" / "default.yaml"
BEST_PREFIX = "best"
DEFAULT_SAVE_DIR = "logs"  # the loggers' save_dir in configs/trainer/default.yaml


class PredictionCSV(BasePredictionWriter):
    """Writes `predictions_<split>_<first>_<last>_<md5[:8]>.csv` (date, probability, label) into the run folder."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        dm: ForecastDataModule = trainer.datamodule
        split = dm.splits[dm.predict_split]
        probs = torch.cat(predictions).float().numpy()  # sequential sampler: rows in split order
        labels = dm.targets[torch.as_tensor(split.ends)].numpy()
        frame = pd.DataFrame({"date": split.dates.date, "probability": probs, "label": labels.astype(int)})
        if trainer.log_dir is None:  # fast_dev_run: a smoke test writes no files
            return
        path = evaluation_path(Path(trainer.log_dir), "predictions", dm, dm.predict_split, ".csv")
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6f")
        rank_zero_info(f"predictions: {path} ({len(frame)} rows)")


class EpochLine(Callback):
    """One line per epoch (train loss, val loss and AUROC) when the progress bar is off, so a run
    in a log file or CI still shows how it goes."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.progress_bar_callback is not None:
            return
        logged = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(logged[k]):.4f}" for k in ("train/loss", MONITOR, "val/auroc") if k in logged)
        rank_zero_info(f"epoch {trainer.current_epoch}: {shown}")


class _NotOurs(logging.Filter):
    """Drops Lightning's advertising tips from our commands' output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_third_party() -> None:
    """Messages of our dependencies that are not about the user's run: Lightning's tips and a
    deprecation warning Lightning raises against newer torch."""
    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _NotOurs) for f in handler.filters):
            handler.addFilter(_NotOurs())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class ForecastCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.parsers: list[LightningArgumentParser] = []  # each one `add_arguments_to_parser` saw
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """As LightningCLI's, but a bad config file, key or value is one line (ForecastError),
        not the ~100 lines of usage that precede jsonargparse's message."""
        if isinstance(args, list):
            _check_config_files(args)
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            subcommand = args[0] if isinstance(args, list) and args and args[0] in self.subcommands() else None
            named = [p for p in self.parsers if p.prog.replace(" [options]", "").endswith(f" {subcommand}")]
            sub = named[0] if subcommand and named else parser
            prog = sub.prog.replace(" [options]", "") if subcommand else None  # None: the search's parse
            raise ForecastError(_parse_error(str(err), sub, args if isinstance(args, list) else [], prog)) from None
        # Lightning reads the hyperparameters of --ckpt_path next (torch.load): vet the file first.
        ckpt = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt and ckpt not in ("best", "last", "hpc", "registry"):
            check_checkpoint(ckpt)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        self.parsers.append(parser)  # the subcommands' parsers: their keys name the closest to a typo
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        # `--checkpoint.*` as a plain class group rather than a LightningCLI callback key: the
        # checkpoint joins the Trainer's callbacks in `instantiate_trainer`, only with checkpointing on
        parser.add_class_arguments(ModelCheckpoint, "checkpoint", fail_untyped=False, sub_configs=True)
        parser.set_defaults(
            {
                "early_stopping.monitor": MONITOR,
                "early_stopping.mode": MONITOR_MODE,
                "early_stopping.patience": 10,
                "early_stopping.min_delta": 0.001,
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": MONITOR_MODE,
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.filename": BEST_PREFIX + "-{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_argument("--planner.effective_batch", type=int, default=256,
                            help="samples per optimizer step when data.batch_size is 'auto'")
        parser.add_argument("--planner.memory_gb", type=float | None, default=None,
                            help="memory to plan for (default: free CUDA memory, or 16 GB on CPU)")
        # Never configured twice: the data decides the model's input shape.
        parser.link_arguments("data.n_features", "model.net.init_args.n_features", apply_on="instantiate")
        parser.link_arguments("data.context_length", "model.net.init_args.context_length", apply_on="parse")

    def before_instantiate_classes(self) -> None:
        # The network (`model.net`, any nn.Module but the LightningModule itself) is built on `meta`,
        # without storage; `Forecaster.configure_model` materialises it on the Trainer's device.
        # Added here, after LightningCLI's own instantiators, through the parser's public API.
        self.parser.add_instantiator(_on_meta, nn.Module, subclasses=True)
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: the search
        _follow_root_dir(config)
        kind = accelerator_kind(config.trainer.accelerator)
        if config.trainer.precision is None:  # no config or flag chose one: decide from the device used
            bf16 = kind == "cuda" and torch.cuda.is_bf16_supported()
            config.trainer.precision = default_precision(kind, bf16)
        use_tensor_cores(kind)
        self._planned = config.data.batch_size == "auto"
        if self._planned:
            apply_memory_plan(config)
        if self.subcommand in ("validate", "test", "predict"):
            _one_device(config)
            _point_at_run(config)
        if self.subcommand is not None and config.get("weights_only") is None:
            config.weights_only = True  # a checkpoint holds tensors and plain data, never code
        if self.subcommand in ("validate", "test", "predict"):
            check_checkpoint(config.ckpt_path)  # "best" resolved above, or the file given

    def after_instantiate_classes(self) -> None:
        """Before a fit (`forecast fit`, a search trial, a report retrain): refuse a model or batch
        that cannot fit the device's memory, or checkpoints that cannot fit on the disk."""
        if self.subcommand not in (None, "fit"):
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        device = "cuda" if self.trainer.strategy.root_device.type == "cuda" else "cpu"
        arch = getattr(self.model.net, "init_args", None)
        if arch is not None:
            batch = None if self._planned else self.datamodule.batch_size
            check_memory([arch], str(self.trainer.precision), device, memory_bytes(device, config.planner.memory_gb),
                         "this model", batch)
        check_fit_disk(self.trainer, self.model.num_parameters)
        if self.subcommand == "fit" and device == "cpu" and arch is not None:
            rank_zero_info(epoch_estimate(arch, self.datamodule.splits["train"].size))

    def instantiate_trainer(self, **kwargs: Any):
        """As LightningCLI's, plus our ModelCheckpoint (`--checkpoint.*`) unless
        `--trainer.enable_checkpointing=false` (Lightning refuses a checkpoint callback then) or
        `--trainer.fast_dev_run` (its save_last would write ./checkpoints/last.ckpt)."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = config.trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.trainer.get("enable_checkpointing") is not False and not config.trainer.get("fast_dev_run"):
            callbacks.append(config.checkpoint)
        return super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})

    # -- after each subcommand: say what happened and where ----------------------------------
    def after_fit(self) -> None:
        """Write fit_summary.json (the BEST epoch's val metrics) and say where everything is."""
        ckpt = self.trainer.checkpoint_callback
        best = self.model.best_epoch() or {}
        summary = {
            "best_checkpoint": ckpt.best_model_path if ckpt else None,
            "best_epoch": best.get("epoch"),
            "epochs_run": self.trainer.current_epoch,
            "num_parameters": self.model.num_parameters,
            **{k: v for k, v in best.items() if k != "epoch"},
            **_throughput(self.trainer),
        }
        if self.trainer.log_dir is None:  # fast_dev_run: a smoke test writes no files
            rank_zero_info("fast_dev_run: fit ran; no run folder, checkpoint or summary written")
            return
        run = Path(self.trainer.log_dir)
        write_json_atomic(run / "fit_summary.json", summary)
        shown = "  ".join(f"{k} {best[k]:.4f}" for k in (MONITOR, "val/auroc", "val/ap") if k in best)
        rank_zero_info(f"best epoch {best.get('epoch')}: {shown}")
        rank_zero_info(f"best checkpoint: {summary['best_checkpoint']}")
        rank_zero_info(f"run folder: {run}   see it: tensorboard --logdir {run.parent.parent}")

    def after_validate(self) -> None:
        _write_metrics(self.trainer, "validate", self.config[self.subcommand].ckpt_path)

    def after_test(self) -> None:
        _write_metrics(self.trainer, "test", self.config[self.subcommand].ckpt_path)


def _on_meta(class_type: type, *args: Any, **kwargs: Any) -> Any:
    """jsonargparse instantiator: build a module on `meta` (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return class_type(*args, **kwargs)


def _throughput(trainer) -> dict[str, float | None]:
    """The run's training throughput (samples/s, tokens/s, MFU) from its `Throughput` callback."""
    found = [c for c in trainer.callbacks if isinstance(c, Throughput)]
    return found[0].summary() if found else {}


def apply_memory_plan(config) -> None:
    """data.batch_size 'auto': the planner picks the micro-batch and accumulate_grad_batches."""
    from forecast.budget import tier_features
    from forecast.planner import GB, plan

    net = dict(config.model.net.init_args)
    net.update(n_features=tier_features(config.data.tier), context_length=config.data.context_length)
    device = "cuda" if accelerator_kind(config.trainer.accelerator) == "cuda" else "cpu"
    memory = None if config.planner.memory_gb is None else int(config.planner.memory_gb * GB)
    chosen = plan(**net, precision=str(config.trainer.precision), memory_bytes=memory,
                  effective_batch=config.planner.effective_batch, device=device)
    config.data.batch_size = chosen.micro_batch
    config.trainer.accumulate_grad_batches = chosen.accumulate
    rank_zero_info(
        f"memory plan ({device}): micro-batch {chosen.micro_batch} x accumulate {chosen.accumulate} "
        f"= {chosen.effective_batch}, estimated peak {chosen.peak_bytes / GB:.2f} GB"
    )


def _follow_root_dir(config) -> None:
    """`--trainer.default_root_dir DIR` moves the run folders there, unless a logger's save_dir
    other than the default (`DEFAULT_SAVE_DIR`, configs/trainer/default.yaml) was given."""
    root = config.trainer.get("default_root_dir")
    init = getattr(config.trainer.get("logger"), "init_args", None)
    if root and init is not None and str(init.get("save_dir")) == DEFAULT_SAVE_DIR:
        init.save_dir = str(root)


def _one_device(config) -> None:
    """Evaluate on one device ("auto" becomes 1)."""
    if str(config.trainer.devices) == "auto":
        config.trainer.devices = 1
    one_device(config.trainer, "validate, test and predict")


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


def _write_metrics(trainer, stage: str, ckpt_path: str | None) -> None:
    if trainer.log_dir is None:  # fast_dev_run: a smoke test writes no files
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


def _point_at_run(config) -> None:
    """Resolve `ckpt_path` (default: best) to a file, and log into the run that produced it."""
    logger = config.trainer.get("logger")
    run = _find_run(config)
    ckpt = config.get("ckpt_path") or "best"
    if ckpt in ("best", "last"):
        if run is None:
            raise ForecastError("no finished run found for this config; run `forecast fit` first or pass --ckpt_path FILE")
        ckpt = str(_checkpoint_in(run, ckpt))
    elif not Path(ckpt).is_file():
        raise ForecastError(f"checkpoint not found: {ckpt}")
    else:
        run = Path(ckpt).resolve().parent.parent
    config.ckpt_path = ckpt
    if isinstance(logger, dict) or hasattr(logger, "init_args"):
        logger.init_args.version = run.name
        logger.init_args.save_dir = str(run.parent.parent)
        logger.init_args.name = run.parent.name
    rank_zero_info(f"checkpoint: {ckpt}")


def _find_run(config) -> Path | None:
    """The run a config belongs to: the folder of a saved run config, else the newest run of its logger."""
    for cfg in reversed(config.get("config") or []):
        folder = Path(str(cfg)).resolve().parent
        if _is_run(folder):
            return folder
    logger = config.trainer.get("logger")
    init = getattr(logger, "init_args", None)
    if init is None:
        return None
    experiment = Path(init.save_dir) / (init.name or "")
    runs = sorted((p for p in experiment.glob("version_*") if _is_run(p)), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def _is_run(folder: Path) -> bool:
    """A fit ran here: it saved checkpoints, or finished (with checkpointing off, only the summary)."""
    return (folder / "checkpoints").is_dir() or (folder / "fit_summary.json").is_file()


def _checkpoint_in(run: Path, which: str) -> Path:
    folder = run / "checkpoints"
    if not folder.is_dir():
        raise ForecastError(f"run {run} saved no checkpoints (trained with checkpointing off); "
                            "pass --ckpt_path FILE")
    found = sorted(folder.glob(f"{BEST_PREFIX}-*.ckpt")) if which == "best" else [folder / "last.ckpt"]
    found = [p for p in found if p.is_file()]
    if not found:
        raise ForecastError(f"no {which} checkpoint in {folder}")
    return found[-1]


def check_checkpoint(path: str | Path) -> None:
    """Refuse, in one line, a file that is not a Lightning checkpoint loadable weights-only.

    `mmap=True` maps the tensors instead of reading them, so even a 2B checkpoint costs only its
    small pickle: a text file, a truncated file or pickled code fails here, not deep in `fit`.
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


_CONFIG_FLAGS = ("--config", "-c")


def _check_config_files(args: list[str]) -> None:
    """Every `--config FILE` exists and holds a YAML mapping; else one line naming the file."""
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag not in _CONFIG_FLAGS:
            continue
        if not value:
            value = args[i + 1] if i + 1 < len(args) else ""
        path = Path(value)
        if not path.is_file():
            raise ForecastError(f"config file not found: {value}")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ForecastError(f"config file {value} is not valid YAML{where}: "
                                f"{getattr(err, 'problem', None) or err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ForecastError(f"config file {value} cannot be read: {err}") from None
        if not isinstance(doc, dict | None):
            raise ForecastError(f"config file {value} is not a mapping of options (got {type(doc).__name__})")


def _parse_error(message: str, parser: LightningArgumentParser, args: list[str], prog: str | None) -> str:
    """jsonargparse's message in one line; an unknown key gets the closest valid one and its file."""
    text = " ".join(message.split()) or "bad arguments"  # jsonargparse nests details on more lines
    text = text if len(text) <= 300 else text[:297] + "..."
    where, see = (f"{prog}: ", f" (see {prog} --help)") if prog else ("", "")
    key = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", text)
    if key is None:
        return f"{where}{text}{see}"
    key = key.group(1) or key.group(2)
    prefix, _, leaf = key.rpartition(".")
    siblings = {a.dest.rpartition(".")[2] for a in parser._actions
                if isinstance(a.dest, str) and a.dest.rpartition(".")[0] == prefix}
    close = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.7)
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else see
    source = next((f" in {f}" for f in _config_values(args) if key in _flat_keys(f)), "")
    return f"{where}unknown option '{key}'{source}{hint}"


def _config_values(args: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in _CONFIG_FLAGS:
            out.append(value or (args[i + 1] if i + 1 < len(args) else ""))
    return out


def _flat_keys(path: str) -> set[str]:
    """Dotted keys of a YAML file (`data: {batch_size: 1}` -> {'data', 'data.batch_size'})."""
    def walk(node: Any, prefix: str) -> set[str]:
        if not isinstance(node, dict):
            return set()
        keys = {f"{prefix}{k}" for k in node}
        for k, v in node.items():
            keys |= walk(v, f"{prefix}{k}.")
        return keys

    try:
        return walk(yaml.safe_load(Path(path).read_text()), "")
    except (OSError, yaml.YAMLError):
        return set()


def _parser_kwargs(run: bool) -> dict[str, Any]:
    """configs/trainer/default.yaml under every run: per subcommand with them, top level without."""
    one_line = {"exit_on_error": False}  # parse errors raise; `parse_arguments` makes them one line
    if not DEFAULT_CONFIG.exists():
        return one_line
    defaults = {"default_config_files": [str(DEFAULT_CONFIG)], **one_line}
    return {**one_line, **{sub: defaults for sub in ("fit", "validate", "test", "predict")}} if run else defaults


def cli_main(args: list[str] | None = None, run: bool = True, **kwargs: Any) -> ForecastCLI:
    """Build (and by default run) the LightningCLI. `args` starts with the subcommand when run=True."""
    subcommand = args[0] if run and args else None
    trainer_defaults = {  # precision: decided from the accelerator in ForecastCLI.before_instantiate_classes
        "callbacks": [LearningRateMonitor(logging_interval="step"), EpochLine(), Throughput()],
    }
    quiet_third_party()
    if subcommand == "predict":
        trainer_defaults["callbacks"].append(PredictionCSV())
    extra = dict(kwargs.pop("trainer_defaults", {}))
    trainer_defaults["callbacks"] += list(extra.pop("callbacks", []))  # e.g. the search's pruning callback
    trainer_defaults.update(extra)
    return _build(ForecastCLI, args, run, subcommand, trainer_defaults, **kwargs)


class _ParseOnly(ForecastCLI):
    """Parses and validates a run's arguments and builds nothing (no data read, no model)."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self.parsed = self.config.clone()  # as parsed: `seed_everything: true` is not drawn yet

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


def resolve_config(args: list[str]) -> dict[str, Any]:
    """The config `forecast fit` would run with, as a plain dict: `args` (`--config FILE` and
    `--key=value` flags, no subcommand) over configs/trainer/default.yaml, parsed and validated by
    the run's own parser, nothing instantiated. A bad key or value exits as the parser does."""
    with quiet_lightning():  # parsing seeds as every run does ("Seed set to ...")
        cli = _build(_ParseOnly, list(args), False, None, {})
    return yaml.safe_load(cli.parser.dump(cli.parsed, skip_none=False))


def _build(cls: type[ForecastCLI], args, run, subcommand, trainer_defaults, **kwargs) -> ForecastCLI:
    with warnings.catch_warnings():
        # `forecast <subcommand>` hands its argv over as `args`; that is intended, not a mistake.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return cls(
            Forecaster,
            ForecastDataModule,
            args=args,
            run=run,
            seed_everything_default=42,
            trainer_defaults=trainer_defaults,
            save_config_callback=SaveConfigCallback if subcommand in (None, "fit") else None,
            parser_kwargs=_parser_kwargs(run),
            **kwargs,
        )


@contextlib.contextmanager
def quiet_lightning(stdout: bool = False) -> Iterator[None]:
    """Runs inside a search or a report: Lightning's INFO lines (seed, devices, split sizes) and
    third-party warnings that are not ours stay out of the caller's own progress lines.

    Args:
        stdout: also swallow what the run prints (the module's parameter count at fit start).
    """
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), (contextlib.redirect_stdout(io.StringIO()) if stdout
                                         else contextlib.nullcontext()):
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning vs newer torch, not ours
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
