"""Where raw prices come from: Yahoo (yfinance), Yahoo-layout CSV files, the `arch` sample.

Each source returns a frame that `forecast.data.raw.check_raw` accepts; writing is the
caller's business, so every input can be validated before anything touches the disk.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forecast.core.errors import ForecastError
from forecast.data.paths import storage_symbol

ATTEMPTS = 4
BASE_DELAY_S = 1.0  # backoff 1, 2, 4 s (+ up to 1 s jitter): long enough for Yahoo's rate limit


def _key(name: object) -> str:
    return str(name).strip().lower().replace(" ", "").replace("_", "")


def flatten_yahoo(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """One ticker's prices from a yfinance frame, with flat columns and Date as a column.

    yfinance >= 0.2.51 returns two-level columns (Price, Ticker) even for one ticker, or
    (Ticker, Price) with group_by="ticker"; older versions and CSV files have flat columns.

    Args:
        frame: what `yf.download` returned (Date in the index) or a parsed CSV.
        ticker: the ticker to keep when the frame holds several (`^VIX` matches `VIX`).

    Raises:
        ForecastError: when the frame has several tickers and `ticker` is not one of them.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        if frame.columns.nlevels != 2:
            raise ForecastError(
                f"{ticker}: expected two column levels, got {frame.columns.nlevels}"
            )
        # The price level is the one that names Close; the other one names tickers.
        level = 0 if "close" in {_key(v) for v in frame.columns.get_level_values(0)} else 1
        tickers = list(dict.fromkeys(frame.columns.get_level_values(1 - level)))
        wanted = [t for t in tickers if storage_symbol(str(t)) == storage_symbol(ticker)]
        if len(tickers) == 1:
            wanted = tickers
        if not wanted:
            raise ForecastError(
                f"{ticker}: not among the tickers in the data ({', '.join(map(str, tickers))})"
            )
        # yfinance puts all tickers on the union of their dates: rows that are empty for
        # this ticker are days it did not trade, not missing prices.
        frame = frame.xs(wanted[0], axis=1, level=1 - level).dropna(how="all")
        frame.columns = [str(c) for c in frame.columns]
    if _key(frame.index.name) == "date":
        frame = frame.reset_index()
    return frame


def _end_exclusive(end: str | None) -> str | None:
    """yfinance's `end` is exclusive; ours is inclusive, so add a day."""
    if end is None:
        return None
    return (_parse_day(end, "--end") + pd.Timedelta(days=1)).date().isoformat()


def _parse_day(text: str, what: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text).normalize()
    except ValueError as err:
        raise ForecastError(f"{what} {text!r}: not a date (use YYYY-MM-DD)") from err


