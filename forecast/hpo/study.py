"""Run one study: check everything, open or resume it, optimize until N trials are finished.

`--trials N` means N FINISHED trials in the study, whoever ran them: COMPLETE, PRUNED (including
diverged) and FAIL with reason `oom` or `error` (failures that are results). Trials whose process
died or that a user aborted do not count; a dead process's trial is retried once. So rerunning
the same command after a stop or a crash continues to N, and several processes sharing the study
stop together at N: a process starts a trial only while finished + running < N, and waits for
other workers' running trials before it calls the study done; a trial that two processes started
for the last free place at once runs only in the one that got the lower trial number.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from forecast import configs
from forecast.core.domains import check_name
from forecast.core.errors import ForecastError
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.core.workers import Pool
from forecast.hpo import config as cfg
from forecast.hpo.config import DEFAULT_SPACE, PRUNERS
from forecast.hpo.display import Display
from forecast.hpo.objective import ExtraCallbacks, Objective, TrialFailed, TrialSetup
from forecast.hpo.outputs import StudyInfo, best_trial, counts, is_finished, n_finished, write_all
from forecast.hpo.space import ARCH_ARGS, NET_PREFIX, SearchSpace, bind, load_space
from forecast.hpo.stop import ABORTED_EXIT, STOP_FILE, AbortTrial, StopControl
from forecast.hpo.storage import (
    default_url,
    describe,
    open_storage,
    recover_dead_trials,
    retry_queued,
    worker_id,
)
from forecast.sizing.budget import parse_budget
from forecast.sizing.devices import one_device
from forecast.sizing.machine import check_search
from forecast.training.config import differences, flag_keys, lookup, resolve

DEFAULT_CONFIG = configs.path("spy.yaml")
DATA_FINGERPRINT = "data_fingerprint"  # key of the study fingerprint: md5 of what the trials train on
WAIT_S = 2.0  # how often a process waiting for other workers' trials looks again
Ending = Literal["done", "stopped", "timeout", "aborted"]


@dataclass
class HpoOptions:
    """Everything `forecast hpo` takes (see `forecast hpo --help` for each)."""

    budget: str
    trials: int = 50
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    search_space: Path = DEFAULT_SPACE
    storage: str | None = None
    study_name: str | None = None
    pruner: str = "median"
    seed: int = 0
    timeout: float | None = None
    log_dir: Path = Path("logs/hpo")
    heartbeat: int = 60
    keep_checkpoints: bool = False
    live: bool | None = None


@dataclass
class StudyPlan:
    """A checked study, ready to run: nothing here can fail for a user-mistake reason any more."""

    options: HpoOptions
    name: str
    folder: Path
    url: str
    storage: Any
    setup: TrialSetup
    fingerprint: dict[str, Any]
    max_epochs: int | None
    prior: dict[str, float] | None = None  # the class prior's val scores: the bar to clear

    @property
    def space(self) -> SearchSpace:
        return self.setup.space


@dataclass(frozen=True)
class Outcome:
    """How a study run ended."""

    study: str
    ending: Ending
    finished: int
    target: int
    folder: Path


# ------------------------------------------------------------------------------ checking


def plan_study(options: HpoOptions, extra_callbacks: ExtraCallbacks | None = None) -> StudyPlan:
    """Check the options, configs, search space and storage; raise `ForecastError` on a mistake.

    Nothing is trained here. The data module is built once (bad paths or split dates fail
    now, not in every trial), and the ends of the space are parsed by the real CLI parser.
    """
    _check_numbers(options)
    label = parse_budget(options.budget).label
    spec = load_space(options.search_space)
    _check_no_clash(options.overrides, [p.key for p in spec.params])
    config_args = [a for c in options.configs or [DEFAULT_CONFIG] for a in ("--config", str(c))]
    user_args = [*config_args, *options.overrides]
    base_args = [*config_args, *cfg.TRIAL_DEFAULTS, *options.overrides]  # configs first: flags win
    config = resolve(base_args)
    one_device(config["trainer"], "search trials")
    _check_model(config, spec)
    n_features, prior, data_fingerprint = _data_reference(config)
    if config["model"].get("pos_weight") is not None:
        prior = None  # val/loss is then a weighted BCE: not comparable with the prior's log-loss
    net = config["model"]["net"]["init_args"]
    space = bind(spec, label, n_features, config["data"]["context_length"],
                 net["patch_len"], net["stride"], net["patch_mode"])
    for draw in space.end_overrides():  # the ends of every range, checked by the real parser
        resolve([*base_args, *draw])
    name = options.study_name or cfg.study_name(config, label)
    said = check_search(config, space.tree.archs, n_features, options.log_dir, options.keep_checkpoints,
                        options.trials, f"budget {options.budget}")  # memory and disk, before any trial
    if said:
        print(said, flush=True)
    check_name(name, "study name")  # one folder inside --log-dir, never a path out of it
    url = options.storage or default_url(options.log_dir)
    setup = TrialSetup(base_args, user_args, space, options.log_dir, name, extra_callbacks)
    searched = [*(p.key for p in spec.params), *(NET_PREFIX + a for a in ARCH_ARGS)]
    fingerprint = _normalize(cfg.fingerprint(config, label, {**spec.as_dict(), "monitor": MONITOR,
                                                             "mode": MONITOR_MODE}, searched))
    fingerprint[DATA_FINGERPRINT] = data_fingerprint  # the exact numbers trials see, not only settings
    return StudyPlan(options, name, options.log_dir / name, url, open_storage(url, options.heartbeat),
                setup, fingerprint, config["trainer"].get("max_epochs"), prior)


def _check_numbers(options: HpoOptions) -> None:
    if options.trials < 1:
        raise ForecastError(f"--trials must be >= 1, got {options.trials}")
    if options.timeout is not None and options.timeout <= 0:
        raise ForecastError(f"--timeout must be > 0 seconds, got {options.timeout}")
    if options.heartbeat < 0:
        raise ForecastError(f"--heartbeat must be >= 0 seconds, got {options.heartbeat}")
    if options.pruner not in PRUNERS:
        raise ForecastError(f"--pruner must be one of {', '.join(PRUNERS)}, got {options.pruner!r}")


def _check_no_clash(overrides: list[str], searched: list[str]) -> None:
    """A flag may not fix what the search varies (the trial's value would silently win)."""
    fixed = flag_keys(overrides) & {*searched, *(NET_PREFIX + a for a in ARCH_ARGS)}
    if fixed:
        raise ForecastError(f"--{sorted(fixed)[0]} is searched by this study; drop the flag or the "
                            "search-space entry")


def _check_model(config: dict[str, Any], spec: Any) -> None:
    if config["model"]["net"].get("class_path") != "forecast.model.PatchTST":
        raise ForecastError("the search sizes forecast.model.PatchTST; the config's model.net is "
                            f"{config['model']['net'].get('class_path')}")
    for p in spec.params:
        found, _ = lookup(config, p.key)
        if not found:
            raise ForecastError(f"{spec.path}: params.{p.name} sets {p.key}, which the model, "
                                "optimizer, data and trainer have no argument for")


def _data_reference(config: dict[str, Any]) -> tuple[int, dict[str, float], str]:
    """Build the data module once (bad data settings fail here, before any trial): its feature
    count, the class prior's validation scores that every trial should beat, and its fingerprint."""
    from forecast.data.datamodule import ForecastDataModule
    from forecast.training.baselines import prior_scores

    dm = ForecastDataModule(**config["data"])
    return dm.n_features, {"positive_rate": dm.balance["train"], **prior_scores(dm, "val")}, dm.fingerprint()


def _normalize(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------------- opening the study


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise study setup among processes of this machine (enqueueing, worker numbers)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE with every behaviour Optuna 5 changed the default of spelled out.

    multivariate: model parameters jointly; group: treat each conditional branch of the
    architecture tree as its own sub-space; constant_liar: running trials of other workers
    count as bad so parallel workers do not all pick the same point.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def make_pruner(kind: str, max_epochs: int | None) -> optuna.pruners.BasePruner:
    """`median`: stop a trial below the median of earlier trials at the same epoch (after 5
    trials, from the 3rd epoch on, or the 2nd when there are only 3), never at its last epoch;
    `hyperband`: successive halving over epochs; `none`."""
    epochs = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None
    if kind == "median":
        warmup = 2 if epochs is None else max(0, min(2, epochs - 2))
        median = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        return median if epochs is None else NotAtTheLastEpoch(median, epochs)
    if kind == "hyperband":  # its rungs lie below max_resource, so it never prunes at the end
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs or "auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


class NotAtTheLastEpoch(optuna.pruners.BasePruner):
    """A pruner that never prunes at the last epoch: stopping there saves nothing and would throw
    away a finished trial's score (a pruned trial can never be the study's best)."""

    def __init__(self, pruner: optuna.pruners.BasePruner, max_epochs: int) -> None:
        self.pruner, self.max_epochs = pruner, max_epochs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is not None and step >= self.max_epochs - 1:
            return False
        return self.pruner.prune(study, trial)


def open_study(plan: StudyPlan) -> optuna.Study:
    """Create or resume the study; on first creation enqueue the grid's extremes."""
    o = plan.options
    direction = "minimize" if MONITOR_MODE == "min" else "maximize"
    with _locked(plan.folder):
        study = optuna.create_study(storage=plan.storage, study_name=plan.name, direction=direction,
                                    sampler=make_sampler(o.seed), pruner=make_pruner(o.pruner, plan.max_epochs),
                                    load_if_exists=True)
        _check_same_study(study, plan)
        worker = int(study.user_attrs.get("workers", 0))
        study.set_user_attr("workers", worker + 1)
        if worker:  # a second process (or a rerun) must not replay the first one's random draws;
            # the count is atomic on this machine only (the lock), so the process goes in the seed too
            study.sampler = make_sampler(zlib.crc32(f"{o.seed}:{worker}:{worker_id()}".encode()))
        for params in plan.space.enqueued()[: o.trials]:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def _check_same_study(study: optuna.Study, plan: StudyPlan) -> None:
    """A resumed study must have the same targets, data shape, budget and space."""
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        leftovers = sorted(plan.folder.glob("trial_*"))
        if study.trials or not leftovers:
            study.set_user_attr("fingerprint", plan.fingerprint)
            study.set_user_attr("command", f"forecast hpo --budget {plan.options.budget} "
                                           + " ".join(plan.setup.replay_args))
            return
        raise ForecastError(f"{plan.folder} holds {leftovers[0].name} from an earlier study of this name "
                            "that the storage does not know; move the folder away or pass --study-name")
    # A study made before its measured settings were recorded: they are recorded on this resume (once
    # the other checks pass) and held from then on.
    legacy = isinstance(stored, dict) and cfg.MEASURED not in stored
    if legacy:
        stored = {**stored, cfg.MEASURED: plan.fingerprint[cfg.MEASURED]}
    if isinstance(stored, dict) and stored.get(DATA_FINGERPRINT) != plan.fingerprint[DATA_FINGERPRINT] \
            and {k: v for k, v in stored.items() if k != DATA_FINGERPRINT} == \
            {k: v for k, v in plan.fingerprint.items() if k != DATA_FINGERPRINT}:
        raise ForecastError(f"study {plan.name} in {describe(plan.url)} was run on other data (data fingerprint "
                            f"{str(stored.get(DATA_FINGERPRINT))[:8]}, now {plan.fingerprint[DATA_FINGERPRINT][:8]}: "
                            "a rebuilt or re-imported tier); restore that data or start a new --study-name")
    if stored != plan.fingerprint:
        diff = differences(stored, plan.fingerprint)
        raise ForecastError(f"study {plan.name} in {describe(plan.url)} was run with other settings "
                            f"({'; '.join(diff[:3])}); use the same settings or another --study-name")
    if legacy:
        study.set_user_attr("fingerprint", stored)


# ----------------------------------------------------------------------------- running it


def run_study(options: HpoOptions, stop: StopControl | None = None,
              extra_callbacks: ExtraCallbacks | None = None, summary: bool = True) -> Outcome:
    """Run (or resume) one study until N trials are finished, a stop, or the timeout.

    Args:
        options: the command's options.
        stop: a stop control shared with a caller; by default one for this study alone.
        extra_callbacks: more Lightning callbacks per trial (tests inject faults with it).
        summary: print the closing line (a `--jobs` worker leaves it to its parent).
    """
    return run_queue([options], stop, extra_callbacks, summary)[0]


def run_queue(all_options: list[HpoOptions], stop: StopControl | None = None,
              extra_callbacks: ExtraCallbacks | None = None, summary: bool = True,
              pool: Pool | None = None) -> list[Outcome]:
    """Run several studies as one queue: each trial goes to the study furthest from its N.

    Every study is checked and opened before the first trial. Any number of processes, on any
    number of machines sharing the storage, may run the same queue: each picks by what the storage
    holds, so the studies fill evenly and none runs past its N. `--timeout` of the first options
    bounds the whole queue. A storage lost mid-run ends it with one line; rerunning resumes.
    `pool`: the `--jobs` workers beside this process (worker 0): their lines are shown once the
    studies are checked and opened, and the outputs are written once they have ended too.
    """
    plans = [plan_study(o, extra_callbacks) for o in all_options]
    first = plans[0].options
    deadline = None if first.timeout is None else time.time() + first.timeout
    own = stop is None
    stop = stop or StopControl(plans[0].folder / STOP_FILE)
    try:
        with quiet_search():  # Optuna's "created / using an existing study" lines: said below
            queue = [(plan, open_study(plan)) for plan in plans]
        for plan in plans:
            stop.watch(plan.folder / STOP_FILE)
        hint = f"q, Ctrl-C or `touch {plans[0].folder / STOP_FILE}` stops after the running trial"
        with quiet_search(), Display(plans[0].name, first.trials, first.live, hint) as display, \
                (stop if own else contextlib.nullcontext(stop)):
            stop.notify = display.say
            for plan in plans:
                display.say(f"study {plan.name}: {len(plan.space.tree.archs)} architectures of budget "
                            f"{plan.options.budget}, storage {describe(plan.url)}, logs {plan.folder}")
            if pool is not None:
                pool.route(display.say)
                pool.release()  # the studies checked out: the workers' lines from now on
            ending = _optimize(queue, stop, display, deadline)
            if pool is not None:  # their last trials, then the outputs over every worker's trials
                if pool.running():
                    display.say("waiting for the other workers' running trials")
                if ABORTED_EXIT in pool.wait(ok=(0, ABORTED_EXIT)).values():
                    ending = "aborted"
            for plan, study in queue:
                write_outputs(study, plan)
    except Exception as err:
        lost = _storage_error(err)
        if lost is None:
            raise
        why = _first_line(getattr(lost, "orig", None) or lost)  # the driver's words, not SQLAlchemy's wrapper
        raise ForecastError(f"lost the storage {describe(plans[0].url)} ({why}); the studies are kept: "
                            "rerun the same command to resume") from None
    outcomes = [study_outcome(plan, study, ending) for plan, study in queue]
    if summary:
        for outcome, (_, study) in zip(outcomes, queue, strict=True):
            print(closing_line(outcome, study), flush=True)
    return outcomes


def study_outcome(plan: StudyPlan, study: optuna.Study, ending: Ending) -> Outcome:
    finished = n_finished(study.get_trials(deepcopy=False))
    done = finished >= plan.options.trials
    return Outcome(plan.name, "done" if done else ending, finished, plan.options.trials, plan.folder)


def _optimize(queue: list[tuple[StudyPlan, optuna.Study]], stop: StopControl, display: Display,
              deadline: float | None) -> Ending:
    """The loop: one trial at a time for the study furthest from its N; wait for other workers'
    trials when every study is finished or taken; stop on request or at the deadline."""
    objectives = {plan.name: _Claimed(Objective(plan.setup, display, stop), plan.options.trials)
                  for plan, _ in queue}
    waiting_said = False
    while True:
        gaps = []
        for plan, study in queue:
            _recover(study, plan, display)
            trials = study.get_trials(deepcopy=False)
            gaps.append((plan.options.trials - n_finished(trials), len(_running(trials)), trials))
        if all(left <= 0 for left, _, _ in gaps):
            return "done"
        if stop.requested:
            return "stopped"
        if deadline is not None and time.time() >= deadline:
            return "timeout"
        free = [left - running for left, running, _ in gaps]
        pick = max(range(len(queue)), key=lambda i: (free[i], -i))  # furthest from N; ties: matrix order
        plan, study = queue[pick]
        _show(display, plan, study, gaps[pick][2])
        if free[pick] <= 0:
            if not waiting_said:
                running = [f"{p.name} #{t.number}" for (p, _), (_, _, ts) in zip(queue, gaps, strict=True)
                           for t in _running(ts)]
                display.say(f"every study is finished or taken; waiting for running trials "
                            f"{', '.join(running)} of other workers")
                waiting_said = True
            time.sleep(WAIT_S)
            continue
        waiting_said = False
        try:
            study.optimize(objectives[plan.name], n_trials=1, callbacks=[_AfterTrial(plan, stop, display)],
                           catch=(TrialFailed, Surplus))  # the objective collects garbage itself
        except AbortTrial:
            return "aborted"


class Surplus(Exception):
    """Another worker started the study's last trial at the same moment: this one is not run."""


class _Claimed:
    """The objective, run only when the new trial is within N: the trials before it (by trial
    number, which the storage gives out in order) that are finished or running must be fewer
    than N. Two workers that both saw a free place and started together thus do not both run;
    the later one ends at once as FAIL, reason `surplus` (not counted)."""

    def __init__(self, objective: Objective, target: int) -> None:
        self.objective, self.target = objective, target

    def __call__(self, trial: optuna.Trial) -> float:
        before = [t for t in trial.study.get_trials(deepcopy=False)
                  if t.number < trial.number and (is_finished(t) or t.state == TrialState.RUNNING)]
        if len(before) >= self.target:
            trial.set_user_attr("reason", "surplus")
            trial.set_user_attr("message", f"the study already had {self.target} trials finished or running")
            raise Surplus(f"trial {trial.number} not run: the study was full")
        return self.objective(trial)


class _AfterTrial:
    """Optuna callback after each trial: its line, recovery of dead workers' trials, outputs."""

    def __init__(self, plan: StudyPlan, stop: StopControl, display: Display) -> None:
        self.plan, self.stop, self.display = plan, stop, display

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.stop.flush()
        self.display.say(_trial_line(trial))
        _recover(study, self.plan, self.display)
        write_outputs(study, self.plan)
        _show(self.display, self.plan, study, study.get_trials(deepcopy=False))


def _recover(study: optuna.Study, plan: StudyPlan, display: Display) -> None:
    failed = recover_dead_trials(study, plan.storage)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)} if failed else {}
    for number in failed:
        then = "queued to run again" if retry_queued(trials[number]) else "not retried (it was the retry)"
        display.say(f"trial {number}: its process is gone; marked failed and {then}")


