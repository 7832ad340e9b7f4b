"""`forecast hpo` and `forecast sweep`: argparse front ends of `forecast.hpo.study.run_study`.

Options of the search are parsed here; every other `--data.* --model.* --trainer.*
--early_stopping.* --checkpoint.* --seed_everything` flag is handed to each trial's LightningCLI
exactly as `forecast fit` would take it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from forecast.errors import ForecastError, OneLineParser
from forecast.hpo.config import flag_keys
from forecast.hpo.stop import STOP_FILE, StopControl
from forecast.hpo.study import (
    DEFAULT_CONFIG,
    DEFAULT_SPACE,
    PRUNERS,
    HpoOptions,
    Outcome,
    parse_budget,
    run_study,
)

ABORTED_EXIT = 130  # a second Ctrl-C ended a trial: like any interrupted command

EPILOG = """\
Any other flag (--data.horizon 3, --trainer.max_epochs 20, --model.net.init_args.patch_mode
independent, ...) goes to every trial as in `forecast fit`. Stop with Ctrl-C, SIGTERM, `q` or a
file named STOP in the study's log folder: the running trial finishes, outputs are written, exit 0;
rerun the same command to continue. A second Ctrl-C aborts the running trial (exit 130).
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=50,
                   help="finished trials (complete, pruned or failed as a result) the study should hold "
                        "in total; a rerun continues to this number (default: 50)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help=f"run config, repeatable, as for `forecast fit` (default: {DEFAULT_CONFIG.name})")
    p.add_argument("--search-space", type=Path, default=DEFAULT_SPACE, metavar="FILE",
                   help="search-space YAML (default: configs/hpo/search_space.yaml)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage: a *.journal file or journal:PATH for several processes on one "
                        "machine, an RDB URL (postgresql://...) for many machines "
                        "(default: sqlite <log-dir>/optuna.db)")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="median (default: after 5 trials, from the 3rd epoch, never at the last one), "
                        "hyperband or none")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler (default: 0)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="start no new trial after S seconds (the running one finishes)")
    p.add_argument("--log-dir", type=Path, default=Path("logs/hpo"),
                   help="TensorBoard runs (<log-dir>/<study>/trial_NNNN) and study outputs (default: logs/hpo)")
    p.add_argument("--heartbeat", type=int, default=60, metavar="S",
                   help="RDB storages: a worker beats every S seconds and its RUNNING trial is retried "
                        "after 2*S without one (0 = off; default: 60)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every trial's checkpoints (default: only the best trial's)")
    p.add_argument("--no-live", action="store_true", help="plain lines instead of the live panel")


def hpo_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="forecast hpo", allow_abbrev=False, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Optuna search over one parameter budget's architectures and training settings.")
    p.add_argument("--budget", required=True, help="2M, 20M, 200M, 2B, or a parameter count such as 50K")
    p.add_argument("--study-name", help="default: <symbol>-<tier>-<task>-h<horizon>-<budget>")
    _common(p)
    return p


def sweep_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="forecast sweep", allow_abbrev=False, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run `forecast hpo` over budgets x horizons in order; finished studies are skipped.")
    p.add_argument("--budgets", nargs="+", required=True, metavar="BUDGET", help="e.g. 2M 20M 200M 2B")
    p.add_argument("--horizons", nargs="+", required=True, type=int, metavar="H", help="e.g. 1 3 5")
    _common(p)
    return p


def _options(args: argparse.Namespace, rest: list[str], budget: str, study_name: str | None) -> HpoOptions:
    return HpoOptions(
        budget=budget, trials=args.trials, configs=list(args.config), overrides=list(rest),
        search_space=args.search_space, storage=args.storage, study_name=study_name, pruner=args.pruner,
        seed=args.seed, timeout=args.timeout, log_dir=args.log_dir, heartbeat=args.heartbeat,
        keep_checkpoints=args.keep_checkpoints, live=False if args.no_live else None)


def _forwarded(rest: list[str]) -> list[str]:
    """Flags for the trials; anything that is not a `--key` flag (or its value) is a mistake."""
    if rest and not rest[0].startswith("--"):
        raise ForecastError(f"unexpected argument {rest[0]!r} (options take the form --key value)")
    return rest


def exit_code(outcome: Outcome) -> int:
    return ABORTED_EXIT if outcome.ending == "aborted" else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast hpo`."""
    args, rest = hpo_parser().parse_known_args(list(argv or []))
    outcome = run_study(_options(args, _forwarded(rest), args.budget, args.study_name))
    return exit_code(outcome)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """`forecast sweep`: budgets x horizons, in that order, with one stop control for all."""
    args, rest = sweep_parser().parse_known_args(list(argv or []))
    rest = _forwarded(rest)
    for budget in args.budgets:
        parse_budget(budget)  # an unknown budget fails before the first study starts
    if "data.horizon" in flag_keys(rest):
        raise ForecastError("--data.horizon is set by --horizons in a sweep")
    if any(h < 1 for h in args.horizons):
        raise ForecastError(f"--horizons must be >= 1, got {args.horizons}")
    with StopControl(args.log_dir / STOP_FILE, started=time.time()) as stop:
        for budget in args.budgets:
            for horizon in args.horizons:
                options = _options(args, [*rest, f"--data.horizon={horizon}"], budget, None)
                outcome = run_study(options, stop=stop)
                if outcome.ending != "done":
                    print(f"sweep stopped at budget {budget}, horizon {horizon}; rerun the same command "
                          "to continue", flush=True)
                    return exit_code(outcome)
    print(f"sweep done: {len(args.budgets) * len(args.horizons)} studies", flush=True)
    return 0
