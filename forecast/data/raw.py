"""Raw daily prices: validation, reading and writing, and the forward price adjustment.

A raw file `<data_dir>/raw/<SYMBOL>.parquet` holds RAW_COLUMNS: Date (datetime64[ns],
tz-naive, unique, increasing), Open/High/Low/Close as traded and Adj Close (float64, finite,
> 0), Volume (float64, >= 0; 0 where a source has none, e.g. VIX). Volume is stored as float
so that every column the feature code reads has one dtype and no integer overflow can occur.
Every bar satisfies Low <= Open, Close <= High (`repair_bars` is the one place that makes it so),
and no row is dated after today.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from forecast.core.errors import ForecastError
from forecast.data.manifest import read_verified, write_tracked
from forecast.data.paths import raw_path, storage_symbol

RAW_COLUMNS = ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
PRICE_COLUMNS = ["Open", "High", "Low", "Close", "Adj Close"]
ADJUSTED_COLUMNS = ["Date", "Open", "High", "Low", "Close", "Volume"]

# Daily bars carry a date, optionally with a midnight time and a UTC offset as pandas writes
# tz-aware yfinance frames ("2024-01-02 00:00:00-05:00"); the date part is the trading day.
_ISO_DAY = r"^(\d{4}-\d{2}-\d{2})(?:[ T]00:00(?::00(?:\.0+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
_OLDEST, _NEWEST = pd.Timestamp("1800-01-01"), pd.Timestamp("2200-01-01")
# Plausible prices (README "Data"): no traded share or index level has reached ten million
# (Berkshire A, the dearest share, trades near 7e5), and no close moves tenfold up or down in one
# day: such a number is a typo, a unit error (1e300, cents for dollars) or an unadjusted split, and
# left in, it would scale every other day's features to nothing.
MAX_PRICE = 1e7
MIN_PRICE = 1e-6  # its twin below: no quote is a millionth of a unit (1e-298 is a unit error or a broken file)
MAX_DAY_RATIO = 10.0


def _key(name: object) -> str:
    """Column names compared loosely: `Adj Close`, `adj_close` and `AdjClose` are one name."""
    return str(name).strip().lower().replace(" ", "").replace("_", "")


def _show(value: object) -> str:
    """A cell as the user would recognise it: strings quoted, numbers and NaN plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _row(position: int, dates: pd.Series | None = None) -> str:
    """`row N` (1-based, header lines not counted), with its date when it has one."""
    if dates is not None and pd.notna(dates.iloc[position]):
        return f"row {position + 1} ({dates.iloc[position].date()})"
    return f"row {position + 1}"


def _select_columns(df: pd.DataFrame, source: str, notes: list[str]) -> pd.DataFrame:
    """The RAW_COLUMNS of `df` under their canonical names; Volume 0 when absent."""
    if _key(df.index.name) == "date" and not any(_key(c) == "date" for c in df.columns):
        df = df.reset_index()  # yfinance and arch frames keep Date in the index
    by_key: dict[str, object] = {}
    for column in df.columns:
        if _key(column) in by_key:
            raise ForecastError(f"{source}: column {column!r} appears twice")
        by_key[_key(column)] = column
    missing = [c for c in RAW_COLUMNS if c != "Volume" and _key(c) not in by_key]
    if missing:
        found = ", ".join(str(c) for c in df.columns)
        raise ForecastError(f"{source}: missing column(s) {', '.join(missing)} (found: {found})")
    frame = pd.DataFrame({c: df[by_key[_key(c)]] for c in RAW_COLUMNS if _key(c) in by_key})
    if "Volume" not in frame:
        frame["Volume"] = 0.0
        notes.append("no Volume column: Volume set to 0")
    extra = [str(c) for c in df.columns if _key(c) not in {_key(r) for r in RAW_COLUMNS}]
    if extra:
        notes.append(f"ignored column(s): {', '.join(extra)}")
    return frame.reset_index(drop=True)


