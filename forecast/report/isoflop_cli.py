"""`forecast isoflop`: jsonargparse front end of `forecast.report.isoflop.run_isoflop`.

Light at import (no Lightning, Optuna or pandas): with --jobs N the workers start before this process loads them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser

from forecast.core.domains import (
    Date,
    DeviceIds,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
)
from forecast.core.errors import ForecastError
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.core.workers import start_pool, this_worker
from forecast.sizing.devices import default_device, device_ids

EPILOG = """\
Every run takes the --config files and --data.* / --model.* / --trainer.* flags given here; isoflop sets the
architecture, model.lr, trainer.max_steps (the budget), trainer.max_epochs, early stopping (off) and the seed.
Each size's architecture and learning rate come from a study of its budget in --storage when there is one (best
trial), else from the grid (the shape closest to the budget) and the config's model.lr. Finished runs live in
the storage: a rerun, --jobs workers and other machines on the same --storage share them.

Exit status: 0 when every run finished; 1 when some run failed (listed); 2 for a mistake in the command.
"""


def parser() -> ArgumentParser:
    """The `forecast isoflop` parser."""
    p = command_parser(
        "forecast isoflop",
        "Iso-FLOP runs: for each compute budget C and size, runs of exactly C training FLOPs per walk-forward "
        "fold x seed, tested once; isoflop.csv, law.json (the frontier N_opt(C)), isoflop.png, frontier.png "
        "and isoflop.md.", EPILOG)
    p.add_argument("--flops", nargs="+", type=PositiveFiniteFloat, required=True, metavar="C",
                   help="compute budgets in training FLOPs, e.g. 1e11 3e11 1e12")
    p.add_argument("--budgets", nargs="+", type=NonEmptyStr, required=True, metavar="SIZE",
                   help="parameter budgets, e.g. 10K 30K 100K (`forecast arch --budget` lists their shapes)")
    p.add_argument("--storage", type=NonEmptyStr, required=True, metavar="URL",
                   help="Optuna storage that holds the runs' claims and results (and any searched studies)")
    p.add_argument("--seeds", type=PositiveInt, default=2, metavar="S", help="seeds 0..S-1 per fold (default: 2)")
    p.add_argument("--folds", type=PositiveInt, default=4, metavar="K", help="walk-forward folds (default: 4)")
    p.add_argument("--test-start", type=Date | None, default=None, metavar="DATE",
                   help="first day of the folds' test period (default: the config's test_start)")
    p.add_argument("--test-end", type=Date | None, default=None, metavar="DATE",
                   help="last day of the folds' test period (default: the config's, else the data's end)")
    p.add_argument("--out", type=Path, default=Path("logs/isoflop"), metavar="DIR",
                   help="where the outputs and the runs' TensorBoard events go (default: logs/isoflop)")
    p.add_argument("--bootstrap", type=NonNegativeInt, default=1000, metavar="B",
                   help="joint block-bootstrap draws of dates and seeds for the frontier's interval (default: 1000)")
    p.add_argument("--jobs", type=PositiveInt, default=1, metavar="N",
                   help="processes that claim and run the runs, this one included (default: 1)")
    p.add_argument("--devices", type=DeviceIds | None, default=None, metavar="IDS",
                   help="CUDA device ids for the workers in turn (default: every visible one)")
    p.add_argument("--heartbeat", type=NonNegativeInt, default=60, metavar="S",
                   help="seconds between a running run's heartbeats on an RDB storage (default: 60; 0: off)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `forecast isoflop`; returns the exit status (see the epilog)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, run = split_run_args(argv)
    if not run.configs:
        raise ForecastError("forecast isoflop: --config FILE is required (the data and model every run starts from)")
    args = parse(parser(), own)
    worker = this_worker()
    workers, devices = start_pool(["isoflop", *argv], args.jobs, lambda: device_ids(args.devices), default_device)
    try:
        from forecast.report.isoflop import IsoflopOptions, run_isoflop

        run_args = [a for c in run.configs for a in ("--config", c)] + run.flags
        options = IsoflopOptions(storage=args.storage, flops=args.flops, budgets=args.budgets, run_args=run_args,
                                 seeds=args.seeds, folds=args.folds, test_start=args.test_start,
                                 test_end=args.test_end, out=args.out, bootstrap=args.bootstrap, jobs=args.jobs,
                                 devices=devices, heartbeat=args.heartbeat, argv=argv)
        iso = run_isoflop(options, workers=workers)
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    if iso.pending is not None:
        if worker is None:
            print(f"isoflop: outputs not written by this process: {iso.pending}")
        return 0
    from forecast.report.isoflop_outputs import write_outputs

    front = write_outputs(iso, args.out, args.bootstrap)
    if front is not None:
        print(f"frontier: {front.status} ({front.why})")
    print(f"isoflop: {args.out / 'isoflop.csv'}, law.json, isoflop.png, frontier.png, isoflop.md ({iso.wall_s:.0f} s)")
    for f in iso.failed:
        print(f"forecast isoflop: run failed: {f}", file=sys.stderr)
    return 1 if iso.failed else 0
