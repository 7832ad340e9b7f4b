"""The report's data section: test loss and AUROC against training years, and the data claims.

Studies that differ only in their training selection (`--data.train_years`, `--data.train_design`,
`--data.train_draw`; `forecast.data.selection`) are one FAMILY: each selection is its own series
(its budgets retrained per fold x seed, its baselines fitted on the same kept years), and since
validation and test dates never move, every series of a family is tested on the same dates. So the
whole family is compared by date with ONE joint bootstrap (`forecast.report.stats.paired_bootstrap`),
and each claim gets the same interval, MDE and three-way verdict as the size claims
(`forecast.report.stats.judged`).

Cells: one per (model, design, years), a model being a budget or a baseline. A `blocks` cell pools
its draws: their retrains are stacked as extra seeds, so the bootstrap resamples draws and seeds
together and an interval holds the draw-to-draw spread. Every year is one cell that both designs'
curves end at.

Claims, per model and metric:
  - "<model> <design>: per doubling of training years": the OLS slope of the metric against
    log2(kept training samples) over the design's cells (>= 2): "more data helps" / "more data
    hurts" where its interval excludes 0, "equivalent" within the metric's margin;
  - "<model>: trailing - blocks at equal years (Y1, Y2, ...)": the mean over the years both designs
    ran of trailing minus blocks: "recent better" / "recent worse" (the recency effect).
A model's claim needs >= 2 seeds in every cell (`MIN_SEEDS`); a baseline is one deterministic fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from forecast.report.collect import Series
from forecast.report.equivalence import Margins
from forecast.report.stats import (
    LEVEL,
    MIN_SEEDS,
    Arm,
    Comparison,
    Draws,
    bootstrap_method,
    judged,
    paired_bootstrap,
    slope,
)
from forecast.sizing.budget import parse_budget
from forecast.training.baselines import BASELINES

if TYPE_CHECKING:  # build imports this module
    from forecast.report.build import SeriesResult

MORE_HELPS, MORE_HURTS = "more data helps", "more data hurts"
RECENT_BETTER, RECENT_WORSE = "recent better", "recent worse"
DESIGNS = ("trailing", "blocks")
DAYS_PER_YEAR = 365.25
NO_SEARCH = "baseline (no search)"


@dataclass
class Cell:
    """One point of a data curve: a model (budget or baseline) trained on one amount of history.

    Attributes:
        model: the budget label (`10K`) or baseline name.
        design: `trailing` or `blocks`; every year is `trailing` (it ends both curves).
        years: the years asked for; None = every training year.
        draws: how many series (blocks draws) it pools.
        samples: kept training samples, mean over the series' folds.
        span: years from the first to the last kept training sample, mean over folds (blocks: the
            number of drawn years).
        studies: the studies behind it (empty for a baseline).
        params: exact parameter count of each study's best trial.
        unconverged: the studies whose search looks unconverged.
    """

    model: str
    design: str
    years: float | None
    draws: int = 0
    samples: float = 0.0
    span: float = 0.0
    studies: list[str] = field(default_factory=list)
    params: list[int] = field(default_factory=list)
    unconverged: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list, repr=False)  # [S, D] per series

    @property
    def baseline(self) -> bool:
        return self.model in BASELINES

    @property
    def name(self) -> str:
        """The arm's name in the joint draws: `10K trailing 4`, `logistic blocks 2`, `10K all`."""
        return f"{self.model} all" if self.years is None else f"{self.model} {self.design} {self.years:g}"

    @property
    def years_text(self) -> str:
        return "all" if self.years is None else f"{self.years:g}"

    def arm(self) -> Arm:
        return Arm(self.name, np.vstack(self.rows), float(np.mean(self.params)) if self.params else None)


@dataclass
class DataResult:
    """One family's data curves, its joint draws and claims (or why there are none)."""

    family: Series
    cells: list[Cell]
    draws: Draws | None
    comparisons: list[Comparison]
    search: dict[str, str] = field(default_factory=dict)  # comparison -> "rests on an unconverged search (...)"
    problem: str | None = None

    def search_note(self, c: Comparison) -> str:
        return self.search.get(c.comparison, "")

    def interval(self, cell: Cell, metric: str) -> tuple[float, float, float]:
        """The cell's pooled test metric and its bootstrap percentile interval."""
        if self.draws is None:
            return math.nan, math.nan, math.nan
        drawn = np.asarray(self.draws.column(metric, cell.name, draws=True))
        drawn = drawn[np.isfinite(drawn)]
        lo, hi = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(drawn) > 1 else (math.nan, math.nan)
        return float(self.draws.column(metric, cell.name)), float(lo), float(hi)


