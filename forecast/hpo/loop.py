"""The search loop: run the planned, opened studies of a queue until each holds N finished trials.

`--trials N` means N FINISHED trials in the study, whoever ran them: COMPLETE, PRUNED (including
diverged) and FAIL with reason `oom` or `error` (failures that are results). Trials whose process
died or that a user aborted do not count; a dead process's trial is retried once. So rerunning
the same command after a stop or a crash continues to N, and several processes sharing the study
stop together at N: a process starts a trial only while finished + running < N, and waits for
other workers' running trials before it calls the study done; a trial that two processes started
for the last free place at once runs only in the one that got the lower trial number
(`forecast.hpo.claims.Claimed`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecast.core.errors import ForecastError
from forecast.core.workers import Pool
from forecast.hpo.claims import Claimed, Surplus
from forecast.hpo.display import Display, closing_line, quiet_search, show_study, trial_line
from forecast.hpo.objective import ExtraCallbacks, Objective, TrialFailed
from forecast.hpo.opening import open_study
from forecast.hpo.options import HpoOptions
from forecast.hpo.outputs import n_finished, write_outputs
from forecast.hpo.plan import StudyPlan, plan_study
from forecast.hpo.stop import ABORTED_EXIT, STOP_FILE, AbortTrial, StopControl
from forecast.hpo.storage import describe, recover_dead_trials, retry_queued
from forecast.sizing.devices import freeze_heap

WAIT_S = 0.5  # how often a process waiting for other workers' trials looks again
Ending = Literal["done", "stopped", "timeout", "aborted"]


@dataclass(frozen=True)
class Outcome:
    """How a study run ended."""

    study: str
    ending: Ending
    finished: int
    target: int
    folder: Path


def run_study(options: HpoOptions, stop: StopControl | None = None,
              extra_callbacks: ExtraCallbacks | None = None, summary: bool = True) -> Outcome:
    """Run (or resume) one study until N trials are finished, a stop, or the timeout.

    Args:
        options: the command's options.
        stop: a stop control shared with a caller; by default one for this study alone.
        extra_callbacks: more Lightning callbacks per trial (tests inject faults with it).
        summary: print the closing line (a `--jobs` worker leaves it to its parent).
    """
    return run_queue([options], stop, extra_callbacks, summary)[0]


def run_queue(all_options: list[HpoOptions], stop: StopControl | None = None,
              extra_callbacks: ExtraCallbacks | None = None, summary: bool = True,
              pool: Pool | None = None) -> list[Outcome]:
    """Run several studies as one queue: each trial goes to the study furthest from its N.

    Every study is checked and opened before the first trial. Any number of processes, on any
    number of machines sharing the storage, may run the same queue: each picks by what the storage
    holds, so the studies fill evenly and none runs past its N. `--timeout` of the first options
    bounds the whole queue. A storage lost mid-run ends it with one line; rerunning resumes.
    `pool`: the `--jobs` workers beside this process (worker 0): their lines are shown once the
    studies are checked and opened, and the outputs are written once they have ended too.
    """
    plans = [plan_study(o, extra_callbacks) for o in all_options]
    first = plans[0].options
    deadline = None if first.timeout is None else time.time() + first.timeout
    own = stop is None
    stop = stop or StopControl(plans[0].folder / STOP_FILE)
    try:
        with quiet_search():  # Optuna's "created / using an existing study" lines: said below
            queue = [(plan, open_study(plan)) for plan in plans]
        for plan in plans:
            stop.watch(plan.folder / STOP_FILE)
        hint = f"q, Ctrl-C or `touch {plans[0].folder / STOP_FILE}` stops after the running trial"
        with quiet_search(), Display(plans[0].name, first.trials, first.live, hint) as display, \
                (stop if own else contextlib.nullcontext(stop)):
            stop.notify = display.say
            for plan in plans:
                display.say(f"study {plan.name}: {len(plan.space.tree.archs)} architectures of budget "
                            f"{plan.options.budget}, storage {describe(plan.url)}, logs {plan.folder}")
            if pool is not None:
                pool.route(display.say)
                pool.release()  # the studies checked out: the workers' lines from now on
            freeze_heap()  # the libraries and plans stay; each trial's garbage is collected after it
            ending = optimize(queue, stop, display, deadline)
            if pool is not None:  # their last trials, then the outputs over every worker's trials
                if pool.running():
                    display.say("waiting for the other workers' running trials")
                if ABORTED_EXIT in pool.wait(ok=(0, ABORTED_EXIT)).values():
                    ending = "aborted"
            for plan, study in queue:
                write_outputs(study, plan)
    except Exception as err:
        lost = storage_error(err)
        if lost is None:
            raise
        why = _first_line(getattr(lost, "orig", None) or lost)  # the driver's words, not SQLAlchemy's wrapper
        raise ForecastError(f"lost the storage {describe(plans[0].url)} ({why}); the studies are kept: "
                            "rerun the same command to resume") from None
    outcomes = [study_outcome(plan, study, ending) for plan, study in queue]
    if summary:
        for outcome, (_, study) in zip(outcomes, queue, strict=True):
            print(closing_line(outcome, study), flush=True)
    return outcomes


def study_outcome(plan: StudyPlan, study: optuna.Study, ending: Ending) -> Outcome:
    """How the study stands: done once it holds N finished trials, whatever ended this run."""
    finished = n_finished(study.get_trials(deepcopy=False))
    done = finished >= plan.options.trials
    return Outcome(plan.name, "done" if done else ending, finished, plan.options.trials, plan.folder)


def optimize(queue: list[tuple[StudyPlan, optuna.Study]], stop: StopControl, display: Display,
             deadline: float | None) -> Ending:
    """The loop: one trial at a time for the study furthest from its N; wait for other workers'
    trials when every study is finished or taken; stop on request or at the deadline."""
    objectives = {plan.name: Claimed(Objective(plan.setup, display, stop), plan.options.trials)
                  for plan, _ in queue}
    waiting_said = False
    while True:
        gaps = []
        for plan, study in queue:
            recover(study, plan, display)
            trials = study.get_trials(deepcopy=False)
            gaps.append((plan.options.trials - n_finished(trials), len(_running(trials)), trials))
        if all(left <= 0 for left, _, _ in gaps):
            return "done"
        if stop.requested:
            return "stopped"
        if deadline is not None and time.time() >= deadline:
            return "timeout"
        free = [left - running for left, running, _ in gaps]
        pick = max(range(len(queue)), key=lambda i: (free[i], -i))  # furthest from N; ties: matrix order
        plan, study = queue[pick]
        show_study(display, plan.name, plan.options.trials, study, gaps[pick][2])
        if free[pick] <= 0:
            if not waiting_said:
                running = [f"{p.name} #{t.number}" for (p, _), (_, _, ts) in zip(queue, gaps, strict=True)
                           for t in _running(ts)]
                display.say(f"every study is finished or taken; waiting for running trials "
                            f"{', '.join(running)} of other workers")
                waiting_said = True
            time.sleep(WAIT_S)
            continue
        waiting_said = False
        try:
            study.optimize(objectives[plan.name], n_trials=1, callbacks=[AfterTrial(plan, stop, display)],
                           catch=(TrialFailed, Surplus))  # the objective collects garbage itself
        except AbortTrial:
            return "aborted"


class AfterTrial:
    """Optuna callback after each trial: its line, recovery of dead workers' trials, outputs."""

    def __init__(self, plan: StudyPlan, stop: StopControl, display: Display) -> None:
        self.plan, self.stop, self.display = plan, stop, display

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.stop.flush()
        self.display.say(trial_line(trial))
        recover(study, self.plan, self.display)
        write_outputs(study, self.plan)
        show_study(self.display, self.plan.name, self.plan.options.trials, study, study.get_trials(deepcopy=False))


def recover(study: optuna.Study, plan: StudyPlan, display: Display) -> None:
    """Fail the RUNNING trials of dead processes (each queued to run once more), and say so."""
    failed = recover_dead_trials(study, plan.storage)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)} if failed else {}
    for number in failed:
        then = "queued to run again" if retry_queued(trials[number]) else "not retried (it was the retry)"
        display.say(f"trial {number}: its process is gone; marked failed and {then}")


def _running(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING]


def storage_error(err: BaseException | None) -> BaseException | None:
    """The storage's error (SQLAlchemy's) behind `err`, if any (Optuna may raise another one while
    handling it). None where SQLAlchemy was never loaded: a journal storage never raises its errors."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None:
        return None
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, sqlalchemy_exc.SQLAlchemyError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
