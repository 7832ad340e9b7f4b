"""`--jobs N`: N worker processes on this machine, each running this same command on the storage.

The parent checks and opens every study first (a mistake fails once, before a worker starts),
then starts N copies of its own command with `FORECAST_HPO_WORKER=k` in the environment, worker k
on the k-th id of `--devices` (round robin, as `CUDA_VISIBLE_DEVICES`), each in its own session so
that only the parent hears the terminal. Every stop request the parent gets (Ctrl-C, SIGTERM, `q`)
is passed on to each worker as one SIGTERM, so the first one lets running trials finish and a
second one aborts them, as for one process; workers see a STOP file themselves. Worker lines are
shown prefixed `[wK]`; the panel shows every running trial of the studies (other machines' too,
from the storage); the parent writes the outputs and prints the one summary.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecast.core.errors import ForecastError
from forecast.core.threads import WORKERS_ENV, check_jobs
from forecast.hpo.display import Display
from forecast.hpo.outputs import counts, n_finished
from forecast.hpo.stop import STOP_FILE, StopControl
from forecast.hpo.storage import describe
from forecast.hpo.study import (
    Ending,
    HpoOptions,
    Outcome,
    StudyPlan,
    _closing_line,
    _outcome,
    _quiet_search,
    _write,
    open_study,
    plan_study,
)
from forecast.sizing.devices import device_ids

WORKER_ENV = "FORECAST_HPO_WORKER"
POLL_S = 1.0  # how often the parent reads the storage for the panel


def worker_number() -> int | None:
    """k when this process is worker k of a `--jobs` parent, else None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def run_workers(command: str, argv: list[str], all_options: list[HpoOptions], jobs: int,
                devices: str | None, stop: StopControl | None = None) -> list[Outcome]:
    """Run `forecast <command> <argv>` in `jobs` worker processes until they all end.

    Args:
        command: `hpo` or `sweep`.
        argv: the command's own arguments (with `--jobs`; a worker knows itself by its environment).
        all_options: the studies the command runs (checked and opened here first).
        jobs: worker processes.
        devices: `--devices`.
        stop: the caller's stop control (a sweep's), else one of its own.
    """
    ids = device_ids(devices)
    check_jobs(jobs, len(set(ids)))  # as `forecast report --jobs` does
    plans = [plan_study(o) for o in all_options]
    with _quiet_search():
        studies = [open_study(p) for p in plans]
    started = time.time()
    own = stop is None
    stop = stop or StopControl(plans[0].folder / STOP_FILE, started=started)
    for plan in plans:
        stop.watch(plan.folder / STOP_FILE)
    first = plans[0].options
    hint = "q, Ctrl-C or a STOP file stops every worker after its running trial"
    with _quiet_search(), Display(plans[0].name, first.trials, first.live, hint) as display, \
            (stop if own else contextlib.nullcontext(stop)):
        stop.notify = display.say
        procs = [_spawn(command, argv, k, ids, jobs) for k in range(jobs)]
        where = ", ".join(f"w{k} on {'cuda:' + ids[k % len(ids)] if ids else 'cpu'}" for k in range(jobs))
        display.say(f"{jobs} workers ({where}); storage {describe(plans[0].url)}")
        codes = _supervise(procs, plans, studies, stop, display)
        for plan, study in zip(plans, studies, strict=True):
            _write(study, plan)
    ending = _ending(codes, stop, first.timeout, started)
    outcomes = [_outcome(plan, study, ending) for plan, study in zip(plans, studies, strict=True)]
    for outcome, study in zip(outcomes, studies, strict=True):
        print(_closing_line(outcome, study), flush=True)
    failed = [(k, code) for k, code in enumerate(codes) if code not in (0, 130)]
    if failed:
        k, code = failed[0]
        raise ForecastError(f"worker {k} exited with code {code} (its lines are above, prefixed [w{k}]); "
                            "rerun the same command to continue")
    return outcomes


def _spawn(command: str, argv: list[str], k: int, ids: list[str], jobs: int) -> subprocess.Popen:
    env = {**os.environ, WORKER_ENV: str(k), "PYTHONUNBUFFERED": "1"}
    if ids:
        env["CUDA_VISIBLE_DEVICES"] = ids[k % len(ids)]
    env[WORKERS_ENV] = str(jobs)  # N workers share the cores: each one's thread policy counts them
    return subprocess.Popen([sys.executable, "-m", "forecast", command, *argv], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # the terminal's Ctrl-C reaches the parent only


def _supervise(procs: list[subprocess.Popen], plans: list[StudyPlan], studies: list[optuna.Study],
               stop: StopControl, display: Display) -> list[int]:
    """Relay lines and stop requests until every worker has ended; their exit codes."""
    lines: queue.Queue[str] = queue.Queue()
    readers = [threading.Thread(target=_relay, args=(p, k, lines), daemon=True) for k, p in enumerate(procs)]
    for reader in readers:
        reader.start()
    forwarded, last_poll = 0, 0.0
    pids = {str(p.pid): k for k, p in enumerate(procs)}
    while any(p.poll() is None for p in procs) or not lines.empty():
        wanted = max(stop.signals, 1 if stop.requested else 0)
        for n in range(forwarded, wanted):
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            display.say("stop passed on to every worker" if n == 0 else
                        "second stop passed on: the workers abort their running trials")
        forwarded = max(forwarded, wanted)
        stop.flush()
        try:
            display.say(lines.get(timeout=0.2))
        except queue.Empty:
            pass
        if time.time() - last_poll >= POLL_S:
            last_poll = time.time()
            _panel(display, plans, studies, pids)
    for reader in readers:
        reader.join(timeout=5)
    return [p.wait() for p in procs]


def _relay(proc: subprocess.Popen, k: int, lines: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(f"[w{k}] {line.rstrip()}")


def _panel(display: Display, plans: list[StudyPlan], studies: list[optuna.Study], pids: dict[str, int]) -> None:
    """Finished/N over the studies, and one row per running trial (whichever host runs it)."""
    rows, finished, target, tally = [], 0, 0, {}
    try:
        for plan, study in zip(plans, studies, strict=True):
            trials = study.get_trials(deepcopy=False)
            finished += min(n_finished(trials), plan.options.trials)
            target += plan.options.trials
            for state, n in counts(trials).items():
                tally[state] = tally.get(state, 0) + n
            rows += [_row(plan, t, pids, len(plans) > 1) for t in trials if t.state == TrialState.RUNNING]
    except Exception:  # noqa: BLE001 - a panel refresh must never end the search
        return
    display.update(study=plans[0].name if len(plans) == 1 else f"{len(plans)} studies", target=target,
                   finished=finished, counts=tally, trial="\n".join(sorted(rows)) or "-", epoch="")


def _row(plan: StudyPlan, trial: FrozenTrial, pids: dict[str, int], named: bool) -> str:
    host, pid = (str(trial.user_attrs.get("worker", "")).split(":") + ["", ""])[:2]
    who = f"w{pids[pid]}" if pid in pids else (f"{host}:{pid}" if host else "?")
    epoch = f"epoch {len(trial.intermediate_values)}/{plan.max_epochs}" if trial.intermediate_values else "starting"
    name = f"{plan.name} " if named else ""
    return f"{who}: {name}#{trial.number} {trial.user_attrs.get('arch_id', '')} {epoch}"


def _ending(codes: list[int], stop: StopControl, timeout: float | None, started: float) -> Ending:
    if 130 in codes:
        return "aborted"
    if stop.requested:
        return "stopped"
    if timeout is not None and time.time() - started >= timeout:
        return "timeout"
    return "stopped"
