"""What a run parses, beyond the options LightningCLI reads from `Forecaster`, `ForecastDataModule` and the Trainer.

In the order `forecast fit --help` lists them: `--seed_everything` typed; `--early_stopping.*` and
`--checkpoint.*` with the monitored metric as their default; `--planner.*` (the memory plan of
`data.batch_size: auto`) and `--throughput.*`; the links that keep the data's input shape from being
set twice. Then how the parser behaves: configs/trainer/default.yaml under every run, errors raised
(never an exit), no abbreviated options.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from forecast import configs
from forecast.core.domains import MemoryGB, PositiveFiniteFloat, Seed, Size
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.training.checkpoints import BEST_PREFIX
from forecast.training.typed import EarlyStopping, ModelCheckpoint

DEFAULT_CONFIG = configs.path("trainer/default.yaml")
SUBCOMMANDS = ("fit", "validate", "test", "predict")

# Early stopping and checkpointing watch the one monitored metric; the best checkpoints are `best-*`
# (`forecast test` finds them by that prefix), the last one is kept for resuming.
CALLBACK_DEFAULTS = {
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


def add_seed_argument(parser: LightningArgumentParser, default: Any) -> None:
    """LightningCLI's `--seed_everything`, typed: a seed numpy accepts (0..2**32-1), or true for a
    random one (Lightning would warn and seed 0 for one out of range)."""
    parser.add_argument("--seed_everything", type=bool | Seed, default=default,
                        help="Seed (0..2**32-1) set before the classes are built; true draws a random one.")


def add_run_arguments(parser: LightningArgumentParser) -> None:
    """`--early_stopping.*`, `--checkpoint.*`, `--planner.*`, `--throughput.*`, and the data -> model links."""
    parser.add_lightning_class_args(EarlyStopping, "early_stopping")
    # `--checkpoint.*` is a plain class group, not a LightningCLI callback key: the checkpoint joins the
    # Trainer's callbacks only with checkpointing on (`forecast.training.trainer.run_callbacks`)
    parser.add_class_arguments(ModelCheckpoint, "checkpoint", fail_untyped=False, sub_configs=True)
    parser.set_defaults(CALLBACK_DEFAULTS)
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


def parser_kwargs(run: bool) -> dict[str, Any]:
    """configs/trainer/default.yaml under every run: per subcommand with them (`run`), top level without."""
    # parse errors raise (ForecastCLI.parse_arguments makes them one line); no abbreviated options, as in
    # every other command (`--trainer.max_epoch 3` is a mistake, not --trainer.max_epochs)
    strict = {"exit_on_error": False, "allow_abbrev": False, "prog": "forecast"}
    if not DEFAULT_CONFIG.exists():
        return strict
    defaults = {"default_config_files": [str(DEFAULT_CONFIG)], **strict}
    return {**strict, **{sub: defaults for sub in SUBCOMMANDS}} if run else defaults
