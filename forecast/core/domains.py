"""Option domains: the types every option of every subcommand is declared with.

An option's type states its domain (`lr: PositiveFiniteFloat`, `dropout: ClosedOpenUnitInterval`,
`num_workers: NonNegativeInt`, `seed: Seed`), so the parser refuses a value outside it at parse
time, in one line, for a flag and a config file alike; no hand check downstream repeats it.

Why not `jsonargparse.typing.PositiveInt` and friends: their parsed values are instances of
jsonargparse's own subclasses (`PositiveInt(3)`), which end up in a module's saved
hyper-parameters, and a checkpoint holding them no longer loads weights-only (the unpickler
refuses the jsonargparse class). These types are registered with jsonargparse the public way
(`register_type`) and parse to plain `int`, `float` and `str`.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from typing import Any

from jsonargparse.typing import register_type

from forecast.core.errors import ForecastError

# Seeds reach numpy's legacy seeding (Lightning's seed_everything), which takes 0 .. 2**32-1.
SEED_MAX = 2**32 - 1
# A name that becomes one file or folder name: 255 bytes is the common limit (ext4, APFS, NTFS);
# 100 leaves room for the suffixes and version numbers added to it.
NAME_MAX = 100
# Symbols: ASCII letters, digits and . ^ - _ (Yahoo's BRK-B, ^VIX); nothing Unicode case folding
# could map onto another symbol, nothing that is not safe in a file name.
SYMBOL_PATTERN = r"^\^?[A-Za-z0-9][A-Za-z0-9._-]*$"
SYMBOL_MAX = 32
# Study and run names: ASCII letters, digits and . _ + ^ - , not starting with . or - ; no separator
# and never `.` or `..`, so a name is one folder inside its parent, never a path elsewhere.
NAME_PATTERN = r"^[A-Za-z0-9^_][A-Za-z0-9._+^-]*$"
# Best checkpoints are `checkpoints/best-*.ckpt` in a run's folder (forecast.training.checkpoints finds
# them by this prefix). A checkpoint name is `best-` then ASCII letters, digits and . _ = - and
# Lightning's {epoch} / {step} fields (an integer format such as {epoch:03d} allowed): one file in
# that folder, never a path elsewhere, and no field Lightning would fill with a missing metric's 0.
BEST_PREFIX = "best"
CHECKPOINT_PATTERN = BEST_PREFIX + r"-(?:[A-Za-z0-9._=-]|\{(?:epoch|step)(?::0?[1-9]?d)?\})*"


def _number(value: Any, base: type) -> int | float:
    """`value` as `base` (int or float): bools and fractional "ints" are refused, not rounded."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a bool, not a number")
    if isinstance(value, str):
        try:
            number: int | float = int(value.strip()) if base is int else float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not {'an integer' if base is int else 'a number'}") from None
    elif isinstance(value, int | float):
        number = value
    else:
        raise ValueError(f"{value!r} is not a number")
    if base is int:
        # 1.0 is refused, not rounded: Lightning reads limit_*_batches=1.0 as "all", =1 as "one batch"
        if isinstance(number, float):
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    return float(number)


