"""`forecast report --jobs N` and several report processes on one storage, end to end on the tiny real
studies of test_report: the retrains are claimed through the storage, none runs twice, a killed one is
redone once, and the outputs equal a serial run's (same thread count: identical)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from test_hpo_scale import pg_server, pg_url
from test_report import studies

from forecast.core.workers import PARENT_ENV, WORKER_ENV, Pool, parent_works
from forecast.hpo.claims import KEY, QUEUE_STUDY
from forecast.hpo.storage import WORKER_ATTR, open_storage
from forecast.report.options import ReportOptions
from forecast.report.outputs import make_report

__all__ = ["pg_server", "pg_url", "studies"]  # fixtures shared with test_report / test_hpo_scale

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "FORECAST_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SAME = ("predictions.csv", "verdicts.csv", "folds.csv", "scaling.csv")  # what a serial run must equal


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Serial runs in this process and --jobs workers all train on one thread: identical outputs."""
    monkeypatch.setenv("FORECAST_THREADS", "1")


def _copy(url: str, target: Path) -> str:
    """The studies' SQLite file copied: a storage whose task queue is fresh."""
    shutil.copy(url[len("sqlite:///"):], target)
    return f"sqlite:///{target}"


def _report(storage: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forecast", "report", "--storage", storage, "--seeds", "1",
                             "--folds", "2", "--bootstrap", "100", "--out", str(out), *extra],
                            env=ENV, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _queue(storage: str) -> list[optuna.trial.FrozenTrial]:
    opened = open_storage(storage, 0)
    return optuna.load_study(study_name=QUEUE_STUDY, storage=opened).get_trials() \
        if QUEUE_STUDY in optuna.get_all_study_names(opened) else []


