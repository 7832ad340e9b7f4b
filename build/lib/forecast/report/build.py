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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecast.errors import ForecastError
from forecast.hpo.api import describe
from forecast.report.collect import Series, StudyEntry, collect
from forecast.report.regimes import Regime, regimes, vix_at_test_windows
from forecast.report.retrain import (
    FOLD_KEYS,
    SeedRun,
    check_overrides,
    fold_args,
    resolve_best,
    retrain,
)
from forecast.report.stats import (
    MIN_BUDGETS_FOR_FIT,
    Arm,
    Comparison,
    Draws,
    PowerLaw,
    compare,
    fit_power_law,
    paired_bootstrap,
    scaling_verdict,
)
from forecast.sizing.devices import release_memory
from forecast.training.baselines import BASELINES, fit_baselines, labels


@dataclass
class ReportOptions:
    """What `forecast report` takes (see `forecast report --help`)."""

    storage: str
    studies: list[str] = field(default_factory=list)
    seeds: int = 2
    folds: int = 4
    test_start: str | None = None
    test_end: str | None = None
    out: Path = Path("logs/report")
    overrides: list[str] = field(default_factory=list)
    keep_checkpoints: bool = False
    bootstrap: int = 1000


@dataclass
class Fold:
    """One walk-forward fold of a series: its data module's dates, labels and the baselines on it."""

    index: int
    dates: pd.DatetimeIndex  # test prediction days
    labels: np.ndarray
    fingerprint: str
    train: tuple[str, str]
    val: tuple[str, str]
    baselines: dict[str, np.ndarray]  # baseline -> test probabilities
    chosen: dict[str, str]  # baseline -> setting chosen on the fold's validation period
    vix: np.ndarray | None

    @property
    def test(self) -> tuple[str, str]:
        return str(self.dates[0].date()), str(self.dates[-1].date())


@dataclass
class StudyResult:
    """One study's best config after its fold x seed retrains, or why it could not be retrained."""

    entry: StudyEntry
    runs: list[SeedRun] = field(default_factory=list)
    problem: str | None = None
    regimes: list[Regime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    fit: PowerLaw | None = None

    @property
    def reported(self) -> list[StudyResult]:
        return [s for s in self.studies if s.ok]

    def claim(self, comparison: str, metric: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.comparison == comparison and c.metric == metric), None)


@dataclass
class Report:
    """Everything the outputs are written from."""

    options: ReportOptions
    series: list[SeriesResult]
    wall_s: float
    seeds: list[int]

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(s.entry.name, s.problem) for r in self.series for s in r.studies if s.problem]

    @property
    def storage(self) -> str:
        return describe(self.options.storage)


Say = Callable[[str], None]


def build_report(options: ReportOptions, say: Say = print) -> Report:
    """Collect, retrain per fold x seed, compare by date and judge (`outputs.make_report` also writes).

    Raises:
        ForecastError: a mistake in the command (storage, study names, flags, seeds, folds).
    """
    started = time.time()
    if options.seeds < 1 or options.folds < 1 or options.bootstrap < 0:
        raise ForecastError(f"--seeds and --folds must be >= 1 and --bootstrap >= 0, got {options.seeds}, "
                            f"{options.folds}, {options.bootstrap}")
    check_overrides(options.overrides)
    entries = collect(options.storage, options.studies)
    seeds = list(range(options.seeds))
    say(f"report: {len(entries)} studies x {options.folds} folds x {len(seeds)} seeds from "
        f"{describe(options.storage)} -> {options.out}")
    series = []
    for s in dict.fromkeys(e.series for e in entries):
        members = [e for e in entries if e.series == s]
        series.append(_series(s, members, seeds, options, say))
    return Report(options, series, round(time.time() - started, 1), seeds)


def _series(series: Series, entries: Sequence[StudyEntry], seeds: list[int], options: ReportOptions,
            say: Say) -> SeriesResult:
    results = [StudyResult(e) for e in entries]
    configs: dict[str, dict[str, Any]] = {}
    for r in results:
        try:
            configs[r.entry.name] = resolve_best(r.entry, options.overrides)
        except ForecastError as err:
            r.problem = f"best config does not load: {err}"
            say(f"study {r.entry.name}: {r.problem}")
    if not configs:
        return SeriesResult(series, results, [], None, [], *scaling_verdict([], 0))
    first = next(iter(configs.values()))["data"]  # every study of a series has the same data (collect)
    folds = make_folds(first, options)
    say(f"{series.label}: {len(folds)} folds, test {folds[0].test[0]}..{folds[-1].test[1]}, "
        f"{sum(len(f.dates) for f in folds)} test samples")
    total = len(configs) * len(folds) * len(seeds)
    done = 0
    for r in results:
        if r.entry.name not in configs:
            continue
        for f in folds:
            extra = fold_args(options.folds, f.index, *_period(first, options))
            for seed in seeds:
                done += 1
                run = _one_run(r, seed, f, options, extra)
                say(_progress(done, total, r.entry, f, seed, run, r.problem))
                if run is None:
                    break
            if r.problem:
                break
        _check_runs(r, folds, seeds)
    return judge(series, results, folds, seeds, options.bootstrap)


