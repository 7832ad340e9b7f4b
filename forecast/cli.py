"""The `forecast` command: one entry point that dispatches to each subcommand's own parser.

Every subcommand parses with jsonargparse (`forecast.core.parsers`); `fit|validate|test|predict` are
LightningCLI (see `forecast.training.cli`). A `ForecastError` anywhere becomes one line on stderr
and exit 2, a file-system failure one line and exit 1 (`forecast.core.errors.run_guarded`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from forecast.core.allowlist import add_trusted
from forecast.core.errors import ForecastError, run_guarded
from forecast.core.workers import die_with_parent

USAGE = """usage: forecast [--trust PACKAGE ...] <command> [options]

commands:
  data       get prices (download / import / sample), build feature tiers, verify manifests
  fit        train a model (LightningCLI; --config FILE, repeatable)
  validate   evaluate a checkpoint on the validation split
  test       evaluate the best checkpoint on the test split, write metrics JSON
  predict    write per-date probabilities as CSV
  arch       list the architectures of a parameter budget with their memory plan
  hpo        Optuna search over one budget
  sweep      run hpo over budgets x horizons
  report     scaling report from finished studies
  isoflop    iso-FLOP runs (exactly C training FLOPs per size) and the compute frontier N_opt(C)
  dashboard  the studies of a storage in optuna-dashboard, on this machine (optional extra)
  configs    list the configs that ship with forecast, or copy them (--copy DIR) to edit
  baselines  class prior, logistic regression and HistGB on a run config's samples

`forecast <command> --help` shows each command's options.

Configs, checkpoints and studies may name classes only of forecast, torch.optim and Lightning's
callbacks and loggers. `--trust PACKAGE` (repeatable, before the command; or FORECAST_TRUST=a,b)
lets them name your own installed package too.
"""

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
POOL_COMMANDS = ("hpo", "sweep", "report", "isoflop")  # `--jobs N`: workers start before torch loads
TRAINING_COMMANDS = (*LIGHTNING_COMMANDS, *POOL_COMMANDS)  # the thread policy applies to these
DASH_VALUE_FLAGS = ("--budget",)  # values that may start with "-" (a mistyped "-2M")


def join_dash_values(argv: list[str]) -> list[str]:
    """`--budget -2M` -> `--budget=-2M`: argparse takes "-2M" for a flag ("expected one argument");
    joined, the value reaches the budget check, which says what is wrong with it."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in DASH_VALUE_FLAGS and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _data(argv: list[str]) -> int:
    from forecast.data.cli import main

    return main(argv)


def _arch(argv: list[str]) -> int:
    from forecast.sizing.arch import main

    return main(argv)


def _configs(argv: list[str]) -> int:
    from forecast.configs import main

    return main(argv)


def _lightning(argv: list[str]) -> int:
    from forecast.training.cli import cli_main

    cli_main(argv)
    return 0


def _baselines(argv: list[str]) -> int:
    from forecast.training.baselines import main

    return main(argv)


def _hpo(argv: list[str]) -> int:
    from forecast.hpo.cli import main

    return main(argv)


def _sweep(argv: list[str]) -> int:
    from forecast.hpo.cli import sweep_main

    return sweep_main(argv)


def _dashboard(argv: list[str]) -> int:
    from forecast.hpo.dashboard import main

    return main(argv)


def _report(argv: list[str]) -> int:
    from forecast.report.cli import main

    return main(argv)


def _isoflop(argv: list[str]) -> int:
    from forecast.report.isoflop_cli import main

    return main(argv)


def _threads(command: str) -> None:
    """torch's threads from the thread policy (`forecast.core.threads`); said once a model is built.

    A command with `--jobs` only checks the user's setting here: it applies the policy once its
    workers run (the cores are then shared) and torch is loaded, at the first model.
    """
    from forecast.core.threads import POLICY, user_choice

    try:
        if command in POOL_COMMANDS:
            user_choice()
        else:
            POLICY.apply(say=False)
    except ValueError as err:
        raise ForecastError(str(err)) from None


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": _data,
    "arch": _arch,
    "hpo": _hpo,
    "sweep": _sweep,
    "report": _report,
    "isoflop": _isoflop,
    "dashboard": _dashboard,
    "configs": _configs,
    "baselines": _baselines,
    **{name: _lightning for name in LIGHTNING_COMMANDS},
}


def take_trust(argv: list[str]) -> tuple[list[str], list[str]]:
    """(packages, rest): the leading `--trust PACKAGE` / `--trust=PACKAGE` options, and the command after them.

    Only before the command: a config file or a study never reaches this, so data cannot extend its own trust.
    """
    packages: list[str] = []
    while argv and (argv[0] == "--trust" or argv[0].startswith("--trust=")):
        flag, eq, value = argv[0].partition("=")
        if not eq:
            if len(argv) < 2:
                raise ForecastError("--trust needs a package name (forecast --trust mypackage fit ...)")
            value, argv = argv[1], argv[1:]
        packages.append(value)
        argv = argv[1:]
    return packages, argv


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # a `--jobs` worker ends with the process that started it
    from_command_line = argv is None
    argv = join_dash_values(list(sys.argv[1:] if argv is None else argv))
    try:
        packages, argv = take_trust(argv)
        add_trusted(packages)  # in the environment: `--jobs` workers inherit it
    except ForecastError as err:
        print(f"forecast: error: {err}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"forecast: error: unknown command {argv[0]!r} (see `forecast --help`)", file=sys.stderr)
        return 2
    def run(args: list[str]) -> int:
        if argv[0] in TRAINING_COMMANDS and not {"-h", "--help"} & set(argv):
            _threads(argv[0])
        return command(args)

    code = run_guarded(run, argv if argv[0] in LIGHTNING_COMMANDS else argv[1:])
    if from_command_line:
        # The process ends: the interpreter's exit would walk the whole heap (torch, Lightning) in
        # several full collections, 1.2 s; frozen, 0.2 s. Files are closed by then (`with`, atomic writes).
        gc.freeze()
    return code
