"""`ReportOptions`: what `forecast report` takes, declared once (`forecast.core.options`).

Each field with a flag is a `forecast report` option: its type is the option's domain, so the parser
refuses a value outside it and nothing downstream checks it again; its doc is its `--help` line. The
fields without a flag are set by the command. Light at import (the report's parent parses and starts
its `--jobs` workers before it loads Lightning, Optuna or pandas).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forecast.core.domains import (
    Date,
    DeviceIds,
    Name,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
)
from forecast.core.options import option
from forecast.report.equivalence import DEFAULT_MARGINS, Margins


@dataclass
class ReportOptions:
    """What `forecast report` takes (see `forecast report --help`); fields in the order `--help` lists them."""

    storage: NonEmptyStr = option(doc="the Optuna storage the studies live in (sqlite:///logs/hpo/optuna.db, a "
                                      "*.journal file, postgresql://...)", metavar="URL")
    # the flag is --study, so one study reads `--study NAME` (and a refusal names `study`)
    study: list[Name] = option(list, "studies to report (default: every study in the storage)", metavar="NAME")
    seeds: PositiveInt = option(2, "retrains of each best config per fold, seeds 0..S-1 (default: 2; a verdict "
                                   "needs >= 2)", metavar="S")
    folds: PositiveInt = option(4, "walk-forward folds the test period is cut into", metavar="K")
    test_start: Date | None = option(None, "first day of the folds' test period (default: the studies' test_start; "
                                           "never earlier, since the search validated on the days before it)",
                                     metavar="DATE")
    test_end: Date | None = option(None, "last day of the folds' test period (default: the studies' test_end, else "
                                         "the data's end)", metavar="DATE")
    out: Path = option(Path("logs/report"), "where report.md, the CSVs, plots, TensorBoard events and retrain runs go",
                       metavar="DIR")
    bootstrap: NonNegativeInt = option(1000, "joint block-bootstrap resamples of dates and seeds", metavar="B")
    equivalence_loss: PositiveFiniteFloat = option(
        DEFAULT_MARGINS["loss"], "equivalence margin of log-loss claims: a claim whose whole interval lies within "
        "+-NATS (per 10x parameters for the slope) is called equivalent", metavar="NATS")
    equivalence_auroc: PositiveFiniteFloat = option(DEFAULT_MARGINS["auroc"], "equivalence margin of AUROC claims",
                                                    metavar="D")
    keep_checkpoints: bool = option(False, "keep the retrains' checkpoints (default: deleted once tested)")
    jobs: PositiveInt = option(1, "processes that claim and run the retrains, this one included (default: 1); any "
                                  "other `forecast report` on the same --storage, on any machine, shares them too",
                               metavar="N")
    # read only by the command's parent, where it starts the workers (`core.workers.start_pool`); a worker's
    # device is the one its parent gave it
    devices: DeviceIds | None = option(None, "CUDA device ids for the workers in turn, e.g. 0,1 or 0,0,1 (default: "
                                             "every visible one)", metavar="IDS")
    heartbeat: NonNegativeInt = option(60, "seconds between a running retrain's heartbeats on an RDB storage; a "
                                           "retrain whose process stopped beating for 2 x S is redone once by "
                                           "another process (default: 60; 0: off)", metavar="S")
    # set by the command: the run flags (`--trainer.*`, `--data.*`, ...) every retrain gets
    overrides: list[str] = option(list, flag=None)

    @property
    def margins(self) -> Margins:
        return Margins(loss=self.equivalence_loss, auroc=self.equivalence_auroc)
