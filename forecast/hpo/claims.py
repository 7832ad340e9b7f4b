"""Claims on work shared through a study storage: a search trial's place within `--trials N`, and keyed tasks.

A search trial runs only when it is within N (`Claimed`): the trials before it (by trial number, which
the storage gives out in order) that are finished or running must be fewer than N. Two workers that
both saw the study's last free place and started a trial together thus do not both run it: the one
with the higher trial number ends at once as FAIL, reason `surplus` (not counted).

Work other than trials is shared as trials are, in a queue of keyed tasks. The report's retrains (one per study x fold x seed) are tasks. The queue is one Optuna study in the
same storage (`QUEUE_STUDY`), and a task is a trial of it whose user attr `key` names the task:

- posting a task enqueues a WAITING trial (`Study.enqueue_trial`) unless the task already has a
  live one; two processes posting at once may make two, which the claim rule below makes harmless;
- claiming is the storage's own atomic pop: `set_trial_state_values(id, RUNNING)` succeeds for one
  process only (a row lock on PostgreSQL/SQLite, the journal's ordered log). Only the task's
  lowest WAITING trial is claimed, and a winner that then sees a lower trial of its key that is
  not FAIL ends its own as FAIL, reason `surplus`: of any two trials of a key, the lower one runs,
  so a task never runs twice;
- a finished task is COMPLETE with its result as the user attr `result` (JSON), readable from any
  machine; a task that raised is FAIL with reason `error: ...` and is not run again;
- a claimed task's process beats (RDB storages with `--heartbeat`), and its record `worker`
  (host:pid:start) lets a process on the same host see at once that it died: such a trial is
  failed (reason `interrupted`) by whoever sees it first (the state change is atomic again) and
  the task is posted once more; after `MAX_RETRY` kills the task is given up: a killed task is
  redone once, never twice.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from forecast.hpo.outputs import is_finished
from forecast.hpo.storage import (
    MAX_RETRY,
    WORKER_ATTR,
    open_storage,
    recover_dead_trials,
    worker_id,
)

QUEUE_STUDY = "forecast-report-retrains"  # a study of the storage that holds tasks, not a search
KEY, RESULT, REASON, LABEL = "key", "result", "reason", "label"
SURPLUS = "surplus"
ERROR = "error: "


# ------------------------------------------------------------------------ a trial's place in its study


class Surplus(Exception):
    """Another worker started the study's last trial at the same moment: this one is not run."""


class Claimed:
    """A search's objective, run only when the new trial is within `target` (see the module's rule).

    Args:
        objective: what a trial within the target runs (`forecast.hpo.objective.Objective`).
        target: the study's `--trials N`.
    """

    def __init__(self, objective: Callable[[optuna.Trial], float], target: int) -> None:
        self.objective, self.target = objective, target

    def __call__(self, trial: optuna.Trial) -> float:
        before = [t for t in trial.study.get_trials(deepcopy=False)
                  if t.number < trial.number and (is_finished(t) or t.state == TrialState.RUNNING)]
        if len(before) >= self.target:
            trial.set_user_attr(REASON, SURPLUS)
            trial.set_user_attr("message", f"the study already had {self.target} trials finished or running")
            raise Surplus(f"trial {trial.number} not run: the study was full")
        return self.objective(trial)


# ----------------------------------------------------------------------------------- the task queue


@dataclass
class TaskState:
    """Where one task stands: `done` (with its result), `failed` (with why), `running`, `waiting`
    (a trial is posted), or `open` (nothing posted, or the last one was killed and may be redone)."""

    status: str
    result: dict[str, Any] | None = None
    reason: str = ""
    worker: str = ""
    killed: int = 0
    finished: float | None = None  # when a `done` task finished (seconds since the epoch)


@dataclass
class Claim:
    """A task this process holds: run it, then `TaskQueue.finish` or `TaskQueue.fail`."""

    key: str
    number: int
    trial_id: int
    attrs: dict[str, Any] = field(default_factory=dict)


def _killed(t: FrozenTrial) -> bool:
    reason = str(t.user_attrs.get(REASON, ""))
    return t.state == TrialState.FAIL and reason != SURPLUS and not reason.startswith(ERROR)


def task_state(trials: Sequence[FrozenTrial]) -> TaskState:
    """The state of one task from its trials (any order)."""
    trials = sorted(trials, key=lambda t: t.number)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            return TaskState("done", result=json.loads(str(t.user_attrs.get(RESULT, "{}"))),
                             worker=str(t.user_attrs.get(WORKER_ATTR, "")),
                             finished=t.datetime_complete.timestamp() if t.datetime_complete else None)
    killed = sum(_killed(t) for t in trials)
    for t in trials:
        reason = str(t.user_attrs.get(REASON, ""))
        if t.state == TrialState.FAIL and reason.startswith(ERROR):
            return TaskState("failed", reason=reason[len(ERROR):], killed=killed)
    if killed > MAX_RETRY:
        return TaskState("failed", reason=f"killed {killed} times (a killed retrain is redone once)", killed=killed)
    if any(t.state == TrialState.RUNNING for t in trials):
        return TaskState("running", killed=killed)
    if any(t.state == TrialState.WAITING for t in trials):
        return TaskState("waiting", killed=killed)
    return TaskState("open", killed=killed)


