"""The task queue the report's retrains are claimed through (`forecast.hpo.claims`), on a real journal
file and SQLite: generated interleavings of several processes' posts, claims, finishes and deaths
never run a task twice, redo a killed task once and never twice, and end with every task settled."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from forecast.hpo.claims import ERROR, KEY, SURPLUS, TaskQueue, task_state
from forecast.hpo.storage import MAX_RETRY, WORKER_ATTR

DEAD = "this-host-never:1:1"  # a worker record no process matches: only the test's own `die` writes it


def _die(q: TaskQueue, trial_id: int) -> None:
    """A process killed mid-task: its trial stays RUNNING and its record names a process that is gone.
    On another host only the heartbeat could tell; the test fails it the way the heartbeat check does."""
    q.storage.set_trial_user_attr(trial_id, WORKER_ATTR, DEAD)
    q.storage.set_trial_user_attr(trial_id, "reason", "interrupted")
    q.storage.set_trial_state_values(trial_id, TrialState.FAIL)


def _invariants(q: TaskQueue, keys: list[str]) -> None:
    grouped = q.trials(keys)
    for key, trials in grouped.items():
        live = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE)]
        assert len(live) <= 1, f"{key} runs twice: {[t.number for t in live]}"
        killed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("reason") == "interrupted"]
        assert len(killed) <= MAX_RETRY + 1, f"{key} was redone after {len(killed)} kills"


# "post_raw" enqueues as a process that raced another's post would (a duplicate trial); "race" takes a
# snapshot of what to claim, lets every other process claim first, then claims from the stale snapshot.
STEP = st.tuples(st.sampled_from(["post", "post_raw", "claim", "race", "finish", "die", "error"]),
                 st.integers(0, 2), st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=40))
def test_generated_interleavings_never_run_a_task_twice(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("q") / "queue.journal"
    procs = [TaskQueue(str(path), heartbeat=0) for _ in range(3)]  # three clients of one storage
    keys = [f"task{i}" for i in range(4)]
    tasks = {k: {"label": k} for k in keys}
    held: list[list] = [[] for _ in procs]  # claims each process holds
    for action, p, which in steps:
        q = procs[p]
        order = keys[which:] + keys[:which]
        if action == "post":
            q.post(tasks)
        elif action == "post_raw":
            q.study.enqueue_trial({}, user_attrs={KEY: keys[which], "label": keys[which]})
        elif action in ("claim", "race"):
            stale = q.candidates(order)
            if action == "race":
                for other, rival in enumerate(procs):
                    if other != p and (won := rival.claim(order)) is not None:
                        held[other].append(won)
            claim = q.take(stale)
            if claim is not None:
                held[p].append(claim)
        elif held[p]:
            claim = held[p].pop(0)
            if action == "finish":
                q.finish(claim, 0.5, {"by": p})
            elif action == "die":
                _die(q, claim.trial_id)
            else:
                q.fail(claim, "boom")
        _invariants(q, keys)
    for p, claims in enumerate(held):  # the processes still holding tasks finish them
        for claim in claims:
            procs[p].finish(claim, 0.5, {"by": p})
    for _ in range(4 * len(keys)):  # then any one process settles the rest
        procs[0].post(tasks)
        claim = procs[0].claim(keys)
        if claim is None:
            break
        procs[0].finish(claim, 0.5, {"by": 0})
    _invariants(procs[0], keys)
    states = procs[0].states(keys)
    assert all(s.status in ("done", "failed") for s in states.values()), states


def test_a_killed_task_is_redone_once_then_given_up(tmp_path):
    q = TaskQueue(f"sqlite:///{tmp_path / 'q.db'}", heartbeat=0)
    q.post({"k": {"label": "k"}})
    for life in range(MAX_RETRY + 1):
        claim = q.claim(["k"])
        assert claim is not None, f"life {life}: the killed task was not redone"
        _die(q, claim.trial_id)
        q.post({"k": {"label": "k"}})
    state = q.states(["k"])["k"]
    assert state.status == "failed" and "killed 2 times" in state.reason
    assert q.claim(["k"]) is None


def test_a_dead_local_process_is_seen_at_once_and_its_task_redone(tmp_path):
    """A RUNNING task whose recorded process (this host, a pid that no longer exists) is gone is
    failed by the next reader, and the retry is posted once."""
    import subprocess
    import sys

    from forecast.hpo.storage import worker_id

    q = TaskQueue(str(tmp_path / "q.journal"), heartbeat=0)
    q.post({"k": {"label": "k"}})
    claim = q.claim(["k"])
    gone = subprocess.run([sys.executable, "-c", "from forecast.hpo.storage import worker_id; print(worker_id())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert gone != worker_id()
    q.storage.set_trial_user_attr(claim.trial_id, WORKER_ATTR, gone)
    assert q.states(["k"])["k"].status == "waiting"  # failed as interrupted, its retry posted
    again = q.claim(["k"])
    assert again is not None and again.number != claim.number
    q.finish(again, 0.25, {"ok": 1})
    trials = q.trials(["k"])["k"]
    assert sorted(t.state for t in trials) == sorted([TrialState.FAIL, TrialState.COMPLETE])
    assert task_state(trials).result == {"ok": 1}


def test_an_error_is_final_and_a_surplus_trial_is_not_counted(tmp_path):
    q = TaskQueue(str(tmp_path / "q.journal"), heartbeat=0)
    # two processes posting at once: two WAITING trials of one task
    q.study.enqueue_trial({}, user_attrs={KEY: "k"})
    q.study.enqueue_trial({}, user_attrs={KEY: "k"})
    first = q.claim(["k"])
    assert first is not None and q.claim(["k"]) is None  # the second trial waits behind the running first
    q.fail(first, "ValueError: bad")
    state = q.states(["k"])["k"]
    assert state.status == "failed" and state.reason == "ValueError: bad"
    assert q.claim(["k"]) is None and q.post({"k": {}}) == 0
    reasons = [t.user_attrs.get("reason") for t in q.trials(["k"])["k"]]
    assert ERROR + "ValueError: bad" in reasons and SURPLUS not in reasons


def test_results_are_read_back_from_the_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    q = TaskQueue(url, heartbeat=0)
    q.post({"k": {"label": "k"}})
    claim = q.claim(["k"])
    q.finish(claim, 0.7, {"probs": [0.1, 0.9], "seed": 3})
    other = TaskQueue(url, heartbeat=0)  # another process, another machine
    state = other.states(["k"])["k"]
    assert state.status == "done" and state.result == {"probs": [0.1, 0.9], "seed": 3}
    assert json.loads(other.trials(["k"])["k"][0].user_attrs["result"])["seed"] == 3
