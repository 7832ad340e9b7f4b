"""How many intra-op threads a training process uses: chosen by the tool unless the user says.

torch's default is one OpenMP thread per core. On an idle machine that is the faster choice, but
beside one busy process it collapses (2.2-3.6x slower on 2 cores, issue #21): OpenMP threads spin
at barriers while the core they wait on is taken. So the tool decides from what it may use:

- the cores it may use: the CPU affinity mask, capped by a cgroup CPU quota;
- the work beside it: the other processes' CPU use on those cores, sampled once from /proc/stat
  over `SAMPLE_S` (this process's own use subtracted); the processes of its own `--jobs` workers
  (`FORECAST_WORKERS`) are counted as its own, never as a neighbour's load;
- the model's size: a model under `TINY_PARAMS` runs matmuls too small to split across threads.

The user decides instead with `OMP_NUM_THREADS` (OpenMP's own variable; also read by torch) or
`FORECAST_THREADS` (this tool's option; wins over OMP_NUM_THREADS). A command sets its threads at
start; the choice is printed on stderr once a model is built (so a mistake in the command is still
one line), once per process, and again only when it changes (a report retraining a smaller model).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "FORECAST_THREADS"  # the documented option: threads per process, wins over OMP_NUM_THREADS
WORKERS_ENV = "FORECAST_WORKERS"  # set by `--jobs N` parents for their N workers
SAMPLE_S = 0.25  # how long the neighbours' CPU use is sampled (once per process)
TINY_PARAMS = 30_000  # below this a model's matmuls are too small to split across threads
BUSY_CORE = 0.5  # a neighbour using more than half a core takes that core
MAX_THREADS_PER_CPU = 4  # a user's thread count beyond this many per CPU only contends (100000 would be spawned)


@dataclass(frozen=True)
class Choice:
    """Threads per process and why (the line printed)."""

    threads: int
    why: str

    @property
    def line(self) -> str:
        return f"threads: {self.threads} ({self.why})"


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


def _busy_ticks(cpus: list[int]) -> int | None:
    """Busy clock ticks (all but idle and iowait) summed over `cpus`, from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    total = 0
    for line in lines:
        name, *fields = line.split()
        if name in wanted:
            ticks = [int(v) for v in fields]
            total += sum(ticks) - ticks[3] - ticks[4]  # idle, iowait
    return total


def _own_ticks() -> int:
    times = os.times()
    return round((times.user + times.system) * os.sysconf("SC_CLK_TCK"))


def neighbours_load(cpus: list[int], seconds: float = SAMPLE_S) -> float:
    """Cores' worth of CPU the OTHER processes use on `cpus`, sampled over `seconds` (0 where
    /proc/stat cannot be read)."""
    before, own = _busy_ticks(cpus), _own_ticks()
    start = time.perf_counter()
    time.sleep(seconds)
    after, own_after = _busy_ticks(cpus), _own_ticks()
    if before is None or after is None:
        return 0.0
    elapsed = (time.perf_counter() - start) * os.sysconf("SC_CLK_TCK")
    return max(0.0, (after - before - (own_after - own)) / elapsed)


def choose(cores: int, neighbours: float, workers: int = 1, params: int | None = None) -> Choice:
    """The rule (pure; `decide` feeds it what it measured).

    Args:
        cores: cores this process may use.
        neighbours: cores' worth of CPU used by other processes (this command's own workers included).
        workers: processes of this command sharing the cores (`--jobs`).
        params: the model's parameter count, when known.
    """
    share = max(1, cores // max(1, workers))
    siblings = (workers - 1) * share  # our own workers' use is not a neighbour's
    taken = max(0.0, neighbours - siblings)
    free = cores - math.floor(taken + (1 - BUSY_CORE))  # a core more than half taken is taken
    where = f"{cores} cores, {workers} worker{'s' if workers > 1 else ''}, others use {taken:.1f}"
    if params is not None and params < TINY_PARAMS:
        return Choice(1, f"{where}; a {params:,}-parameter model gains nothing from more")
    if free < cores:  # more threads than free cores: OpenMP's barriers spin while a core is taken
        return Choice(max(1, min(share, free // max(1, workers))), f"{where}: threads only on free cores")
    return Choice(share, where)


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
    from forecast.errors import ForecastError

    limit = jobs_limit(devices)
    if jobs > limit:
        where = f"{len(usable_cores())} usable cores" + (f" and {devices} distinct devices" if devices else "")
        raise ForecastError(f"--jobs {jobs}: at most {limit} here ({where}); more workers than can run at once "
                            "only contend (another machine joins through the same --storage)")


def user_choice(env: dict[str, str] | None = None) -> Choice | None:
    """The user's own setting (`FORECAST_THREADS`, else `OMP_NUM_THREADS`), or None.

    Raises:
        ValueError: a value that is not a positive integer (the caller says so in one line).
    """
    env = os.environ if env is None else env
    most = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value:
            # ASCII digits only: "²".isdigit() is True, and int() then fails without naming the variable
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= most:
                raise ValueError(f"{name}={value!r}: expected a number of threads from 1 to {most} "
                                 f"({MAX_THREADS_PER_CPU} per CPU of this machine)")
            return Choice(int(value), f"set by {name}")
    return None


class ThreadPolicy:
    """Decides once per process (the load sample is taken once), applies, prints on change."""

    def __init__(self) -> None:
        self._neighbours: float | None = None
        self._printed: str | None = None

    def decide(self, params: int | None = None) -> Choice:
        """The user's setting, else the rule on this machine's measured state."""
        mine = user_choice()
        if mine is not None:
            return mine
        cpus = usable_cores()
        if self._neighbours is None:
            self._neighbours = neighbours_load(cpus)
        workers = int(os.environ.get(WORKERS_ENV, "1") or 1)
        return choose(len(cpus), self._neighbours, workers, params)

    def apply(self, params: int | None = None, say: bool = True) -> Choice:
        """Set torch's intra-op (OpenMP) threads to the decision; print it when it is new (and `say`:
        a command sets its threads before parsing, and says so only once a model is built, so that
        a mistake in the command stays one line on stderr)."""
        import torch

        choice = self.decide(params)
        if torch.get_num_threads() != choice.threads:
            torch.set_num_threads(choice.threads)
        if say and choice.line != self._printed:
            print(choice.line, file=sys.stderr, flush=True)
            self._printed = choice.line
        return choice


POLICY = ThreadPolicy()
