"""`forecast dashboard` as a user meets it: a real study in a real storage, the command started as a
process, its HTTP API fetched on 127.0.0.1, the study and its trials seen there, Ctrl-C to stop it.

Without the dashboard extra these tests skip with a message; `make test` installs it (EXTRAS=dashboard).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from search_fixtures import cli_args, data, space_file
from test_hpo_scale import pg_server, pg_url

from forecast.cli import main as forecast_main
from forecast.hpo.claims import QUEUE_STUDY
from forecast.hpo.dashboard import open_for_reading, storage_url

__all__ = ["data", "pg_server", "pg_url", "space_file"]

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STUDY = "SYN-a25-threshold0.01-h1-20K"
needs_extra = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("optuna_dashboard") is None,
    reason="optuna-dashboard (the dashboard extra) is not installed: make install EXTRAS=dashboard")


def make_studies(url: str) -> None:
    """A search study with three trials (params and user attrs as forecast's trials hold them) and the
    report's retrain queue beside it, in the storage `url` names."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = url if "://" in url else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(url))
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    for k in range(3):
        trial = study.ask()
        trial.suggest_float("model.lr", 1e-4, 1e-2, log=True)
        trial.suggest_categorical("arch", ["d16-l1-h2-f2", "d32-l2-h4-f4"])
        trial.set_user_attr("params", 17_000 + k)
        study.tell(trial, 0.6 - 0.01 * k)
    queue = optuna.create_study(study_name=QUEUE_STUDY, storage=storage)
    queue.enqueue_trial({}, user_attrs={"task": "fold0-seed0"})


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start(storage: Path, cwd: Path, sigint_ignored: bool = False) -> subprocess.Popen:
    """`forecast dashboard --storage STORAGE --port 0`, as a user starts it (or as a background job of a script
    does: with SIGINT ignored from the start)."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "forecast", "dashboard", "--storage", str(storage), "--port", "0"],
                            cwd=cwd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ignore)


def first_line(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    """The line it prints once it listens (read within `timeout`: a hung start fails, it does not wait forever)."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            raise AssertionError(f"forecast dashboard printed no address within {timeout} s")
    return proc.stdout.readline()


def stop(proc: subprocess.Popen, timeout: float = 90.0) -> str:
    """Ctrl-C; its stderr. It ends (about 1.5 s on an idle machine; `timeout` leaves room for a loaded one),
    exit 0, without a traceback."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"forecast dashboard did not end within {timeout} s of Ctrl-C") from None
    assert proc.returncode == 0 and "Traceback" not in err, err
    return err


@needs_extra
def test_it_serves_a_real_study_over_http_and_stops_on_ctrl_c(tmp_path):
    make_studies(f"sqlite:///{tmp_path / 'optuna.db'}")
    proc = start(tmp_path / "optuna.db", tmp_path)
    try:
        line = first_line(proc)  # the announcement, once it listens
        assert "http://127.0.0.1:" in line and "(1 study)" in line, (line, proc.stderr.read() if proc.poll() else "")
        base = line.split("at ", 1)[1].split()[0].rstrip("/")
        studies = get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == [STUDY]  # the retrain queue is not listed
        detail = get_json(f"{base}/api/studies/{studies[0]['study_id']}")
        assert [t["values"][0] for t in detail["trials"]] == pytest.approx([0.6, 0.59, 0.58])
        assert {p["name"] for p in detail["trials"][0]["params"]} == {"model.lr", "arch"}
        assert detail["trials"][2]["user_attrs"] == [{"key": "params", "value": "17002"}]
    finally:
        stop(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]  # it wrote nothing


@needs_extra
@pytest.mark.slow
def test_it_shows_a_study_forecast_hpo_made(tmp_path, data, space_file):
    """A real search (2 trials of the tiny synthetic tier), then its trials and forecast's user attributes."""
    logs = tmp_path / "hpo"
    done = subprocess.run([sys.executable, "-m", "forecast", *cli_args(data, space_file, logs, 2, epochs=1)],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    proc = start(logs / "optuna.db", tmp_path)
    try:
        line = first_line(proc)
        base = line.split("at ", 1)[1].split()[0].rstrip("/")
        summary, = get_json(f"{base}/api/studies")["study_summaries"]
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
        assert len(detail["trials"]) == 2 and detail["trials"][0]["state"] == "Complete"
        attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
        assert {"worker", "samples_per_sec"} <= attrs, attrs
    finally:
        stop(proc)


@needs_extra
def test_every_storage_form_our_commands_take_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_studies(str(tmp_path / "s.journal"))
    make_studies(f"sqlite:///{tmp_path / 'a.db'}")
    for given in ("s.journal", f"journal:{tmp_path / 's.journal'}", "a.db", f"sqlite:///{tmp_path / 'a.db'}"):
        names = [s.study_name for s in open_for_reading(storage_url(given)).get_all_studies()]
        assert names == [STUDY], given
    Path("logs/hpo").mkdir(parents=True)
    (tmp_path / "a.db").rename("logs/hpo/optuna.db")  # `forecast hpo`'s default storage is the default
    assert storage_url(None) == f"sqlite:///{tmp_path / 'logs/hpo/optuna.db'}"


@needs_extra
@pytest.mark.xdist_group("postgres")
def test_a_plain_postgresql_url_is_read_with_psycopg_3(pg_url):
    make_studies(pg_url)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")  # the form users type; optuna-dashboard
    names = [s.study_name for s in open_for_reading(storage_url(plain)).get_all_studies()]  # alone needs +psycopg
    assert names == [STUDY]


@pytest.mark.parametrize(("argv", "says"), [
    (["--storage", "nope.db"], "no study storage at nope.db"),
    (["--storage", "nope.journal"], "no study storage at nope.journal"),
    ([], "no study storage at logs/hpo/optuna.db or logs/hpo/optuna.journal"),
    (["--storage", "text.db"], "text.db is not an SQLite file"),
    (["--port", "65536"], "port: '65536' is not a port number in 0..65535"),
    (["--host", "a b"], "host: 'a b' is not a host name or IP address"),
    (["--storage", "postgresql://u@127.0.0.1:1/db"], "cannot read storage postgresql://u@127.0.0.1:1/db:"),
])
def test_a_mistake_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)
    Path("text.db").write_text("not sqlite\n")
    assert forecast_main(["dashboard", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.db"]


def test_without_the_extra_it_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    make_studies(str(tmp_path / "optuna.journal"))
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # what `import` meets where it is not installed
    assert forecast_main(["dashboard", "--storage", str(tmp_path / "optuna.journal")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optional extra: make install EXTRAS=dashboard" in err, err


@needs_extra
def test_a_taken_port_is_one_line(tmp_path, capsys):
    import socket

    make_studies(str(tmp_path / "optuna.journal"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert forecast_main(["dashboard", "--storage", str(tmp_path / "optuna.journal"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    assert time.monotonic() - started < 30


def test_the_dashboard_extra_has_its_own_hashed_lock():
    """`make install EXTRAS=dashboard` installs requirements-dashboard.lock (written by `make lock`): the extra's
    packages, hashed, and none that requirements.lock already pins (one version of each package)."""
    import re

    import tomllib

    def pins(name: str) -> dict[str, str]:
        text = (ROOT / name).read_text()
        return {k.lower().replace("_", "-"): v for k, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M)}

    assert (ROOT / "requirements-dashboard.lock").is_file(), "requirements-dashboard.lock is missing: run make lock"
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dashboard"]
    wanted = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in extra}
    dashboard, main = pins("requirements-dashboard.lock"), pins("requirements.lock")
    assert wanted <= set(dashboard) and not set(dashboard) & set(main), (sorted(dashboard), sorted(wanted))
    text = (ROOT / "requirements-dashboard.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if re.match(r"^[A-Za-z0-9]", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]


@needs_extra
def test_ctrl_c_stops_it_even_when_it_began_with_sigint_ignored(tmp_path):
    """A child of a pytest-xdist worker or a script's background job starts with SIGINT ignored; Python then
    installs no KeyboardInterrupt handler, and the server ran on after Ctrl-C (a CI run waited for it)."""
    make_studies(f"sqlite:///{tmp_path / 'optuna.db'}")
    proc = start(tmp_path / "optuna.db", tmp_path, sigint_ignored=True)
    try:
        assert "http://127.0.0.1:" in first_line(proc)
    finally:
        stop(proc, timeout=30)
