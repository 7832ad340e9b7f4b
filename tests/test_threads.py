"""The thread policy (`forecast.core.threads`): the rule over generated machines, the user's setting wins,
a bad setting is one line, the choice is printed once, and a real `forecast fit` applies it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from forecast.core.threads import (
    TINY_PARAMS,
    TRIAL_BLOCK,
    TRIAL_ROUNDS,
    TRIAL_WARMUP,
    Choice,
    ThreadPolicy,
    ThreadTrial,
    choose,
    neighbours_load,
    user_choice,
)
from forecast.core.workers import WORKER_ENV, usable_cores

ROOT = Path(__file__).resolve().parents[1]


@given(cores=st.integers(1, 256), neighbours=st.floats(0, 300), workers=st.integers(1, 64),
       params=st.none() | st.integers(1, 10**10))
def test_the_rule_stays_within_the_cores_and_off_busy_ones(cores, neighbours, workers, params):
    choice = choose(cores, neighbours, workers, params)
    share = max(1, cores // workers)
    assert 1 <= choice.threads <= share  # N workers never oversubscribe the cores between them
    taken = max(0.0, neighbours - (workers - 1) * share)
    free = cores - int(taken + 0.5)
    if taken >= 0.5:  # a neighbour holds a core: never more threads than the free cores, per worker
        assert choice.threads <= max(1, free // workers)
    if taken < 0.5 and (params is None or params >= TINY_PARAMS):
        assert choice.threads == share  # an idle machine: every core (torch's own default)
    if params is not None and params < TINY_PARAMS:
        assert choice.threads == 1


def test_one_busy_neighbour_on_two_cores_means_one_thread_and_idle_means_two():
    assert choose(2, 1.0).threads == 1 and choose(2, 0.1).threads == 2
    assert choose(2, 1.0, workers=2).threads == 1  # our own second worker is no neighbour, and 2 x 1 fill 2 cores
    assert choose(16, 3.2).threads == 13 and choose(16, 3.6).threads == 12  # a core more than half taken is taken


@pytest.mark.parametrize("env,threads", [({"OMP_NUM_THREADS": "3"}, 3), ({"FORECAST_THREADS": "5"}, 5),
                                         ({"OMP_NUM_THREADS": "3", "FORECAST_THREADS": "2"}, 2), ({}, None)])
def test_the_users_setting_wins(env, threads):
    got = user_choice(env)
    assert (got.threads if got else None) == threads


def test_the_policy_applies_and_prints_once(monkeypatch, capsys):
    monkeypatch.setenv("FORECAST_THREADS", "1")
    before = torch.get_num_threads()
    try:
        policy = ThreadPolicy()
        policy.apply()
        policy.apply(10**6)
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().err.count("threads: 1 (set by FORECAST_THREADS)") == 1
        monkeypatch.delenv("FORECAST_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        policy.apply(100)  # a tiny model: one thread, said once more since the choice changed
        assert torch.get_num_threads() == 1 and "100-parameter model" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_the_load_sample_sees_a_busy_process():
    """A CPU-bound child on one of our cores shows up as about one core of neighbours' load."""
    cpus = usable_cores()
    code = f"import os\nos.sched_setaffinity(0, {{{cpus[0]}}})\nprint('go', flush=True)\nwhile True: pass"
    busy = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "go"
        load = max(neighbours_load(cpus, 0.5) for _ in range(3))  # the busiest of 3 samples: other tests come and go
        assert load >= 0.6, load
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_a_bad_thread_setting_is_one_line(bad, capsys, monkeypatch):
    from forecast.cli import main

    monkeypatch.setenv("FORECAST_THREADS", bad)
    assert main(["report", "--storage", "nowhere.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FORECAST_THREADS" in err[0], err


@pytest.mark.slow  # 10-60 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_fit_prints_its_choice_once_and_uses_it(tmp_path):
    """A real `forecast fit --trainer.fast_dev_run` on the synthetic tier, with the user's setting."""
    from conftest import synthetic_raw

    from forecast.data.raw import write_raw
    from forecast.data.tiers import build_and_write

    data = tmp_path / "data"
    write_raw(data, "SYN", synthetic_raw(n=700, start="2015-01-02"), source="synthetic")
    build_and_write(data, "SYN", "a25")
    env = {**os.environ, "FORECAST_THREADS": "1", "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-m", "forecast", "fit", "--config", str(ROOT / "configs" / "demo.yaml"),
                          f"--data.data_dir={data}", "--data.symbol=SYN", "--data.val_start=2016-07-01",
                          "--data.test_start=2017-01-02", "--data.context_length=32",
                          "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
                          "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("threads: 1 (set by FORECAST_THREADS)") == 1, run.stderr[-2000:]


# -- measured, not assumed: the trial on a run's first steps -------------------------------------------------
class FakeRun:
    """Steps whose duration depends on the threads set: `ms[threads]`, plus `switch_ms` on the first step
    after a switch (which the trial must not time)."""

    def __init__(self, ms: dict[int, float], switch_ms: float = 0.0) -> None:
        self.ms, self.switch_ms, self.now, self.threads, self.switched = ms, switch_ms, 0.0, 0, False
        self.set_calls: list[int] = []

    def set_threads(self, n: int) -> None:
        self.threads, self.switched = n, True
        self.set_calls.append(n)

    def clock(self) -> float:
        return self.now

    def run(self, trial: ThreadTrial, steps: int) -> int:
        """Steps until the trial is done (or `steps`); how many ran."""
        for step in range(steps):
            if trial.done:
                return step
            trial.before_step()
            self.now += (self.ms.get(self.threads, 1.0) + (self.switch_ms if self.switched else 0.0)) / 1000
            self.switched = False
            trial.after_step()
        return steps


@pytest.mark.parametrize("ms,best", [({1: 10.0, 2: 6.0}, 2), ({1: 10.0, 2: 25.0}, 1), ({1: 8.0, 2: 8.0}, 1)])
def test_the_trial_keeps_the_faster_candidate(ms, best):
    kept: list[Choice] = []
    run = FakeRun(ms, switch_ms=500.0)  # a slow first step after each switch: never timed
    trial = ThreadTrial((1, 2), kept.append, run.set_threads, run.clock)
    steps = run.run(trial, 100)
    assert steps == TRIAL_WARMUP + TRIAL_ROUNDS * TRIAL_BLOCK * 2  # the plan, and no step more
    assert run.set_calls == [1, 2, 1]  # blocks 1 2, then 2 1 (no switch between the two 2s)
    assert [c.threads for c in kept] == [best] and trial.choice == kept[0]
    assert "measured on the first steps" in kept[0].line and f"{ms[1]:.1f} ms/step" in kept[0].line
    trial.before_step()  # later steps are left alone
    trial.after_step()
    assert run.set_calls == [1, 2, 1] and len(kept) == 1


def _two_free_cores(monkeypatch) -> None:
    monkeypatch.setattr("forecast.core.threads.usable_cores", lambda: [0, 1])
    monkeypatch.setattr("forecast.core.threads.neighbours_load", lambda cpus, seconds=0.25: 0.0)
    for name in ("FORECAST_THREADS", "OMP_NUM_THREADS", WORKER_ENV):
        monkeypatch.delenv(name, raising=False)


def test_a_measured_choice_holds_for_models_of_that_size(monkeypatch, capsys):
    _two_free_cores(monkeypatch)
    before = torch.get_num_threads()
    try:
        policy = ThreadPolicy()
        assert policy.decide(2_000_000).threads == 2  # the rule's start: an idle machine, every core
        run = FakeRun({1: 5.0, 2: 9.0})  # here 1 thread is faster
        trial = policy.trial(2_000_000, run.clock)
        assert trial is not None and trial.candidates == (1, 2)
        trial.set_threads = run.set_threads
        run.run(trial, 100)
        assert policy.decide(2_000_000).threads == 1 and policy.decide(3_000_000).threads == 1
        assert torch.get_num_threads() == 1  # applied when measured
        assert "threads: 1 (measured on the first steps" in capsys.readouterr().err
        assert policy.trial(2_500_000) is None  # measured once per size
        assert policy.decide(200_000_000).threads == 2 and policy.trial(200_000_000) is not None  # another size
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("env", [{"FORECAST_THREADS": "2"}, {"OMP_NUM_THREADS": "2"}, {WORKER_ENV: "1/2"}])
def test_no_trial_where_the_user_set_threads_or_workers_hold_a_core_each(env, monkeypatch):
    _two_free_cores(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    policy = ThreadPolicy()
    assert policy.trial(2_000_000) is None
    if WORKER_ENV not in env:
        assert policy.decide(2_000_000).line == "threads: 2 (set by " + next(iter(env)) + ")"


def test_a_real_fit_runs_the_trial_on_its_first_steps(monkeypatch):
    """The Lightning callback around a real Trainer's steps: every planned step timed, the choice applied."""
    import lightning.pytorch as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from forecast.training.callbacks import MeasuredThreads

    _two_free_cores(monkeypatch)
    before = torch.get_num_threads()
    try:
        policy = ThreadPolicy()
        trial = policy.trial(1_000_000)
        assert trial is not None
        trainer = L.Trainer(accelerator="cpu", max_steps=30, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[MeasuredThreads(trial, 10**6)])
        trainer.fit(BoringModel())
        assert trial.done and [len(t) for t in trial.times.values()] == [TRIAL_ROUNDS * (TRIAL_BLOCK - 1)] * 2
        assert torch.get_num_threads() == trial.choice.threads == policy.decide(10**6).threads
    finally:
        torch.set_num_threads(before)
