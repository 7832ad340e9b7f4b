"""The options of `forecast hpo` and `forecast sweep`, each declared once (`forecast.core.options`).

A field is a flag: its type states its domain (`forecast.core.domains`), the parser refuses what the type
does not allow, and nothing downstream checks the value again. `SearchOptions` holds what both commands
take; `HpoOptions` is one study (a sweep hands one per cell of its matrix to the queue); `SweepOptions`
is the matrix. `configs` and `overrides` are no flags of ours: the `--config FILE` and `--data.*`,
`--model.*`, ... flags every trial's LightningCLI takes, as `forecast fit` would.

Light at import (no Lightning, Optuna or pandas): the command parses with these before its `--jobs`
workers start, and they start before this process loads its libraries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forecast.core.domains import (
    DeviceIds,
    Name,
    NonEmptyStr,
    NonNegativeInt,
    PositiveFiniteFloat,
    PositiveInt,
    Seed,
)
from forecast.core.options import option
from forecast.core.workers import this_worker
from forecast.hpo.config import DEFAULT_SPACE, Pruner
from forecast.hpo.years import TrainYears

JOURNAL = "optuna.journal"  # the storage of `--jobs N` without `--storage`, in `--log-dir`
Design = Literal["trailing", "blocks"]


@dataclass(kw_only=True)
class SearchOptions:
    """What `forecast hpo` and `forecast sweep` share."""

    trials: PositiveInt = option(50, "finished trials (complete, pruned or failed as a result) the study should "
                                     "hold in total; a rerun continues to this number")
    search_space: Path = option(DEFAULT_SPACE, "search-space YAML (default: configs/hpo/search_space.yaml)",
                                metavar="FILE")
    storage: NonEmptyStr | None = option(None, "Optuna storage: a *.journal file or journal:PATH for several "
                                               "processes on one machine, an RDB URL (postgresql://...) for many "
                                               "machines (default: sqlite <log-dir>/optuna.db)", metavar="URL")
    pruner: Pruner = option("median", "median (default: after 5 trials, from the 3rd epoch, never at the last "
                                      "one), hyperband or none")
    seed: Seed = option(0, "seed of the TPE sampler")
    timeout: PositiveFiniteFloat | None = option(None, "start no new trial after S seconds (the running one "
                                                       "finishes); in a sweep, for the whole matrix", metavar="S")
    jobs: PositiveInt = option(1, "worker processes on this machine sharing the studies through the storage "
                                  f"(without --storage: the journal <log-dir>/{JOURNAL}; default: 1)", metavar="N")
    devices: DeviceIds | None = option(None, "CUDA devices for the workers, e.g. 0,1 or 0,0,1,1 (worker k takes "
                                             "the k-th id, round robin; an id may repeat: several trials share a "
                                             "GPU; default: every visible device)", metavar="IDS")
    log_dir: Path = option(Path("logs/hpo"), "TensorBoard runs (<log-dir>/<study>/trial_NNNN) and study outputs")
    heartbeat: NonNegativeInt = option(60, "RDB storages: a worker beats every S seconds and its RUNNING trial is "
                                           "retried after 2*S without one (0 = off; default: 60)", metavar="S")
    keep_checkpoints: bool = option(False, "keep every trial's checkpoints (default: only the best trial's)")
    no_live: bool = option(False, "plain lines instead of the live panel")
    configs: list[str] = option(list, flag=None)  # --config FILE of every trial
    overrides: list[str] = option(list, flag=None)  # --data.* --model.* ... flags of every trial

    @property
    def storage_url(self) -> str | None:
        """The storage this search names: `--storage`; with `--jobs N` and none, the journal in `--log-dir`
        (SQLite's writers lock each other out); else None (the default SQLite file)."""
        if self.storage is None and self.jobs > 1:
            return str(self.log_dir / JOURNAL)
        return self.storage

    @property
    def live(self) -> bool | None:
        """The live panel: never with `--no-live` or in a `--jobs` worker (its parent shows one); else
        where the terminal allows (None)."""
        return False if self.no_live or this_worker() is not None else None


SHARED = tuple(f.name for f in dataclasses.fields(SearchOptions))


@dataclass(kw_only=True)
class HpoOptions(SearchOptions):
    """One study: `forecast hpo`, or one cell of `forecast sweep`."""

    budget: NonEmptyStr = option(doc="2M, 20M, 200M, 2B, or a parameter count such as 50K")
    study_name: Name | None = option(None, "default: <symbol>-<tier>-<task>-h<horizon>-<budget>")


@dataclass(kw_only=True)
class SweepOptions(SearchOptions):
    """`forecast sweep`: budgets x horizons (x training years) as one queue."""

    budgets: list[NonEmptyStr] = option(doc="e.g. 2M 20M 200M 2B", metavar="BUDGET")
    horizons: list[PositiveInt] = option(doc="e.g. 1 3 5", metavar="H")
    train_years: list[TrainYears] | None = option(
        None, "the training-years axis: a study per number of years before validation, or all "
              "(e.g. 2 4 8 16 all; default: none, every study trains on all years)", metavar="Y")
    designs: list[Design] = option(["trailing"], "with --train-years: trailing (the most recent years) "
                                                       "and/or blocks (as many random whole calendar years; "
                                                       "default: trailing)", metavar="DESIGN")
    draws: PositiveInt = option(1, "with --designs blocks: draws of random years per number of years", metavar="K")

    def cell(self, budget: str, flags: list[str]) -> HpoOptions:
        """The study of one cell: `budget`, and `flags` (its horizon and training years) after the trials' own."""
        shared: dict[str, Any] = {name: getattr(self, name) for name in SHARED}
        return HpoOptions(**{**shared, "overrides": [*self.overrides, *flags]}, budget=budget)
