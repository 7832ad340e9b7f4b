"""The training-years axis of `forecast sweep`: one study per (years, design, draw) selection.

`--train-years 2 4 8 all --designs trailing blocks --draws 3` gives, for every budget and horizon:
the trailing studies 2, 4, 8 and all years; the blocks studies 2, 4 and 8 years, draws 0, 1, 2
(`forecast.data.selection`). "all" has no blocks twin: every year drawn is every year, the same study.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from forecast.core.domains import Years
from forecast.core.errors import ForecastError
from forecast.training.config import flag_keys

ALL = "all"
TrainYears = Years | Literal["all"]  # a number of years, or every training year
SELECTION_KEYS = ("data.train_years", "data.train_design", "data.train_draw")


def selection_flags(years: Sequence[TrainYears], designs: Sequence[str], draws: int) -> list[list[str]]:
    """The data flags of every selection, in matrix order (years, then design, then draw).

    Raises:
        ForecastError: a number of blocks that is not whole, or the same selection listed twice.
    """
    out: list[list[str]] = []
    for y in years:
        if y == ALL:
            out.append(["--data.train_years=null", "--data.train_design=trailing", "--data.train_draw=0"])
            continue
        if "trailing" in designs:
            out.append([f"--data.train_years={float(y):g}", "--data.train_design=trailing", "--data.train_draw=0"])
        if "blocks" in designs:
            if not float(y).is_integer():
                raise ForecastError(f"--train-years {float(y):g} with --designs blocks: blocks are whole calendar "
                                    "years; give whole numbers")
            out += [[f"--data.train_years={int(y)}", "--data.train_design=blocks", f"--data.train_draw={k}"]
                    for k in range(draws)]
    if len({tuple(f) for f in out}) != len(out):
        raise ForecastError("--train-years lists a number of years twice")
    return out


def check_no_selection_flags(flags: Sequence[str]) -> None:
    """With --train-years the sweep sets the selection of each study; a flag may not set it too."""
    given = flag_keys(flags) & set(SELECTION_KEYS)
    if given:
        raise ForecastError(f"--{sorted(given)[0]} is set by --train-years/--designs/--draws in a sweep")