def families(series: Sequence[SeriesResult]) -> dict[Series, list[SeriesResult]]:
    """Series grouped by what they share but the training selection; only groups of >= 2 selections."""
    groups: dict[Series, list[SeriesResult]] = {}
    for r in series:
        groups.setdefault(r.series.family, []).append(r)
    return {f: rs for f, rs in groups.items() if len({r.series.train for r in rs}) >= 2}


def judge_data(series: Sequence[SeriesResult], seeds: Sequence[int], draws: int,
               margins: Margins | None = None) -> list[DataResult]:
    """Every family's data section (none when no study was trained on fewer years)."""
    return [judge_family(f, rs, seeds, draws, margins or Margins()) for f, rs in families(series).items()]


def judge_family(family: Series, group: Sequence[SeriesResult], seeds: Sequence[int], draws: int,
                 margins: Margins) -> DataResult:
    """Cells, one joint bootstrap over all of them, and the doubling and recency claims."""
    usable = [r for r in group if r.folds and r.reported]
    if len({r.series.train for r in usable}) < 2:
        return DataResult(family, [], None, [], problem="fewer than two training selections could be reported")
    y = np.concatenate([f.labels for f in usable[0].folds]).astype(float)
    dates = np.concatenate([f.dates.values for f in usable[0].folds])
    for r in usable[1:]:
        if not np.array_equal(np.concatenate([f.dates.values for f in r.folds]), dates):
            return DataResult(family, [], None, [], problem=f"{r.series.label} was tested on other dates "
                                                             f"than {usable[0].series.label}")
    cells = _cells(usable, seeds)
    d = paired_bootstrap(y, [c.arm() for c in cells], draws=draws)
    comparisons, search = _claims(d, cells, margins)
    return DataResult(family, cells, d, comparisons, search)


def _cells(group: Sequence[SeriesResult], seeds: Sequence[int]) -> list[Cell]:
    """One cell per (model, design, years); a blocks cell gathers its draws."""
    cells: dict[tuple[str, str, float | None], Cell] = {}
    for r in group:
        s = r.series
        samples = float(np.mean([f.module.splits["train"].size for f in r.folds]))  # kept training samples
        span = float(s.train_years) if s.train_design == "blocks" else float(np.mean(
            [(_day(f.train[1]) - _day(f.train[0])) / DAYS_PER_YEAR for f in r.folds]))
        rows = [(st.entry.budget, st.probs(seeds, r.folds), st) for st in r.reported]
        rows += [(b, np.concatenate([f.baselines[b] for f in r.folds])[None, :], None) for b in BASELINES]
        for model, probs, study in rows:
            key = (model, s.train_design, s.train_years)
            cell = cells.setdefault(key, Cell(model, s.train_design, s.train_years))
            cell.samples = (cell.samples * cell.draws + samples) / (cell.draws + 1)
            cell.span = (cell.span * cell.draws + span) / (cell.draws + 1)
            cell.draws += 1
            cell.rows.append(probs)
            if study is not None:
                cell.studies.append(study.entry.name)
                cell.params.append(study.entry.best.params)
                if study.search is not None and study.search.unconverged:
                    cell.unconverged.append(study.entry.name)
    # budgets by size, then the baselines; within a model trailing (ending at every year), then blocks
    return sorted(cells.values(), key=lambda c: (c.baseline, 0 if c.baseline else parse_budget(c.model).size,
                                                 c.model, DESIGNS.index(c.design), c.samples))


def _day(text: str) -> float:
    return float(np.datetime64(text, "D").astype(np.int64))


