"""The one worker pool: `--jobs N` runs N processes of the same command on this machine.

The contract, for every command that takes `--jobs` (`hpo`, `sweep`, `report`, and any later one):
- A worker is the same command line (`python -m forecast ARGV`) with `FORECAST_WORKER=k/N` (it is
  worker k of N) and `FORECAST_WORKER_PARENT=pid` in its environment, pinned by `CUDA_VISIBLE_DEVICES`
  to the k-th device id (round robin) where there are devices. `this_worker()` is the one place a
  process asks whether it is a worker; nothing else reads these variables.
- The parent works as worker 0 (`parent_works`) where it runs where worker 0 would (no CUDA, or worker
  0's device is the first visible one, which it uses by default) and starts N-1 workers; else it
  starts N and only coordinates. It starts them right after parsing, before it loads Lightning,
  Optuna or pandas, so their start-up runs beside its own.
- Their lines come back prefixed `[wK]`, held until the parent says the command checked out
  (`release`; a mistake is then one line of the parent's, the workers stopped unheard), then relayed
  live.
- Stopping: `forward` passes a graceful stop on (one SIGTERM per request); `stop` ends them: SIGTERM,
  `STOP_WAIT_S` to end, then SIGKILL. A worker dies with its parent (`die_with_parent`,
  `PR_SET_PDEATHSIG` on Linux), also when the parent is killed outside Python.
- `check_jobs`: at most one worker per usable core, or per distinct device where there are more.

Ground floor: stdlib only (and `forecast.core.errors`), so that a command imports it before anything heavy.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from forecast.core.errors import ForecastError

WORKER_ENV = "FORECAST_WORKER"  # "k/N": this process is worker k of a `--jobs N` command
PARENT_ENV = "FORECAST_WORKER_PARENT"  # the parent's pid, for `die_with_parent`
STOP_WAIT_S = 30  # after SIGTERM, how long a worker may take to end before SIGKILL
Say = Callable[[str], None]


@dataclass(frozen=True)
class Worker:
    """This process's place in a `--jobs` pool."""

    number: int  # k: 0 is the parent itself, where it works
    count: int  # N: processes of the command sharing this machine's cores
    parent: int | None  # the parent's pid (None for the parent itself)


def this_worker() -> Worker | None:
    """The pool place of this process when a `--jobs` parent started it, else None (the parent
    itself and a plain run: see `sharing` for the parent working as worker 0)."""
    number, _, count = os.environ.get(WORKER_ENV, "").partition("/")
    if not (number.isdigit() and count.isdigit()):
        return None
    parent = os.environ.get(PARENT_ENV, "")
    return Worker(int(number), max(1, int(count)), int(parent) if parent.isdigit() else None)


class _Sharing:
    """N while this process works as worker 0 of a pool of N (set by `Pool`)."""

    count = 1


def sharing() -> int:
    """Processes of this command that share the machine's cores, this one included (1 alone):
    the thread policy splits the cores by it."""
    worker = this_worker()
    return worker.count if worker is not None else _Sharing.count


def usable_cores() -> list[int]:
    """The CPU ids this process may run on, cut to a cgroup v2 quota (`cpu.max`) if there is one."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = cpus[: max(1, math.ceil(int(quota) / int(period)))]
    except (OSError, ValueError):
        pass
    return cpus


def jobs_limit(devices: int = 0) -> int:
    """The most `--jobs` workers one machine runs at once: one per usable core, or per distinct device
    where there are more devices (a GPU worker mostly waits on its device)."""
    return max(len(usable_cores()), devices)


def check_jobs(jobs: int, devices: int = 0) -> None:
    """Refuse more `--jobs` workers than `jobs_limit`: each one loads torch and Lightning (about
    0.5 GB), so `--jobs 10000` would exhaust memory before any work, and past one per core they only
    contend.

    Raises:
        ForecastError: too many.
    """
    limit = jobs_limit(devices)
    if jobs > limit:
        where = f"{len(usable_cores())} usable cores" + (f" and {devices} distinct devices" if devices else "")
        raise ForecastError(f"--jobs {jobs}: at most {limit} here ({where}); more workers than can run at once "
                            "only contend (another machine joins through the same --storage)")


def parent_works(devices: Sequence[str], default_device: str | None) -> bool:
    """Whether a `--jobs` parent works too, as worker 0: where worker 0 would run (no CUDA device
    list, or worker 0's device is the first visible one, which this process uses by default)."""
    return not devices or devices[0] == default_device


def die_with_parent() -> None:
    """In a worker: be sent SIGTERM when the parent process ends (Linux `PR_SET_PDEATHSIG`; elsewhere
    nothing), and end now if it already has. Nothing in any other process."""
    worker = this_worker()
    if worker is None or worker.parent is None:
        return
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != worker.parent:  # it ended before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def start_pool(argv: Sequence[str], jobs: int, device_ids: Callable[[], list[str]],
               default_device: Callable[[], str | None]) -> tuple[Pool | None, list[str]]:
    """A command's `--jobs` workers, started right after parsing: (the pool, the device ids in turn).

    (None, []) in a worker (its device is its parent's choice, `CUDA_VISIBLE_DEVICES`; `--devices` is
    not read again) and with `--jobs 1`. `device_ids` resolves the command's `--devices` (every
    visible device by default), `default_device` names the one this process would use; both are
    called only here, by the parent.

    Raises:
        ForecastError: more workers than `check_jobs` allows.
    """
    if jobs == 1 or this_worker() is not None:
        return None, []
    ids = device_ids()
    check_jobs(jobs, len(set(ids)))
    return Pool(argv, jobs, ids, default_device()), ids


