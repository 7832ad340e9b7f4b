"""Open a study: create it, or resume it when it holds the same targets, data, budget and space.

The first process to open a study records its fingerprint (`forecast.hpo.plan`) and command and
enqueues the grid's extremes; every later one (another worker, a rerun) must bring the same
fingerprint, and draws with a sampler of its own seed. Setup is serialised among this machine's
processes by a lock file in the study's folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial

from forecast.core.errors import ForecastError
from forecast.core.metric_names import MONITOR_MODE
from forecast.hpo import config as cfg
from forecast.hpo.api import DATA_FINGERPRINT
from forecast.hpo.config import Pruner
from forecast.hpo.plan import StudyPlan
from forecast.hpo.storage import describe, worker_id
from forecast.training.config import differences


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Serialise study setup among processes of this machine (enqueueing, worker numbers). A setup
    refused in a folder made for it leaves no folder behind (nor its lock)."""
    new = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    except BaseException:
        if new and [p.name for p in folder.iterdir()] == [".lock"]:
            (folder / ".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE with every behaviour Optuna 5 changed the default of spelled out.

    multivariate: model parameters jointly; group: treat each conditional branch of the
    architecture tree as its own sub-space; constant_liar: running trials of other workers
    count as bad so parallel workers do not all pick the same point.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def make_pruner(kind: Pruner, max_epochs: int | None) -> optuna.pruners.BasePruner:
    """`median`: stop a trial below the median of earlier trials at the same epoch (after 5
    trials, from the 3rd epoch on, or the 2nd when there are only 3), never at its last epoch;
    `hyperband`: successive halving over epochs; `none`."""
    epochs = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None
    if kind == "median":
        warmup = 2 if epochs is None else max(0, min(2, epochs - 2))
        median = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        return median if epochs is None else NotAtTheLastEpoch(median, epochs)
    if kind == "hyperband":  # its rungs lie below max_resource, so it never prunes at the end
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs or "auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


class NotAtTheLastEpoch(optuna.pruners.BasePruner):
    """A pruner that never prunes at the last epoch: stopping there saves nothing and would throw
    away a finished trial's score (a pruned trial can never be the study's best)."""

    def __init__(self, pruner: optuna.pruners.BasePruner, max_epochs: int) -> None:
        self.pruner, self.max_epochs = pruner, max_epochs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is not None and step >= self.max_epochs - 1:
            return False
        return self.pruner.prune(study, trial)


def open_study(plan: StudyPlan) -> optuna.Study:
    """Create or resume the study; on first creation enqueue the grid's extremes."""
    o = plan.options
    direction = "minimize" if MONITOR_MODE == "min" else "maximize"
    with locked(plan.folder):
        study = optuna.create_study(storage=plan.storage, study_name=plan.name, direction=direction,
                                    sampler=make_sampler(o.seed), pruner=make_pruner(o.pruner, plan.max_epochs),
                                    load_if_exists=True)
        check_same_study(study, plan)
        worker = int(study.user_attrs.get("workers", 0))
        study.set_user_attr("workers", worker + 1)
        if worker:  # a second process (or a rerun) must not replay the first one's random draws;
            # the count is atomic on this machine only (the lock), so the process goes in the seed too
            study.sampler = make_sampler(zlib.crc32(f"{o.seed}:{worker}:{worker_id()}".encode()))
        for params in plan.space.enqueued()[: o.trials]:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def check_same_study(study: optuna.Study, plan: StudyPlan) -> None:
    """A resumed study must have the same targets, data shape, budget and space."""
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        leftovers = sorted(plan.folder.glob("trial_*"))
        if study.trials or not leftovers:
            study.set_user_attr("fingerprint", plan.fingerprint)
            study.set_user_attr("command", f"forecast hpo --budget {plan.options.budget} "
                                           + " ".join(plan.setup.replay_args))
            return
        raise ForecastError(f"{plan.folder} holds {leftovers[0].name} from an earlier study of this name "
                            "that the storage does not know; move the folder away or pass --study-name")
    # A study recorded without its measured settings: they are recorded on this resume (once the
    # other checks pass) and held from then on.
    legacy = isinstance(stored, dict) and cfg.MEASURED not in stored
    if legacy:
        stored = {**stored, cfg.MEASURED: plan.fingerprint[cfg.MEASURED]}
    if isinstance(stored, dict) and stored.get(DATA_FINGERPRINT) != plan.fingerprint[DATA_FINGERPRINT] \
            and {k: v for k, v in stored.items() if k != DATA_FINGERPRINT} == \
            {k: v for k, v in plan.fingerprint.items() if k != DATA_FINGERPRINT}:
        raise ForecastError(f"study {plan.name} in {describe(plan.url)} was run on other data (data fingerprint "
                            f"{str(stored.get(DATA_FINGERPRINT))[:8]}, now {plan.fingerprint[DATA_FINGERPRINT][:8]}: "
                            "a rebuilt or re-imported tier); restore that data or start a new --study-name")
    if stored != plan.fingerprint:
        diff = differences(stored, plan.fingerprint)
        raise ForecastError(f"study {plan.name} in {describe(plan.url)} was run with other settings "
                            f"({'; '.join(diff[:3])}); use the same settings or another --study-name")
    if legacy:
        study.set_user_attr("fingerprint", stored)
