"""How many intra-op threads a training process uses: chosen by the tool unless the user says.

torch's default is one OpenMP thread per core. On an idle machine that is the faster choice, but
beside one busy process it collapses (2.2-3.6x slower on 2 cores, issue #21): OpenMP threads spin
at barriers while the core they wait on is taken. So the tool decides from what it may use:

- the cores it may use: the CPU affinity mask, capped by a cgroup CPU quota;
- the work beside it: the other processes' CPU use on those cores, sampled once from /proc/stat
  over `SAMPLE_S` (this process's own use subtracted); the processes of its own `--jobs` pool
  (`forecast.core.workers.sharing`) are counted as its own, never as a neighbour's load;
- the model's size: a model under `TINY_PARAMS` runs matmuls too small to split across threads.

A rule fixed in code is right in one environment and wrong in the next (issue #26: beside one busy
process, 2 threads ran 1.2x faster than the 1 the rule chose on one machine, 2.2-3.6x slower on
another). So the rule only sets the threads a run starts with: a training run on the CPU times 1
thread against its share of the cores on its own first steps (`ThreadTrial`) and keeps the faster,
for the rest of the run and for the process's later runs of a model of that size.

The user decides instead with `OMP_NUM_THREADS` (OpenMP's own variable; also read by torch) or
`FORECAST_THREADS` (this tool's option; wins over OMP_NUM_THREADS). A command sets its threads at
start (a `--jobs` command at its first model, once its workers share the cores); the choice is printed on stderr once a model is built (so a mistake in the command is still
one line), once per process, and again only when it changes (a report retraining a smaller model).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forecast.core.workers import sharing, usable_cores

THREADS_ENV = "FORECAST_THREADS"  # the documented option: threads per process, wins over OMP_NUM_THREADS
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


TRIAL_WARMUP = 2  # steps at the rule's choice before any is timed (allocator, caches, first-call costs)
TRIAL_BLOCK = 3  # steps in a row at one candidate; the first after a switch is not timed
TRIAL_ROUNDS = 2  # blocks per candidate, the order reversed each round (a drifting load hits both alike)


@dataclass
class ThreadTrial:
    """Times the candidate thread counts on a run's own first steps and keeps the faster.

    After `warmup` steps, `rounds` blocks of `block` steps per candidate (order A B, then B A, ...);
    each block's first step is not timed (the thread pool resizes), the rest are. The candidate
    with the lower median step time is kept (`keep`). The caller wraps each step in `before_step`
    and `after_step` (a Lightning callback, `forecast.training.callbacks.MeasuredThreads`, or a
    plain loop) until `done`.

    Args:
        candidates: thread counts to try (1 and all the cores this process may use).
        keep: receives the choice once measured (the policy applies and prints it).
        set_threads: sets the threads of the next steps (torch.set_num_threads).
        clock: seconds (a test injects its own).
    """

    candidates: tuple[int, ...]
    keep: Callable[[Choice], None]
    set_threads: Callable[[int], None]
    clock: Callable[[], float] = time.perf_counter
    warmup: int = TRIAL_WARMUP
    block: int = TRIAL_BLOCK
    rounds: int = TRIAL_ROUNDS
    choice: Choice | None = None

    def __post_init__(self) -> None:
        order = [list(self.candidates) if r % 2 == 0 else list(reversed(self.candidates)) for r in range(self.rounds)]
        self.plan = [(c, i > 0) for round_ in order for c in round_ for i in range(self.block)]  # (threads, timed)
        self.times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.step, self._started, self._threads = 0, 0.0, 0

    @property
    def done(self) -> bool:
        return self.choice is not None

    def before_step(self) -> None:
        i = self.step - self.warmup
        if self.done or not 0 <= i < len(self.plan):
            return
        threads = self.plan[i][0]
        if threads != self._threads:
            self.set_threads(threads)
            self._threads = threads
        self._started = self.clock()

    def after_step(self) -> None:
        i = self.step - self.warmup
        self.step += 1
        if self.done or not 0 <= i < len(self.plan):
            return
        threads, timed = self.plan[i]
        if timed:
            self.times[threads].append(self.clock() - self._started)
        if i == len(self.plan) - 1:
            medians = {c: statistics.median(t) for c, t in self.times.items()}
            best = min(self.candidates, key=lambda c: (medians[c], c))  # a tie: fewer threads
            shown = ", ".join(f"{c} thread{'s' if c > 1 else ''} {1000 * m:.1f} ms/step" for c, m in medians.items())
            self.choice = Choice(best, f"measured on the first steps: {shown}")
            self.keep(self.choice)


def size_class(params: int | None) -> int | None:
    """Models within one power of ten share a measured choice (a search's trials, a report's retrains)."""
    return None if params is None else int(math.log10(max(1, params)))


class ThreadPolicy:
    """Decides per process: the user's setting; else the choice measured on a run's first steps for
    a model of this size (`trial`); else, until one is measured, the rule on the machine's state
    (the load sample is taken once). Applies, prints on change."""

    def __init__(self) -> None:
        self._neighbours: float | None = None
        self._printed: str | None = None
        self._measured: dict[int | None, Choice] = {}

    def decide(self, params: int | None = None) -> Choice:
        """The user's setting, else the measured choice, else the rule on this machine's measured state."""
        mine = user_choice()
        if mine is not None:
            return mine
        if size_class(params) in self._measured:
            return self._measured[size_class(params)]
        cpus = usable_cores()
        if self._neighbours is None:
            self._neighbours = neighbours_load(cpus)
        return choose(len(cpus), self._neighbours, sharing(), params)

    def apply(self, params: int | None = None, say: bool = True) -> Choice:
        """Set torch's intra-op (OpenMP) threads to the decision; print it when it is new (and `say`:
        a command sets its threads before parsing, and says so only once a model is built, so that
        a mistake in the command stays one line on stderr)."""
        import torch

        choice = self.decide(params)
        if torch.get_num_threads() != choice.threads:
            torch.set_num_threads(choice.threads)
        if say:
            self._say(choice)
        return choice

    def trial(self, params: int | None, clock: Callable[[], float] = time.perf_counter) -> ThreadTrial | None:
        """A trial of 1 thread against this process's share of the cores on the run's first steps,
        or None: the user set the threads, a model of this size was measured already, or there is
        one candidate only (one core, or `--jobs` workers holding one core each)."""
        import torch

        if user_choice() is not None or size_class(params) in self._measured:
            return None
        share = max(1, len(usable_cores()) // sharing())
        if share == 1:
            return None

        def keep(choice: Choice) -> None:
            self._measured[size_class(params)] = choice
            self.apply(params)

        return ThreadTrial((1, share), keep, torch.set_num_threads, clock)

    def _say(self, choice: Choice) -> None:
        if choice.line != self._printed:
            print(choice.line, file=sys.stderr, flush=True)
            self._printed = choice.line


POLICY = ThreadPolicy()
