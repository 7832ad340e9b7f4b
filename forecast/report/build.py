"""The report, step by step: studies -> retrains -> baselines and regimes -> statistics -> files.

`make_report` is what `forecast report` runs. A study that cannot be reported (its best config
no longer loads, a retrain fails) stays in the report with the reason, and the command exits 1;
mistakes in the command itself (storage, study names, flags) raise `ForecastError` before any
retrain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from forecast.baselines import baseline_scores
from forecast.errors import ForecastError
from forecast.hpo.objective import release_memory
from forecast.hpo.storage import describe
from forecast.metrics import MONITOR
from forecast.report.collect import Series, StudyEntry, collect
from forecast.report.regimes import Regime, regimes, vix_at_test_windows
from forecast.report.retrain import Prepared, SeedRun, check_overrides, prepare, retrain
from forecast.report.stats import Interval, Scaling, clipped, scaling, slope_interval, t_interval

# metric -> (logged key, lower is better, highest possible value; every metric is >= 0)
METRICS: dict[str, tuple[str, bool, float]] = {
    "loss": ("test/loss", True, math.inf),
    "auroc": ("test/auroc", False, 1.0),
    "ap": ("test/ap", False, 1.0),
    "brier": ("test/brier", True, 1.0),
}
BASELINES = ("prior", "logistic", "hist_gb")


@dataclass
class ReportOptions:
    """What `forecast report` takes (see `forecast report --help`)."""

    storage: str
    studies: list[str] = field(default_factory=list)
    seeds: int = 3
    out: Path = Path("logs/report")
    overrides: list[str] = field(default_factory=list)
    keep_checkpoints: bool = False
    bootstrap: int = 1000


@dataclass
class StudyResult:
    """One study's best config after its retrains, or why it could not be retrained."""

    entry: StudyEntry
    runs: list[SeedRun] = field(default_factory=list)
    problem: str | None = None
    regimes: list[Regime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.runs)

    def metric(self, name: str) -> Interval:
        """Mean and 95% t-interval over seeds of a test metric ("loss", "auroc", "ap", "brier"),
        kept inside the metric's range."""
        return clipped(t_interval(self.values(name)), 0.0, METRICS[name][2])

    def values(self, name: str) -> list[float]:
        return [r.test.get(METRICS[name][0], math.nan) for r in self.runs]

    def val_retrained(self) -> Interval:
        """The retrains' best-epoch val/loss (compare with the search's: the winner's curse)."""
        return t_interval([r.val_best.get(MONITOR, math.nan) for r in self.runs])


@dataclass
class SeriesResult:
    """One scaling curve: its studies by size, baselines and the verdict."""

    series: Series
    studies: list[StudyResult]
    baselines: dict[str, dict[str, dict[str, float]]] | None
    scaling: Scaling
    auroc_slope: Interval

    @property
    def reported(self) -> list[StudyResult]:
        return [s for s in self.studies if s.ok]

    @property
    def best_baseline(self) -> str | None:
        """The baseline with the lowest TEST loss: the conservative yardstick (choosing it on test
        favours the baselines, so a model that still beats it has really learned something)."""
        scored = {b: baseline_metric(self.baselines, b, "loss") for b in BASELINES}
        scored = {b: v for b, v in scored.items() if math.isfinite(v)}
        return min(scored, key=scored.get) if scored else None

    def versus_baseline(self, study: StudyResult) -> Interval:
        """Test loss minus the best baseline's, over seeds (the baseline is deterministic)."""
        best = self.best_baseline
        if best is None:
            return Interval(math.nan, math.nan, math.nan, 0)
        base = baseline_metric(self.baselines, best, "loss")
        return t_interval([v - base for v in study.values("loss")])


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


def make_report(options: ReportOptions, say: Say = print) -> Report:
    """Collect, retrain, compare and judge; write every output under `options.out`.

    Raises:
        ForecastError: a mistake in the command (storage, study names, flags, seed count).
    """
    from forecast.report.outputs import write_outputs  # here: outputs import this module

    started = time.time()
    if options.seeds < 1:
        raise ForecastError(f"--seeds must be >= 1, got {options.seeds}")
    if options.bootstrap < 0:
        raise ForecastError(f"--bootstrap must be >= 0, got {options.bootstrap}")
    check_overrides(options.overrides)
    entries = collect(options.storage, options.studies)
    seeds = list(range(options.seeds))
    say(f"report: {len(entries)} studies x {len(seeds)} seeds from {describe(options.storage)} -> {options.out}")
    studies, baselines = _run_studies(entries, seeds, options, say)
    series = [_series(s, [r for r in studies if r.entry.series == s], baselines.get(s), options.bootstrap)
              for s in dict.fromkeys(e.series for e in entries)]
    report = Report(options, series, round(time.time() - started, 1), seeds)
    write_outputs(report, options.out)
    return report


