"""The thread policy (`forecast.threads`): the rule over generated machines, the user's setting wins,
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

from forecast.threads import (
    TINY_PARAMS,
    ThreadPolicy,
    choose,
    neighbours_load,
    user_choice,
)
from forecast.workers import usable_cores

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