def _parse_dates(column: pd.Series, source: str) -> pd.Series:
    """Dates as tz-naive midnight datetime64[ns]; the first bad one raises."""
    if pd.api.types.is_datetime64_any_dtype(column):
        dates = column.dt.tz_localize(None) if column.dt.tz is not None else column
        shown = column.astype("string")
    else:
        shown = column.astype("string").str.strip()
        day = shown.str.extract(_ISO_DAY, expand=False)
        dates = pd.to_datetime(day, format="%Y-%m-%d", errors="coerce")
    bad = dates.isna() | (dates < _OLDEST) | (dates >= _NEWEST) | (dates != dates.dt.normalize())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ForecastError(
            f"{source}: {_row(i)}: unparsable date {_show(shown.iloc[i])} "
            "(expected a day such as 2024-06-28, no time of day)"
        )
    return dates.astype("datetime64[ns]").reset_index(drop=True)


def _first_bad(values: pd.DataFrame, bad: np.ndarray) -> tuple[int, str] | None:
    """(row, column) of the first True in `bad` [rows, columns], row-major; None if none."""
    rows = np.flatnonzero(bad.any(axis=1))
    if len(rows) == 0:
        return None
    i = int(rows[0])
    return i, str(values.columns[int(np.flatnonzero(bad[i])[0])])


def _parse_numbers(frame: pd.DataFrame, dates: pd.Series, source: str) -> pd.DataFrame:
    """Prices finite and > 0; Volume finite and >= 0 (missing volume becomes 0)."""
    numbers = frame[PRICE_COLUMNS + ["Volume"]].apply(pd.to_numeric, errors="coerce")
    numbers = numbers.astype("float64")
    prices = numbers[PRICE_COLUMNS].to_numpy()
    bad = _first_bad(numbers[PRICE_COLUMNS], ~np.isfinite(prices) | ~(prices > 0))
    if bad is not None:
        i, col = bad
        raise ForecastError(
            f"{source}: {_row(i, dates)}: {col} = {_show(frame[col].iloc[i])} "
            "(prices must be finite numbers > 0)"
        )
    volume = numbers["Volume"].to_numpy()
    missing = frame["Volume"].isna().to_numpy()
    bad = _first_bad(
        numbers[["Volume"]], ((~np.isfinite(volume) | (volume < 0)) & ~missing)[:, None]
    )
    if bad is not None:
        i = bad[0]
        raise ForecastError(
            f"{source}: {_row(i, dates)}: Volume = {_show(frame['Volume'].iloc[i])} "
            "(volume must be a number >= 0 or empty)"
        )
    numbers["Volume"] = np.where(missing, 0.0, volume)
    return numbers


def _check_dates(dates: pd.Series, source: str, notes: list[str]) -> np.ndarray:
    """Reject repeated dates; return the stable order that sorts the rows by date."""
    repeated = dates.duplicated(keep="first").to_numpy()
    if repeated.any():
        i = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero((dates == dates.iloc[i]).to_numpy())[0])
        raise ForecastError(f"{source}: {_row(i, dates)}: duplicate date (also row {first + 1})")
    if not dates.is_monotonic_increasing:
        notes.append("rows were not in date order: sorted by Date")
    return np.argsort(dates.to_numpy(), kind="stable")


def repair_bars(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, str]:
    """THE policy for bars outside their own range (High < Low, Open or Close outside [Low, High]).

    Such bars are real in old data (47 VIX opens in 1992-2006), so they are repaired, not refused:
    High becomes max(Open, High, Low, Close) and Low the min, the narrowest range that holds every
    price the bar reports. A High that is too low would otherwise feed the threshold label.

    Returns:
        The repaired frame (a copy), how many rows changed, and a note for the user ('' if none).
    """
    prices = frame[["Open", "High", "Low", "Close"]].to_numpy()  # [rows, 4]
    high, low = prices.max(axis=1), prices.min(axis=1)
    changed = (high != frame["High"].to_numpy()) | (low != frame["Low"].to_numpy())
    if not changed.any():
        return frame, 0, ""
    frame = frame.copy()
    frame["High"], frame["Low"] = high, low
    first = frame["Date"][changed].iloc[0].date()
    return frame, int(changed.sum()), (
        f"repaired {int(changed.sum())} bars with High < Low or Open/Close outside [Low, High] "
        f"(first {first}): High/Low widened to cover Open and Close"
    )


