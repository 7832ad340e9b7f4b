"""The one worker pool (`forecast.core.workers`): the environment contract, held then relayed lines, exit codes,
the cores a parent working as worker 0 shares, and the `--jobs` bound. Real processes (`forecast --help`, a
light command: the pool runs whatever command line it is given)."""

from __future__ import annotations

import time

import pytest

from forecast.core.errors import ForecastError
from forecast.core.workers import (
    PARENT_ENV,
    WORKER_ENV,
    Pool,
    Worker,
    check_jobs,
    sharing,
    this_worker,
    usable_cores,
)


@pytest.mark.parametrize("env,worker", [({WORKER_ENV: "1/3", PARENT_ENV: "42"}, Worker(1, 3, 42)),
                                        ({WORKER_ENV: "0/2"}, Worker(0, 2, None)),
                                        ({WORKER_ENV: "1"}, None), ({WORKER_ENV: "a/b"}, None), ({}, None)])
def test_one_variable_says_whether_a_process_is_a_worker(env, worker, monkeypatch):
    for name in (WORKER_ENV, PARENT_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert this_worker() == worker
    assert sharing() == (worker.count if worker else 1)


def test_lines_are_held_until_released_then_relayed_with_the_workers_number(monkeypatch):
    monkeypatch.delenv(WORKER_ENV, raising=False)
    lines: list[str] = []
    pool = Pool(["--help"], 3, [], None, say=lines.append)  # this process is w0; w1 and w2 print the usage
    assert pool.parent_works and sorted(pool.pids.values()) == [1, 2]
    assert sharing() == 3  # while it works beside them, its threads count them
    assert pool.describe() == "3 workers (w0 this process on cpu, w1 on cpu, w2 on cpu)"
    while pool.running():
        time.sleep(0.05)
    assert lines == []  # held: the command is not checked yet
    pool.say("checked")
    pool.release()
    assert pool.wait() == {1: 0, 2: 0}
    assert lines[0] == "checked" and {line[:5] for line in lines[1:]} == {"[w1] ", "[w2] "}
    assert "[w1] usage: forecast [--trust PACKAGE ...] <command> [options]" in lines
    assert sharing() == 1


def test_a_failed_worker_is_one_error_and_a_stopped_ones_lines_are_dropped(monkeypatch):
    monkeypatch.delenv(WORKER_ENV, raising=False)
    lines: list[str] = []
    pool = Pool(["no-such-command"], 2, ["0"], None, say=lines.append)  # worker 0's device is not ours
    assert not pool.parent_works and sorted(pool.pids.values()) == [0, 1]
    assert sharing() == 1  # this process only coordinates
    with pytest.raises(ForecastError, match=r"worker 0 exited with code 2 .*prefixed \[w0\]"):
        pool.wait()
    assert any(line.startswith("[w1] forecast: error: unknown command") for line in lines)
    lines.clear()
    pool = Pool(["--help"], 2, [], None, say=lines.append)
    pool.stop()  # a mistake in the command: the workers end unheard
    pool.release()
    for reader in pool.readers:
        reader.join(timeout=10)
    assert lines == [] and not pool.running()


def test_jobs_are_bounded_by_cores_or_distinct_devices():
    cores = len(usable_cores())
    check_jobs(cores)
    check_jobs(cores + 1, devices=cores + 1)
    with pytest.raises(ForecastError, match=f"--jobs {cores + 1}: at most {cores} here"):
        check_jobs(cores + 1)


def test_a_command_that_fails_beside_its_pool_stops_the_workers_and_reraises():
    from forecast.core.workers import stopped_on_error

    class Recorded:
        stops = 0

        def stop(self) -> None:
            self.stops += 1

    pool = Recorded()
    with stopped_on_error(pool):
        pass
    assert pool.stops == 0  # work that ends well leaves the workers to finish theirs
    for err in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(err)), stopped_on_error(pool):
            raise err
    assert pool.stops == 2
    with pytest.raises(ValueError), stopped_on_error(None):  # no pool (a worker, or --jobs 1)
        raise ValueError("boom")
