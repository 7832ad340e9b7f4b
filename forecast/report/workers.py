"""`forecast report --jobs N`: the other N-1 (or N) worker processes, started before this process
loads its libraries, so that their start-up (about 5 s of imports each) runs beside its own.

A worker is the same command with `FORECAST_REPORT_WORKER=k` in its environment: it plans the same
folds, claims retrains from the storage (`forecast.report.jobs.work`) until none is left, and
writes nothing. Its lines are relayed prefixed `[wK]` as they come, but only once this process has
checked the command (storage, studies, flags, folds: `release`): a mistake is one line, from this
process, and the workers that met it too are stopped with their lines dropped.

A worker ends with its parent: killed outside Python (SIGKILL, an unhandled SIGTERM), the parent
leaves no worker retraining on (`die_with_parent`, Linux).

Light on purpose (no Lightning, Optuna or pandas here): `forecast report` starts the workers first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from forecast.core.errors import ForecastError
from forecast.core.threads import WORKERS_ENV

WORKER_ENV = "FORECAST_REPORT_WORKER"
PARENT_ENV = "FORECAST_REPORT_PARENT"  # the parent's pid, for `die_with_parent`
STOP_WAIT_S = 30  # after SIGTERM, how long a worker may take to end before SIGKILL
Say = Callable[[str], None]


def worker_number() -> int | None:
    """k when this process is worker k of a `forecast report --jobs` parent, else None."""
    value = os.environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


def die_with_parent() -> None:
    """In a `--jobs` worker: be sent SIGTERM when the parent process ends (Linux `PR_SET_PDEATHSIG`;
    elsewhere nothing), and end now if it already has."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != int(parent):  # it ended before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def parent_works(devices: Sequence[str], default_device: str | None) -> bool:
    """Whether a `--jobs` parent retrains too, as worker 0: where worker 0 would run (no CUDA device
    list, or worker 0's device is the first visible one, which this process uses by default)."""
    return not devices or devices[0] == default_device


class Workers:
    """The other workers of `forecast report ARGV --jobs N`.

    This process is worker 0 itself (`parent_works`) when it runs where worker 0 would: on a machine
    without CUDA, or when worker 0's device is the one it uses by default (the first visible). Then
    it starts N-1 processes and retrains too, which saves one process's start-up. Otherwise
    (`--devices 1,0`) it starts N processes, each pinned to its device by `CUDA_VISIBLE_DEVICES`,
    and only plans, fits the baselines and writes the report.
    """

    def __init__(self, argv: Sequence[str], jobs: int, devices: Sequence[str], say: Say,
                 default_device: str | None, command: str = "report") -> None:
        """`command`: the `forecast` subcommand the workers run (`report`, `isoflop`). `say` gets their lines from a reader thread, also while this process retrains, when
        `quiet_lightning` has swapped `sys.stdout`: `print` is bound to the stream of now; any
        other `say` must not write to `sys.stdout` as it is when called."""
        self.parent_works = parent_works(devices, default_device)
        self._lock = threading.Lock()
        stream = sys.stdout
        self._say = (lambda text: print(text, file=stream, flush=True)) if say is print else say
        self._held: list[str] | None = []  # their lines until `release`
        self._workers_env = os.environ.get(WORKERS_ENV)
        if self.parent_works:  # this process's thread policy counts the workers too (`forecast.core.threads`)
            os.environ[WORKERS_ENV] = str(jobs)
        self.procs: list[tuple[int, subprocess.Popen]] = []
        self.readers: list[threading.Thread] = []
        try:
            for k in range(1 if self.parent_works else 0, jobs):
                env = {**os.environ, WORKER_ENV: str(k), WORKERS_ENV: str(jobs), PARENT_ENV: str(os.getpid()),
                       "PYTHONUNBUFFERED": "1"}
                if devices:
                    env["CUDA_VISIBLE_DEVICES"] = devices[k % len(devices)]
                self.procs.append((k, subprocess.Popen(
                    [sys.executable, "-m", "forecast", command, *argv], env=env, text=True, errors="replace",
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        except BaseException:  # a process that could not start (or Ctrl-C): none of them stays
            self.stop()
            raise
        self.readers = [threading.Thread(target=self._relay, args=(p, k), daemon=True) for k, p in self.procs]
        for reader in self.readers:
            reader.start()

    def say(self, text: str) -> None:
        """A line of this process's, never inside a worker's line."""
        with self._lock:
            self._say(text)

    def release(self) -> None:
        """The command checked out: the workers' lines held so far, and from now on as they come."""
        with self._lock:
            held, self._held = self._held or [], None
            for text in held:
                self._say(text)

    def _relay(self, proc: subprocess.Popen, k: int) -> None:
        """Read a worker's lines to its end: a line that cannot be shown (a closed terminal pipe, a
        failing `say`) is dropped, never the reading, or the worker would block on a full pipe."""
        assert proc.stdout is not None
        for text in proc.stdout:
            line = f"[w{k}] {text.rstrip()}"
            with self._lock:
                if self._held is not None:
                    self._held.append(line)
                    continue
                try:
                    self._say(line)
                except Exception:  # noqa: BLE001 - see the docstring
                    pass

    def stop(self) -> None:
        """End the workers, their held lines dropped (this process met a mistake in the command, an
        error or an interrupt before waiting on them)."""
        with self._lock:
            self._held = []
        for _, p in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._restore()

    def wait(self) -> None:
        """Wait until every worker has ended (their lines relayed).

        Raises:
            ForecastError: a worker exited with an error (its lines are above).
        """
        try:
            codes = [(k, p.wait()) for k, p in self.procs]
        except BaseException:  # Ctrl-C here: the workers stop too
            self.stop()
            raise
        for reader in self.readers:
            reader.join(timeout=5)
        self.release()
        self._restore()
        bad = [(k, c) for k, c in codes if c != 0]
        if bad:
            raise ForecastError(f"report worker {bad[0][0]} exited with code {bad[0][1]} (its lines are above, "
                                f"prefixed [w{bad[0][0]}]); rerun the same command to continue")

    def _restore(self) -> None:
        if self._workers_env is None:
            os.environ.pop(WORKERS_ENV, None)
        else:
            os.environ[WORKERS_ENV] = self._workers_env
