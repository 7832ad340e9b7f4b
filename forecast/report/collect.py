"""Optuna storage -> one `StudyEntry` per study: what it measured and its best trial.

Everything here is READ from what `forecast hpo` recorded; nothing is re-derived:
  the study's user attr `fingerprint`: its data settings (symbol, tier, task, threshold, horizon,
      splits) and its budget label;
  the best trial's user attrs: exact parameter count (`params`), architecture (`arch_id`), best
      epoch, its log folder (`log_dir`, whose parent holds the study's best.yaml) and the command
      that replays it (`replay`);
  every trial's state, value and best epoch (`TrialRecord`, for the search-sufficiency view), and
      where the best trial's draws lie in the ranges they were drawn from (`BestTrial.edges`).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from forecast.core.errors import ForecastError
from forecast.hpo.api import (
    FrozenTrial,
    Study,
    TrialState,
    counts,
    describe,
    journal_path,
    load_study,
    open_storage,
    study_names,
)
from forecast.sizing.budget import parse_budget
from forecast.training.config import differences, recorded_data

SHOWN_NAMES = 8  # study names listed in an "unknown study" message
_HEADER = re.compile(r"#\s*Best trial (\d+) of study")
EDGE = 0.05  # a float/int draw within 5% of its range's (log-)width from an end lies on the edge
MIN_CHOICES_FOR_EDGE = 3  # with two choices every pick is an "edge": that says nothing


@dataclass(frozen=True)
class Series:
    """What a scaling curve holds fixed: the data, the network's inputs, the target, the horizon and the
    training years (a study trained on fewer years is its own curve; `forecast.report.data_scaling`
    compares the curves of one `family`)."""

    symbol: str
    tier: str
    task: str  # "threshold0.01" or "direction"
    horizon: int
    inputs: str = "tier"  # the tier's columns, or "stationary" (the baselines' inputs)
    train_years: float | None = None  # the training selection (`forecast.data.selection`); None: all years
    train_design: str = "trailing"
    train_draw: int = 0

    @property
    def label(self) -> str:
        return f"{self.family_label}{self.train_text}"

    @property
    def family_label(self) -> str:
        """The label without the training selection: what a data-scaling curve holds fixed."""
        inputs = "" if self.inputs == "tier" else f" ({self.inputs} inputs)"
        return f"{self.symbol} {self.tier}{inputs} {self.task} h={self.horizon}"

    @property
    def train(self) -> str:
        """`all`, `y4` (4 trailing years) or `y4b1` (4 random calendar years, draw 1): as in study names."""
        if self.train_years is None:
            return "all"
        return f"y{self.train_years:g}" + (f"b{self.train_draw}" if self.train_design == "blocks" else "")

    @property
    def train_text(self) -> str:
        if self.train_years is None:
            return ""
        if self.train_design == "blocks":
            return f", {self.train_years:g} random years (draw {self.train_draw})"
        return f", {self.train_years:g} trailing years"

    @property
    def family(self) -> Series:
        """This series on every training year: the series its training-years variants share."""
        return replace(self, train_years=None, train_design="trailing", train_draw=0)


@dataclass(frozen=True)
class BestTrial:
    """The best COMPLETE trial of a study, as the search recorded it."""

    number: int
    value: float  # its best val/loss over epochs (the search objective)
    params: int  # exact parameter count
    arch: str
    best_epoch: int | None
    epochs_run: int | None
    values: dict[str, Any]  # the sampled settings (lr, weight decay, ...)
    curve: dict[int, float]  # val/loss per epoch, as the pruner saw it
    log_dir: Path
    replay: str
    edges: list[str] = field(default_factory=list)  # "d_model 512: the largest of 4 choices", ...


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study as the search left it (for the search-sufficiency view).

    Attributes:
        state: complete, pruned, failed, lost, running or waiting (`forecast.hpo.api.counts`' names).
        value: the objective (best val/loss) of a complete trial, else the last reported val/loss
            (a pruned trial), else None.
    """

    number: int
    state: str
    value: float | None
    best_epoch: int | None
    epochs_run: int | None