def _period(data: dict[str, Any], options: ReportOptions) -> tuple[str, str | None]:
    """The test period the folds cut: the study's test_start (or a later --test-start) to --test-end."""
    return str(options.test_start or data["test_start"]), options.test_end or data.get("test_end")


def make_folds(data: dict[str, Any], options: ReportOptions) -> list[Fold]:
    """The series' K folds: each fold's data module, its labels and its baselines.

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
        dm = ForecastDataModule(**{**base, "test_start": test_start, "test_end": test_end,
                                   "folds": options.folds, "fold": k})
        fitted = fit_baselines(dm, splits=("test",))
        span = {name: (str(dm.splits[name].dates[0].date()), str(dm.splits[name].dates[-1].date()))
                for name in ("train", "val")}
        folds.append(Fold(k, dm.splits["test"].dates, labels(dm, "test"), dm.fingerprint(), span["train"],
                          span["val"], {b: fitted.probs[b]["test"] for b in BASELINES}, fitted.chosen,
                          vix_at_test_windows(dm)))
    return folds


def _one_run(result: StudyResult, seed: int, fold: Fold, options: ReportOptions, extra: list[str]) -> SeedRun | None:
    try:
        run = retrain(result.entry, seed, options.out / "runs", fold.fingerprint, [*extra, *options.overrides],
                      options.keep_checkpoints, fold=fold.index)
    except Exception as err:  # a failed retrain is a finding about this study, not the end of the report
        first = (str(err).strip().splitlines() or [""])[0]
        kind = "" if isinstance(err, ForecastError) else f"{type(err).__name__}: "  # ours say it plainly
        result.problem = f"retrain of fold {fold.index} with seed {seed} failed: {kind}{first}"
        release_memory()  # e.g. after an out-of-memory error, before the next study's model
        return None
    result.runs.append(run)
    return run


def _progress(done: int, total: int, entry: StudyEntry, fold: Fold, seed: int, run: SeedRun | None,
              problem: str | None) -> str:
    head = f"[{done}/{total}] {entry.name} fold {fold.index} seed {seed}: "
    if run is None:
        return head + str(problem)
    loss, auroc = run.test.get("test/loss", math.nan), run.test.get("test/auroc", math.nan)
    how = "reused" if run.cached else f"{run.wall_s:.0f} s"
    return head + f"test loss {loss:.4f}, AUROC {auroc:.3f} ({run.epochs_run} epochs, {how})"


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
          draws: int) -> SeriesResult:
    """Joint draws over the pooled test dates, every claim, the verdict, the regime view and the fit."""
    ok = sorted((r for r in results if r.ok), key=lambda r: r.entry.best.params)
    results = sorted(results, key=lambda r: r.entry.best.params)
    if not ok:
        return SeriesResult(series, results, folds, None, [], *scaling_verdict([], 0))
    y = np.concatenate([f.labels for f in folds]).astype(float)
    models = [Arm(r.entry.budget, r.probs(seeds, folds), float(r.entry.best.params)) for r in ok]
    baselines = [Arm(b, np.concatenate([f.baselines[b] for f in folds])[None, :]) for b in BASELINES]
    d = paired_bootstrap(y, [*models, *baselines], draws=draws)
    claims = compare(d, models, baselines)
    verdict, method = scaling_verdict(claims, len(models))
    if folds[0].vix is not None:
        vix = np.concatenate([f.vix for f in folds])
        for r, arm in zip(ok, models, strict=True):
            r.regimes = regimes(vix, y, list(arm.probs))
    fit = fit_power_law([m.params for m in models], list(d.loss[: len(models)])) \
        if len(models) >= MIN_BUDGETS_FOR_FIT else None
    return SeriesResult(series, results, folds, d, claims, verdict, method, fit)