def _adjustment_drops(frame: pd.DataFrame, notes: list[str]) -> None:
    """Flag days where Adj Close / Close falls: dividends only ever raise it from one day to the next.

    Prices rounded to cents move the ratio by at most 0.005 / price per number (four numbers);
    a fall beyond that is a data error (or a split applied to one column only), shown with dates.
    """
    adj, close = frame["Adj Close"].to_numpy(), frame["Close"].to_numpy()
    ratio = adj / close
    rounding = 0.005 * (1 / adj[1:] + 1 / close[1:] + 1 / adj[:-1] + 1 / close[:-1])
    falls = np.flatnonzero(ratio[1:] / ratio[:-1] - 1 < -rounding) + 1  # rows t where it fell from t-1
    if len(falls):
        days = [str(d.date()) for d in frame["Date"].iloc[falls[:5]]]
        more = ", ..." if len(falls) > 5 else ""
        notes.append(
            f"warning: Adj Close / Close fell on {len(falls)} day{'s' * (len(falls) > 1)} "
            f"({', '.join(days)}{more}); "
            "no dividend does that: check the source"
        )


def _check_plausible(frame: pd.DataFrame, source: str) -> None:
    """Refuse prices above MAX_PRICE or below MIN_PRICE and closes that move more than MAX_DAY_RATIO-fold in one day,
    naming their dates (prices are already finite and > 0)."""
    prices = frame[PRICE_COLUMNS].to_numpy()  # [rows, 5]
    for bad, what in (((prices > MAX_PRICE), f"above {MAX_PRICE:g}"), ((prices < MIN_PRICE), f"below {MIN_PRICE:g}")):
        days_at = np.flatnonzero(bad.any(axis=1))
        if len(days_at):
            days = ", ".join(str(d.date()) for d in frame["Date"].iloc[days_at[:3]])
            raise ForecastError(f"{source}: prices {what} on {len(days_at)} day(s) ({days}"
                                f"{', ...' if len(days_at) > 3 else ''}): not a plausible price; fix the file")
    close = frame["Close"].to_numpy()
    ratio = close[1:] / close[:-1]  # [rows-1]: day t over day t-1
    jumps = np.flatnonzero((ratio > MAX_DAY_RATIO) | (ratio < 1 / MAX_DAY_RATIO)) + 1
    if len(jumps):
        t = int(jumps[0])
        raise ForecastError(
            f"{source}: Close moves more than {MAX_DAY_RATIO:g}x in one day on {len(jumps)} day(s), first "
            f"{frame['Date'].iloc[t].date()} ({close[t - 1]:g} -> {close[t]:g}): a typo, a unit error or an "
            "unadjusted split; fix or split-adjust the file")


def _check_not_future(dates: pd.Series, source: str) -> None:
    """A finished daily bar is dated at most today in UTC (the earliest time zone closes first)."""
    today = pd.Timestamp.now(tz="UTC").normalize().tz_localize(None)
    future = np.flatnonzero((dates > today).to_numpy())
    if len(future):
        i = int(future[0])
        raise ForecastError(f"{source}: {_row(i, dates)}: date is in the future (today is {today.date()} UTC)")


def _check(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[str], int]:
    """`check_raw`, plus how many bars `repair_bars` changed."""
    if df is None or len(df) == 0:
        raise ForecastError(f"{source}: no data rows")
    notes: list[str] = []
    frame = _select_columns(df, source, notes)
    dates = _parse_dates(frame["Date"], source)
    _check_not_future(dates, source)
    numbers = _parse_numbers(frame, dates, source)
    if 0 < (empty := int(frame["Volume"].isna().sum())):
        notes.append(f"{empty} empty Volume values set to 0")
    order = _check_dates(dates, source, notes)
    clean = pd.concat([dates.rename("Date"), numbers], axis=1)[RAW_COLUMNS]
    clean = clean.iloc[order].reset_index(drop=True)
    _check_plausible(clean, source)
    clean, repaired, note = repair_bars(clean)
    notes += [note] if note else []
    _adjustment_drops(clean, notes)
    return clean, notes, repaired