def backoff_s(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential, plus jitter.

    The jitter spreads out several processes that hit the same rate limit at once.
    """
    return BASE_DELAY_S * 2 ** (attempt - 1) + rng.uniform(0.0, BASE_DELAY_S)


class _Collect(logging.Handler):
    """Keeps log messages in a list instead of printing them."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _quiet_yfinance() -> Iterator[list[str]]:
    """Collect yfinance's log lines (and silence its pandas warnings) while the block runs.

    yfinance reports failures by logging several lines to stderr; our error names the last
    one in a single line instead.
    """
    logger = logging.getLogger("yfinance")
    messages: list[str] = []
    saved = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [_Collect(messages)], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield messages
    finally:
        logger.handlers, logger.propagate = saved


def fetch_yahoo(
    symbol: str,
    start: str | None = None,
    end: str | None = None,
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
    echo: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Daily prices of `symbol` from Yahoo, as traded (auto_adjust=False) plus Adj Close.

    yfinance reports most failures (rate limits, network) as an empty frame rather than an
    exception, so both an exception and an empty result count as a failed attempt.

    Args:
        symbol: Yahoo's ticker (`SPY`, `^VIX`).
        start: first day (YYYY-MM-DD); None for the whole history.
        end: last day, inclusive; None for today.
        attempts: how many times to ask before giving up.
        sleep: called with the seconds to wait between attempts (tests pass a recorder).
        rng: source of the jitter.
        echo: told about each failed attempt before the wait.

    Returns:
        A flat frame with Date as a column (not yet validated).

    Raises:
        ForecastError: when every attempt failed or returned no rows.
    """
    import yfinance as yf  # slow to import; only `download` needs it

    sleep = sleep or time.sleep
    rng = rng or random.Random()
    kwargs: dict[str, object] = {
        "end": _end_exclusive(end),
        "auto_adjust": False,
        "actions": False,
        "progress": False,
        "threads": False,
    }
    if start is None:
        kwargs["period"] = "max"
    else:
        kwargs["start"] = _parse_day(start, "--start").date().isoformat()
    last = "empty result"
    for attempt in range(attempts):
        if attempt:
            wait = backoff_s(attempt, rng)
            if echo:
                echo(
                    f"{symbol}: attempt {attempt} of {attempts} failed ({last}); retry in {wait:.1f} s"
                )
            sleep(wait)
        with _quiet_yfinance() as logged:
            try:
                frame = yf.download(symbol, **kwargs)
            except Exception as err:  # yfinance raises many types; any may be transient
                frame, logged[:] = None, [f"{type(err).__name__}: {err}"]
        if frame is not None and not frame.dropna(how="all").empty:
            return flatten_yahoo(frame, symbol)
        last = (logged[-1] if logged else "empty result")[:200]
    raise ForecastError(
        f"yfinance gave no data for {symbol} in {attempts} attempts (last: {last}); "
        "check the symbol, the dates and the network"
    )


CSV_ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark spreadsheet programs write


def _head(path: Path, n: int) -> list[list[str]]:
    with open(path, newline="", encoding=CSV_ENCODING) as f:
        return list(itertools.islice(csv.reader(f), n))


def _is_three_header(head: list[list[str]]) -> bool:
    """pandas writes yfinance's (Price, Ticker) columns as three header lines."""
    return (
        len(head) == 3
        and bool(head[0])
        and _key(head[0][0]) == "price"
        and bool(head[1])
        and _key(head[1][0]) == "ticker"
        and bool(head[2])
        and _key(head[2][0]) == "date"
    )


def _read_three_header(path: Path, head: list[list[str]], symbol: str) -> pd.DataFrame:
    body = pd.read_csv(path, header=None, skiprows=3, dtype={0: str}, float_precision="round_trip",
                       encoding=CSV_ENCODING)
    if body.shape[1] != len(head[0]) or len(head[1]) != len(head[0]):
        raise ValueError("header lines and rows have different numbers of fields")
    body = body.set_index(0).rename_axis("Date")
    body.columns = pd.MultiIndex.from_arrays([head[0][1:], head[1][1:]], names=["Price", "Ticker"])
    return flatten_yahoo(body, symbol)


def _read_one_header(path: Path) -> pd.DataFrame:
    names = pd.read_csv(path, nrows=0, encoding=CSV_ENCODING).columns
    dates = [c for c in names if _key(c) == "date"]
    # Dates stay text (validation parses them strictly); round_trip parses every price exactly
    # as written, so an imported file matches its CSV digit for digit.
    return pd.read_csv(path, dtype={c: str for c in dates}, float_precision="round_trip", encoding=CSV_ENCODING)


def read_price_csv(path: str | os.PathLike, symbol: str) -> pd.DataFrame:
    """A Yahoo-layout CSV (any column order) or pandas' three-header-line yfinance CSV.

    Args:
        path: the file.
        symbol: the ticker to take from a three-header file that holds several.

    Returns:
        A flat frame (not yet validated).

    Raises:
        ForecastError: when the file is missing, empty or cannot be read as CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ForecastError(f"{path}: empty file")
    try:
        head = _head(path, 3)
        if _is_three_header(head):
            return _read_three_header(path, head, symbol)
        return _read_one_header(path)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        # pandas' ParserError and EmptyDataError are ValueErrors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ForecastError(f"{path}: not a readable CSV file ({reason})") from err


@dataclass(frozen=True)
class SampleSeries:
    """One offline sample series: the symbol it is stored as, its prices and where they came from."""

    symbol: str
    frame: pd.DataFrame
    source: str


def sample_series() -> list[SampleSeries]:
    """The real daily series that the `arch` package ships, in raw layout.

    SP500: the S&P 500 index 1999-2018 with OHLC, Adj Close (= Close, an index pays no
    dividends) and Volume. VIX: closes only, 2014-2019; Open, High, Low and Adj Close are set
    to Close and Volume to 0, and its empty weekday-holiday rows are dropped; the source
    string records both in the manifest.
    """
    from arch.data import sp500, vix

    sp = sp500.load().rename_axis("Date").reset_index()
    closes = vix.load()["vix"].astype("float64")
    holidays = int(closes.isna().sum())
    closes = closes.dropna()  # the series is on a weekday calendar: NaN on market holidays
    vix_frame = pd.DataFrame(
        {
            "Date": closes.index,
            "Open": closes.to_numpy(),
            "High": closes.to_numpy(),
            "Low": closes.to_numpy(),
            "Close": closes.to_numpy(),
            "Adj Close": closes.to_numpy(),
            "Volume": 0.0,
        }
    )
    return [
        SampleSeries("SP500", sp, "sample: arch.data.sp500 (S&P 500 index, daily OHLCV)"),
        SampleSeries(
            "VIX",
            vix_frame,
            "sample: arch.data.vix (VIX closes only; Open/High/Low/Adj Close set to Close, "
            f"Volume 0; {holidays} empty holiday rows dropped)",
        ),
    ]
