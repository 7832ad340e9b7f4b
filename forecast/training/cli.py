"""`forecast fit|validate|test|predict`: LightningCLI over `Forecaster` + `ForecastDataModule`.

`ForecastCLI` is LightningCLI's run with our steps in its hooks, in the order a run happens; each step
lives in the module named for it:

1. parsed: `arguments` (the flags beyond the classes' own, their defaults and links, the parser's
   settings); a bad config file, key or value is one line (`messages`);
2. checked once parsed: `checks.check_parsed` (finite numbers, a checkpoint's saved settings);
3. checked and decided before anything is built: `checks.check_devices`, `planning.settle` (precision,
   memory plan, evaluation on one device, run folders), `checks.check_checkpoint_matches`;
4. built: the classes (the network on `meta`), then the Trainer (`trainer`: callbacks, checkpoint
   writer) after `checks.check_before_trainer`; then `checks.check_fits_machine` and
   `trainer.start_threads`;
5. after the subcommand: what it writes into its run folder (`runs`).

`cli_main(args, run=False)` is how the search builds one trial: the same parser, the same
configs, then `cli.trainer.fit(cli.model, cli.datamodule)`.
"""

from __future__ import annotations

import contextlib
import warnings
from argparse import ArgumentError
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from torch import nn

from forecast import configs
from forecast.core.allowlist import install
from forecast.core.errors import ForecastError
from forecast.core.parsers import one_line
from forecast.data.datamodule import ForecastDataModule
from forecast.training.arguments import add_run_arguments, add_seed_argument, parser_kwargs
from forecast.training.checks import (
    check_before_trainer,
    check_checkpoint_matches,
    check_devices,
    check_fits_machine,
    check_parsed,
)
from forecast.training.messages import (
    check_config_files,
    config_errors,
    parse_failure,
    quiet_lightning,
    quiet_third_party,
)
from forecast.training.module import Forecaster
from forecast.training.planning import settle
from forecast.training.runs import write_fit_summary, write_metrics
from forecast.training.trainer import (
    default_callbacks,
    finish_trainer,
    run_callbacks,
    start_threads,
)
from forecast.training.typed import Trainer


class ForecastCLI(LightningCLI):
    """LightningCLI with our steps, hook by hook in the order a run calls them (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.parsers: list[LightningArgumentParser] = []  # each one `add_arguments_to_parser` saw
        self.planned = False  # the batch came from the memory plan (`planning.settle`)
        super().__init__(*args, **kwargs)

    # -- 1. parsed ---------------------------------------------------------------------------------
    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        add_seed_argument(parser, self.seed_everything_default)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        self.parsers.append(parser)  # the subcommands' parsers: their keys name the closest to a typo
        add_run_arguments(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """As LightningCLI's, but a bad config file, key or value is one line (ForecastError),
        not the ~100 lines of usage that precede jsonargparse's message; then `checks.check_parsed`."""
        argv = args if isinstance(args, list) else []
        if isinstance(args, list):
            check_config_files(args)
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise parse_failure(str(err), args, parser, self.parsers, self.subcommands()) from None
        check_parsed(parser, self.config, argv)

    # -- 2. checked and decided before anything is built --------------------------------------------
    def before_instantiate_classes(self) -> None:
        # The network (`model.net`, any nn.Module but the LightningModule itself) is built on `meta`,
        # without storage; `Forecaster.configure_model` materialises it on the Trainer's device.
        # Added here, after LightningCLI's own instantiators, through the parser's public API.
        self.parser.add_instantiator(on_meta, nn.Module, subclasses=True)
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: the search
        self.planned = settle(config, self.subcommand, check_devices(config))
        check_checkpoint_matches(config, self.subcommand)

    # -- 3. built ----------------------------------------------------------------------------------
    def instantiate_classes(self) -> None:
        """As LightningCLI's; settings that Lightning's classes refuse together (a checkpoint every n
        steps AND every n epochs) are one line, as its own reason: MisconfigurationException is
        Lightning's "your configuration is wrong", never a bug of the run."""
        try:
            super().instantiate_classes()
        except MisconfigurationException as err:
            raise ForecastError(f"settings refused by Lightning: {one_line(str(err))}") from None

    def instantiate_trainer(self, **kwargs: Any):
        """As LightningCLI's, with `trainer.run_callbacks` and `trainer.finish_trainer`; first
        `checks.check_before_trainer` (the model exists, the Trainer and its device lines not yet)."""
        ckpt = self.config[self.subcommand].get("ckpt_path") if self.subcommand else None
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        check_before_trainer(ckpt, init, self.model)
        try:
            trainer = super().instantiate_trainer(**{"callbacks": run_callbacks(init), **kwargs})
        except (MisconfigurationException, ValueError, TypeError, ModuleNotFoundError) as err:
            # settings each valid alone that Lightning refuses together (devices=[0] on a CPU,
            # a strategy the accelerator cannot run), or a strategy whose package is not installed
            # (xla, deepspeed: Lightning names the requirement): its own reason, in one line
            raise ForecastError(f"trainer settings refused by Lightning: {one_line(str(err))}") from None
        finish_trainer(trainer, init)
        return trainer

    def after_instantiate_classes(self) -> None:
        """Before a fit (`forecast fit`, a search trial, a report retrain): `checks.check_fits_machine`,
        then `trainer.start_threads`."""
        if self.subcommand not in (None, "fit"):
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_fits_machine(self.trainer, self.model, self.datamodule, config, self.planned)
        start_threads(self.trainer, self.model, self.datamodule, fit=self.subcommand == "fit")

    # -- 4. after the subcommand: what it writes, and where ----------------------------------------
    def after_fit(self) -> None:
        write_fit_summary(self.trainer, self.model, self.datamodule)

    def after_validate(self) -> None:
        write_metrics(self.trainer, "validate", self.config[self.subcommand].ckpt_path)

    def after_test(self) -> None:
        write_metrics(self.trainer, "test", self.config[self.subcommand].ckpt_path)