@dataclass
class StudyEntry:
    """One study of the storage: its series, budget, trial counts and best trial.

    Attributes:
        config_args: LightningCLI arguments that rebuild the best trial's complete config.
        config_note: how they were found (shown in the report when it is not best.yaml).
    """

    name: str
    series: Series
    budget: str
    budget_size: int
    data: dict[str, Any]
    counts: dict[str, int]
    best: BestTrial
    trials: list[TrialRecord] = field(default_factory=list)
    config_args: list[str] = field(default_factory=list)
    config_note: str = ""
    problem: str | None = None


def load_storage(url: str) -> Any:
    """Open an EXISTING storage (never create an empty one by reading it).

    Raises:
        ForecastError: no such file, or the storage cannot be opened.
    """
    path = journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
    if path is not None and not path.is_file():
        raise ForecastError(f"no Optuna storage at {path} (run `forecast hpo` first or check --storage)")
    return open_storage(url, heartbeat=0)


def collect(url: str, names: Sequence[str] = ()) -> list[StudyEntry]:
    """Every selected study of the storage, sorted by series and budget.

    Args:
        url: the `--storage` URL or journal path.
        names: studies to report (default: all of the storage).

    Raises:
        ForecastError: empty storage, an unknown study name, a study not made by `forecast hpo`,
            or a study without a complete trial.
    """
    storage = load_storage(url)
    known = study_names(storage)
    if not known:
        raise ForecastError(f"storage {describe(url)} holds no study")
    for name in names:
        if name not in known:
            listed = ", ".join(known[:SHOWN_NAMES]) + (", ..." if len(known) > SHOWN_NAMES else "")
            raise ForecastError(f"no study named {name!r} in {describe(url)}; it holds: {listed}")
    chosen = list(dict.fromkeys(names)) or known
    entries = [_entry(load_study(n, storage)) for n in chosen]
    _check_unique(entries)
    return sorted(entries, key=lambda e: (e.series.label, e.budget_size))


def _entry(study: Study) -> StudyEntry:
    stamp = study.user_attrs.get("fingerprint")
    if not isinstance(stamp, dict) or not isinstance(stamp.get("data"), dict) or "budget" not in stamp:
        raise ForecastError(f"study {study.study_name} holds no settings from `forecast hpo` (user attr "
                            "`fingerprint`); leave it out with --study")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        c = ", ".join(f"{n} {k}" for k, n in counts(trials).items() if n) or "no trials"
        raise ForecastError(f"study {study.study_name} has no complete trial ({c}); finish it or "
                            "leave it out with --study")
    data = stamp["data"]
    label, size = parse_budget(str(stamp["budget"]))
    entry = StudyEntry(study.study_name, series_of(data), label, size, data, counts(trials),
                       _best(study.best_trial), [_record(t) for t in sorted(trials, key=lambda t: t.number)])
    entry.config_args, entry.config_note = config_args(entry.best, study.study_name)
    return entry


def series_of(data: dict[str, Any]) -> Series:
    """The series of a study's recorded data settings."""
    task = str(data.get("task", "threshold"))
    if task == "threshold":
        task += f"{float(data.get('threshold', 0.01)):g}"
    years = data.get("train_years")
    return Series(str(data.get("symbol")), str(data.get("tier")), task, int(data.get("horizon", 1)),
                  str(data.get("inputs", "tier")), None if years is None else float(years),
                  str(data.get("train_design", "trailing")), int(data.get("train_draw", 0)))


def _best(t: FrozenTrial) -> BestTrial:
    a = t.user_attrs
    values = {k: v for k, v in t.params.items() if "@" not in k}  # "n_layers@d32-f2": tree levels
    return BestTrial(t.number, float(t.value), int(a.get("params", 0)), str(a.get("arch_id", "?")),
                     a.get("best_epoch"), a.get("epochs_run"), values,
                     {int(k): float(v) for k, v in t.intermediate_values.items()},
                     Path(str(a.get("log_dir", ""))), str(a.get("replay", "")), edges(t))


