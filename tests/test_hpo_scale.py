"""Scale-out search: a real PostgreSQL, `--jobs N` worker processes, the matrix as one queue,
workers killed with -9, a storage lost mid-study, and the `optuna` CLI reading what we write.

The PostgreSQL server is the one `.ci/run` starts (`FORECAST_TEST_PG_URL`), else one started
here with `.ci/postgres` (stopped again at the end); each test gets a database of its own. Where
no server can be started the PostgreSQL tests skip, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_fixtures import ENV, ROOT, assert_no_duplicates, cli_args, data, finished, space_file

from forecast.cli import main as forecast_main
from forecast.hpo.outputs import is_finished
from forecast.hpo.storage import open_storage

__all__ = ["data", "space_file"]  # module-scoped fixtures shared with test_hpo

STUDY = "SYN-a25-threshold0.01-h1-20K"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on one intra-op thread (conftest's `one_thread`)."""


# -- the server -------------------------------------------------------------------------------
def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _reachable(url: str) -> str | None:
    """None when the server answers, else why not."""
    import psycopg

    try:
        psycopg.connect(_psycopg_url(url), connect_timeout=5).close()
        return None
    except Exception as err:  # noqa: BLE001 - any failure means "no server"
        return str(err).strip().splitlines()[0]


def _no_server(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI needs a PostgreSQL server: {why}")
    pytest.skip(f"no PostgreSQL server ({why}); `make postgres` starts one")


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a running server (FORECAST_TEST_PG_URL, else one started with .ci/postgres)."""
    url = os.environ.get("FORECAST_TEST_PG_URL")
    started = False
    if not url:
        run = subprocess.run([str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True,
                             env={**os.environ, "PG_NO_INSTALL": "1"})
        if run.returncode != 0:
            _no_server((run.stderr.strip().splitlines() or ["`.ci/postgres start` failed"])[-1])
        url, started = run.stdout.strip().splitlines()[-1], True
    why = _reachable(url)
    if why:
        _no_server(why)
    yield url
    if started:
        subprocess.run([str(ROOT / ".ci" / "postgres"), "stop"], capture_output=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the server for one test (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_psycopg_url(pg_server), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(_psycopg_url(pg_server), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _study(url: str, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, 0))


def _optuna_cli(*calls: list[str]) -> list[str]:
    """Run `optuna ARGS` for each call at once (each process spends seconds importing); stdouts."""
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "optuna"), *args], env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in calls]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [out for out, _ in outs]


# -- one process on PostgreSQL; the optuna CLI on every storage ----------------------------------
@pytest.mark.slow  # 10-60 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_hpo_on_postgresql_and_the_optuna_cli_reads_every_storage(data, space_file, tmp_path, pg_url):
    """`forecast hpo` with a plain postgresql:// URL; the optuna CLI reads each storage as
    written (the journal with its storage-class hint, PostgreSQL with SQLAlchemy's +psycopg)."""
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    storages = {"sqlite": (f"sqlite:///{tmp_path / 'sqlite' / 'optuna.db'}", None, []),
                "journal": (str(tmp_path / "journal" / "optuna.journal"), None,
                            ["--storage-class", "JournalFileBackend"]),
                "postgresql": (plain, pg_url, [])}
    calls, studies = [], {}
    for kind, (url, cli_url, hint) in storages.items():
        trials = 2 if kind == "postgresql" else 1
        assert forecast_main(cli_args(data, space_file, tmp_path / kind, trials, "--storage", url, epochs=1)) == 0
        studies[kind] = _study(url)
        assert len(finished(studies[kind])) == trials
        where = ["--storage", cli_url or url, *hint, "--study-name", STUDY, "-f", "json"]
        calls += [["trials", *where], ["best-trial", *where]]
    outs = iter(_optuna_cli(*calls))
    for kind, study in studies.items():
        rows, best = json.loads(next(outs)), json.loads(next(outs))
        assert [r["number"] for r in rows] == [t.number for t in study.get_trials()], kind
        assert {r["user_attrs"]["arch_id"] for r in rows} == {t.user_attrs["arch_id"] for t in study.get_trials()}
        assert best["number"] == study.best_trial.number and best["value"] == pytest.approx(study.best_value), kind


def test_the_sweep_timeout_bounds_the_whole_matrix(data, space_file, tmp_path, capsys):
    """--timeout 1 with trials of several seconds (8 epochs: a 2-epoch trial can end within the
    second on an idle machine): at most one trial runs, then the sweep ends; a timeout per study would
    have run one in each study. (On a loaded machine the second can pass before the first trial starts.)"""
    args = cli_args(data, space_file, tmp_path, 2, "--timeout", "1", epochs=8)[1:]
    args = ["sweep", "--budgets", "20K", "--horizons", "1", "2", *[a for a in args if a not in ("--budget", "20K")]]
    assert forecast_main(args) == 0
    out = capsys.readouterr().out
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ran = {n: len(_study(storage, n).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
           for n in optuna.get_all_study_names(open_storage(storage, 0))}
    assert len(ran) == 2 and sum(ran.values()) <= 1, ran
    assert "timed out" in out and "sweep timeout: 0/2 studies done; rerun the same command" in out


def test_jobs_and_devices_are_checked_before_anything_runs(data, space_file, tmp_path, capsys):
    assert forecast_main(cli_args(data, space_file, tmp_path, 2, "--jobs", "0")) == 2
    assert "jobs: '0' is not an integer >= 1" in capsys.readouterr().err
    sqlite = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert forecast_main(cli_args(data, space_file, tmp_path, 2, "--jobs", "2", "--storage", sqlite)) == 2
    assert "--jobs on SQLite" in capsys.readouterr().err
    assert forecast_main(cli_args(data, space_file, tmp_path, 2, "--jobs", "100000")) == 2  # 100000 processes
    assert "--jobs 100000: at most" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert forecast_main(cli_args(data, space_file, tmp_path, 2, "--jobs", "2", "--devices", "0")) == 2
        assert "--devices 0: no CUDA device is visible here" in capsys.readouterr().err
    assert not (tmp_path / STUDY / "trials.csv").exists()


def test_of_two_trials_started_for_the_last_place_only_the_earlier_runs(tmp_path):
    """Two workers both saw one free place of N=2 and both started a trial: the later trial is
    dropped before it trains (FAIL, reason surplus, not counted); the earlier one runs."""
    from forecast.hpo.claims import Claimed, Surplus

    study = optuna.create_study(study_name="c", storage=open_storage(str(tmp_path / "c.journal"), 0))
    study.tell(study.ask(), 0.5)  # one finished
    first, second = study.ask(), study.ask()  # both RUNNING at once
    ran = []
    claimed = Claimed(lambda trial: ran.append(trial.number) or 0.4, target=2)
    with pytest.raises(Surplus):
        claimed(second)
    assert claimed(first) == 0.4 and ran == [first.number]
    assert study.get_trials()[second.number].user_attrs["reason"] == "surplus"


def test_the_panel_shows_every_running_trial_with_its_worker(tmp_path):
    """The --jobs parent's panel, from the storage: its own workers by number, others by host."""
    from types import SimpleNamespace

    from forecast.hpo.display import Display
    from forecast.hpo.workers import panel

    storage = open_storage(str(tmp_path / "s.journal"), 0)
    study = optuna.create_study(study_name="p", storage=storage)
    for worker, epochs in (("here:101:1", 2), ("here:102:1", 0), ("elsewhere:7:1", 1)):
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("arch_id", "d16-l1-h2-f2")
        for epoch in range(epochs):
            trial.report(0.5, epoch)
    study.tell(study.ask(), 0.3)
    plan = SimpleNamespace(name="p", max_epochs=5, options=SimpleNamespace(trials=10))
    display = Display("p", 10, live=False)
    panel(display, [plan], [study], {"101": 0, "102": 1})
    rows = display.status.trial.splitlines()
    assert rows == ["elsewhere:7: #2 d16-l1-h2-f2 epoch 1/5", "w0: #0 d16-l1-h2-f2 epoch 2/5",
                    "w1: #1 d16-l1-h2-f2 starting"]
    assert display.status.finished == 1 and display.status.counts["running"] == 3


# -- worker processes ---------------------------------------------------------------------------------
def _run(args: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forecast", *args], cwd=ROOT, env={**ENV, **kw.pop("env", {})},
                          text=True, capture_output=True, timeout=timeout, **kw)


def _workers(study: optuna.Study) -> set[str]:
    return {t.user_attrs["worker"].split(":")[1] for t in study.get_trials() if "worker" in t.user_attrs}


def test_jobs_2_share_one_journal_study_with_one_summary(data, space_file, tmp_path):
    """`forecast hpo --jobs 2` end to end in `make test` (the pool's one whole run there; ~12 s)."""
    run = _run(cli_args(data, space_file, tmp_path, 4, "--jobs", "2", epochs=1))
    assert run.returncode == 0, run.stdout + run.stderr
    study = _study(str(tmp_path / "optuna.journal"))  # --jobs without --storage: the journal
    assert len(finished(study)) == 4 and not study.get_trials(states=(TrialState.RUNNING,))
    assert 1 <= len(_workers(study)) <= 2  # this process (worker 0) and w1: which ran how many is timing
    assert_no_duplicates(study)
    out = run.stdout
    assert "2 workers (w0 this process on cpu, w1 on cpu)" in out and f"[w1] study {STUDY}: " in out
    assert "[w0] " not in out
    assert out.count(f"study {STUDY} done: 4/4 trials finished") == 1  # one summary, from the parent
    assert "Traceback" not in out + run.stderr


@pytest.mark.slow
def test_sigterm_stops_every_worker_after_its_trial(data, space_file, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "forecast", *cli_args(data, space_file, tmp_path, 8, "--jobs", "2",
                                                                        epochs=20)],
                            cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    journal = tmp_path / "optuna.journal"

    def two_running() -> bool:
        try:
            return len(_study(str(journal)).get_trials(states=(TrialState.RUNNING,))) == 2
        except Exception:  # noqa: BLE001 - not created yet
            return False

    end = time.time() + 300
    while not two_running():
        assert proc.poll() is None and time.time() < end, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    study = _study(str(journal))
    states = [t.state for t in study.get_trials()]
    assert TrialState.RUNNING not in states and states.count(TrialState.COMPLETE) >= 2  # both trials finished
    assert out.count("stop requested (SIGTERM)") == 2  # the parent (worker 0) and its worker
    assert out.count(f"study {STUDY} stopped:") == 1 and "Traceback" not in out


@pytest.mark.slow
def test_two_sweeps_on_postgresql_fill_the_matrix_as_one_queue(data, space_file, tmp_path, pg_url):
    """Two machines' worth of workers (2 commands x --jobs 2) on one URL: every study reaches N
    exactly, none runs past it, and the trials spread over the studies."""
    base = cli_args(data, space_file, tmp_path, 3, "--storage", pg_url, "--jobs", "2", "--heartbeat", "2",
                    epochs=1)[1:]
    args = ["sweep", "--budgets", "20K", "--horizons", "1", "2", *[a for a in base if a not in ("--budget", "20K")]]
    procs = [subprocess.Popen([sys.executable, "-m", "forecast", *args], cwd=ROOT, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    studies = [_study(pg_url, f"SYN-a25-threshold0.01-h{h}-20K") for h in (1, 2)]
    for study in studies:
        assert len(finished(study)) == 3, study.study_name  # not more: the queue never over-runs a study
        assert not study.get_trials(states=(TrialState.RUNNING,))
        assert_no_duplicates(study)
    # one queue: the h2 study was started before any h1 trial had finished (in order, it waits)
    first_done = min(t.datetime_complete for t in finished(studies[0]))
    assert min(t.datetime_start for t in finished(studies[1])) < first_done
    assert all("sweep done: 2 studies" in out for out in outs)


# -- faults ----------------------------------------------------------------------------------------
def _in_other_host(name: str, args: list[str]) -> subprocess.Popen:
    """`forecast` in a UTS namespace with its own host name: to the others it is another machine
    (its pid cannot be checked; only its heartbeat tells whether it lives)."""
    cmd = f"hostname {name} && exec {sys.executable} -m forecast " + " ".join(f"'{a}'" for a in args)
    return subprocess.Popen(["unshare", "--uts", "sh", "-c", cmd], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a second host name needs `unshare --uts` (root)")
def test_kill_9_on_postgresql_is_recovered_by_the_heartbeat(data, space_file, tmp_path, pg_url):
    """A worker on 'another machine' is killed with -9 mid-trial, three times, each life under a
    new host name (so no pid can be checked): the next worker's heartbeat check fails each stale
    trial and runs its retry once; then a worker here finishes the study. No completed trial is
    lost or changed, none runs twice."""
    n, kills = 6, 3
    args = cli_args(data, space_file, tmp_path, n, "--storage", pg_url, "--heartbeat", "1", "--no-live", epochs=20)
    killed: list[int] = []
    for life in range(kills):
        worker = _in_other_host(f"machine-a{life}", args)
        end = time.time() + 300
        while True:  # its own first trial (not a retry: that one runs once) has reported an epoch
            assert time.time() < end and worker.poll() is None, worker.communicate()[0]
            try:
                mine = [t for t in _study(pg_url).get_trials(states=(TrialState.RUNNING,))
                        if t.user_attrs.get("worker", "").startswith(f"machine-a{life}:") and t.intermediate_values
                        and "failed_trial" not in t.system_attrs]
            except Exception:  # noqa: BLE001 - the study is being created
                mine = []
            if mine:
                break
            time.sleep(0.2)
        complete_before = {t.number: t.value for t in _study(pg_url).get_trials(states=(TrialState.COMPLETE,))}
        worker.kill()  # SIGKILL: sh exec'd python, so this pid is the worker itself
        worker.communicate(timeout=30)
        killed.append(mine[0].number)
        after = {t.number: t.value for t in _study(pg_url).get_trials(states=(TrialState.COMPLETE,))}
        assert all(after[k] == v for k, v in complete_before.items())  # nothing completed was lost
    assert forecast_main(args) == 0  # here: the last kill is found stale too, and the study finishes
    study = _study(pg_url)
    trials = {t.number: t for t in study.get_trials()}
    for number in killed:
        assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["reason"] == "interrupted"
        retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]
        assert len(retries) == 1 and retries[0].params == trials[number].params and is_finished(retries[0])
    assert len(finished(study)) == n and not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)


class _Proxy:
    """A TCP relay in front of the server; `cut()` drops every connection and refuses new ones,
    as a lost network or a stopped server would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.server.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


@pytest.mark.slow
def test_a_lost_storage_is_one_line_and_the_study_resumes(data, space_file, tmp_path, pg_url):
    from sqlalchemy.engine import make_url

    real = make_url(pg_url)
    proxy = _Proxy(real.host, real.port)
    via_proxy = real.set(port=proxy.port).render_as_string(hide_password=False)
    args = cli_args(data, space_file, tmp_path, 3, "--storage", via_proxy, "--heartbeat", "1", epochs=20)
    proc = subprocess.Popen([sys.executable, "-m", "forecast", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.time() + 300
    while True:  # cut the line while trial 0 trains
        assert proc.poll() is None and time.time() < end, proc.communicate()
        try:
            if any(t.intermediate_values for t in _study(pg_url).get_trials(states=(TrialState.RUNNING,))):
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.2)
    proxy.cut()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, out + err
    lines = [line for line in err.strip().splitlines()  # less a library's warning and the thread choice
             if "is deprecated" not in line and not line.startswith("threads: ")]
    assert len(lines) == 1 and lines[0].startswith("forecast: error: lost the storage "), err
    assert "rerun the same command to resume" in lines[0] and "Traceback" not in out + err
    # the same study resumes once the storage is back (here: without the proxy) and reaches N
    direct = [a if a != via_proxy else pg_url for a in args]  # the same command (other settings are refused)
    assert forecast_main(direct) == 0
    study = _study(pg_url)
    assert len(finished(study)) == 3 and not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)