def _run_studies(entries: Sequence[StudyEntry], seeds: list[int], options: ReportOptions,
                 say: Say) -> tuple[list[StudyResult], dict[Series, Any]]:
    results: list[StudyResult] = []
    baselines: dict[Series, Any] = {}
    total = len(entries) * len(seeds)
    for i, entry in enumerate(entries):
        result = StudyResult(entry)
        results.append(result)
        try:
            prepared = prepare(entry, options.overrides)
        except ForecastError as err:
            result.problem = f"best config does not load: {err}"
            say(f"study {entry.name}: {result.problem}")
            continue
        if entry.series not in baselines:
            baselines[entry.series] = baselines_of(prepared.datamodule)
        data = prepared.datamodule.fingerprint()
        for j, seed in enumerate(seeds):
            run = _one_seed(result, seed, options, data)
            say(_progress(i * len(seeds) + j + 1, total, entry, seed, run, result.problem))
            if run is None:
                break
        _finish(result, prepared)
    return results, baselines


def baselines_of(dm: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Prior, logistic regression and HistGB on the data module's own val and test windows.

    One OpenMP thread: HistGB on a few thousand rows takes a second alone, but its threads
    spin-wait on a busy machine (a minute on a shared 2-core box).
    """
    with threadpool_limits(1):
        return baseline_scores(dm, splits=("val", "test"))


def _one_seed(result: StudyResult, seed: int, options: ReportOptions, data: str) -> SeedRun | None:
    try:
        run = retrain(result.entry, seed, options.out / "runs", data, options.overrides, options.keep_checkpoints)
    except Exception as err:  # a failed retrain is a finding about this study, not the end of the report
        first = (str(err).strip().splitlines() or [""])[0]
        kind = "" if isinstance(err, ForecastError) else f"{type(err).__name__}: "  # ours say it plainly
        result.problem = f"retrain with seed {seed} failed: {kind}{first}"
        release_memory()  # e.g. after an out-of-memory error, before the next study's model
        return None
    result.runs.append(run)
    return run


def _progress(done: int, total: int, entry: StudyEntry, seed: int, run: SeedRun | None,
              problem: str | None) -> str:
    head = f"[{done}/{total}] {entry.name} seed {seed}: "
    if run is None:
        return head + str(problem)
    loss, auroc = run.test.get("test/loss", math.nan), run.test.get("test/auroc", math.nan)
    how = "reused" if run.cached else f"{run.wall_s:.0f} s"
    return head + f"test loss {loss:.4f}, AUROC {auroc:.3f} ({run.epochs_run} epochs, {how})"


def _finish(result: StudyResult, prepared: Prepared) -> None:
    """Regime view and consistency notes, once a study's seeds are done."""
    if not result.runs:
        return
    recorded = result.entry.best.params
    counted = {r.params for r in result.runs}
    if counted != {recorded}:
        result.notes.append(f"retrained models have {sorted(counted)} parameters; the trial recorded {recorded:,}")
    if result.problem is not None:
        return
    dm = prepared.datamodule
    vix = vix_at_test_windows(dm)
    labels = dm.targets[dm.splits["test"].ends].numpy()
    if any(len(r.probs) != len(labels) for r in result.runs):
        result.notes.append("test predictions do not match the test split; regime view left out")
    elif vix is not None:
        result.regimes = regimes(vix, labels, [r.probs for r in result.runs])


def _series(series: Series, studies: list[StudyResult], baselines: Any, draws: int) -> SeriesResult:
    studies = sorted(studies, key=lambda s: s.entry.best.params)
    ok = [s for s in studies if s.ok]
    params = [float(s.entry.best.params) for s in ok]
    losses = [s.values("loss") for s in ok]
    flat_n = [n for n, s in zip(params, ok, strict=True) for _ in s.runs]
    auroc = slope_interval(flat_n, [v for s in ok for v in s.values("auroc")])
    return SeriesResult(series, studies, baselines, scaling(params, losses, draws=draws), auroc)


def baseline_metric(baselines: Any, name: str, metric: str, split: str = "test") -> float:
    """A baseline's score, NaN when absent."""
    try:
        return float(baselines[name][split][metric])
    except (KeyError, TypeError):
        return math.nan