def check_raw(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, list[str]]:
    """Validate and clean a raw price frame; also return notes for the user.

    Args:
        df: a frame with the RAW_COLUMNS in any order (names compared loosely), or with
            Date as its index; Volume may be missing.
        source: what the frame came from (a file name, `yfinance SPY`), used in messages.

    Returns:
        The frame with exactly RAW_COLUMNS, sorted by date, inconsistent bars repaired (see
        `repair_bars`), index 0..n-1; and notes such as "sorted by Date", the count of repaired
        bars, or the dates where Adj Close / Close fell.

    Raises:
        ForecastError: one line naming `source` and the first bad row (bad or future date,
            bad number, repeated date), or the dates of implausible prices (above MAX_PRICE, or a
            close more than MAX_DAY_RATIO-fold away from the day before).
    """
    return _check(df, source)[:2]


def validate_raw(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The cleaned, sorted frame (see `check_raw`); raises ForecastError on bad input."""
    return check_raw(df, source)[0]


def read_raw(data_dir: str | os.PathLike, symbol: str) -> pd.DataFrame:
    """The raw frame of `symbol` from `<data_dir>/raw/<SYMBOL>.parquet`.

    Raises:
        ForecastError: when the file is missing, does not match raw/manifest.json (md5), or is
            not a raw price file.
    """
    path = raw_path(data_dir, symbol)
    if not path.is_file():
        raise ForecastError(
            f"no raw data for {storage_symbol(symbol)} at {path}: "
            "run `forecast data download`, `import` or `sample` first"
        )
    remedy = (
        f"write {storage_symbol(symbol)} again with `forecast data download`, `import` or `sample`"
    )
    frame = read_verified(data_dir, "raw", path, remedy)
    if list(frame.columns) != RAW_COLUMNS:
        raise ForecastError(f"{path}: columns {list(frame.columns)} are not {RAW_COLUMNS}")
    return frame


def write_raw(
    data_dir: str | os.PathLike, symbol: str, df: pd.DataFrame, source: str, sample: bool = False
) -> dict[str, Any]:
    """Validate `df` and write it as the raw file of `symbol`, updating raw/manifest.json.

    Nothing is written when validation fails; the parquet file and the manifest are each
    replaced atomically.

    Args:
        data_dir: the data directory.
        symbol: the symbol (`^VIX` is stored as `VIX`).
        df: the prices (see `check_raw`).
        source: where they came from, recorded in the manifest and used in messages.
        sample: True for the offline sample data shipped with `arch`.

    Returns:
        The manifest entry, whose `notes` list what validation reported.
    """
    frame, notes, repaired = _check(df, source)
    return write_tracked(
        data_dir,
        "raw",
        raw_path(data_dir, symbol),
        frame,
        symbol=storage_symbol(symbol),
        source=source,
        sample=sample,
        notes=notes,
        repaired_bars=repaired,
    )


def forward_adjust(raw: pd.DataFrame) -> pd.DataFrame:
    """Total-return prices adjusted forward from the first row, with raw Volume.

    O/H/L/C are multiplied by (Adj Close / Close) / (Adj Close / Close of the first row).
    Yahoo's Adj Close / Close at row t is the product of the dividend factors of every
    dividend AFTER t up to the download date, so the ratio of two rows holds only the
    dividends paid between them: the result at row t uses dividends up to t and nothing later,
    and does not change when later rows are added. Plain Adj Close would fold later dividends
    into earlier prices.

    Args:
        raw: a raw frame (RAW_COLUMNS).

    Returns:
        Date, Open, High, Low, Close, Volume, row-aligned with `raw` (same index).
    """
    ratio = raw["Adj Close"].to_numpy(dtype="float64") / raw["Close"].to_numpy(dtype="float64")
    factor = ratio / ratio[0] if len(ratio) else ratio
    out = pd.DataFrame({"Date": raw["Date"]}, index=raw.index)
    for column in ("Open", "High", "Low", "Close"):
        out[column] = raw[column].to_numpy(dtype="float64") * factor
    out["Volume"] = raw["Volume"].to_numpy(dtype="float64")
    return out
