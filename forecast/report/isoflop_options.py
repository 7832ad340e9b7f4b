"""`forecast isoflop`'s options, declared once: each field is a flag (`forecast.core.options`).

Light at import (no Lightning, Optuna or pandas): `isoflop_cli` builds its parser from these fields before any
--jobs worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from forecast.core.domains import (
    Date,
    DeviceIds,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
)
from forecast.core.options import option
from forecast.hpo.years import ALL, TrainYears

LR_STEP_DECADES = 0.5  # the --lr-sweep learning rates lie half a decade apart (x 3.16), centred on the config's lr


@dataclass
class IsoflopOptions:
    """What `forecast isoflop` takes (see `forecast isoflop --help`)."""

    flops: list[PositiveFiniteFloat] = option(doc="compute budgets in training FLOPs, e.g. 1e11 3e11 1e12",
                                              metavar="C")
    budgets: list[NonEmptyStr] = option(doc="parameter budgets, e.g. 10K 30K 100K (`forecast arch --budget` lists "
                                            "their shapes)", metavar="SIZE")
    storage: NonEmptyStr = option(doc="Optuna storage that holds the runs' claims and results (and any searched "
                                      "studies)", metavar="URL")
    seeds: PositiveInt = option(2, "seeds 0..S-1 per fold", metavar="S")
    folds: PositiveInt = option(4, "walk-forward folds", metavar="K")
    train_years: list[TrainYears] | None = option(
        None, "the training-years axis: every cell once per number of trailing years before validation, or all "
              "(e.g. 2 4 8 all; default: none, the config's selection)", metavar="Y")
    lr_sweep: NonNegativeInt = option(
        0, "learning rates tried per size that has no study in --storage: K rates half a decade apart around the "
           "config's model.lr, at the smallest compute budget of 100+ steps, fold 0, seed 0; the best validation loss wins "
           "(default: 0, off: the config's lr)", metavar="K")
    grid: Path | None = option(None, "architecture grid YAML a size without a study takes its shape from: the one "
                                     "closest to its budget (default: configs/arch_grid.yaml, as `forecast arch`)",
                               metavar="FILE")
    test_start: Date | None = option(None, "first day of the folds' test period (default: the config's test_start)",
                                     metavar="DATE")
    test_end: Date | None = option(None, "last day of the folds' test period (default: the config's, else the "
                                         "data's end)", metavar="DATE")
    out: Path = option(Path("logs/isoflop"), "where the outputs and the runs' TensorBoard events go", metavar="DIR")
    bootstrap: NonNegativeInt = option(1000, "joint block-bootstrap draws of dates and seeds for the frontier's "
                                             "interval", metavar="B")
    jobs: PositiveInt = option(1, "processes that claim and run the runs, this one included", metavar="N")
    devices: DeviceIds | None = option(None, "CUDA device ids for the workers in turn (default: every visible one)",
                                       metavar="IDS")
    heartbeat: NonNegativeInt = option(60, "seconds between a running run's heartbeats on an RDB storage "
                                           "(default: 60; 0: off)", metavar="S")
    # set by the command, not flags
    run_args: list[str] = option(list, flag=None)  # --config FILE and --key=value flags of every run
    worker_devices: list[str] = option(list, flag=None)  # the device ids the --jobs workers take in turn
    argv: list[str] = option(list, flag=None)  # the command line after `isoflop` (the workers run it again)



def years_label(years: TrainYears | float | None) -> str:
    """A training-years value as isoflop.csv and the outputs name it: `all` (also None: every year), `4`, `2.5`."""
    return ALL if years is None or years == ALL else f"{float(years):g}"
