"""`forecast hpo` and `forecast sweep`: jsonargparse front ends of `forecast.hpo.study.run_study`.

Options of the search are parsed here, typed (forecast.core.domains); `--config FILE` and every
`--data.* --model.* --trainer.* --early_stopping.* --checkpoint.* --planner.* --seed_everything`
flag is handed to each trial's LightningCLI exactly as `forecast fit` would take it (and checked
by that parser before the first trial).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from jsonargparse import ArgumentParser, Namespace

from forecast.core.domains import (
    DeviceIds,
    Name,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
    Seed,
)
from forecast.core.errors import ForecastError
from forecast.core.parsers import RunArgs, command_parser, parse, split_run_args
from forecast.core.workers import Pool, start_pool, this_worker
from forecast.hpo.config import DEFAULT_SPACE, PRUNERS
from forecast.hpo.stop import ABORTED_EXIT, STOP_FILE, StopControl
from forecast.hpo.years import TrainYears, check_no_selection_flags, selection_flags
from forecast.sizing.devices import default_device, device_ids
from forecast.training.config import flag_keys

if TYPE_CHECKING:
    from forecast.hpo.study import HpoOptions, Outcome

# Light at import (no Lightning, Optuna or pandas): with --jobs N the workers start before this process
# loads them (about 5 s on 2 cores), so that their start-up runs beside its own.

EPILOG = """\
--config FILE (repeatable) and any --data.*, --model.*, --trainer.*, --early_stopping.*,
--checkpoint.*, --planner.* or --seed_everything flag (--data.horizon 3, --trainer.max_epochs 20,
--model.net.init_args.patch_mode independent, ...) go to every trial as in `forecast fit`. Stop with Ctrl-C, SIGTERM, `q` or a
file named STOP in the study's log folder: the running trial finishes, outputs are written, exit 0;
rerun the same command to continue. A second Ctrl-C aborts the running trial (exit 130).
"""


def _common(p: ArgumentParser) -> None:
    p.add_argument("--trials", type=PositiveInt, default=50,
                   help="finished trials (complete, pruned or failed as a result) the study should hold "
                        "in total; a rerun continues to this number (default: 50)")
    p.add_argument("--search-space", type=Path, default=DEFAULT_SPACE, metavar="FILE",
                   help="search-space YAML (default: configs/hpo/search_space.yaml)")
    p.add_argument("--storage", type=NonEmptyStr | None, default=None, metavar="URL",
                   help="Optuna storage: a *.journal file or journal:PATH for several processes on one "
                        "machine, an RDB URL (postgresql://...) for many machines "
                        "(default: sqlite <log-dir>/optuna.db)")
    p.add_argument("--pruner", type=Literal[PRUNERS], default="median",  # type: ignore[valid-type]
                   help="median (default: after 5 trials, from the 3rd epoch, never at the last one), "
                        "hyperband or none")
    p.add_argument("--seed", type=Seed, default=0, help="seed of the TPE sampler (default: 0)")
    p.add_argument("--timeout", type=PositiveFiniteFloat | None, default=None, metavar="S",
                   help="start no new trial after S seconds (the running one finishes); in a sweep, "
                        "for the whole matrix")
    p.add_argument("--jobs", type=PositiveInt, default=1, metavar="N",
                   help="worker processes on this machine sharing the studies through the storage "
                        "(without --storage: the journal <log-dir>/optuna.journal; default: 1)")
    p.add_argument("--devices", type=DeviceIds | None, default=None, metavar="IDS",
                   help="CUDA devices for the workers, e.g. 0,1 or 0,0,1,1 (worker k takes the k-th id, "
                        "round robin; an id may repeat: several trials share a GPU; default: every "
                        "visible device)")
    p.add_argument("--log-dir", type=Path, default=Path("logs/hpo"),
                   help="TensorBoard runs (<log-dir>/<study>/trial_NNNN) and study outputs (default: logs/hpo)")
    p.add_argument("--heartbeat", type=NonNegativeInt, default=60, metavar="S",
                   help="RDB storages: a worker beats every S seconds and its RUNNING trial is retried "
                        "after 2*S without one (0 = off; default: 60)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep every trial's checkpoints (default: only the best trial's)")
    p.add_argument("--no-live", action="store_true", help="plain lines instead of the live panel")


def hpo_parser() -> ArgumentParser:
    """The `forecast hpo` parser (jsonargparse: every option typed, see forecast.core.domains)."""
    p = command_parser("forecast hpo", "Optuna search over one parameter budget's architectures and "
                       "training settings.", EPILOG)
    p.add_argument("--budget", type=NonEmptyStr, required=True,
                   help="2M, 20M, 200M, 2B, or a parameter count such as 50K")
    p.add_argument("--study-name", type=Name | None, default=None,
                   help="default: <symbol>-<tier>-<task>-h<horizon>-<budget>")
    _common(p)
    return p


def sweep_parser() -> ArgumentParser:
    """The `forecast sweep` parser."""
    p = command_parser("forecast sweep", "Run `forecast hpo` over budgets x horizons (x training years: "
                       "--train-years) as one queue: each trial "
                       "goes to the study furthest from --trials; any number of machines may run it on one "
                       "--storage URL.", EPILOG)
    p.add_argument("--budgets", nargs="+", type=NonEmptyStr, required=True, metavar="BUDGET",
                   help="e.g. 2M 20M 200M 2B")
    p.add_argument("--horizons", nargs="+", type=PositiveInt, required=True, metavar="H", help="e.g. 1 3 5")
    p.add_argument("--train-years", nargs="+", type=TrainYears, default=None, metavar="Y",
                   help="the training-years axis: a study per number of years before validation, or all "
                        "(e.g. 2 4 8 16 all; default: none, every study trains on all years)")
    p.add_argument("--designs", nargs="+", type=Literal["trailing", "blocks"], default=["trailing"],
                   metavar="DESIGN", help="with --train-years: trailing (the most recent years) and/or blocks "
                                          "(as many random whole calendar years; default: trailing)")
    p.add_argument("--draws", type=PositiveInt, default=1, metavar="K",
                   help="with --designs blocks: draws of random years per number of years (default: 1)")
    _common(p)
    return p


def _options(args: Namespace, run: RunArgs, budget: str, study_name: str | None) -> HpoOptions:
    from forecast.hpo.study import HpoOptions

    return HpoOptions(
        budget=budget, trials=args.trials, configs=list(run.configs), overrides=list(run.flags),
        search_space=args.search_space, storage=_storage(args), study_name=study_name, pruner=args.pruner,
        seed=args.seed, timeout=args.timeout, log_dir=args.log_dir, heartbeat=args.heartbeat,
        keep_checkpoints=args.keep_checkpoints,
        live=False if args.no_live or this_worker() is not None else None)


def _storage(args: Namespace) -> str | None:
    if args.storage is None and args.jobs > 1:
        return str(args.log_dir / "optuna.journal")  # SQLite locks up under several writers
    return args.storage


def exit_code(outcome: Outcome) -> int:
    return ABORTED_EXIT if outcome.ending == "aborted" else 0


def start_workers(command: str, argv: list[str], args: Namespace) -> Pool | None:
    """The `--jobs` workers, started before this process loads its libraries (None in a worker or
    without `--jobs`); the flags that need no library checked first."""
    if args.jobs > 1 and str(_storage(args)).startswith("sqlite"):
        # measured (make bench): two of 4 SQLite workers took the same queued trial, one crashed
        raise ForecastError("--jobs on SQLite: its writers are not isolated enough for several workers; "
                            "use a journal file (the default with --jobs) or PostgreSQL (`make postgres`)")
    if args.devices is not None and args.jobs == 1 and this_worker() is None:
        raise ForecastError("--devices needs --jobs N (one process uses the device its config names)")
    pool, _ = start_pool([command, *argv], args.jobs, lambda: device_ids(args.devices), default_device)
    return pool


def run_search(pool: Pool | None, all_options: list[HpoOptions], stop: StopControl | None = None) -> list[Outcome]:
    """In this process alone (a worker, or without --jobs), or with the pool's workers."""
    if pool is None:
        from forecast.hpo.study import run_queue

        return run_queue(all_options, stop, summary=this_worker() is None)
    from forecast.hpo.workers import run_with

    return run_with(pool, all_options, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast hpo`."""
    argv = list(argv or [])
    own, run = split_run_args(argv)
    args = parse(hpo_parser(), own)
    pool = start_workers("hpo", argv, args)
    try:
        outcome, = run_search(pool, [_options(args, run, args.budget, args.study_name)])
    except BaseException:  # a mistake in the command (one line, ours), an error or Ctrl-C: theirs end too
        if pool is not None:
            pool.stop()
        raise
    return exit_code(outcome)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """`forecast sweep`: budgets x horizons (x training years) as one queue, with one stop control for all."""
    argv = list(argv or [])
    own, run = split_run_args(argv)
    args = parse(sweep_parser(), own)
    if "data.horizon" in flag_keys(run.flags):
        raise ForecastError("--data.horizon is set by --horizons in a sweep")
    pool = start_workers("sweep", argv, args)
    try:
        from forecast.sizing.budget import parse_budget

        for budget in args.budgets:
            parse_budget(budget)  # an unknown budget fails before the first study starts
        selections: list[list[str]] = [[]]
        if args.train_years is not None:
            check_no_selection_flags(run.flags)
            selections = selection_flags(args.train_years, args.designs, args.draws)
        all_options = [_options(args, RunArgs(run.configs, [*run.flags, f"--data.horizon={h}", *sel]), b, None)
                       for b in args.budgets for h in args.horizons for sel in selections]
        with StopControl(args.log_dir / STOP_FILE, started=time.time()) as stop:
            outcomes = run_search(pool, all_options, stop)
    except BaseException:
        if pool is not None:
            pool.stop()
        raise
    left = [o for o in outcomes if o.ending != "done"]
    if this_worker() is None:
        print(f"sweep done: {len(outcomes)} studies" if not left else
              f"sweep {left[0].ending}: {len(outcomes) - len(left)}/{len(outcomes)} studies done; "
              "rerun the same command to continue", flush=True)
    return max(exit_code(o) for o in outcomes)
