"""`make bench` entries for scale-out search: what a storage costs per trial, and trials per hour.

  storage      4 worker processes run the search's real loop (queue, claim check, dead-worker
               recovery, Optuna sampling, user attrs, one report per epoch, outputs after each
               trial) with a trial that trains nothing, on SQLite, a journal file and
               PostgreSQL: worker-seconds per trial (4 x wall / trials) and trials per second.
  throughput   `forecast hpo --jobs 1` (all cores, and one thread) and `--jobs 2` on the same
               small real study (this machine's CPUs): trials per hour of command wall time,
               start-up included; and the fixed part of each command: seconds from its launch to
               its study line (imports and plan, before the first trial) and from its closing
               line to its exit.

PostgreSQL is `$FORECAST_TEST_PG_URL`, else the server of `make postgres` (started here when it
is not running); each run gets a fresh database. Benchmarks report; no test asserts a timing.

    python -m forecast.bench.scale --out bench_scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forecast import configs
from forecast.bench import publish
from forecast.bench.hpo import SPACE, SYMBOL, TEST_START, VAL_START, search_tier

ROOT = Path(__file__).resolve().parents[2]
FAKE_EPOCHS = 5  # intermediate values each trivial trial reports, as a 5-epoch trial would


def _flags(data: Path, epochs: int) -> list[str]:
    return [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
            f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.batch_size=64",
            "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
            f"--trainer.max_epochs={epochs}", f"--early_stopping.patience={epochs}"]


def _trivial_worker(data: str, space: str, logs: str, storage: str, trials: int, barrier: Any) -> None:
    """One worker process: the real search loop, with a fit that reports and returns at once, no
    output files, and a start together with the other workers (after each has checked its study)."""
    import random

    from forecast.hpo import loop, objective
    from forecast.hpo.loop import run_study
    from forecast.hpo.options import HpoOptions

    open_study = loop.open_study

    def open_then_wait(plan):  # noqa: ANN001, ANN202
        opened = open_study(plan)
        barrier.wait(timeout=600)
        return opened

    loop.open_study = open_then_wait
    loop.write_outputs = lambda study, plan: None  # trials.csv / summary.md cost the same on every storage
    objective.release_memory = lambda: None  # a trial that trained nothing has nothing to give back

    def fit(self, trial, args, monitor, shown):  # noqa: ANN001 - Objective._fit's signature
        for epoch in range(FAKE_EPOCHS):
            trial.report(random.random(), epoch)
        monitor.epochs_run = FAKE_EPOCHS
        return random.random()

    objective.Objective._fit = fit
    run_study(HpoOptions(budget="20K", trials=trials, configs=[str(configs.path("demo.yaml"))],
                         overrides=_flags(Path(data), FAKE_EPOCHS), search_space=Path(space), log_dir=Path(logs),
                         storage=storage, pruner="none", no_live=True, heartbeat=60))


def _storage_run(data: Path, space: Path, logs: Path, storage: str, workers: int, trials: int) -> dict[str, Any]:
    from optuna.trial import TrialState

    from forecast.hpo.storage import open_storage

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_trivial_worker, args=(str(data), str(space), str(logs), storage, trials, barrier))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    import optuna

    opened = open_storage(storage, 0)
    study = optuna.load_study(study_name=optuna.get_all_study_names(opened)[0], storage=opened)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    wall = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"trials": len(done), "wall_s": round(wall, 2), "trials_per_s": round(len(done) / wall, 2),
            "worker_s_per_trial": round(workers * wall / len(done), 4),
            "exit_codes": [p.exitcode for p in procs]}


@contextlib.contextmanager
def _pg_database() -> Iterator[str | None]:
    """A fresh database on `$FORECAST_TEST_PG_URL`'s server, else on `make postgres`'s (started
    and stopped here when it was not running); dropped afterwards. None without a server."""
    import psycopg

    server, started = os.environ.get("FORECAST_TEST_PG_URL"), False
    if not server:
        run = subprocess.run([str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True)
        if run.returncode != 0 or not run.stdout.strip():
            yield None
            return
        server, started = run.stdout.strip().splitlines()[-1], "server started" in run.stderr
    admin = server.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        if started:
            subprocess.run([str(ROOT / ".ci" / "postgres"), "stop"], capture_output=True)


def bench_storage(workers: int = 4, trials: int = 100) -> dict[str, Any]:
    """Worker-seconds per trivial trial on each storage, `workers` processes on one study."""
    results: dict[str, Any] = {"what": f"{workers} worker processes, {trials} trials that train nothing "
                                       f"({FAKE_EPOCHS} reports each; no output files, no garbage collection); worker_s_per_trial = {workers} x wall / trials"}
    with tempfile.TemporaryDirectory(prefix="bench_storage_") as tmp, _pg_database() as pg:
        root = Path(tmp)
        data = search_tier(root / "data")
        space = root / "space.yaml"
        space.write_text(SPACE)
        storages = {"sqlite": f"sqlite:///{root / 'sqlite' / 'optuna.db'}",
                    "journal": str(root / "journal" / "optuna.journal"), "postgresql": pg}
        for kind, url in storages.items():
            if url is None:  # the bench never skips silently: the entry fails, naming what it lacks
                raise RuntimeError("no PostgreSQL server for the storage entry: set FORECAST_TEST_PG_URL or "
                                   "let `.ci/postgres start` (make postgres) start one")
            print(f"   storage {kind} ...", flush=True)
            results[kind] = _storage_run(data, space, root / kind, url, workers, trials)
    return results


def bench_throughput(trials: int = 8, epochs: int = 10, repeats: int = 3) -> dict[str, Any]:
    """Trials per hour of `forecast hpo --jobs J` on a small real study (command wall time).

    `jobs_1` runs with the tool's default threads, `jobs_1_one_thread` with OMP_NUM_THREADS=1,
    `jobs_2` with this process as worker 0 beside one more (the cores split between them). Each
    `repeats` times, interleaved in a rotating order; the figures are medians.
    """
    results: dict[str, Any] = {"what": f"{trials} trials of {epochs} epochs (20K-parameter models), "
                                       f"{os.cpu_count()} CPUs; wall time of the whole command, start-up included; "
                                       f"median of {repeats} interleaved runs"}
    runs = {"jobs_1": (1, None), "jobs_1_one_thread": (1, "1"), "jobs_2": (2, None)}
    walls: dict[str, list[float]] = {name: [] for name in runs}
    fixed: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as tmp:
        root = Path(tmp)
        data = search_tier(root / "data")
        space = root / "space.yaml"
        space.write_text(SPACE)
        names = list(runs)
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                wall, start, end = _hpo_wall(root / f"{name}_{r}", data, space, trials, epochs, *runs[name])
                walls[name].append(wall)
                fixed[name].append((start, end))
    for name, wall in walls.items():
        results[name] = {"wall_s": [round(w, 1) for w in wall],
                         "trials_per_hour": round(3600 * trials / statistics.median(wall)),
                         "start_s": round(statistics.median(s for s, _ in fixed[name]), 2),
                         "end_s": round(statistics.median(e for _, e in fixed[name]), 2)}
    results["jobs_2_over_jobs_1"] = round(results["jobs_2"]["trials_per_hour"] / results["jobs_1"]["trials_per_hour"], 2)
    results["goal"] = "jobs_2_over_jobs_1 >= 1.3 on 2 cores"
    return results


def _hpo_wall(logs: Path, data: Path, space: Path, trials: int, epochs: int, jobs: int,
              threads: str | None) -> tuple[float, float, float]:
    """Seconds of one `forecast hpo --jobs JOBS` command: launch to exit, launch to its study line (imports
    and plan), its closing line to exit (outputs written, workers and interpreter ended)."""
    args = ["hpo", "--budget", "20K", "--trials", str(trials), "--jobs", str(jobs), "--no-live",
            "--config", str(configs.path("demo.yaml")), "--search-space", str(space),
            "--log-dir", str(logs), "--pruner", "none", "--storage", str(logs / "optuna.journal"),
            *_flags(data, epochs)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FORECAST_THREADS")}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    env["PYTHONUNBUFFERED"] = "1"  # each line when it is said: the times below are of the lines
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "forecast", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    planned = closed = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if planned is None and line.startswith("study ") and " architectures of budget " in line:
            planned = time.perf_counter() - start
        if line.startswith("study ") and " done: " in line:
            closed = time.perf_counter()
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0 or planned is None or closed is None:
        raise RuntimeError(f"forecast hpo --jobs {jobs} failed: {[x.strip() for x in lines[-1:]]}")
    return wall, planned, start + wall - closed


def bench_scale() -> dict[str, Any]:
    return {"storage": bench_storage(), "throughput": bench_throughput()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_scale.json"))
    parser.add_argument("--only", choices=("storage", "throughput"))
    args = parser.parse_args(argv)
    results = {"storage": bench_storage} if args.only == "storage" else \
        {"throughput": bench_throughput} if args.only == "throughput" else {"storage": bench_storage,
                                                                            "throughput": bench_throughput}
    results = {k: fn() for k, fn in results.items()}
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