def _text(value: Any) -> str:
    """`value` as text: a string, or an integer YAML read from a name like `2024`; never None (YAML reads
    `#` or an empty value as null), a bool, a float or a collection."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{value!r} is not text")


def _domain(name: str, base: type, test: Callable[[Any], bool], says: str) -> type:
    """A type `name` whose values are the `base` values passing `test`; `says` is the domain in words.

    The class only names the domain (for the parser, `--help` and error messages); parsed values
    are plain `base` objects.
    """
    cls = type(name, (base,), {"__doc__": f"{base.__name__} {says}", "__module__": __name__})

    def deserialize(value: Any) -> Any:
        parsed = _number(value, base) if base in (int, float) else _text(value)
        if not test(parsed):
            raise ValueError(f"{value!r} is not {says}")
        return parsed

    register_type(cls, serializer=base, deserializer=deserialize)
    return cls


def _finite(low: float, high: float, low_open: bool, high_open: bool) -> Callable[[float], bool]:
    def test(v: float) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return math.isfinite(v) and above and below

    return test


def _matches(pattern: str, max_len: int = NAME_MAX) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda v: len(v) <= max_len and v.isascii() and compiled.fullmatch(v) is not None  # `$` alone lets "x\n" in


def _iso_date(v: str) -> bool:
    try:
        datetime.date.fromisoformat(v)
    except ValueError:
        return False
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None


# counts and intervals reach numpy, torch and Lightning as int64: one beyond it overflows inside them
INT64_MAX = 2**63 - 1
PositiveInt = _domain("PositiveInt", int, lambda v: 1 <= v <= INT64_MAX, "an integer >= 1 (at most 2**63-1)")
# sizes that become tensor dimensions: torch indexes with int64, but kernels and allocators fail
# far below it; 2**31-1 keeps a size a plain int32 (a model this large is refused by the memory check)
SIZE_MAX = 2**31 - 1
Size = _domain("Size", int, lambda v: 1 <= v <= SIZE_MAX, f"an integer in 1..{SIZE_MAX}")
NonNegativeInt = _domain("NonNegativeInt", int, lambda v: 0 <= v <= INT64_MAX, "an integer >= 0 (at most 2**63-1)")
# a count of rows or days added to a row index (data.gap): as a size, never past int32
NonNegativeSize = _domain("NonNegativeSize", int, lambda v: 0 <= v <= SIZE_MAX, f"an integer in 0..{SIZE_MAX}")
Seed = _domain("Seed", int, lambda v: 0 <= v <= SEED_MAX, f"an integer in 0..{SEED_MAX}")
# max_epochs, max_steps, save_top_k, num_sanity_val_steps: -1 means "no limit" / "all" in Lightning
CountOrAll = _domain("CountOrAll", int, lambda v: -1 <= v <= INT64_MAX,
                     "an integer >= -1 (-1: no limit / all; at most 2**63-1)")
PositiveFiniteFloat = _domain("PositiveFiniteFloat", float, _finite(0, math.inf, True, True), "a finite number > 0")
NonNegativeFiniteFloat = _domain("NonNegativeFiniteFloat", float, _finite(0, math.inf, False, True),
                                 "a finite number >= 0")
# memory in GB: 1e12 GB (a zettabyte) is beyond any machine, yet its bytes are a finite float
# (1e300 GB made the planner's byte count infinite); tests plan for "unlimited" with 1e9
MemoryGB = _domain("MemoryGB", float, _finite(0, 1e12, True, False), "a number of GB in (0, 1e12]")
FiniteFloat = _domain("FiniteFloat", float, math.isfinite, "a finite number")
ClosedUnitInterval = _domain("ClosedUnitInterval", float, _finite(0, 1, False, False), "a number in [0, 1]")
# dropout: p = 1 drops everything (and divides by zero in the rescale), so 1 is outside
ClosedOpenUnitInterval = _domain("ClosedOpenUnitInterval", float, _finite(0, 1, False, True),
                                 "a number in [0, 1)")
# limit_*_batches as a fraction of the batches: 0 < f <= 1
UnitFraction = _domain("UnitFraction", float, _finite(0, 1, True, False), "a number in (0, 1]")
OpenUnitInterval = _domain("OpenUnitInterval", float, _finite(0, 1, True, True), "a number in (0, 1)")
# the threshold task's rise: a fall below -100% is no price, a rise beyond +1000% in days is none either
Threshold = _domain("Threshold", float, _finite(-1, 10, True, False), "a number in (-1, 10]")
# `forecast data synthetic`: calendar years ending 2018 out of its 100-year span, and the planted
# effect's log volatility ratio (3: the quiet state's volatility is 0.35% of the mean's)
SyntheticYears = _domain("SyntheticYears", int, lambda v: 1 <= v <= 100, "a number of years in 1..100")
# A training span in years: more than any market's daily history (and years * 366 days fits every date type)
Years = _domain("Years", float, _finite(0, 1000, True, False), "a number of years in (0, 1000]")
SignalStrength = _domain("SignalStrength", float, _finite(0, 3, False, False), "a number in [0, 3]")
Symbol = _domain("Symbol", str, _matches(SYMBOL_PATTERN, SYMBOL_MAX),
                 "a symbol: up to 32 ASCII letters, digits, . _ - (a leading ^ for indices)")
Name = _domain("Name", str, _matches(NAME_PATTERN),
               f"a name: up to {NAME_MAX} ASCII letters, digits and . _ + ^ - , not starting with . or -")
Date = _domain("Date", str, _iso_date, "a date YYYY-MM-DD")
# Lightning's time limits: "DD:HH:MM:SS" (Trainer max_time, val_check_interval)
Duration = _domain("Duration", str, _matches(r"^\d{1,5}:\d{2}:\d{2}:\d{2}$", 20), "a duration DD:HH:MM:SS")
# Lightning's devices as text: "auto", "-1" (all), a count "2" or ids "0,1" / "1,"
DeviceSpec = _domain("DeviceSpec", str, _matches(r"^(auto|-1|[1-9]\d{0,2}|\d{1,3}(,\d{1,3})*,)$|^\d{1,3}(,\d{1,3})+$", 400),
                     "auto, -1, a device count or ids such as 0,1")
DeviceIds = _domain("DeviceIds", str, _matches(r"^\d{1,3}(,\d{1,3})*$", 400),
                    "CUDA device ids separated by commas, e.g. 0,1 or 0,0,1,1")
CheckpointName = _domain("CheckpointName", str, _matches(CHECKPOINT_PATTERN),
                         f"a checkpoint name: {BEST_PREFIX}- then up to {NAME_MAX} ASCII letters, digits, . _ = - "
                         "and {epoch} or {step} fields")
NonEmptyStr = _domain("NonEmptyStr", str, lambda v: v.strip() != "" and "\x00" not in v, "a non-empty text")
# where a server listens (`forecast dashboard`): a TCP port (0: the system picks a free one), a host name or address
Port = _domain("Port", int, lambda v: 0 <= v <= 65535, "a port number in 0..65535 (0: any free port)")
Host = _domain("Host", str, _matches(r"^[A-Za-z0-9.:_-]+$", 253), "a host name or IP address")


def _compile_backend(v: str) -> bool:
    import torch  # here, not at the top: parsing any other option never needs torch

    return v in torch.compiler.list_backends(exclude_tags=())


# torch.compile's backends by name ("inductor", "eager", ...), as torch lists them
CompileBackend = _domain("CompileBackend", str, _compile_backend,
                         "a torch.compile backend (torch.compiler.list_backends(exclude_tags=()))")


def domain_of(tp: type) -> str | None:
    """The domain in words of a type defined here (for messages), else None."""
    doc = getattr(tp, "__doc__", None) or ""
    return doc.split(" ", 1)[1] if getattr(tp, "__module__", None) == __name__ and " " in doc else None


def check_name(name: str, what: str) -> str:
    """`name` if it is a `Name` (one folder or file name, ASCII, no separator); else a ForecastError.

    For names that are not typed options, e.g. a study name derived from a config.
    """
    if not _matches(NAME_PATTERN)(name):
        raise ForecastError(f"{what} {name!r} is not a name: use up to {NAME_MAX} ASCII letters, digits "
                            "and . _ + ^ - , not starting with . or -")
    return name
