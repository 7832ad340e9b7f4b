"""`forecast fit|validate|test|predict`: LightningCLI over `Forecaster` + `ForecastDataModule`.

`cli_main(args, run=False)` is how the search builds one trial: the same parser, the same
configs, then `cli.trainer.fit(cli.model, cli.datamodule)`. Where a run's files go is
`forecast.training.runs`; checkpoints are vetted by `forecast.training.checkpoints`.
"""

from __future__ import annotations

import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from forecast import configs
from forecast.core.allowlist import install, refused_import
from forecast.core.bounded_yaml import non_finite
from forecast.core.domains import MemoryGB, PositiveFiniteFloat, Seed, Size
from forecast.core.errors import ForecastError
from forecast.core.files import check_writable, write_json_atomic
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.core.parsers import one_line
from forecast.core.threads import POLICY
from forecast.data.datamodule import ForecastDataModule
from forecast.sizing.devices import (
    accelerator_kind,
    bf16_capable,
    check_nodes,
    check_visible,
    cuda_index,
    default_precision,
    one_device,
    use_tensor_cores,
)
from forecast.sizing.machine import check_fit_disk, check_memory, epoch_estimate, memory_bytes
from forecast.sizing.throughput import Throughput
from forecast.training.callbacks import EpochLine, MeasuredThreads, PredictionCSV
from forecast.training.checkpoints import BEST_PREFIX, AtomicCheckpointIO, check_checkpoint
from forecast.training.messages import (
    check_config_files,
    given_keys,
    parse_error,
    quiet_lightning,
    quiet_third_party,
)
from forecast.training.module import Forecaster
from forecast.training.resume import (
    IDENTITY_DATA_KEYS,
    RESUME_DATA_KEYS,
    check_architecture,
    check_resumable,
    check_trained_for,
    flag_conflicts,
    flatten,
)
from forecast.training.runs import point_at_run, write_metrics
from forecast.training.typed import EarlyStopping, ModelCheckpoint, Trainer

DEFAULT_CONFIG = configs.path("trainer/default.yaml")
DEFAULT_SAVE_DIR = "logs"  # the loggers' save_dir in configs/trainer/default.yaml


class ForecastCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.parsers: list[LightningArgumentParser] = []  # each one `add_arguments_to_parser` saw
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """As LightningCLI's, but a bad config file, key or value is one line (ForecastError),
        not the ~100 lines of usage that precede jsonargparse's message."""
        if isinstance(args, list):
            check_config_files(args)
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            subcommand = args[0] if isinstance(args, list) and args and args[0] in self.subcommands() else None
            named = [p for p in self.parsers if p.prog.replace(" [options]", "").endswith(f" {subcommand}")]
            sub = named[0] if subcommand and named else parser
            prog = sub.prog.replace(" [options]", "") if subcommand else None  # None: the search's parse
            raise ForecastError(parse_error(str(err), sub, args if isinstance(args, list) else [], prog)) from None
        _check_finite(self.config)
        # Lightning reads the hyperparameters of --ckpt_path next (torch.load) and merges them over
        # the config: vet the file, its settings as data (same schema, same allowlist) and conflicts first.
        ckpt = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt and ckpt not in ("best", "last", "hpc", "registry"):
            self._vet_saved_settings(parser, check_checkpoint(ckpt), ckpt, args if isinstance(args, list) else [])

    def _vet_saved_settings(self, parser: LightningArgumentParser, ckpt: dict[str, Any], path: str,
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
        sub = self.config.subcommand
        try:
            merged = parser.parse_object({sub: {"model": saved}}, self.config.clone())
        except Exception as err:  # jsonargparse: ArgumentError, or the refusal of a denied import path
            message = " ".join(str(err).split())
            raise ForecastError(f"{path}: its saved model settings are refused: "
                                f"{refused_import(message) or one_line(str(err))}") from None
        bad = non_finite(merged[sub].model.as_dict(), "model.")
        if bad:
            raise ForecastError(f"{path}: its saved model settings are refused: {bad[0]} is not a finite number")
        before = flatten(self.config[sub].model.as_dict(), "model.")
        after = flatten(merged[sub].model.as_dict(), "model.")
        refused, taken = flag_conflicts(before, after, given_keys(args))
        if refused:
            raise ForecastError(f"{path} was trained with other settings than this run sets ({refused[0]}); "
                                "drop the flag or config value, or start a new fit without --ckpt_path")
        if taken:
            rank_zero_info(f"from the checkpoint: {'; '.join(taken)}")

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """LightningCLI's `--seed_everything`, typed: a seed numpy accepts (0..2**32-1), or true
        for a random one (Lightning would warn and silently seed 0 for one out of range)."""
        parser.add_argument("--seed_everything", type=bool | Seed, default=self.seed_everything_default,
                            help="Seed (0..2**32-1) set before the classes are built; true draws a random one.")

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
        parser.add_argument("--planner.effective_batch", type=Size, default=256,
                            help="samples per optimizer step when data.batch_size is 'auto'")
        parser.add_argument("--planner.memory_gb", type=MemoryGB | None, default=None,
                            help="memory to plan for (default: free CUDA memory, or 16 GB on CPU)")
        parser.add_argument("--throughput.peak_tflops", type=PositiveFiniteFloat | None, default=None,
                            help="peak TFLOP/s the MFU divides by (default: the CUDA device's dense peak "
                                 "for the run's precision; none on CPU, so no MFU there unless given)")
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
        check_visible(kind)
        check_nodes(config.trainer.get("num_nodes") or 1)
        if config.trainer.precision is None:  # no config or flag chose one: decide from the device used
            bf16 = kind == "cuda" and bf16_capable(cuda_index(config.trainer.devices))  # this rank's GPU
            config.trainer.precision = default_precision(kind, bf16)
        use_tensor_cores(kind)
        self._planned = config.data.batch_size == "auto"
        if self._planned:
            apply_memory_plan(config)
        if self.subcommand in ("validate", "test", "predict"):
            _one_device(config)
            point_at_run(config)
        if self.subcommand is not None and config.get("weights_only") is None:
            config.weights_only = True  # a checkpoint holds tensors and plain data, never code
        if self.subcommand in ("validate", "test", "predict"):  # "best" resolved above, or the file given
            check_trained_for(check_checkpoint(config.ckpt_path), config, IDENTITY_DATA_KEYS)
        elif self.subcommand == "fit" and config.get("ckpt_path"):
            ckpt = check_checkpoint(config.ckpt_path)
            check_trained_for(ckpt, config, RESUME_DATA_KEYS)
            check_resumable(ckpt, config)

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
            index = self.trainer.strategy.root_device.index if device == "cuda" else None  # this rank's
            check_memory([arch], str(self.trainer.precision), device, memory_bytes(device, config.planner.memory_gb, index),
                         "this model", batch)
        note = check_fit_disk(self.trainer, self.model.num_parameters, self.model.hparams.get("weights_dtype", "float32"))
        if note:
            rank_zero_info(note)
        POLICY.apply(self.model.num_parameters)  # the threads it starts with (the rule's, or measured before)
        trial = POLICY.trial(self.model.num_parameters) if device == "cpu" and not self.model.hparams.get("compile") \
            else None  # compile on the CPU trains on one thread (`one_thread_for_cpu_inductor`)
        if trial is not None:
            self.trainer.callbacks.append(MeasuredThreads(trial, self.model.num_parameters))
        if self.subcommand == "fit" and device == "cpu" and arch is not None:
            rank_zero_info(epoch_estimate(arch, self.datamodule.epoch_samples))  # a selection: the all-years epoch

    def instantiate_classes(self) -> None:
        """As LightningCLI's; settings that Lightning's classes refuse together (a checkpoint every n
        steps AND every n epochs) are one line, as its own reason: MisconfigurationException is
        Lightning's "your configuration is wrong", never a bug of the run."""
        try:
            super().instantiate_classes()
        except MisconfigurationException as err:
            raise ForecastError(f"settings refused by Lightning: {one_line(str(err))}") from None

    def instantiate_trainer(self, **kwargs: Any):
        """As LightningCLI's, plus our ModelCheckpoint (`--checkpoint.*`) unless
        `--trainer.enable_checkpointing=false` (Lightning refuses a checkpoint callback then) or
        `--trainer.fast_dev_run` (its save_last would write ./checkpoints/last.ckpt). First, the
        checkpoint's weights against the model's shapes: the model exists, the Trainer (and its
        device lines) not yet."""
        if self.subcommand is not None and self.config[self.subcommand].get("ckpt_path"):
            check_architecture(self.config[self.subcommand].ckpt_path, self.model)
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = config.trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.trainer.get("enable_checkpointing") is not False and not config.trainer.get("fast_dev_run"):
            callbacks += checkpoint_callbacks(config.checkpoint)
        check_writable(run_folders(config))
        try:
            trainer = super().instantiate_trainer(**{"callbacks": callbacks, **kwargs})
        except (MisconfigurationException, ValueError, TypeError, ModuleNotFoundError) as err:
            # settings each valid alone that Lightning refuses together (devices=[0] on a CPU,
            # a strategy the accelerator cannot run), or a strategy whose package is not installed
            # (xla, deepspeed: Lightning names the requirement): its own reason, in one line
            raise ForecastError(f"trainer settings refused by Lightning: {one_line(str(err))}") from None
        if trainer.logger is None:  # --trainer.logger=false: nothing to log learning rates to (Lightning refuses)
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        peak = config.get("throughput.peak_tflops")
        for monitor in (c for c in trainer.callbacks if isinstance(c, Throughput)):
            monitor.peak_flops = None if peak is None else peak * 1e12  # a given peak: MFU on any device
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own plugin is left alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

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
        if isinstance(self.datamodule, ForecastDataModule):  # the training years it kept, and their samples
            summary["train_selection"] = self.datamodule.selection_summary()
        if self.trainer.log_dir is None or self.trainer.fast_dev_run:  # a smoke test writes no files (also without a logger)
            rank_zero_info("fast_dev_run: fit ran; no run folder, checkpoint or summary written")
            return
        run = Path(self.trainer.log_dir)
        write_json_atomic(run / "fit_summary.json", summary)
        shown = "  ".join(f"{k} {best[k]:.4f}" for k in (MONITOR, "val/auroc", "val/ap") if k in best)
        rank_zero_info(f"best epoch {best.get('epoch')}: {shown}")
        rank_zero_info(f"best checkpoint: {summary['best_checkpoint']}")
        rank_zero_info(f"run folder: {run}   see it: tensorboard --logdir {run.parent.parent}")

    def after_validate(self) -> None:
        write_metrics(self.trainer, "validate", self.config[self.subcommand].ckpt_path)

    def after_test(self) -> None:
        write_metrics(self.trainer, "test", self.config[self.subcommand].ckpt_path)


def run_folders(config) -> list[Path]:
    """The local folders a run will write into: its logger's run folder and a set checkpoint folder
    (none for a smoke test, which writes no files)."""
    if config.trainer.get("fast_dev_run"):
        return []
    logger, ckpt = config.trainer.get("logger"), config.get("checkpoint")
    folders = [getattr(logger, "log_dir", None), getattr(ckpt, "dirpath", None)]
    return [Path(str(f)) for f in folders if f and "://" not in str(f)]


def _check_finite(config) -> None:
    """No setting is NaN or infinite (`--model.lr=1e400` reads as inf and would train NaN)."""
    bad = non_finite(config.as_dict())
    if bad:
        key, _, value = bad[0].partition("=")
        key = key.split(".", 1)[1] if config.get("subcommand") and "." in key else key
        raise ForecastError(f"{key}: {value} is not a finite number (every setting must be)")


def checkpoint_callbacks(best: ModelCheckpoint) -> list[ModelCheckpoint]:
    """`--checkpoint.*`, and the last checkpoint always resumable: when the best checkpoints are
    weights-only (a large model's, evaluated and never resumed), `last.ckpt` comes from a second
    ModelCheckpoint that keeps the optimizer state, in the same folder."""
    if not (best.save_weights_only and best.save_last):
        return [best]
    last = ModelCheckpoint(dirpath=best.dirpath, save_top_k=0, save_last=best.save_last)
    best.save_last = False
    return [best, last]


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
    from forecast.sizing.budget import tier_features
    from forecast.sizing.planner import GB, available_memory_bytes, plan

    net = dict(config.model.net.init_args)
    net.update(n_features=tier_features(config.data.tier, config.data.get("inputs", "tier")),
               context_length=config.data.context_length)
    device = "cuda" if accelerator_kind(config.trainer.accelerator) == "cuda" else "cpu"
    # this rank's device (never cuda:0 from every DDP rank); the host's 16 GB default on CPU
    memory = (int(config.planner.memory_gb * GB) if config.planner.memory_gb is not None
              else memory_bytes("cuda", None, cuda_index(config.trainer.devices)) if device == "cuda" else None)
    memory = memory if memory is not None else available_memory_bytes(device)
    # not even micro-batch 1: the same one line, with the ways out, as a fixed batch would get
    check_memory([net], str(config.trainer.precision), device, memory, "this model")
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


def _parser_kwargs(run: bool) -> dict[str, Any]:
    """configs/trainer/default.yaml under every run: per subcommand with them, top level without."""
    # parse errors raise (`parse_arguments` makes them one line); no abbreviated options, as in every
    # other subcommand (`--trainer.max_epoch 3` is a mistake, not --trainer.max_epochs)
    one_line = {"exit_on_error": False, "allow_abbrev": False, "prog": "forecast"}
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


def run_parser() -> LightningArgumentParser:
    """The parser of a run's options (`forecast fit` without `--ckpt_path`), built and nothing else:
    its actions and types are the schema the fuzzer draws values from."""
    with quiet_lightning():
        return _build(_ParseOnly, ["--config", str(configs.path("demo.yaml"))], False, None, {}).parser


def _build(cls: type[ForecastCLI], args, run, subcommand, trainer_defaults, **kwargs) -> ForecastCLI:
    install()  # only allowlisted class paths, the safe YAML loader: before anything is parsed
    with warnings.catch_warnings():
        # `forecast <subcommand>` hands its argv over as `args`; that is intended, not a mistake.
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return cls(
            Forecaster,
            ForecastDataModule,
            trainer_class=Trainer,  # Lightning's, its numeric options typed (forecast.training.typed)
            args=args,
            run=run,
            seed_everything_default=42,
            trainer_defaults=trainer_defaults,
            save_config_callback=SaveConfigCallback if subcommand in (None, "fit") else None,
            parser_kwargs=_parser_kwargs(run),
            **kwargs,
        )