def _running(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING]


def write_outputs(study: optuna.Study, plan: StudyPlan) -> None:
    info = StudyInfo(plan.name, plan.folder, describe(plan.url), plan.options.budget, plan.options.trials,
                     len(plan.space.tree.archs), plan.prior)
    write_all(study, info, keep_checkpoints=plan.options.keep_checkpoints)


def _show(display: Display, plan: StudyPlan, study: optuna.Study, trials: list[FrozenTrial]) -> None:
    best = best_trial(study)
    text = "-" if best is None else f"{best.value:.5g} (trial {best.number}, {best.user_attrs.get('arch_id')})"
    display.update(study=plan.name, target=plan.options.trials, finished=n_finished(trials),
                   counts=counts(trials), best=text)


def _trial_line(t: FrozenTrial) -> str:
    a = t.user_attrs
    value = f" {MONITOR}={t.value:.5g}" if t.value is not None and t.state == TrialState.COMPLETE else ""
    why = a.get("reason", t.state.name.lower())
    if why in ("surplus", "refused"):
        return f"trial {t.number} not run: {a.get('message')}"
    message = f": {a['message']}" if a.get("message") and why not in ("complete",) else ""
    return (f"trial {t.number} {why}{value} {a.get('arch_id')} ({a.get('epochs_run')} epochs, "
            f"{a.get('wall_s', 0):.0f} s){message}")