def on_meta(class_type: type, *args: Any, **kwargs: Any) -> Any:
    """jsonargparse instantiator: build a module on `meta` (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return class_type(*args, **kwargs)


def cli_main(args: list[str] | None = None, run: bool = True, **kwargs: Any) -> ForecastCLI:
    """Build (and by default run) the LightningCLI. `args` starts with the subcommand when run=True."""
    subcommand = args[0] if run and args else None
    quiet_third_party()
    extra = dict(kwargs.pop("trainer_defaults", {}))
    # precision: decided from the accelerator in `planning.settle`; the caller's callbacks (the search's
    # pruning callback) after every run's own
    trainer_defaults = {"callbacks": default_callbacks(subcommand, extra.pop("callbacks", [])), **extra}
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


class ParsedRun:
    """A run's arguments parsed once by the run's own parser and checks, nothing built (no data read, no
    model); `check` parses further flags over them with the same parser and the same checks.

    The search plans a study with it: its config, then the ends of the search space over it, all with one
    parser (`forecast hpo` built three before).

    Args:
        args: `--config FILE` and `--key=value` flags, without a subcommand, over
            configs/trainer/default.yaml.

    Raises:
        ForecastError: `invalid trial config: ` and the parser's or the checks' refusal, in one line.
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        with config_errors(), quiet_lightning():  # parsing seeds as every run does ("Seed set to ...")
            self._cli = _build(_ParseOnly, self.args, False, None, {})
            self.config = self._resolved()  # as parsed: `seed_everything: true` is not drawn yet

    def check(self, extra: Sequence[str]) -> dict[str, Any]:
        """The config of `args` + `extra` (later flags win), through the same parse and checks as
        `forecast fit` (`ForecastCLI.parse_arguments`: config files, the parser, `checks.check_parsed`)."""
        cli = self._cli
        with config_errors(), quiet_args_warning():
            cli.parse_arguments(cli.parser, [*self.args, *extra])
            return self._resolved()

    def _resolved(self) -> dict[str, Any]:
        return yaml.safe_load(self._cli.parser.dump(self._cli.parsed, skip_none=False))


def run_parser() -> LightningArgumentParser:
    """The parser of a run's options (`forecast fit` without `--ckpt_path`), built and nothing else:
    its actions and types are the schema the fuzzer draws values from."""
    with quiet_lightning():
        return _build(_ParseOnly, ["--config", str(configs.path("demo.yaml"))], False, None, {}).parser


def _build(cls: type[ForecastCLI], args, run, subcommand, trainer_defaults, **kwargs) -> ForecastCLI:
    install()  # only allowlisted class paths, the safe YAML loader: before anything is parsed
    with quiet_args_warning():
        return cls(
            Forecaster,
            ForecastDataModule,
            trainer_class=Trainer,  # Lightning's, its numeric options typed (forecast.training.typed)
            args=args,
            run=run,
            seed_everything_default=42,
            trainer_defaults=trainer_defaults,
            save_config_callback=SaveConfigCallback if subcommand in (None, "fit") else None,
            parser_kwargs=parser_kwargs(run),
            **kwargs,
        )




@contextlib.contextmanager
def quiet_args_warning() -> Iterator[None]:
    """`forecast <subcommand>` hands its argv to LightningCLI as `args`; that is intended, not the
    mistake Lightning warns of when `sys.argv` holds arguments too."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        yield
