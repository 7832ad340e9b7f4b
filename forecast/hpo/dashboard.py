"""`forecast dashboard`: the studies of a storage in optuna-dashboard, served on this machine.

optuna-dashboard is an optional extra (`make install EXTRAS=dashboard`, or
`pip install 'forecast[dashboard]'`); without it the command says so in one line. The storage is named
as every other command names it (`forecast hpo --storage`, `forecast report --storage`): an SQLite file
or `sqlite:///` URL, a `*.journal` file or `journal:PATH`, a `postgresql://` URL (read with psycopg 3,
as `forecast.hpo.storage.rdb_url` does). The storage must exist: this command creates no file, table or
study. The report's retrain queue (`forecast-report-retrains`, tasks rather than a search) is left out of
the study list.
"""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from jsonargparse import ArgumentParser
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from forecast.core.domains import Host, NonEmptyStr, Port
from forecast.core.errors import ForecastError
from forecast.core.parsers import command_parser, parse
from forecast.hpo.claims import QUEUE_STUDY
from forecast.hpo.storage import describe, journal_path, missing_module, rdb_url

EXTRA_HINT = "make install EXTRAS=dashboard (or pip install 'optuna-dashboard==0.21.0')"
DEFAULT_STORAGES = (Path("logs/hpo/optuna.db"), Path("logs/hpo/optuna.journal"))  # `forecast hpo`'s defaults
SQLITE_HEADER = b"SQLite format 3\x00"


def parser() -> ArgumentParser:
    """The `forecast dashboard` parser."""
    p = command_parser("forecast dashboard", "The studies of an Optuna storage in optuna-dashboard (parameter "
                       "importances, best-so-far, each trial's attributes), served over HTTP on this machine "
                       "until Ctrl-C. Needs the dashboard extra: " + EXTRA_HINT + ".")
    p.add_argument("--storage", type=NonEmptyStr | None, default=None, metavar="URL",
                   help="the studies' storage, as forecast hpo|report take it: an SQLite file or sqlite:/// URL, "
                        "a *.journal file or journal:PATH, a postgresql:// URL (default: logs/hpo/optuna.db, "
                        "else logs/hpo/optuna.journal)")
    p.add_argument("--host", type=Host, default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to "
                        "the network: the dashboard has no login and can edit and delete studies)")
    p.add_argument("--port", type=Port, default=8080, help="port to listen on (default: 8080; 0: any free port)")
    return p


class _SearchStudiesOnly:
    """A storage whose study list leaves out the report's retrain queue (its trials are tasks)."""

    def get_all_studies(self) -> list[Any]:
        return [s for s in super().get_all_studies() if s.study_name != QUEUE_STUDY]  # type: ignore[misc]


class _RDB(_SearchStudiesOnly, RDBStorage):
    pass


class _Journal(_SearchStudiesOnly, JournalStorage):
    pass


def storage_url(given: str | None) -> str:
    """The URL or journal path a `--storage` value names; a bare SQLite file becomes `sqlite:///FILE`.

    Raises:
        ForecastError: no storage given and none at the default places, or a file that does not exist.
    """
    if given is None:
        found = [p for p in DEFAULT_STORAGES if p.is_file()]
        if not found:
            raise ForecastError(f"no study storage at {DEFAULT_STORAGES[0]} or {DEFAULT_STORAGES[1]} "
                                "(run forecast hpo first, or pass --storage URL)")
        given = str(found[0])
    journal = journal_path(given)
    path = journal if journal is not None else _sqlite_file(given)
    if path is not None and not path.is_file():
        raise ForecastError(f"no study storage at {path} (the dashboard reads a storage, it never creates one)")
    if journal is not None:
        return given
    return f"sqlite:///{path.resolve()}" if path is not None else given


def _sqlite_file(given: str) -> Path | None:
    """The file of an SQLite URL, or of a plain path (anything without `://`)."""
    if given.startswith("sqlite:///"):
        return Path(given[len("sqlite:///"):])
    if "://" in given:
        return None
    path = Path(given)
    if path.is_file() and path.read_bytes()[:len(SQLITE_HEADER)] != SQLITE_HEADER:
        raise ForecastError(f"{path} is not an SQLite file (a journal's name ends in .journal, or use journal:PATH)")
    return path


def open_for_reading(url: str) -> BaseStorage:
    """The storage `url` (from `storage_url`) names, opened without creating tables; its studies listed once.

    Raises:
        ForecastError: it cannot be read (unreachable server, missing driver, not an Optuna storage).
    """
    try:
        journal = journal_path(url)
        if journal is not None:
            storage: BaseStorage = _Journal(JournalFileBackend(str(journal)))
        else:
            storage = _RDB(rdb_url(url), skip_compatibility_check=True, skip_table_creation=True,
                           engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None)
        storage.get_all_studies()  # an empty file, a server that is down, a wrong password: said here
        return storage
    except Exception as err:  # sqlalchemy/driver errors have many types; all mean "cannot read"
        missing = missing_module(err)
        first = f"its database driver {missing!r} is not installed" if missing else _first_cause(err)
        raise ForecastError(f"cannot read storage {describe(url)}: {first}") from None


def _first_cause(err: BaseException) -> str:
    """The first line of the innermost error (Optuna wraps the driver's "connection refused" vaguely)."""
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open request does not keep Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would bury the URL line


def _not_yet(environ: dict, start_response: Any) -> list[bytes]:
    """The app of the bound socket until optuna-dashboard's is set (no request is served before)."""
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]


def serve(url: str, host: str, port: int, announce: Any = print) -> None:
    """Serve optuna-dashboard for the storage `url` until interrupted.

    Args:
        url: the storage (see `storage_url`).
        host: address to bind.
        port: port to bind (0: a free one, which the announcement names).
        announce: called once with the line that says where the dashboard is.

    Raises:
        ForecastError: the extra is missing, the storage cannot be read, or the address is taken.
    """
    if find_spec("optuna_dashboard") is None:  # before anything else; importing it takes seconds
        raise ForecastError(f"forecast dashboard needs optuna-dashboard, an optional extra: {EXTRA_HINT}")
    storage = open_for_reading(url)
    try:
        server = make_server(host, port, _not_yet, server_class=_Server, handler_class=_QuietHandler)
    except (OSError, socket.gaierror) as err:
        raise ForecastError(f"cannot listen on {host}:{port}: {err.strerror or err} "
                            "(another --port, or 0 for any free one)") from None
    from optuna_dashboard import wsgi

    server.set_app(wsgi(storage))
    with server, _stopped_by_ctrl_c():  # before the announcement: a Ctrl-C may follow it at once
        shown = f"[{host}]" if ":" in host else host
        count = len(storage.get_all_studies())
        try:
            announce(f"dashboard of {describe(url)} ({count} stud{'y' if count == 1 else 'ies'}) at "
                     f"http://{shown}:{server.server_port}/ (Ctrl-C stops it)")
            server.serve_forever()
        except KeyboardInterrupt:
            pass


@contextmanager
def _stopped_by_ctrl_c() -> Iterator[None]:
    """While inside, SIGINT raises KeyboardInterrupt, also where the process began with it ignored (a child of
    a pytest-xdist worker, a background job of a script: Python then installs no SIGINT handler, and Ctrl-C
    would never stop the server). The previous handler comes back on exit."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast dashboard`."""
    args = parse(parser(), list(sys.argv[1:] if argv is None else argv))
    serve(storage_url(args.storage), args.host, args.port, announce=lambda line: print(line, flush=True))
    return 0
