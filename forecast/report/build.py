"""The report, step by step: studies -> walk-forward folds -> retrains and baselines -> paired
statistics -> files.

`build_report` computes what `forecast report` writes (`outputs.make_report`). For each series (symbol, tier, task, horizon) the
studies' test period [test_start, test_end] is cut into K folds (`--folds`); every budget's best
config is retrained per fold x seed and tested once on the fold's block, and the baselines are
fitted on the same fold's train split and tuned on its validation period. Every sample's
prediction is kept, and the claims (larger vs smaller, model vs baseline, the slope against
log10 parameters) are differences per date, pooled over the folds, with joint block-bootstrap
intervals (`forecast.report.stats`).

A study that cannot be reported (its best config no longer loads, a retrain fails) stays in the
report with the reason, and the command exits 1; mistakes in the command itself (storage, study
names, flags, folds overlapping the searched validation period) raise `ForecastError` before any
retrain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from forecast.core.errors import ForecastError
from forecast.core.workers import Pool, this_worker
from forecast.hpo.api import TaskQueue, describe
from forecast.report.collect import Series, StudyEntry, collect
from forecast.report.data_scaling import DataResult, judge_data
from forecast.report.equivalence import Margins
from forecast.report.jobs import Task, line, seed_run, verdict_key, work
from forecast.report.law import AxisLaw, axis_law
from forecast.report.options import ReportOptions
from forecast.report.regimes import Regime, regimes, vix_at_test_windows
from forecast.report.retrain import FOLD_KEYS, SeedRun, check_overrides, fold_args, resolve_best
from forecast.report.stats import (
    Arm,
    Comparison,
    Draws,
    compare,
    paired_bootstrap,
    scaling_verdict,
)
from forecast.report.sufficiency import Sufficiency, sufficiency, unconverged_budgets
from forecast.training.baselines import BASELINES, fit_baselines, labels


@dataclass
class Fold:
    """One walk-forward fold of a series: its data module's dates, labels and the baselines on it."""

    index: int
    dates: pd.DatetimeIndex  # test prediction days
    labels: np.ndarray
    fingerprint: str
    train: tuple[str, str]
    val: tuple[str, str]
    bounds: dict[str, Any]  # the fold keys its data module was built with (folds, fold, test_start, test_end)
    vix: np.ndarray | None
    module: Any = field(default=None, repr=False, compare=False)  # its ForecastDataModule (for the baselines)
    baselines: dict[str, np.ndarray] = field(default_factory=dict)  # baseline -> test probabilities
    chosen: dict[str, str] = field(default_factory=dict)  # baseline -> setting chosen on the fold's validation period

    @property
    def test(self) -> tuple[str, str]:
        return str(self.dates[0].date()), str(self.dates[-1].date())

    def args(self) -> list[str]:
        """The retrain's data flags, from the very bounds this fold's data module was built with."""
        return fold_args(**self.bounds)

    def fit_baselines(self) -> None:
        """The baselines on this fold (fitted on its train split, tuned on its val period); once."""
        if not self.baselines:
            fitted = fit_baselines(self.module, splits=("test",))
            self.baselines, self.chosen = {b: fitted.probs[b]["test"] for b in BASELINES}, fitted.chosen


@dataclass
class StudyResult:
    """One study's best config after its fold x seed retrains, or why it could not be retrained."""

    entry: StudyEntry
    runs: list[SeedRun] = field(default_factory=list)
    problem: str | None = None
    regimes: list[Regime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    search: Sufficiency | None = None  # was its search enough (`forecast.report.sufficiency`)

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.runs)

    def probs(self, seeds: Sequence[int], folds: Sequence[Fold]) -> np.ndarray:
        """[seeds, dates]: each seed's test probabilities over the folds, in date order."""
        by = {(r.fold, r.seed): r for r in self.runs}
        return np.array([np.concatenate([by[(f.index, s)].probs for f in folds]) for s in seeds], dtype=float)


@dataclass
class SeriesResult:
    """One scaling curve: its studies by size, folds, joint draws, claims and the verdict."""

    series: Series
    studies: list[StudyResult]
    folds: list[Fold]
    draws: Draws | None
    comparisons: list[Comparison]
    verdict: str
    method: str
    law: AxisLaw | None = None  # L(N) over its budgets (`forecast.report.law`)

    @property
    def reported(self) -> list[StudyResult]:
        return [s for s in self.studies if s.ok]

    def claim(self, comparison: str, metric: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.comparison == comparison and c.metric == metric), None)

    def search_note(self, c: Comparison) -> str:
        """"rests on an unconverged search (2M)" when a study the claim compares looks
        unconverged (a scaling claim rests on every budget), else ""."""
        searches = {s.entry.budget: s.search for s in self.reported if s.search is not None}
        names = list(searches) if c.kind == "scaling" else c.comparison.split(" - ")
        weak = unconverged_budgets(names, searches)
        return f"rests on an unconverged search ({', '.join(weak)})" if weak else ""