class TaskQueue:
    """The task queue of one storage (`QUEUE_STUDY`), opened with heartbeats where the storage has them.

    Args:
        url: the `--storage` URL or journal path.
        heartbeat: seconds between heartbeats on RDB storages (0: none; a dead process on another
            machine is then never noticed).
    """

    def __init__(self, url: str, heartbeat: int = 60, name: str = QUEUE_STUDY) -> None:
        self.storage = open_storage(url, heartbeat)
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created": the queue is ours, not the user's
        try:
            self.study = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True)
        finally:
            optuna.logging.set_verbosity(level)
        self.study_id = self.storage.get_study_id_from_name(name)

    def trials(self, keys: Sequence[str] | None = None) -> dict[str, list[FrozenTrial]]:
        """The queue's trials grouped by task key (only `keys`, when given; every key present)."""
        wanted = None if keys is None else set(keys)
        grouped: dict[str, list[FrozenTrial]] = {k: [] for k in keys or ()}
        for t in self.study.get_trials(deepcopy=False):
            key = t.user_attrs.get(KEY)
            if key is not None and (wanted is None or key in wanted):
                grouped.setdefault(str(key), []).append(t)
        return grouped

    def states(self, keys: Sequence[str]) -> dict[str, TaskState]:
        """Each task's state (after failing the trials of processes found dead)."""
        self.recover()
        return {k: task_state(ts) for k, ts in self.trials(keys).items()}

    def recover(self) -> list[int]:
        """Fail the RUNNING trials of dead processes (heartbeat, or a pid gone from this host)."""
        return recover_dead_trials(self.study, self.storage)

    def post(self, tasks: dict[str, dict[str, Any]]) -> int:
        """Post every task (key -> its attrs) that has no live trial and may still run; how many."""
        posted = 0
        for key, state in self.states(list(tasks)).items():
            if state.status == "open":
                self.study.enqueue_trial({}, user_attrs={**tasks[key], KEY: key})
                posted += 1
        return posted

    def claim(self, keys: Sequence[str]) -> Claim | None:
        """Claim one of `keys` (in their order) that is waiting; None when none can be claimed now."""
        return self.take(self.candidates(keys))

    def candidates(self, keys: Sequence[str]) -> list[FrozenTrial]:
        """The trial to claim for each waiting task of `keys`: its lowest WAITING one (a snapshot)."""
        grouped = {k: ts for k, ts in self.trials(keys).items() if task_state(ts).status == "waiting"}
        return [min((t for t in ts if t.state == TrialState.WAITING), key=lambda t: t.number) for ts in grouped.values()]

    def take(self, candidates: Sequence[FrozenTrial]) -> Claim | None:
        """Claim the first of `candidates` this process wins (the state change is atomic in the
        storage, so a snapshot gone stale meanwhile costs a miss, never a second run)."""
        for trial in candidates:
            key = str(trial.user_attrs[KEY])
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            try:
                if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    continue  # another process popped it first
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(trial_id, WORKER_ATTR, worker_id())
            if self._beaten(key, trial.number):
                self.storage.set_trial_user_attr(trial_id, REASON, SURPLUS)
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                continue
            return Claim(key, trial.number, trial_id, dict(trial.user_attrs))
        return None

    def _beaten(self, key: str, number: int) -> bool:
        """Whether a lower trial of `key` than ours is live or complete (then it runs, not ours)."""
        return any(t.number < number and t.state != TrialState.FAIL for t in self.trials([key])[key])

    @contextlib.contextmanager
    def beating(self, claim: Claim) -> Iterator[None]:
        """Heartbeats for the claimed trial while the block runs (RDB storages with a heartbeat)."""
        interval = getattr(self.storage, "get_heartbeat_interval", lambda: None)()
        if not interval:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                self.storage.record_heartbeat(claim.trial_id)
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=beat, name="task-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=interval + 5)

    def finish(self, claim: Claim, value: float, result: dict[str, Any]) -> None:
        """Record the task's result and complete it."""
        self.storage.set_trial_user_attr(claim.trial_id, RESULT, json.dumps(result))
        self.storage.set_trial_state_values(claim.trial_id, TrialState.COMPLETE, values=[value])

    def fail(self, claim: Claim, reason: str) -> None:
        """The task raised: recorded as failed for good (`reason` says why), never run again."""
        self.storage.set_trial_user_attr(claim.trial_id, REASON, ERROR + reason)
        self.storage.set_trial_state_values(claim.trial_id, TrialState.FAIL)
