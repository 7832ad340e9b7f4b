"""Where data lives: one data directory with `raw/` and `processed/` below it.

Every `forecast data` command takes `--data-dir`; without it the `FORECAST_DATA_DIR`
environment variable, and without that `./data`, is used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from forecast.core.domains import SYMBOL_MAX, SYMBOL_PATTERN
from forecast.core.errors import ForecastError

DATA_DIR_ENV = "FORECAST_DATA_DIR"
DEFAULT_DATA_DIR = "data"
RAW_MANIFEST = "raw/manifest.json"
PROCESSED_MANIFEST = "processed/manifest.json"

# Symbols become file names, so only characters that are safe in one are allowed: ASCII letters,
# digits, `.`, `_`, `-` and a leading `^` for indices (BRK-B, ^VIX). The check runs on the name as
# given, before upper-casing: Unicode case mapping turns `ﬀ` into `FF` and `ı` into `I`, and such a
# name would silently replace another symbol's data.
_SYMBOL = re.compile(SYMBOL_PATTERN)


def resolve_data_dir(arg: str | os.PathLike | None) -> Path:
    """The data directory: `arg`, else $FORECAST_DATA_DIR, else ./data.

    Args:
        arg: the `--data-dir` value, or None when it was not given.
    """
    if arg is not None and str(arg) != "":
        return Path(arg)
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def storage_symbol(symbol: str) -> str:
    """The name a symbol is stored under: upper case, a leading `^` dropped (`^VIX` -> `VIX`).

    Raises:
        ForecastError: when the symbol has characters that do not belong in a file name.
    """
    name = symbol  # as given: no stripping, the same rule as the --symbol option's type
    if not (name.isascii() and _SYMBOL.fullmatch(name) and len(name) <= SYMBOL_MAX):
        raise ForecastError(
            f"bad symbol {symbol!r}: use up to {SYMBOL_MAX} ASCII letters, digits and . _ - (a leading ^ for indices)"
        )
    return name.upper().removeprefix("^")


def raw_path(data_dir: str | os.PathLike, symbol: str) -> Path:
    """`<data_dir>/raw/<SYMBOL>.parquet`."""
    return Path(data_dir) / "raw" / f"{storage_symbol(symbol)}.parquet"


def tier_path(data_dir: str | os.PathLike, symbol: str, tier: str) -> Path:
    """`<data_dir>/processed/<SYMBOL>_<tier>.parquet`."""
    return Path(data_dir) / "processed" / f"{storage_symbol(symbol)}_{tier}.parquet"


def relative(data_dir: str | os.PathLike, path: str | os.PathLike) -> str:
    """`path` relative to the data directory, with `/` separators (the manifests' keys)."""
    return Path(path).relative_to(Path(data_dir)).as_posix()