@dataclass
class Report:
    """Everything the outputs are written from."""

    options: ReportOptions
    series: list[SeriesResult]
    wall_s: float
    seeds: list[int]
    pending: str | None = None  # why this process writes no report (a worker; others still retraining)
    data: list[DataResult] = field(default_factory=list)  # training-years families (`report.data_scaling`)

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(s.entry.name, s.problem) for r in self.series for s in r.studies if s.problem]

    @property
    def storage(self) -> str:
        return describe(self.options.storage)


Say = Callable[[str], None]


def build_report(options: ReportOptions, say: Say = print, workers: Pool | None = None) -> Report:
    """Collect, retrain per fold x seed (claimed through the storage), compare by date and judge
    (`outputs.make_report` also writes). `workers`: the `--jobs` workers the command started
    (`forecast.core.workers.start_pool`), None to run every retrain here or with other report processes
    on the storage; stopped if the command turns out to be a mistake. With workers, every line goes
    through `Pool.say`.

    Raises:
        ForecastError: a mistake in the command (storage, study names, run flags, folds).
    """
    started = time.time()
    check_overrides(options.overrides)
    entries = collect(options.storage, options.study)
    seeds = list(range(options.seeds))
    worker = this_worker() is not None
    if workers is not None:
        say = workers.say
    try:
        plans, tasks, work_queue, reused = _retrain_all(entries, seeds, options, say, worker, workers)
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    if worker:
        return Report(options, [], round(time.time() - started, 1), seeds, pending="a --jobs worker")
    keys = [t.key for t in tasks]
    states = work_queue.states(keys)
    failed = {t.study.entry.name for t in tasks if states[t.key].status == "failed"}
    left = [t for t in tasks if states[t.key].status not in ("done", "failed") and t.study.entry.name not in failed]
    if left:
        return Report(options, [], round(time.time() - started, 1), seeds, pending=(
            f"{len(left)} retrains still run in other processes on {describe(options.storage)}; the last one "
            "to finish writes the report, or rerun this command when they are done"))
    claim = None
    if set(keys) - reused:  # retrains ran during this report: the verdicts are computed once, by one process
        vkey = verdict_key(tasks)
        work_queue.post({vkey: {"label": "verdicts"}})
        claim = work_queue.claim([vkey])
        if claim is None:
            return Report(options, [], round(time.time() - started, 1), seeds, pending=(
                "another process finished the last retrain and writes the report; rerun this command to "
                "write it here too"))
    for t in tasks:
        _record(t, states[t.key], t.key in reused, tasks, say)
    series = [_judge(s, results, folds, seeds, options.bootstrap, options.margins) for s, results, folds, _ in plans]
    data = judge_data(series, seeds, options.bootstrap, options.margins)  # studies on fewer training years
    if claim is not None:
        work_queue.finish(claim, 0.0, {"verdicts": [r.verdict for r in series]})
    return Report(options, series, round(time.time() - started, 1), seeds, data=data)


def _retrain_all(entries: Sequence[StudyEntry], seeds: list[int], options: ReportOptions, say: Say, worker: bool,
                 workers: Pool | None) -> tuple[list, list[Task], TaskQueue, set[str]]:
    """Plan every series (folds built once), post its retrains to the storage and run them with the
    other processes; the plans, the tasks, the queue and the keys already done before this report."""
    if not worker:
        say(f"report: {len(entries)} studies x {options.folds} folds x {len(seeds)} seeds from "
            f"{describe(options.storage)} -> {options.out}")
    plans = [_plan(s, [e for e in entries if e.series == s], options, say, announce=not worker)
             for s in dict.fromkeys(e.series for e in entries)]
    if workers is not None:
        workers.release()  # the command checked out (storage, studies, flags, folds): their lines from now on
    tasks = [Task(r, f, seed, [*f.args(), *options.overrides])
             for _, results, folds, configs in plans for r in results if r.entry.name in configs
             for f in folds for seed in seeds]
    work_queue = TaskQueue(options.storage, options.heartbeat)
    keys = [t.key for t in tasks]
    # done before this report began: not a retrain that one of its own --jobs workers finished meanwhile
    since = workers.started if workers is not None else None
    reused = {k for k, st in work_queue.states(keys).items()
              if st.status == "done" and (since is None or st.finished is None or st.finished < since)}
    work_queue.post({t.key: t.attrs() for t in tasks})
    if workers is None or workers.parent_works:
        ran = work(tasks, work_queue, options.out, options.keep_checkpoints, say)
        if worker:
            say(f"this worker ran {ran} of the {len(tasks)} retrains")
    if not worker:  # while the other workers run their last retrains
        for _, _, folds, _ in plans:
            for fold in folds:
                fold.fit_baselines()
    if workers is not None:
        workers.wait()  # a worker that ended with an error raises; a retrain left unfinished is said below
    return plans, tasks, work_queue, reused


