"""`forecast isoflop`: jsonargparse front end of `forecast.report.isoflop.run_isoflop`.

Light at import (no Lightning, Optuna or pandas): with --jobs N the workers start before this process loads them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jsonargparse import ArgumentParser

from forecast.core.errors import ForecastError
from forecast.core.options import add_options, from_args
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.core.workers import start_pool, stopped_on_error, this_worker
from forecast.report.isoflop_options import IsoflopOptions
from forecast.sizing.devices import default_device, device_ids

EPILOG = """\
Every run takes the --config files and --data.* / --model.* / --trainer.* flags given here; isoflop sets the
architecture, model.lr, trainer.max_steps (the budget), trainer.max_epochs, early stopping (off) and the seed.
Each size's architecture and learning rate come from a study of its budget in --storage when there is one (best
trial), else from the grid (the shape closest to the budget) and the config's model.lr, or with --lr-sweep K the
best of K rates around it. With --train-years each run also gets --data.train_years (trailing). Finished runs
live in the storage: a rerun, --jobs workers and other machines on the same --storage share them.

Exit status: 0 when every run finished; 1 when some run failed (listed); 2 for a mistake in the command.
"""


def parser() -> ArgumentParser:
    """The `forecast isoflop` parser."""
    p = command_parser(
        "forecast isoflop",
        "Iso-FLOP runs: for each compute budget C and size, runs of exactly C training FLOPs per walk-forward "
        "fold x seed, tested once; isoflop.csv, law.json (the frontier N_opt(C)), isoflop.png, frontier.png "
        "and isoflop.md.", EPILOG)
    add_options(p, IsoflopOptions)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `forecast isoflop`; returns the exit status (see the epilog)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, run = split_run_args(argv)
    parsed = parse(parser(), own)  # --help first: it needs no config
    if not run.configs:
        raise ForecastError("forecast isoflop: --config FILE is required (the data and model every run starts from)")
    run_args = [a for c in run.configs for a in ("--config", c)] + run.flags
    options = from_args(parsed, IsoflopOptions, run_args=run_args, argv=argv)
    worker = this_worker()
    workers, devices = start_pool(["isoflop", *argv], options.jobs, lambda: device_ids(options.devices),
                                  default_device)
    options.worker_devices = devices
    with stopped_on_error(workers):
        from forecast.report.isoflop import run_isoflop

        iso = run_isoflop(options, workers=workers)
    if iso.pending is not None:
        if worker is None:
            print(f"isoflop: outputs not written by this process: {iso.pending}")
        return 0
    from forecast.report.isoflop_outputs import write_outputs

    front = write_outputs(iso, options.out, options.bootstrap)
    if front is not None:
        print(f"frontier: {front.status} ({front.why})")
    print(f"isoflop: {options.out / 'isoflop.csv'}, law.json, isoflop.png, frontier.png, isoflop.md ({iso.wall_s:.0f} s)")
    for f in iso.failed:
        print(f"forecast isoflop: run failed: {f}", file=sys.stderr)
    return 1 if iso.failed else 0
