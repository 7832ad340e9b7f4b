"""`forecast report`: its parser (from `ReportOptions`) and `main`, which runs `forecast.report.outputs.make_report`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jsonargparse import ArgumentParser

from forecast.core.errors import ForecastError
from forecast.core.options import add_options, from_args
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.core.workers import start_pool, stopped_on_error, this_worker
from forecast.report.options import ReportOptions
from forecast.sizing.devices import default_device, device_ids

if TYPE_CHECKING:  # not at run time: this module stays light (below)
    from forecast.report.build import Report

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
    """The `forecast report` parser: one flag per `ReportOptions` field (`forecast.report.options`)."""
    p = command_parser(
        "forecast report",
        "Scaling report from finished `forecast hpo` studies: the studies' test period cut "
        "into walk-forward folds, each budget's best config retrained per fold x seed and tested "
        "once, baselines on the same samples, date-paired block-bootstrap intervals, the scaling "
        "verdict per horizon, tables and plots.", EPILOG)
    add_options(p, ReportOptions)
    return p


def verdict_lines(report: Report) -> list[str]:
    """One `label: verdict` line per size series, then one per data claim (`forecast.report.data_scaling`):
    `<family>, <claim> (<metric>): <verdict>`, or `<family>, training years: not compared: <why>`.
    """
    lines = [f"{r.series.label}: {r.verdict}" for r in report.series]
    for res in report.data:
        family = res.family.family_label
        if res.problem is not None:
            lines.append(f"{family}, training years: not compared: {res.problem}")
        lines += [f"{family}, {c.comparison} ({c.metric}): {c.verdict}" for c in res.comparisons]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run `forecast report`; returns the exit status (see the epilog)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, run = split_run_args(argv)
    if run.configs:
        raise ForecastError("forecast report: --config is not an option of report (a study's best config is "
                            "what each retrain runs)")
    options = from_args(parse(parser(), own), ReportOptions, overrides=run.flags)
    worker = this_worker()
    workers, _ = start_pool(["report", *argv], options.jobs, lambda: device_ids(options.devices), default_device)
    with stopped_on_error(workers):
        from forecast.report.outputs import make_report

        report = make_report(options, workers=workers)
    if report.pending is not None:
        if worker is None:
            print(f"report: not written by this process: {report.pending}")
        return 0
    for text in verdict_lines(report):
        print(text)
    print(f"report: {options.out / 'report.md'} ({report.wall_s:.0f} s)")
    for name, problem in report.problems:
        print(f"forecast report: study {name} not reported: {problem}", file=sys.stderr)
    return PARTIAL_EXIT if report.problems else 0
