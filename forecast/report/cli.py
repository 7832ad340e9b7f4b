"""`forecast report`: jsonargparse front end of `forecast.report.build.make_report`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser

from forecast.core.domains import (
    Date,
    DeviceIds,
    Name,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
)
from forecast.core.errors import ForecastError
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.core.workers import start_pool, this_worker
from forecast.report.equivalence import DEFAULT_MARGINS
from forecast.sizing.devices import default_device, device_ids

# Light at import (no Lightning, Optuna or pandas): with --jobs N the workers start before this process
# loads them (about 5 s on 2 cores), so that their start-up runs beside its own.

PARTIAL_EXIT = 1  # the report was written, but some study could not be reported

EPILOG = """\
Flags that say how a retrain runs are added to every retrain: --trainer.accelerator, .devices (1),
.num_nodes, .precision, .enable_progress_bar, .enable_model_summary, .log_every_n_steps, .benchmark,
--planner.memory_gb, --data.data_dir, .num_workers, .eval_batch_size, and --trainer.max_epochs (shorter
retrains, shown in the report). Any other flag could change what a study measured and is refused.
Finished retrains are reused when the report is run again with the same settings.

Exit status: 0 when every study was reported; 1 when the report was written but some study could
not be (its best config no longer loads, a retrain failed: listed in report.md and on stderr);
2 for a mistake in the command (storage, study names, flags).
"""


def parser() -> ArgumentParser:
    """The `forecast report` parser (jsonargparse: every option typed, see forecast.core.domains)."""
    p = command_parser(
        "forecast report",
        "Scaling report from finished `forecast hpo` studies: the studies' test period cut "
        "into walk-forward folds, each budget's best config retrained per fold x seed and tested "
        "once, baselines on the same samples, date-paired block-bootstrap intervals, the scaling "
        "verdict per horizon, tables and plots.", EPILOG)
    p.add_argument("--storage", type=NonEmptyStr, required=True, metavar="URL",
                   help="the Optuna storage the studies live in (sqlite:///logs/hpo/optuna.db, a *.journal "
                        "file, postgresql://...)")
    p.add_argument("--study", nargs="+", type=Name, default=[], metavar="NAME",
                   help="studies to report (default: every study in the storage)")
    p.add_argument("--seeds", type=PositiveInt, default=2, metavar="S",
                   help="retrains of each best config per fold, seeds 0..S-1 (default: 2; a verdict needs >= 2)")
    p.add_argument("--folds", type=PositiveInt, default=4, metavar="K",
                   help="walk-forward folds the test period is cut into (default: 4)")
    p.add_argument("--test-start", type=Date | None, default=None, metavar="DATE",
                   help="first day of the folds' test period (default: the studies' test_start; never earlier, "
                        "since the search validated on the days before it)")
    p.add_argument("--test-end", type=Date | None, default=None, metavar="DATE",
                   help="last day of the folds' test period (default: the studies' test_end, else the data's end)")
    p.add_argument("--out", type=Path, default=Path("logs/report"), metavar="DIR",
                   help="where report.md, the CSVs, plots, TensorBoard events and retrain runs go "
                        "(default: logs/report)")
    p.add_argument("--bootstrap", type=NonNegativeInt, default=1000, metavar="B",
                   help="joint block-bootstrap resamples of dates and seeds (default: 1000)")
    p.add_argument("--equivalence-loss", type=PositiveFiniteFloat, default=DEFAULT_MARGINS["loss"], metavar="NATS",
                   help="equivalence margin of log-loss claims: a claim whose whole interval lies within "
                        "+-NATS (per 10x parameters for the slope) is called equivalent "
                        f"(default: {DEFAULT_MARGINS['loss']:g})")
    p.add_argument("--equivalence-auroc", type=PositiveFiniteFloat, default=DEFAULT_MARGINS["auroc"], metavar="D",
                   help=f"equivalence margin of AUROC claims (default: {DEFAULT_MARGINS['auroc']:g})")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the retrains' checkpoints (default: deleted once tested)")
    p.add_argument("--jobs", type=PositiveInt, default=1, metavar="N",
                   help="processes that claim and run the retrains, this one included (default: 1); any other "
                        "`forecast report` on the same --storage, on any machine, shares them too")
    p.add_argument("--devices", type=DeviceIds | None, default=None, metavar="IDS",
                   help="CUDA device ids for the workers in turn, e.g. 0,1 or 0,0,1 (default: every visible one)")
    p.add_argument("--heartbeat", type=NonNegativeInt, default=60, metavar="S",
                   help="seconds between a running retrain's heartbeats on an RDB storage; a retrain whose "
                        "process stopped beating for 2 x S is redone once by another process (default: 60; 0: off)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run `forecast report`; returns the exit status (see the epilog)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, run = split_run_args(argv)
    if run.configs:
        raise ForecastError("forecast report: --config is not an option of report (a study's best config is "
                            "what each retrain runs)")
    args = parse(parser(), own)
    worker = this_worker()
    workers, devices = start_pool(["report", *argv], args.jobs, lambda: device_ids(args.devices), default_device)
    try:
        from forecast.report.build import ReportOptions
        from forecast.report.outputs import make_report

        options = ReportOptions(storage=args.storage, studies=args.study, seeds=args.seeds, folds=args.folds,
                                test_start=args.test_start, test_end=args.test_end, out=args.out,
                                overrides=run.flags, keep_checkpoints=args.keep_checkpoints,
                                bootstrap=args.bootstrap, jobs=args.jobs, devices=devices, heartbeat=args.heartbeat,
                                argv=argv, equivalence_loss=args.equivalence_loss,
                                equivalence_auroc=args.equivalence_auroc)
        report = make_report(options, workers=workers)
    except BaseException:  # a mistake in the command (one line, ours), an error or Ctrl-C: theirs end too
        if workers is not None:
            workers.stop()
        raise
    if report.pending is not None:
        if worker is None:
            print(f"report: not written by this process: {report.pending}")
        return 0
    for r in report.series:
        print(f"{r.series.label}: {r.verdict}")
    print(f"report: {options.out / 'report.md'} ({report.wall_s:.0f} s)")
    for name, problem in report.problems:
        print(f"forecast report: study {name} not reported: {problem}", file=sys.stderr)
    return PARTIAL_EXIT if report.problems else 0
