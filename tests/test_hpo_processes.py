"""forecast.hpo with real processes: SIGINT, kill -9, two workers on one journal, heartbeats."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_fixtures import (  # noqa: F401  (fixtures; _one_thread is autouse)
    ENV,
    ROOT,
    _one_thread,
    assert_no_duplicates,
    cli_args,
    data,
    finished,
    load,
    space_file,
    wait_for,
)

from forecast.cli import main as forecast_main
from forecast.hpo.outputs import is_finished
from forecast.hpo.storage import WORKER_ATTR, open_storage, recover_dead_trials


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forecast", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _read_until(proc: subprocess.Popen, text: str) -> None:
    """Read the process's output up to a line holding `text` (fails if it ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"process ended before printing {text!r}:\n{''.join(seen)}")


def _storage_states(logs: Path, storage: str | None = None) -> list[TrialState]:
    try:
        return [t.state for t in load(logs, storage).get_trials()]
    except (IndexError, KeyError, ValueError):
        return []


@pytest.mark.slow  # 20-50 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_sigint_stops_cleanly_a_second_one_aborts_and_a_rerun_finishes(data, space_file, tmp_path):
    args = cli_args(data, space_file, tmp_path, 3, epochs=30)
    folder = tmp_path / "SYN-a25-threshold0.01-h1-20K"
    outputs = {"trials.csv", "summary.md", "best.yaml"}
    # one Ctrl-C: the running trial finishes, outputs are written, exit 0
    proc = _spawn(args)
    wait_for(lambda: (folder / "trial_0000" / "config.yaml").exists(), proc=proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stop requested (SIGINT)" in out and "stopped:" in out
    states = [t.state for t in load(tmp_path).get_trials()]
    assert states[0] == TrialState.COMPLETE and TrialState.RUNNING not in states
    assert outputs <= {p.name for p in folder.iterdir()}
    # the rerun continues; two Ctrl-C in its trial abort that trial (FAIL), exit 130
    proc = _spawn(args)
    # its weights exist (HParams are logged at fit start, after the model is built on the device)
    wait_for(lambda: any((folder / "trial_0001").glob("events.out.tfevents.*")), proc=proc)
    proc.send_signal(signal.SIGINT)
    _read_until(proc, "stop requested (SIGINT)")  # the first is handled before the second is sent
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out  # Optuna's warning line and the closing line say it, no trace
    aborted = load(tmp_path).get_trials()[1]
    assert aborted.state == TrialState.FAIL and aborted.user_attrs["reason"] == "aborted"
    assert not load(tmp_path).get_trials(states=(TrialState.RUNNING,))
    assert "aborted by a second SIGINT" in (folder / "summary.md").read_text()
    # and the same command again reaches N (an aborted trial does not count)
    assert forecast_main(args) == 0  # the study's own settings: other epochs would mix incomparable trials
    study = load(tmp_path)
    assert len(finished(study)) == 3 and not is_finished(study.get_trials()[1])
    assert_no_duplicates(study)


@pytest.mark.slow  # 10-60 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_kill_9_mid_trial_then_a_rerun_finishes_without_losing_a_trial(data, space_file, tmp_path):
    args = cli_args(data, space_file, tmp_path, 3, epochs=6)
    proc = _spawn(args)
    # mid trial: RUNNING with its start recorded (on a loaded machine the kill could land between the two)
    wait_for(lambda: _storage_states(tmp_path)[:2] == [TrialState.COMPLETE, TrialState.RUNNING]
             and "reason" in load(tmp_path).get_trials()[1].user_attrs, proc=proc)
    proc.kill()
    proc.communicate(timeout=30)
    before = load(tmp_path).get_trials()
    killed = before[1].number
    assert before[1].state == TrialState.RUNNING  # left behind by the dead process
    assert forecast_main(args) == 0  # rerun with the study's settings, in this process
    study = load(tmp_path)
    after = {t.number: t for t in study.get_trials()}
    assert after[0].value == before[0].value  # the finished trial is kept as it was
    assert after[killed].state == TrialState.FAIL and after[killed].user_attrs["reason"] == "interrupted"
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == after[killed].params and is_finished(retries[0])
    assert len(finished(study)) == 3 and not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)


@pytest.mark.slow  # 20-50 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_two_processes_on_one_journal_reach_n_together(data, space_file, tmp_path):
    journal = str(tmp_path / "study.journal")
    args = cli_args(data, space_file, tmp_path, 4, "--storage", journal, epochs=1)
    procs = [_spawn(args) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load(tmp_path, journal)
    assert len(finished(study)) == 4  # not 5 or 6: each process stops when the study is at N
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)


def test_heartbeat_fails_a_stale_trial_on_rdb_and_retries_it(tmp_path):
    """A worker on another machine is seen only through its heartbeat (no pid to check here):
    a RUNNING trial whose last beat is older than the grace period is failed and retried once."""
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = open_storage(url, 1)  # beat every second, stale after 2
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    storage.record_heartbeat(trial._trial_id)  # what the dead worker's heartbeat thread last wrote
    assert recover_dead_trials(study, storage) == []  # still within the grace period
    # grace 2 s (SQLite clocks the beats in whole seconds): found stale once that much has passed
    wait_for(lambda: recover_dead_trials(study, storage) == [0], timeout=10)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    assert recover_dead_trials(study, storage) == []  # retried once, not again


def test_a_trial_killed_before_recording_its_start_fails_as_interrupted(tmp_path):
    """Killed between writing its worker id and its other start attributes: failed with a reason."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = open_storage(f"sqlite:///{tmp_path / 'early.db'}", 0)
    study = optuna.create_study(study_name="early", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{dead.pid}:0")
    assert recover_dead_trials(study, storage) == [0]
    failed = study.get_trials()[0]
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "interrupted"