def _plan(series: Series, entries: Sequence[StudyEntry], options: ReportOptions, say: Say,
          announce: bool) -> tuple[Series, list[StudyResult], list[Fold], dict[str, dict[str, Any]]]:
    """A series' studies, their best configs and its folds (each fold's data module built once; the
    baselines come later, `Fold.fit_baselines`, in the process that writes the report)."""
    results = [StudyResult(e) for e in entries]
    configs: dict[str, dict[str, Any]] = {}
    for r in results:
        try:
            configs[r.entry.name] = resolve_best(r.entry, options.overrides)
        except ForecastError as err:
            r.problem = f"best config does not load: {err}"
            say(f"study {r.entry.name}: {r.problem}")
    seen: dict[str, str] = {}
    for r in results:
        if r.entry.name in configs:
            _check_same_data(r.entry, configs[r.entry.name]["data"], seen)
    for r in results:
        r.search = sufficiency(r.entry, _epoch_limit(r.entry, configs.get(r.entry.name), options.overrides))
    if not configs:
        return series, results, [], configs
    first = next(iter(configs.values()))["data"]  # every study of a series has the same data (collect)
    folds = make_folds(first, options)
    if announce:
        say(f"{series.label}: {len(folds)} folds, test {folds[0].test[0]}..{folds[-1].test[1]}, "
            f"{sum(len(f.dates) for f in folds)} test samples")
    return series, results, folds, configs


def _check_same_data(entry: StudyEntry, data: dict[str, Any], seen: dict[str, str]) -> None:
    """The report's data must be the numbers the study's trials saw, as a resumed `forecast hpo`
    requires: changed prices on the same days would be scored without a word.

    The study's recorded data settings are rebuilt where the report finds its files (`data`: the best
    config with the report's flags, whose data_dir is the one read), fingerprinted as `hpo` does.
    `seen`: fingerprints already computed, by settings (studies of a series share them).

    Raises:
        ForecastError: the data module's fingerprint differs from the one the study recorded.
    """
    from forecast.data.datamodule import ForecastDataModule

    if entry.data_fingerprint is None:
        return  # a study from before fingerprints were recorded: nothing to compare with
    settings = {**data, **entry.data}  # the searched base settings; the files where the report reads them
    key = repr(sorted(settings.items(), key=lambda kv: kv[0]))
    now = seen.get(key) or seen.setdefault(key, ForecastDataModule(**settings).fingerprint())
    if now != entry.data_fingerprint:
        raise ForecastError(f"study {entry.name} was searched on other data (data fingerprint "
                            f"{entry.data_fingerprint[:8]}, now {now[:8]} in {data.get('data_dir')}: a rebuilt, "
                            "re-imported or other tier); report on the study's data or run a new search")


def _record(task: Task, state: Any, reused: bool, tasks: Sequence[Task], say: Say) -> None:
    """A task's outcome into its study's result; a reused one gets its progress line here."""
    result = task.study
    if result.problem is not None:
        return
    if state.status == "failed":
        result.problem = f"retrain of fold {task.fold.index} with seed {task.seed} failed: {state.reason}"
        return
    run = seed_run(state, reused)
    result.runs.append(run)
    if reused:
        say(f"[{tasks.index(task) + 1}/{len(tasks)}] {task.label}: {line(run)}")


def _judge(series: Series, results: list[StudyResult], folds: list[Fold], seeds: list[int],
           draws: int, margins: Margins | None = None) -> SeriesResult:
    for r in results:
        if r.problem is None and r.runs:
            r.runs.sort(key=lambda run: (run.fold, run.seed))
            _check_runs(r, folds, seeds)
    if not folds:
        return SeriesResult(series, results, [], None, [], *scaling_verdict([], 0))
    return judge(series, results, folds, seeds, draws, margins)


