"""`forecast hpo` and `forecast sweep`: jsonargparse front ends of `forecast.hpo.loop.run_queue`.

Their options are the fields of `forecast.hpo.options` (each flag typed, forecast.core.domains);
`--config FILE` and every `--data.* --model.* --trainer.* --early_stopping.* --checkpoint.* --planner.*
--seed_everything` flag is handed to each trial's LightningCLI exactly as `forecast fit` would take it
(and checked by that parser before the first trial).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser

from forecast.core.errors import ForecastError
from forecast.core.options import add_options, from_args
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.core.workers import Pool, start_pool, stopped_on_error, this_worker
from forecast.hpo.options import SHARED, HpoOptions, SearchOptions, SweepOptions
from forecast.hpo.stop import ABORTED_EXIT, STOP_FILE, StopControl
from forecast.hpo.years import check_no_selection_flags, selection_flags
from forecast.sizing.devices import default_device, device_ids
from forecast.training.config import flag_keys

if TYPE_CHECKING:
    from forecast.hpo.loop import Outcome

# Light at import (no Lightning, Optuna or pandas): with --jobs N the workers start before this process
# loads them, so that their start-up runs beside its own.

EPILOG = """\
--config FILE (repeatable) and any --data.*, --model.*, --trainer.*, --early_stopping.*,
--checkpoint.*, --planner.* or --seed_everything flag (--data.horizon 3, --trainer.max_epochs 20,
--model.net.init_args.patch_mode independent, ...) go to every trial as in `forecast fit`. Stop with Ctrl-C, SIGTERM, `q` or a
file named STOP in the study's log folder: the running trial finishes, outputs are written, exit 0;
rerun the same command to continue. A second Ctrl-C aborts the running trial (exit 130).
"""


def hpo_parser() -> ArgumentParser:
    """The `forecast hpo` parser: the fields of `HpoOptions`, its own first (the `--help` order)."""
    p = command_parser("forecast hpo", "Optuna search over one parameter budget's architectures and "
                       "training settings.", EPILOG)
    add_options(p, HpoOptions, skip=SHARED)
    add_options(p, SearchOptions)
    return p


def sweep_parser() -> ArgumentParser:
    """The `forecast sweep` parser: the fields of `SweepOptions`, its own first."""
    p = command_parser("forecast sweep", "Run `forecast hpo` over budgets x horizons (x training years: "
                       "--train-years) as one queue: each trial "
                       "goes to the study furthest from --trials; any number of machines may run it on one "
                       "--storage URL.", EPILOG)
    add_options(p, SweepOptions, skip=SHARED)
    add_options(p, SearchOptions)
    return p


def exit_code(outcome: Outcome) -> int:
    return ABORTED_EXIT if outcome.ending == "aborted" else 0


def start_workers(command: str, argv: list[str], options: SearchOptions) -> Pool | None:
    """The `--jobs` workers, started before this process loads its libraries (None in a worker or
    without `--jobs`); the flags that need no library checked first."""
    if options.jobs > 1 and str(options.storage_url).startswith("sqlite"):
        # --jobs needs a storage whose writers are isolated from each other; SQLite's are not (one
        # queued trial can go to two workers)
        raise ForecastError("--jobs on SQLite: its writers are not isolated enough for several workers; "
                            "use a journal file (the default with --jobs) or PostgreSQL (`make postgres`)")
    if options.devices is not None and options.jobs == 1 and this_worker() is None:
        raise ForecastError("--devices needs --jobs N (one process uses the device its config names)")
    pool, _ = start_pool([command, *argv], options.jobs, lambda: device_ids(options.devices), default_device)
    return pool


def run_search(pool: Pool | None, all_options: list[HpoOptions], stop: StopControl | None = None) -> list[Outcome]:
    """In this process alone (a worker, or without --jobs), or with the pool's workers."""
    if pool is None:
        from forecast.hpo.loop import run_queue

        return run_queue(all_options, stop, summary=this_worker() is None)
    from forecast.hpo.workers import run_with

    return run_with(pool, all_options, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast hpo`."""
    argv = list(argv or [])
    own, run = split_run_args(argv)
    options = from_args(parse(hpo_parser(), own), HpoOptions, configs=list(run.configs), overrides=list(run.flags))
    pool = start_workers("hpo", argv, options)
    with stopped_on_error(pool):
        outcome, = run_search(pool, [options])
    return exit_code(outcome)


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """`forecast sweep`: budgets x horizons (x training years) as one queue, with one stop control for all."""
    argv = list(argv or [])
    own, run = split_run_args(argv)
    sweep = from_args(parse(sweep_parser(), own), SweepOptions, configs=list(run.configs),
                      overrides=list(run.flags))
    if "data.horizon" in flag_keys(sweep.overrides):
        raise ForecastError("--data.horizon is set by --horizons in a sweep")
    pool = start_workers("sweep", argv, sweep)
    with stopped_on_error(pool):
        from forecast.sizing.budget import parse_budget

        for budget in sweep.budgets:
            parse_budget(budget)  # an unknown budget fails before the first study is planned
        selections: list[list[str]] = [[]]
        if sweep.train_years is not None:
            check_no_selection_flags(sweep.overrides)
            selections = selection_flags(sweep.train_years, sweep.designs, sweep.draws)
        cells = [sweep.cell(b, [f"--data.horizon={h}", *sel])
                 for b in sweep.budgets for h in sweep.horizons for sel in selections]
        with StopControl(sweep.log_dir / STOP_FILE, started=time.time()) as stop:
            outcomes = run_search(pool, cells, stop)
    left = [o for o in outcomes if o.ending != "done"]
    if this_worker() is None:
        print(f"sweep done: {len(outcomes)} studies" if not left else
              f"sweep {left[0].ending}: {len(outcomes) - len(left)}/{len(outcomes)} studies done; "
              "rerun the same command to continue", flush=True)
    return max(exit_code(o) for o in outcomes)