def _record(t: FrozenTrial) -> TrialRecord:
    state = next(k for k, n in counts([t]).items() if n)  # counts names it (a FAIL is "failed" or "lost")
    value = t.value if t.value is not None else (
        t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
    a = t.user_attrs
    return TrialRecord(t.number, state, None if value is None else float(value), a.get("best_epoch"),
                       a.get("epochs_run"))


def edges(t: FrozenTrial) -> list[str]:
    """The best trial's draws that lie on the edge of what they were drawn from.

    An architecture level (d_model, then `ffn_ratio@...`, `n_layers@...`, `n_heads@...` within the
    width chosen) is on the edge when it is the smallest or largest of at least
    `MIN_CHOICES_FOR_EDGE` choices; a float or int setting (lr, weight decay, ...) when it lies
    within `EDGE` of its range's width (in log space for a log range) from either end. Read through
    the distributions' public attributes (`choices`, `low`, `high`, `log`).
    """
    found = []
    for name, dist in t.distributions.items():
        value = t.params.get(name)
        label = name.split("@")[0]
        choices = getattr(dist, "choices", None)
        if choices is not None:
            numbers = sorted(c for c in choices if isinstance(c, int | float))
            if len(numbers) >= MIN_CHOICES_FOR_EDGE and value in (numbers[0], numbers[-1]):
                end = "smallest" if value == numbers[0] else "largest"
                found.append(f"{label} {value:g}: the {end} of {len(numbers)} choices")
            continue
        low, high, log = getattr(dist, "low", None), getattr(dist, "high", None), getattr(dist, "log", False)
        if low is None or high is None or not high > low or not isinstance(value, int | float):
            continue
        scale = (lambda v: math.log(v)) if log and low > 0 else (lambda v: v)
        where = (scale(value) - scale(low)) / (scale(high) - scale(low))
        if where <= EDGE or where >= 1 - EDGE:
            end = "bottom" if where <= EDGE else "top"
            found.append(f"{label} {value:.3g}: at the {end} of [{low:g}, {high:g}]")
    return found


def config_args(best: BestTrial, study: str) -> tuple[list[str], str]:
    """Arguments that rebuild the best trial's config: its study's best.yaml, else its replay.

    best.yaml is rewritten after every trial by the process that ran the best one; when the best
    trial ran on another machine the file is missing or names an older trial, and the trial's
    own `replay` command (the user's configs and flags plus its draw) is used instead.
    """
    best_yaml = best.log_dir.parent / "best.yaml"
    if best_yaml.is_file():
        found = _HEADER.search(best_yaml.read_text()[:500])
        if found is None or int(found.group(1)) == best.number:
            return ["--config", str(best_yaml)], ""
        why = f"{best_yaml} is of trial {found.group(1)}"
    else:
        why = f"no {best_yaml}"
    words = shlex.split(best.replay)
    if words[:2] != ["forecast", "fit"]:
        return ["--config", str(best_yaml)], why  # nothing better: loading it reports the problem
    return words[2:], f"{why}; config rebuilt from trial {best.number}'s replay command"


def _check_unique(entries: list[StudyEntry]) -> None:
    """One point per (series, budget), and one test set per series.

    Two studies of one series and budget would be two points at one x; two budgets of a series
    whose data settings differ (splits, context, scaler) would be scored on different windows.
    """
    seen: dict[tuple[Series, str], str] = {}
    first: dict[Series, StudyEntry] = {}
    for e in entries:
        other = seen.setdefault((e.series, e.budget), e.name)
        if other != e.name:
            raise ForecastError(f"studies {other} and {e.name} both hold {e.series.label} at budget "
                                f"{e.budget}; choose one with --study")
        ref = first.setdefault(e.series, e)
        diff = differences(recorded_data(ref.data), recorded_data(e.data), "data.")
        if diff:
            raise ForecastError(f"studies {ref.name} and {e.name} of {e.series.label} were run on different "
                                f"data ({diff[0]}), so their test sets differ; choose with --study")