@contextlib.contextmanager
def stopped_on_error(pool: Pool | None) -> Iterator[None]:
    """The command's work beside its pool: a mistake in the command (one line, ours), an error or Ctrl-C
    ends the workers too before it propagates."""
    try:
        yield
    except BaseException:
        if pool is not None:
            pool.stop()
        raise


class Pool:
    """The other workers of `forecast ARGV --jobs N`, started at once.

    Args:
        argv: the command line after `forecast` (the command and its arguments, `--jobs` included).
        jobs: N, the processes of the command, this one included where it works.
        devices: CUDA device ids for the workers in turn ([] without CUDA).
        default_device: the device this process uses by default (the first visible), or None.
        say: gets their lines, from reader threads (also while this process trains under
            `quiet_lightning`, which swaps `sys.stdout`: `print` is bound to the stream of now; any
            other `say` must not write to `sys.stdout` as it is when called). `route` changes it.
    """

    def __init__(self, argv: Sequence[str], jobs: int, devices: Sequence[str], default_device: str | None,
                 say: Say = print) -> None:
        self.parent_works = parent_works(devices, default_device)
        self.jobs, self.devices = jobs, list(devices)
        self.started = time.time()  # before any worker: what the storage finished earlier is not theirs
        self._lock = threading.Lock()
        self._say = _bound(say)
        self._held: list[str] | None = []  # their lines until `release`
        self._dropped = False  # after `stop`: their lines are never shown
        self.procs: list[tuple[int, subprocess.Popen]] = []
        self.readers: list[threading.Thread] = []
        if self.parent_works:  # this process's thread policy counts the workers too
            _Sharing.count = jobs
        try:
            for k in range(1 if self.parent_works else 0, jobs):
                self.procs.append((k, self._spawn(argv, k, devices)))
        except BaseException:  # a process that could not start (or Ctrl-C): none of them stays
            self.stop()
            raise
        self.readers = [threading.Thread(target=self._relay, args=(p, k), daemon=True) for k, p in self.procs]
        for reader in self.readers:
            reader.start()

    def _spawn(self, argv: Sequence[str], k: int, devices: Sequence[str]) -> subprocess.Popen:
        env = {**os.environ, WORKER_ENV: f"{k}/{self.jobs}", PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[k % len(devices)]
        return subprocess.Popen([sys.executable, "-m", "forecast", *argv], env=env, text=True, errors="replace",
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # the terminal's Ctrl-C reaches the parent only

    def describe(self) -> str:
        """`2 workers (w0 this process on cpu, w1 on cpu)`: who runs where."""
        where = [f"w{k}{' this process' if k == 0 and self.parent_works else ''} on "
                 f"{'cuda:' + self.devices[k % len(self.devices)] if self.devices else 'cpu'}" for k in range(self.jobs)]
        return f"{self.jobs} workers ({', '.join(where)})" + ("" if self.parent_works else ", this process watching")

    @property
    def pids(self) -> dict[int, int]:
        """pid -> worker number."""
        return {p.pid: k for k, p in self.procs}

    def say(self, text: str) -> None:
        """A line of this process's, never inside a worker's line."""
        with self._lock:
            self._say(text)

    def route(self, say: Say) -> Say:
        """Send lines (theirs and `say`'s) to `say` from now on (a live panel's); the one before."""
        with self._lock:
            before, self._say = self._say, _bound(say)
        return before

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
                if self._dropped:
                    continue
                if self._held is not None:
                    self._held.append(line)
                    continue
                try:
                    self._say(line)
                except Exception:  # noqa: BLE001 - see the docstring
                    pass

    def running(self) -> bool:
        """Whether some worker has not ended yet."""
        return any(p.poll() is None for _, p in self.procs)

    def forward(self) -> None:
        """Pass one stop request on: SIGTERM to each worker still running (the first asks for a
        graceful stop, a second aborts, as for one process)."""
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """End the workers, their held lines dropped (this process met a mistake in the command, an
        error or an interrupt before waiting on them): SIGTERM, at most `STOP_WAIT_S`, then SIGKILL."""
        with self._lock:
            self._held, self._dropped = [], True
        for _, p in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _Sharing.count = 1

    def wait(self, ok: Sequence[int] = (0,)) -> dict[int, int]:
        """Wait until every worker has ended (their lines relayed); their exit codes by number.

        Args:
            ok: exit codes that are no error (`hpo`: 130, a trial aborted by a second stop).

        Raises:
            ForecastError: a worker exited with another code (its lines are above).
        """
        try:
            codes = {k: p.wait() for k, p in self.procs}
        except BaseException:  # Ctrl-C here: the workers stop too
            self.stop()
            raise
        for reader in self.readers:
            reader.join(timeout=5)
        self.release()
        _Sharing.count = 1
        bad = [(k, c) for k, c in codes.items() if c not in ok]
        if bad:
            k, code = bad[0]
            raise ForecastError(f"worker {k} exited with code {code} (its lines are above, prefixed [w{k}]); "
                                "rerun the same command to continue")
        return codes


def _bound(say: Say) -> Say:
    """`print` bound to the stream of now (see `Pool`); any other `say` as it is."""
    if say is print:
        stream = sys.stdout
        return lambda text: print(text, file=stream, flush=True)
    return say