def curve(cells: Sequence[Cell], model: str, design: str) -> list[Cell]:
    """A model's cells of one design, by amount of data, ending at every year (shared by both designs)."""
    own = [c for c in cells if c.model == model and (c.years is None or c.design == design)]
    if design == "blocks" and not any(c.design == "blocks" and c.years is not None for c in own):
        return []
    return sorted(own, key=lambda c: c.samples)


def _claims(d: Draws, cells: Sequence[Cell], margins: Margins) -> tuple[list[Comparison], dict[str, str]]:
    method = bootstrap_method(d) + "; blocks draws pooled as seeds"
    out: list[Comparison] = []
    search: dict[str, str] = {}
    models = list(dict.fromkeys(c.model for c in cells))
    for metric in ("loss", "auroc"):
        if metric == "auroc" and not np.isfinite(d.auroc_draws).any():
            continue
        for model in models:
            for design in DESIGNS:
                points = curve(cells, model, design)
                if len(points) < 2:
                    continue
                name = f"{model} {design}: per doubling of training years"
                x = np.log2([c.samples for c in points])
                full = slope(x, np.array([d.column(metric, c.name) for c in points]))
                drawn = slope(x, np.stack([d.column(metric, c.name, draws=True) for c in points], axis=1))
                out.append(judged(name, "data", metric, full, drawn, _seeds_ok(points), (MORE_HELPS, MORE_HURTS),
                                  method, margins))
                search[name] = _note(points)
            pairs = _equal_years(cells, model)
            if pairs:
                name = f"{model}: trailing - blocks at equal years ({', '.join(t.years_text for t, _ in pairs)})"
                full = np.mean([d.column(metric, t.name) - d.column(metric, b.name) for t, b in pairs])
                drawn = np.mean([d.column(metric, t.name, True) - d.column(metric, b.name, True) for t, b in pairs],
                                axis=0)
                both = [c for pair in pairs for c in pair]
                out.append(judged(name, "data", metric, full, drawn, _seeds_ok(both), (RECENT_BETTER, RECENT_WORSE),
                                  method, margins))
                search[name] = _note(both)
    return out, search


def _equal_years(cells: Sequence[Cell], model: str) -> list[tuple[Cell, Cell]]:
    """(trailing, blocks) cells of a model at every number of years both designs ran."""
    trailing = {c.years: c for c in cells if c.model == model and c.design == "trailing" and c.years is not None}
    blocks = {c.years: c for c in cells if c.model == model and c.design == "blocks"}
    return [(trailing[y], blocks[y]) for y in sorted(set(trailing) & set(blocks))]


def _seeds_ok(cells: Sequence[Cell]) -> bool:
    """A model's claim needs seed spread in every series of every cell; a baseline is one deterministic fit."""
    return all(c.baseline or min(len(r) for r in c.rows) >= MIN_SEEDS for c in cells)


def _note(cells: Sequence[Cell]) -> str:
    """The search-sufficiency note of a claim, as the size claims say it: the studies it rests on
    whose search looks unconverged (`forecast.report.sufficiency`)."""
    if all(c.baseline for c in cells):
        return NO_SEARCH
    weak = [name for c in cells for name in c.unconverged]
    return f"rests on an unconverged search ({', '.join(weak)})" if weak else ""


def data_frame_rows(results: Sequence[DataResult], columns: Any) -> list[dict[str, Any]]:
    """data_scaling.csv rows: one per cell, with its pooled test loss and AUROC and their intervals."""
    rows = []
    for res in results:
        for c in res.cells:
            loss, auroc = res.interval(c, "loss"), res.interval(c, "auroc")
            family = {k: v for k, v in columns(res.family).items() if k != "train"}  # the rows vary it
            rows.append({**family, "model": c.model, "kind": "baseline" if c.baseline else "model",
                         "params": float(np.mean(c.params)) if c.params else math.nan, "design": c.design,
                         "train_years": c.years_text, "draws": c.draws, "train_samples": round(c.samples, 1),
                         "train_span_years": round(c.span, 2),
                         "test_loss": loss[0], "test_loss_lo": loss[1], "test_loss_hi": loss[2],
                         "test_auroc": auroc[0], "test_auroc_lo": auroc[1], "test_auroc_hi": auroc[2],
                         "unconverged": ", ".join(c.unconverged), "studies": " ".join(c.studies)})
    return rows