def _epoch_limit(entry: StudyEntry, config: dict[str, Any] | None, overrides: list[str]) -> int | None:
    """`trainer.max_epochs` the study's trials ran under (not a report override of it)."""
    if config is None:
        return None
    if any("max_epochs" in o for o in overrides):
        try:
            config = resolve_best(entry, [])
        except ForecastError:
            return None
    limit = config.get("trainer", {}).get("max_epochs")
    return limit if isinstance(limit, int) and limit > 0 else None


def _period(data: dict[str, Any], options: ReportOptions) -> tuple[str, str | None]:
    """The test period the folds cut: the study's test_start (or a later --test-start) to --test-end."""
    return str(options.test_start or data["test_start"]), options.test_end or data.get("test_end")


def make_folds(data: dict[str, Any], options: ReportOptions) -> list[Fold]:
    """The series' K folds: each fold's data module (built once) and its labels.

    Raises:
        ForecastError: the folds would test inside the period the search validated on, or the
            data cannot make K folds.
    """
    from forecast.data.datamodule import ForecastDataModule

    test_start, test_end = _period(data, options)
    searched = (pd.Timestamp(data["val_start"]), pd.Timestamp(data["test_start"]))
    if pd.Timestamp(test_start) < searched[1]:
        raise ForecastError(f"--test-start {test_start} would test on {searched[0].date()}..{searched[1].date()}, "
                            "the validation period the search chose its configs on; use a date on or after "
                            f"{searched[1].date()}")
    base = {k: v for k, v in data.items() if k not in FOLD_KEYS}
    folds = []
    for k in range(options.folds):
        bounds = {"folds": options.folds, "fold": k, "test_start": test_start, "test_end": test_end}
        dm = ForecastDataModule(**{**base, **bounds})
        span = {name: (str(dm.splits[name].dates[0].date()), str(dm.splits[name].dates[-1].date()))
                for name in ("train", "val")}
        folds.append(Fold(k, dm.splits["test"].dates, labels(dm, "test"), dm.fingerprint(), span["train"],
                          span["val"], bounds, vix_at_test_windows(dm), module=dm))
    return folds


def _check_runs(result: StudyResult, folds: Sequence[Fold], seeds: Sequence[int]) -> None:
    """Every fold x seed ran on exactly the fold's test samples; the parameter count is the trial's."""
    if result.problem is not None:
        return
    for run in result.runs:
        fold = folds[run.fold]
        if run.dates != [str(d.date()) for d in fold.dates] or run.labels != fold.labels.tolist():
            result.problem = f"fold {run.fold} seed {run.seed} was tested on other samples than the baselines"
            return
    counted = {r.params for r in result.runs}
    if counted != {result.entry.best.params}:
        result.notes.append(f"retrained models have {sorted(counted)} parameters; the trial recorded "
                            f"{result.entry.best.params:,}")


def judge(series: Series, results: list[StudyResult], folds: list[Fold], seeds: list[int],
          draws: int, margins: Margins | None = None) -> SeriesResult:
    """Joint draws over the pooled test dates, every claim, the verdict, the regime view and the law L(N)."""
    ok = sorted((r for r in results if r.ok), key=lambda r: r.entry.best.params)
    results = sorted(results, key=lambda r: r.entry.best.params)
    if not ok:
        return SeriesResult(series, results, folds, None, [], *scaling_verdict([], 0))
    y = np.concatenate([f.labels for f in folds]).astype(float)
    models = [Arm(r.entry.budget, r.probs(seeds, folds), float(r.entry.best.params)) for r in ok]
    baselines = [Arm(b, np.concatenate([f.baselines[b] for f in folds])[None, :]) for b in BASELINES]
    d = paired_bootstrap(y, [*models, *baselines], draws=draws)
    claims = compare(d, models, baselines, margins=margins)
    verdict, method = scaling_verdict(claims, len(models))
    if folds[0].vix is not None:
        vix = np.concatenate([f.vix for f in folds])
        for r, arm in zip(ok, models, strict=True):
            r.regimes = regimes(vix, y, list(arm.probs))
    left_out = [{"name": r.entry.budget, "reason": r.problem or "no retrain finished"} for r in results if not r.ok]
    law = axis_law("N", [m.name for m in models], [float(m.params) for m in models], d.loss[: len(models)],
                   d.loss_draws[:, : len(models)], left_out)  # the models are the draws' first columns
    return SeriesResult(series, results, folds, d, claims, verdict, method, law)
