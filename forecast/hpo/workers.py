"""`hpo`/`sweep --jobs N` on the one worker pool (`forecast.core.workers`): this process and its workers
run the same queue on the storage.

The command starts its workers right after parsing (`forecast.hpo.cli`), before it loads Optuna or
Lightning; their lines are held until this process has checked and opened every study. Where it
works as worker 0 (`Pool.parent_works`) it runs the queue itself (`run_queue(pool=...)`), then waits
for the others' last trials and writes the outputs. Otherwise (`--devices 1,0`) it only watches: a
panel of every running trial in the storage (other machines' too), then the outputs. Every stop
request this process gets (Ctrl-C, SIGTERM, `q`) is passed on to each worker as one SIGTERM, so
the first lets running trials finish and a second aborts them, as for one process; workers see a
STOP file themselves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecast.core.workers import Pool
from forecast.hpo.display import Display, closing_line, quiet_search
from forecast.hpo.loop import Ending, Outcome, run_queue, study_outcome
from forecast.hpo.opening import open_study
from forecast.hpo.options import HpoOptions
from forecast.hpo.outputs import counts, n_finished, write_outputs
from forecast.hpo.plan import StudyPlan, plan_study
from forecast.hpo.stop import ABORTED_EXIT, STOP_FILE, StopControl
from forecast.hpo.storage import describe

POLL_S = 1.0  # how often a watching parent reads the storage for the panel
FORWARD_S = 0.2  # how often stop requests are looked for to pass on


def run_with(pool: Pool, all_options: list[HpoOptions], stop: StopControl | None = None) -> list[Outcome]:
    """Run the queue with the pool's workers until they all end.

    Args:
        pool: the workers, started already.
        all_options: the studies the command runs (checked and opened here first).
        stop: the caller's stop control (a sweep's), else one of its own.
    """
    own = stop is None
    if stop is None:
        stop = StopControl(all_options[0].log_dir / STOP_FILE)
    with (stop if own else contextlib.nullcontext(stop)), forwarding(pool, stop):
        if pool.parent_works:
            pool.say(pool.describe())
            return run_queue(all_options, stop, pool=pool)
        return _watch(pool, all_options, stop)


@contextlib.contextmanager
def forwarding(pool: Pool, stop: StopControl) -> Iterator[None]:
    """Pass each stop request of this process on to the workers (one SIGTERM per request)."""
    done = threading.Event()

    def forward() -> None:
        forwarded = 0
        while not done.wait(FORWARD_S):
            wanted = max(stop.signals, 1 if stop.requested else 0)
            for n in range(forwarded, wanted):
                pool.forward()
                pool.say("stop passed on to every worker" if n == 0 else
                         "second stop passed on: the workers abort their running trials")
            forwarded = max(forwarded, wanted)

    thread = threading.Thread(target=forward, name="hpo-stop-forward", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2 * FORWARD_S)


def _watch(pool: Pool, all_options: list[HpoOptions], stop: StopControl) -> list[Outcome]:
    """This process only watches: checks and opens the studies, shows the panel, writes the outputs."""
    plans = [plan_study(o) for o in all_options]
    with quiet_search():
        studies = [open_study(p) for p in plans]
    for plan in plans:
        stop.watch(plan.folder / STOP_FILE)
    first = plans[0].options
    started = time.time()
    hint = "q, Ctrl-C or a STOP file stops every worker after its running trial"
    with quiet_search(), Display(plans[0].name, first.trials, first.live, hint) as display:
        stop.notify = display.say
        pool.route(display.say)
        pool.say(f"{pool.describe()}; storage {describe(plans[0].url)}")
        pool.release()
        pids = {str(pid): k for pid, k in pool.pids.items()}
        while pool.running():
            stop.flush()
            panel(display, plans, studies, pids)
            time.sleep(POLL_S)
        codes = pool.wait(ok=(0, ABORTED_EXIT))
        for plan, study in zip(plans, studies, strict=True):
            write_outputs(study, plan)
    ending = _ending(list(codes.values()), stop, first.timeout, started)
    outcomes = [study_outcome(plan, study, ending) for plan, study in zip(plans, studies, strict=True)]
    for outcome, study in zip(outcomes, studies, strict=True):
        print(closing_line(outcome, study), flush=True)
    return outcomes


def panel(display: Display, plans: list[StudyPlan], studies: list[optuna.Study], pids: dict[str, int]) -> None:
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
    if ABORTED_EXIT in codes:
        return "aborted"
    if stop.requested:
        return "stopped"
    if timeout is not None and time.time() - started >= timeout:
        return "timeout"
    return "stopped"