def closing_line(outcome: Outcome, study: optuna.Study) -> str:
    best = best_trial(study)
    best_text = "no complete trial" if best is None else f"best {MONITOR} {best.value:.5g} (trial {best.number})"
    verb = {"done": "done", "stopped": "stopped", "timeout": "timed out", "aborted": "aborted"}[outcome.ending]
    rerun = "" if outcome.ending == "done" else "; rerun the same command to continue"
    return (f"study {outcome.study} {verb}: {outcome.finished}/{outcome.target} trials finished, {best_text}; "
            f"see {outcome.folder / 'summary.md'}{rerun}")


class _NoAbortTrace(logging.Filter):
    """Optuna logs a trial that raised with its traceback; for AbortTrial (a second Ctrl-C, the
    user's own doing) the warning line and the closing line say enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AbortTrial):
            record.exc_info, record.exc_text = None, None
        return True


def _storage_error(err: BaseException | None) -> SQLAlchemyError | None:
    """The storage's error behind `err`, if any (Optuna may raise another one while handling it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, SQLAlchemyError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextlib.contextmanager
def quiet_search() -> Iterator[None]:
    """Lightning's per-trial lines and Optuna's own log stay out: the search prints one line per trial."""
    from forecast.training.messages import quiet_lightning

    optuna_level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures too: the search prints its own line per trial
    # private API: Optuna logs a trial's traceback under its private module's logger; no public switch for it
    no_trace, optimize_log = _NoAbortTrace(), logging.getLogger("optuna.study._optimize")
    optimize_log.addFilter(no_trace)
    try:
        with quiet_lightning():
            yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        optimize_log.removeFilter(no_trace)
