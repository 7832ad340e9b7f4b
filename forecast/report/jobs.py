"""The report's retrains as tasks claimed through the study storage, by any number of processes.

Every (study, fold, seed) retrain is one task of the storage's task queue (`forecast.hpo.api.TaskQueue`),
keyed by `retrain.run_key` (config, flags, fold, seed, data fingerprint). A report process posts
its tasks, then claims and runs them one at a time until none is left to claim; with `--jobs N` it
does so beside N-1 worker processes of the same command (`forecast.core.workers`), and any other `forecast report`
on the same storage URL (another machine) joins in. A finished retrain's result lives in the storage, so the
process that writes the report reads every retrain's predictions from there, whoever ran it.

The verdicts are computed once: by the process that sees the last retrain finished and claims the
report's own `verdicts` task, or by a plain rerun that finds every retrain done.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from forecast.core.errors import ForecastError
from forecast.hpo.api import TaskQueue, TaskState
from forecast.report.retrain import SeedRun, retrain, run_key
from forecast.sizing.devices import release_memory

Say = Callable[[str], None]


@dataclass
class Task:
    """One retrain: a study's best config on one fold with one seed."""

    study: Any  # build.StudyResult
    fold: Any  # build.Fold
    seed: int
    args: list[str]  # the fold's data flags (from the bounds its data module was built with) + the user's flags
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or run_key(self.study.entry, self.args, self.seed, self.fold.fingerprint)

    @property
    def label(self) -> str:
        return f"{self.study.entry.name} fold {self.fold.index} seed {self.seed}"

    def attrs(self) -> dict[str, Any]:
        """What the storage records with the task (for people and `optuna` readers)."""
        return {"label": self.label, "study": self.study.entry.name, "fold": self.fold.index, "seed": self.seed,
                "fingerprint": self.fold.fingerprint, "args": " ".join(self.args)}


def verdict_key(tasks: Sequence[Task]) -> str:
    """The key of the report's `verdicts` task: one per set of retrains."""
    return "verdicts:" + hashlib.md5("\0".join(sorted(t.key for t in tasks)).encode()).hexdigest()


def work(tasks: Sequence[Task], work_queue: TaskQueue, out: Any, keep_checkpoints: bool, say: Say) -> int:
    """Claim and run tasks until none is left to claim; how many this process ran.

    A study one of whose retrains failed gets no further claims (its other retrains would not be
    reported). A task claimed by another process at the same moment is simply skipped.
    """
    by_key = {t.key: t for t in tasks}
    ran = 0
    while True:
        states = work_queue.states(list(by_key))
        failed = {by_key[k].study.entry.name for k, s in states.items() if s.status == "failed"}
        open_keys = [k for k, s in states.items() if s.status == "waiting" and by_key[k].study.entry.name not in failed]
        if not open_keys:
            return ran
        claim = work_queue.claim(open_keys)
        if claim is None:
            continue  # every waiting one was taken by another process meanwhile: look again
        task = by_key[claim.key]
        with work_queue.beating(claim):
            try:
                run = retrain(task.study.entry, task.seed, out / "runs", task.fold.fingerprint, task.args,
                              keep_checkpoints, fold=task.fold.index)
            except Exception as err:  # a failed retrain is a finding about its study, recorded for all
                first = (str(err).strip().splitlines() or [""])[0]
                kind = "" if isinstance(err, ForecastError) else f"{type(err).__name__}: "  # ours say it plainly
                work_queue.fail(claim, f"{kind}{first}")
                say(f"[-/{len(by_key)}] {task.label}: retrain failed: {kind}{first}")
                release_memory()  # e.g. after an out-of-memory error, before the next model
                continue
        work_queue.finish(claim, float(run.test.get("test/loss", math.nan)), asdict(run))
        ran += 1
        done = sum(st.status == "done" for st in work_queue.states(list(by_key)).values())  # by any process
        say(f"[{done}/{len(by_key)}] {task.label}: {line(run)}")


def line(run: SeedRun) -> str:
    """A retrain's outcome in a few words."""
    loss, auroc = run.test.get("test/loss", math.nan), run.test.get("test/auroc", math.nan)
    how = "reused" if run.cached else f"{run.wall_s:.0f} s"
    return f"test loss {loss:.4f}, AUROC {auroc:.3f} ({run.epochs_run} epochs, {how})"


def seed_run(state: TaskState, reused: bool) -> SeedRun:
    """A finished task's result as the report reads it."""
    assert state.result is not None
    return SeedRun(**{**state.result, "cached": reused})
