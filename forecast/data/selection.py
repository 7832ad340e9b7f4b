"""Which training rows a run learns from: all of them, the Y years before validation, or Y whole
calendar years drawn at random (a pure function of dates, like the splits).

The validation and test dates never move; only the training samples are thinned, so that "more
years of history" can be measured on fixed test days:

- `trailing` (`--data.train_years Y`): the rows dated on or after (first validation day - Y years);
- `blocks` (`--data.train_design blocks --data.train_draw k`): Y whole calendar years of the
  training span, drawn without replacement by a generator seeded with k. The draw is a prefix of
  one permutation of the candidate years, so draw k's 2 years lie inside its 4 years (nested
  amounts, paired comparisons). Holding the amount of history fixed while moving it away from the
  validation period tells "more data" apart from "more recent data".

Equal optimizer steps: at a fixed number of epochs, fewer kept samples would mean fewer optimizer
steps (1 year of ~15: ~1/15 of the steps), and a small-data run would lose by under-training rather
than by data (it did, on data with no signal at all). So by default (`train_epoch: all_years`) one
training epoch of a selection draws as many samples as every training year holds: the kept samples
in successive random permutations (`RepeatedPermutations`), each seen equally often. Every
selection then takes the all-years run's steps per epoch: max_epochs, early stopping's patience and
the best-epoch checkpoint mean the same amount of training whatever the years (`kept`: one pass over
the kept samples per epoch, as before).

A kept sample's context may reach back before its window or block (the past is known at t), as a
first training sample's context does today; training samples whose targets reach into validation
stay purged (`split_samples`). The scaler is fitted on the kept rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from forecast.core.errors import ForecastError

TrainDesign = Literal["trailing", "blocks"]
TrainEpoch = Literal["all_years", "kept"]
DAYS_PER_YEAR = 365.25  # a fractional `train_years` counts calendar days
FIRST_WEEK = 7  # a calendar year is whole when the data's first sample is no later than its Jan 7th
# (the first trading day of a year falls on Jan 2..Jan 4; a week leaves room for any holiday)


@dataclass(frozen=True)
class TrainSelection:
    """The training rows a run keeps, and how they were chosen.

    Attributes:
        design: `trailing` or `blocks`.
        years: the amount of history asked for (None: every training year).
        draw: the seed of a `blocks` draw (0 for the other designs).
        kept: bool [rows]: rows inside the training range that the selection keeps.
        calendar_years: the calendar years the kept rows fall in (`blocks`: exactly the drawn years).
    """

    design: str
    years: float | None
    draw: int
    kept: np.ndarray
    calendar_years: list[int]

    def describe(self) -> str:
        """`trailing 4 years`, `blocks of 4 years (draw 1)` or `all years`."""
        if self.years is None:
            return "all years"
        if self.design == "blocks":
            return f"blocks of {self.years:g} years (draw {self.draw})"
        return f"trailing {self.years:g} years"


def check_selection(years: float | None, design: str, draw: int) -> None:
    """Refuse combinations the types cannot: blocks need an integer number of years; a draw
    belongs to blocks only.

    Raises:
        ForecastError: blocks without `train_years`, a fractional number of blocks, a draw for `trailing`.
    """
    if design == "blocks" and years is None:
        raise ForecastError("data.train_design blocks needs data.train_years (how many calendar years to draw)")
    if design == "blocks" and not float(years).is_integer():
        raise ForecastError(f"data.train_design blocks draws whole calendar years; data.train_years {years:g} "
                            "is not a whole number")
    if design != "blocks" and draw != 0:
        raise ForecastError(f"data.train_draw {draw} chooses a draw of data.train_design blocks; the "
                            f"{design} design has none")


def select_training(dates: pd.DatetimeIndex, train: tuple[int, int], first_sample: int,
                    years: float | None, design: str, draw: int) -> TrainSelection:
    """The kept training rows of the training range [a, b) (b = the first validation row).

    Args:
        dates: every row's date.
        train: the training row range [a, b) (`split_bounds`).
        first_sample: the first row that can end a window (context_length - 1).
        years: the amount of history; None keeps every row of [a, b).
        design: `trailing` or `blocks`.
        draw: the seed of the `blocks` draw.

    Raises:
        ForecastError: more blocks asked for than the training span holds whole calendar years.
    """
    a, b = train
    rows = np.arange(len(dates))
    inside = (rows >= a) & (rows < b)
    if years is None:
        kept = inside
    elif design == "trailing":
        kept = inside & (dates >= _cutoff(dates[b], years))
    else:
        chosen = drawn_years(whole_years(dates, max(a, first_sample), b), int(years), draw)
        kept = inside & np.isin(dates.year, chosen)
    return TrainSelection(design, years, draw, kept, sorted({int(y) for y in dates[kept].year}))


def _cutoff(first_val_day: pd.Timestamp, years: float) -> pd.Timestamp:
    """first_val_day - years (whole years by the calendar, fractions by days)."""
    if float(years).is_integer():
        return first_val_day - pd.DateOffset(years=int(years))
    return first_val_day - pd.Timedelta(days=round(years * DAYS_PER_YEAR))


def whole_years(dates: pd.DatetimeIndex, first: int, stop: int) -> list[int]:
    """Calendar years lying wholly in the training span: from the first sample row to the first
    validation row (a year is whole when the span starts by its Jan 7th and ends after Dec 31)."""
    start, end = dates[first], dates[stop]
    low = start.year if start <= pd.Timestamp(start.year, 1, FIRST_WEEK) else start.year + 1
    return list(range(low, end.year))


def drawn_years(candidates: list[int], n: int, draw: int) -> list[int]:
    """`n` of the candidate years: the first n of a permutation seeded by `draw`, sorted.

    Raises:
        ForecastError: fewer candidates than n.
    """
    if n > len(candidates):
        span = f"{candidates[0]}..{candidates[-1]}" if candidates else "none"
        raise ForecastError(f"data.train_years {n}: the training span holds {len(candidates)} whole calendar "
                            f"years ({span}); ask for at most {len(candidates)} blocks")
    order = np.random.default_rng(draw).permutation(len(candidates))
    return sorted(candidates[i] for i in order[:n])


def epoch_samples(kept: int, every_year: int, train_epoch: str) -> int:
    """Samples one training epoch draws: `every_year` (the all-years run's epoch, so equal
    optimizer steps per epoch) under `all_years`, else the `kept` samples once."""
    return max(kept, every_year) if train_epoch == "all_years" else kept


class RepeatedPermutations(Sampler[int]):
    """`num_samples` indices of a dataset of `n`: whole random permutations of range(n) one after
    another, the last one cut (each sample drawn equally often, +-1). Seeded like torch's
    RandomSampler (from torch's global generator, so `seed_everything` fixes it). Not a
    RandomSampler: under DDP, Lightning wraps it (DistributedSamplerWrapper) and keeps its length."""

    def __init__(self, n: int, num_samples: int) -> None:
        self.n, self.num_samples = n, num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        left = self.num_samples
        while left > 0:
            order = torch.randperm(self.n, generator=generator)[:left].tolist()
            left -= len(order)
            yield from order


def selection_summary(selection: TrainSelection, train_dates: pd.DatetimeIndex, every_year: int,
                      epoch: int) -> dict[str, Any]:
    """What fit_summary.json records of the selection: design, years, draw, kept calendar years,
    the first and last training sample, the number of samples, the all-years run's samples and
    how many samples one epoch draws (`epoch_samples`)."""
    return {"design": selection.design, "years": selection.years, "draw": selection.draw,
            "calendar_years": selection.calendar_years, "samples": len(train_dates),
            "samples_all_years": every_year, "epoch_samples": epoch,
            "first": str(train_dates[0].date()) if len(train_dates) else None,
            "last": str(train_dates[-1].date()) if len(train_dates) else None}