def _retrains(storage: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    grouped: dict[str, list] = {}
    for t in _queue(storage):
        if not str(t.user_attrs.get(KEY, "")).startswith("verdicts:"):
            grouped.setdefault(t.user_attrs[KEY], []).append(t)
    return grouped


def _ran_once(storage: str, tasks: int) -> set[str]:
    """Every retrain task completed by exactly one trial; the pids that ran them."""
    grouped = _retrains(storage)
    assert len(grouped) == tasks
    for key, trials in grouped.items():
        assert [t.state for t in trials].count(TrialState.COMPLETE) == 1, (key, [t.state for t in trials])
        assert not [t for t in trials if t.state == TrialState.RUNNING]
    return {str(t.user_attrs[WORKER_ATTR]).split(":")[1] for ts in grouped.values() for t in ts
            if t.state == TrialState.COMPLETE}


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"{what}: the process ended first:\n{proc.communicate()[0][-3000:]}"
        assert time.time() < end, f"{what}: not seen within {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow  # 10-60 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_jobs_2_shares_the_retrains_and_equals_a_serial_run(studies, tmp_path):
    """`--jobs 2` on a machine without CUDA: this process is worker 0 and starts one more; with a
    device list whose first id is not this process's own device it starts 2 and only coordinates.
    Both equal a serial run. (Which process runs how many of these 1-epoch retrains depends on
    timing: a worker still loading may find none left; the PostgreSQL test below holds a process to
    show two of them splitting the work.)"""
    url, _ = studies
    serial, parallel, pinned = (_copy(url, tmp_path / f"{name}.db") for name in ("serial", "parallel", "pinned"))
    make_report(ReportOptions(storage=serial, seeds=1, folds=2, out=tmp_path / "serial", bootstrap=100),
                say=lambda _: None)
    run = _report(parallel, tmp_path / "parallel", "--jobs", "2")
    printed = run.communicate(timeout=600)[0]
    assert run.returncode == 0, printed[-3000:]
    assert "[w1] this worker ran " in printed and "[w0] " not in printed and "[w2] " not in printed, printed
    assert len(re.findall(r"^(\[w1\] )?\[\d/4\] ", printed, re.M)) == 4, printed  # each retrain's line, whoever ran it
    _ran_once(parallel, 4)  # by this process and its one worker (which of them: timing)
    argv = ["--storage", pinned, "--seeds", "1", "--folds", "2", "--bootstrap", "100", "--out",
            str(tmp_path / "pinned"), "--jobs", "2"]  # CUDA_VISIBLE_DEVICES=0 is harmless without CUDA
    lines: list[str] = []
    # the pool `start_pool` would start for `--devices 0` where this process's own device is not 0 (None: no CUDA)
    pool = Pool(["report", *argv], 2, ["0"], None, lines.append)
    make_report(ReportOptions(storage=pinned, seeds=1, folds=2, out=tmp_path / "pinned", bootstrap=100, jobs=2),
                say=lines.append, workers=pool)
    ran = _ran_once(pinned, 4)
    assert ran and str(os.getpid()) not in ran and len(ran) <= 2, "workers ran the retrains, this process none"
    assert {x[:4] for x in lines if "this worker ran" in x} == {"[w0]", "[w1]"}, lines
    for out in ("parallel", "pinned"):
        for name in SAME:
            a, b = (pd.read_csv(tmp_path / d / name) for d in ("serial", out))
            pd.testing.assert_frame_equal(a, b, obj=f"{out}/{name}")
        assert (tmp_path / out / "report.md").is_file()


def test_the_jobs_commands_start_their_workers_before_loading_torch_lightning_optuna_or_pandas():
    """`forecast report|isoflop|hpo|sweep` parse and start their --jobs workers with the light modules
    only, so the workers' start-up runs beside this process's own (6 s of imports on 2 cores): the
    device ids (no GPU device node here: no torch asked) and the user's thread setting included."""
    from forecast.sizing.devices import GPU_NODES

    if any(Path(node).exists() for node in GPU_NODES):
        pytest.skip("a GPU device node: the device ids come from torch here")
    check = ("import sys, forecast.cli, forecast.report.cli, forecast.report.isoflop_cli, forecast.hpo.cli; "
             "from forecast.sizing.devices import default_device, device_ids; "
             "from forecast.core.threads import user_choice; device_ids(None), default_device(), user_choice(); "
             "heavy = [m for m in ('torch', 'lightning', 'optuna', 'pandas', 'scipy') if m in sys.modules]; "
             "print(heavy)")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, env=ENV, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_worker_takes_its_device_from_its_parent_not_from_devices(studies, tmp_path, monkeypatch):
    """A worker pinned by CUDA_VISIBLE_DEVICES sees one device, where `--devices 0,1` names one it
    cannot see: it must not check the ids again (every worker failed, so no report was written)."""
    import forecast.report.outputs as outputs
    from forecast.cli import main as forecast_main

    handed = []

    def stand_in(options, *_, **__):
        handed.append(options)
        return SimpleNamespace(pending="a --jobs worker")  # as far as this test goes

    monkeypatch.setattr(outputs, "make_report", stand_in)
    monkeypatch.setattr("forecast.report.cli.device_ids", lambda _: pytest.fail("a worker read --devices"))
    monkeypatch.setenv(WORKER_ENV, "1/2")
    url, _ = studies
    assert forecast_main(["report", "--storage", url, "--out", str(tmp_path / "out"), "--jobs", "2",
                          "--devices", "0,1"]) == 0
    assert handed and handed[0].devices == "0,1" and handed[0].jobs == 2  # as typed; not resolved here


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """Linux: a worker gets SIGTERM when the report process that started it dies (here by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    worker = ("import os, time; from forecast.core.workers import die_with_parent; die_with_parent(); "
              "print(os.getpid(), flush=True); time.sleep(120)")
    parent = ("import os, subprocess, sys, time; "
              f"subprocess.Popen([sys.executable, '-c', {worker!r}], env={{**os.environ, {WORKER_ENV!r}: '1/2', "
              f"{PARENT_ENV!r}: str(os.getpid())}}); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    end = time.time() + 20
    while _alive(pid) and time.time() < end:
        time.sleep(0.1)
    assert not _alive(pid), "the worker outlived its parent"


def _alive(pid: int) -> bool:
    """Running (a zombie, reaped by no one here, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_jobs_parent_retrains_where_worker_0_would_run():
    assert parent_works([], None)  # no CUDA: every process on the CPU
    assert parent_works(["0", "1"], "0")  # worker 0 on the first visible device, this process's own
    assert parent_works(["GPU-a", "GPU-b"], "GPU-a")  # names as CUDA_VISIBLE_DEVICES gives them
    assert not parent_works(["1", "0"], "0")  # worker 0 pinned elsewhere: this process only coordinates
    assert not parent_works(["0"], None)


@pytest.mark.slow  # 20-50 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_two_report_processes_on_postgresql_split_the_retrains(studies, tmp_path, pg_url):
    """A second report started while the first one runs claims the retrains left; no retrain runs
    twice; the one that finishes the last retrain writes the report, the other says so."""
    url, _ = studies
    source = open_storage(url, 0)
    for name in optuna.get_all_study_names(source):
        optuna.copy_study(from_study_name=name, from_storage=source, to_storage=open_storage(pg_url, 0))
    first = _report(pg_url, tmp_path / "a")
    _wait_for(lambda: any(t.state == TrialState.RUNNING for t in _queue(pg_url)), first, "a first claim")
    first.send_signal(signal.SIGSTOP)  # held mid-retrain (as a slow machine would be) until the second joins
    try:
        second = _report(pg_url, tmp_path / "b")
        _wait_for(lambda: any(str(t.user_attrs.get(WORKER_ATTR, "")).split(":")[1:2] == [str(second.pid)]
                              for t in _queue(pg_url)), second, "the second process's claim")
    finally:
        first.send_signal(signal.SIGCONT)
    outs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert _ran_once(pg_url, 4) == {str(first.pid), str(second.pid)}
    written = [(tmp_path / d / "report.md").is_file() for d in ("a", "b")]
    assert sum(written) == 1, outs
    assert "not written by this process" in outs[written.index(False)]


@pytest.mark.slow  # 20-50 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_a_killed_report_is_resumed_and_its_retrain_redone_once(studies, tmp_path):
    url, _ = studies
    storage = _copy(url, tmp_path / "killed.db")
    victim = _report(storage, tmp_path / "out")
    _wait_for(lambda: any(t.state == TrialState.RUNNING for t in _queue(storage)), victim, "a claim")
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    killed = [t for t in _queue(storage) if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    make_report(ReportOptions(storage=storage, seeds=1, folds=2, out=tmp_path / "out", bootstrap=100),
                say=lambda _: None)
    trials = _retrains(storage)[killed[0].user_attrs[KEY]]
    assert sorted(t.state for t in trials) == sorted([TrialState.FAIL, TrialState.COMPLETE])
    assert next(t for t in trials if t.state == TrialState.FAIL).user_attrs["reason"] == "interrupted"
    _ran_once(storage, 4)
    assert (tmp_path / "out" / "report.md").is_file()


@pytest.mark.parametrize("flag,message", [(["--jobs", "0"], "jobs: '0' is not an integer >= 1"),
                                          (["--heartbeat", "-1"], "heartbeat: '-1' is not an integer >= 0"),
                                          (["--jobs", "2", "--devices", "7"], "--devices 7"),
                                          (["--jobs", "100000"], "--jobs 100000: at most"),
                                          (["--jobs", "2", "--study", "nope"], "no study named 'nope'")])
def test_bad_jobs_flags_are_one_line_before_anything_runs(studies, tmp_path, capsys, flag, message):
    from forecast.cli import main as forecast_main

    url, _ = studies
    assert forecast_main(["report", "--storage", url, "--out", str(tmp_path / "out"), *flag]) == 2
    printed = capsys.readouterr()
    err = printed.err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "[w1]" not in printed.out  # a worker started before the study names were checked: stopped, unheard
    assert not (tmp_path / "out").exists()
