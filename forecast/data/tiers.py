"""Feature tiers: a registry of named, versioned column sets and the builders that make them.

Every indicator comes from TA-Lib, computed on total-return prices adjusted forward from the
first row (`forward_adjust`), so a value at day t uses prices and dividends up to t only.

Choices, stated once:
- Weekly indicators (`*_w`) use completed weeks only. Weekly bars are Monday-to-Friday
  calendar weeks (ISO weeks); a week's close is its last trading day's close. A daily row
  sees the value of the last week that ENDS BEFORE THE ROW'S OWN WEEK BEGINS, so a weekly value
  changes on the first trading day of the following week. That is provably causal without
  knowing the exchange calendar (a Thursday before a Good Friday holiday does not know yet
  that it closes its week); the price is a few hours' delay once a week.
- Volume features (OBV, ADOSC, VWAP) use forward-adjusted prices with raw Volume (Yahoo's
  volume is split-adjusted already; dividends do not change share counts). When 20 days
  have no volume at all (an index such as VIX), VWAP falls back to the mean typical price.
- Bollinger %B is 0.5 when the bands have zero width (20 equal closes).
- VIX features: VIX closes are joined onto the symbol's trading days over the range both
  cover; a symbol day without a VIX close takes the last VIX close before it (as-of join),
  for at most MAX_VIX_FILL trading days in a row. Rolling VIX windows count symbol trading
  days. Changes are relative (0.05 = +5%). Percentile = share of the last 60 closes (today
  included) at or below today's; z-score uses the population std of the last 20 closes.

Adding a tier: write a builder, add a `Tier` to `TIERS`, add a test. Bump a tier's
`version` whenever its builder's output changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import talib
from numpy.lib.stride_tricks import sliding_window_view

from forecast.core.errors import ForecastError
from forecast.core.files import md5_file
from forecast.data.manifest import load_manifest, write_tracked
from forecast.data.paths import raw_path, relative, storage_symbol, tier_path
from forecast.data.raw import forward_adjust, read_raw, validate_raw

MAX_VIX_FILL = 3  # trading days a VIX close may be carried forward (holidays, missing prints)

A20_COLUMNS = (
    "dema_9",
    "dema_10",
    "dema_20",
    "dema_25",
    "dema_90",
    "sma_12",
    "sma_50",
    "sma_100",
    "sma_200",
    "rsi_14",
    "rsi_14_w",
    "stochrsi_k",
    "stochrsi_k_w",
    "macd",
    "obv",
    "adosc",
    "atr_14",
    "adx_14",
    "bb_pctb",
    "vwap_20",
)
OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")  # forward-adjusted prices, raw volume
VIX_COLUMNS = (
    "vix_close",
    "vix_sma_10",
    "vix_sma_20",
    "vix_pct_60",
    "vix_z_20",
    "vix_regime",
    "vix_chg_1",
    "vix_chg_5",
)

Report = dict[str, Any]
Builder = Callable[[pd.DataFrame, "pd.DataFrame | None", Report], pd.DataFrame]


@dataclass(frozen=True)
class Tier:
    """A named feature set.

    Attributes:
        name: registry key and file suffix (`SPY_a25.parquet`).
        version: bumped whenever the builder's output changes; recorded in the manifest.
        columns: the feature columns in order (Date excluded).
        needs_vix: whether `build_tier` needs VIX prices.
        builder: (raw, vix, report) -> Date + columns for every usable row, NaN in warm-up;
            it may add facts for the user to `report`.
        description: one line for `forecast data info` and `--help`.
    """

    name: str
    version: int
    columns: tuple[str, ...]
    needs_vix: bool
    builder: Builder
    description: str = ""


# ---------------------------------------------------------------- weekly bars


def week_starts(dates: pd.Series) -> np.ndarray:
    """The Monday of each date's calendar (ISO) week, as datetime64[D]."""
    days = dates.to_numpy().astype("datetime64[D]")
    # Day 0 of the epoch (1970-01-01) was a Thursday, weekday 3 counting Monday as 0.
    return days - (days.astype("int64") + 3) % 7


def completed_weekly(
    dates: pd.Series, close: np.ndarray, indicator: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """`indicator` on weekly closes, mapped back to days using completed weeks only.

    Args:
        dates: the daily dates, increasing.
        close: the daily closes [rows].
        indicator: weekly closes [weeks] -> values [weeks].

    Returns:
        [rows]: each day gets the value of the last week that ended before its own week
        began (NaN before the first such week).
    """
    starts = week_starts(dates)
    last_of_week = np.r_[starts[1:] != starts[:-1], True]
    weeks, weekly = starts[last_of_week], indicator(close[last_of_week])
    # weeks[k] < starts[i] for k < j: week j-1 is the last one that began before day i's week.
    j = np.searchsorted(weeks, starts, side="left") - 1
    return np.where(j >= 0, weekly[np.maximum(j, 0)], np.nan)


# ---------------------------------------------------------------- indicators


def _rsi(close: np.ndarray) -> np.ndarray:
    return talib.RSI(close, timeperiod=14)


def _stochrsi_k(close: np.ndarray) -> np.ndarray:
    fastk, _fastd = talib.STOCHRSI(close, timeperiod=14, fastk_period=5, fastd_period=3)
    return fastk


def _percent_b(close: np.ndarray) -> np.ndarray:
    upper, _middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2.0, nbdevdn=2.0)
    width = upper - lower
    pctb = (close - lower) / np.where(width > 0, width, 1.0)
    return np.where(width > 0, pctb, np.where(np.isnan(width), np.nan, 0.5))


def _vwap(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    typical = (high + low + close) / 3.0
    dollars, shares = talib.SUM(typical * volume, 20), talib.SUM(volume, 20)
    return np.where(shares > 0, dollars / np.where(shares > 0, shares, 1.0), talib.SMA(typical, 20))


def a20_features(adjusted: pd.DataFrame) -> pd.DataFrame:
    """The 20 TA-Lib indicators of tier a20, row-aligned with `adjusted`.

    Args:
        adjusted: `forward_adjust(raw)`: Date, Open, High, Low, Close, Volume.

    Returns:
        A20_COLUMNS as float64, NaN during each indicator's warm-up.
    """
    # No a20 indicator reads the open.
    h, lo, c, v = (
        adjusted[k].to_numpy(dtype="float64") for k in ("High", "Low", "Close", "Volume")
    )
    dates = adjusted["Date"]
    features = {f"dema_{n}": talib.DEMA(c, timeperiod=n) for n in (9, 10, 20, 25, 90)}
    features |= {f"sma_{n}": talib.SMA(c, timeperiod=n) for n in (12, 50, 100, 200)}
    features |= {
        "rsi_14": _rsi(c),
        "rsi_14_w": completed_weekly(dates, c, _rsi),
        "stochrsi_k": _stochrsi_k(c),
        "stochrsi_k_w": completed_weekly(dates, c, _stochrsi_k),
        "macd": talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)[0],
        "obv": talib.OBV(c, v),
        "adosc": talib.ADOSC(h, lo, c, v, fastperiod=3, slowperiod=10),
        "atr_14": talib.ATR(h, lo, c, timeperiod=14),
        "adx_14": talib.ADX(h, lo, c, timeperiod=14),
        "bb_pctb": _percent_b(c),
        "vwap_20": _vwap(h, lo, c, v),
    }
    return pd.DataFrame(
        {k: features[k] for k in A20_COLUMNS}, index=adjusted.index, dtype="float64"
    )


# ---------------------------------------------------------------- VIX


def _run_lengths(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start position, length) of every run of True in `missing`."""
    starts = np.flatnonzero(missing & ~np.r_[False, missing[:-1]])
    run = np.cumsum(missing & ~np.r_[False, missing[:-1]])  # run number of each position
    return starts, np.bincount(run[missing], minlength=len(starts) + 1)[1:]


def join_vix(dates: pd.Series, vix: pd.DataFrame, report: Report) -> tuple[np.ndarray, np.ndarray]:
    """VIX closes on the symbol's trading days over the range both series cover.

    Args:
        dates: the symbol's dates, increasing.
        vix: a raw VIX frame (Date, Close, ...).
        report: receives `vix_range`, `vix_ffilled_days` and `vix_ffilled_dates`.

    Returns:
        (in_range [rows] bool mask over `dates`, closes [in-range rows]).

    Raises:
        ForecastError: when the series do not overlap, or VIX lacks more than MAX_VIX_FILL
            trading days in a row inside the common range.
    """
    first, last = max(dates.iloc[0], vix["Date"].iloc[0]), min(dates.iloc[-1], vix["Date"].iloc[-1])
    if first > last:
        raise ForecastError(
            f"VIX ({vix['Date'].iloc[0].date()}..{vix['Date'].iloc[-1].date()}) and the symbol "
            f"({dates.iloc[0].date()}..{dates.iloc[-1].date()}) share no dates"
        )
    in_range = ((dates >= first) & (dates <= last)).to_numpy()
    days = dates[in_range]
    missing = ~days.isin(vix["Date"]).to_numpy()
    starts, lengths = _run_lengths(missing)
    if len(lengths) and lengths.max() > MAX_VIX_FILL:
        k = int(np.argmax(lengths > MAX_VIX_FILL))
        raise ForecastError(
            f"VIX has no close for {lengths[k]} trading days in a row from "
            f"{days.iloc[starts[k]].date()} (at most {MAX_VIX_FILL} are forward-filled)"
        )
    joined = pd.merge_asof(
        days.to_frame("Date"), vix[["Date", "Close"]], on="Date", direction="backward"
    )
    filled = days[missing]
    report.update(
        vix_range=[str(days.iloc[0].date()), str(days.iloc[-1].date())],
        vix_ffilled_days=int(missing.sum()),
        vix_ffilled_dates=[str(d.date()) for d in filled],
    )
    return in_range, joined["Close"].to_numpy(dtype="float64")


def _lagged_change(x: np.ndarray, lag: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[lag:] = x[lag:] / x[:-lag] - 1.0
    return out


def _windowed(x: np.ndarray, n: int, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`reduce` over each trailing window of n values ([rows-n+1, n] -> [rows-n+1]); NaN first."""
    out = np.full_like(x, np.nan)
    if len(x) >= n:
        out[n - 1 :] = reduce(sliding_window_view(x, n))
    return out


def vix_features(close: np.ndarray) -> dict[str, np.ndarray]:
    """The 8 VIX features from VIX closes on the symbol's trading days [rows]."""
    pct = _windowed(close, 60, lambda w: (w <= w[:, -1:]).mean(axis=1))
    mean20 = _windowed(close, 20, lambda w: w.mean(axis=1))
    std20 = _windowed(close, 20, lambda w: w.std(axis=1))
    z = np.where(
        std20 > 0,
        (close - mean20) / np.where(std20 > 0, std20, 1.0),
        np.where(np.isnan(std20), np.nan, 0.0),
    )
    return {
        "vix_close": close,
        "vix_sma_10": talib.SMA(close, timeperiod=10),
        "vix_sma_20": talib.SMA(close, timeperiod=20),
        "vix_pct_60": pct,
        "vix_z_20": z,
        "vix_regime": np.select([close < 15.0, close <= 25.0], [0.0, 1.0], 2.0),
        "vix_chg_1": _lagged_change(close, 1),
        "vix_chg_5": _lagged_change(close, 5),
    }


# ---------------------------------------------------------------- builders


def _build_a20(raw: pd.DataFrame, vix: pd.DataFrame | None, report: Report) -> pd.DataFrame:
    adjusted = forward_adjust(raw)
    return pd.concat([adjusted[["Date"]], a20_features(adjusted)], axis=1)


def _build_a25(raw: pd.DataFrame, vix: pd.DataFrame | None, report: Report) -> pd.DataFrame:
    adjusted = forward_adjust(raw)
    ohlcv = adjusted[["Open", "High", "Low", "Close", "Volume"]].set_axis(
        list(OHLCV_COLUMNS), axis=1
    )
    return pd.concat([adjusted[["Date"]], ohlcv, a20_features(adjusted)], axis=1)


def _build_c(raw: pd.DataFrame, vix: pd.DataFrame | None, report: Report) -> pd.DataFrame:
    assert vix is not None  # build_tier checks needs_vix
    # Symbol indicators warm up on the symbol's whole history, then rows leave the VIX range.
    base = _build_a25(raw, None, report)
    in_range, closes = join_vix(base["Date"], vix, report)
    base = base[in_range].reset_index(drop=True)
    return pd.concat([base, pd.DataFrame(vix_features(closes))], axis=1)


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier("a20", 1, A20_COLUMNS, False, _build_a20, "20 TA-Lib indicators"),
        Tier(
            "a25",
            1,
            OHLCV_COLUMNS + A20_COLUMNS,
            False,
            _build_a25,
            "forward-adjusted OHLC, volume and the 20 a20 indicators (default)",
        ),
        Tier(
            "c",
            1,
            OHLCV_COLUMNS + A20_COLUMNS + VIX_COLUMNS,
            True,
            _build_c,
            "a25 plus 8 VIX features",
        ),
    )
}
DEFAULT_TIER = "a25"


def get_tier(name: str) -> Tier:
    """The registered tier `name`.

    Raises:
        ForecastError: for an unknown name, listing the known ones.
    """
    if name not in TIERS:
        raise ForecastError(f"unknown tier {name!r} (known: {', '.join(TIERS)})")
    return TIERS[name]


def _drop_warmup(frame: pd.DataFrame, tier: Tier, report: Report) -> pd.DataFrame:
    """Drop the leading rows where some feature is still warming up; no NaN may remain."""
    values = frame[list(tier.columns)].to_numpy(dtype="float64")
    finite = np.isfinite(values)
    complete = finite.all(axis=1)
    if not complete.any():
        raise ForecastError(
            f"tier {tier.name}: no row has every feature ({len(frame)} rows in; "
            "the longest indicator needs about 200 rows of warm-up)"
        )
    start = int(np.argmax(complete))
    bad = ~finite[start:]
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ForecastError(
            f"tier {tier.name}: {tier.columns[col]} is not finite on "
            f"{frame['Date'].iloc[start + row].date()} after the warm-up"
        )
    report["warmup_rows"] = start
    out = frame.iloc[start:].reset_index(drop=True)
    return out.astype({c: "float64" for c in tier.columns})


def build_tier_report(
    name: str, raw: pd.DataFrame, vix: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, Report]:
    """`build_tier` plus what the build found (warm-up rows, VIX range and filled days)."""
    tier = get_tier(name)
    if tier.needs_vix and vix is None:
        raise ForecastError(f"tier {name} needs VIX prices (--vix SYMBOL)")
    raw = validate_raw(raw, "symbol prices")
    vix = validate_raw(vix, "VIX prices") if tier.needs_vix else None
    report: Report = {}
    frame = tier.builder(raw, vix, report)
    if list(frame.columns) != ["Date", *tier.columns]:  # a builder bug, not a user mistake
        raise AssertionError(f"tier {name} built {list(frame.columns)}")
    return _drop_warmup(frame, tier, report), report


def build_tier(name: str, raw: pd.DataFrame, vix: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features of tier `name` from raw prices.

    Args:
        name: a key of TIERS.
        raw: the symbol's raw prices (RAW_COLUMNS).
        vix: raw VIX prices, for tiers with `needs_vix`.

    Returns:
        Date + the tier's columns (float64), warm-up rows dropped, no NaN.
    """
    return build_tier_report(name, raw, vix)[0]


def _is_sample(data_dir: str | os.PathLike, symbols: list[str]) -> bool:
    entries = load_manifest(data_dir, "raw")
    keys = [relative(data_dir, raw_path(data_dir, s)) for s in symbols]
    return any(entries.get(k, {}).get("sample", False) for k in keys)


def build_and_write(
    data_dir: str | os.PathLike,
    symbol: str,
    tier: str,
    vix_symbol: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Build tier `tier` of `symbol` from raw files and write it with its manifest entry.

    Args:
        data_dir: the data directory.
        symbol: the symbol whose raw file is read.
        tier: a key of TIERS.
        vix_symbol: the raw symbol holding VIX (default `VIX` for tiers that need it).
        echo: receives one line per fact worth telling the user (rows, range, VIX fills).

    Returns:
        The path written, `<data_dir>/processed/<SYMBOL>_<tier>.parquet`.
    """
    spec = get_tier(tier)
    if spec.needs_vix:
        vix_symbol = vix_symbol or "VIX"
    elif vix_symbol:
        raise ForecastError(
            f"tier {tier} uses no VIX; drop --vix (tiers with VIX: "
            f"{', '.join(t.name for t in TIERS.values() if t.needs_vix)})"
        )
    symbols = [storage_symbol(symbol)] + ([storage_symbol(vix_symbol)] if vix_symbol else [])
    raw = read_raw(data_dir, symbol)
    vix = read_raw(data_dir, vix_symbol) if vix_symbol else None
    sources = {s: md5_file(raw_path(data_dir, s)) for s in symbols}
    frame, report = build_tier_report(tier, raw, vix)
    path = tier_path(data_dir, symbol, tier)
    entry = write_tracked(
        data_dir,
        "processed",
        path,
        frame,
        symbol=symbols[0],
        tier=tier,
        tier_version=spec.version,
        source="forecast data build",
        sources=sources,
        sample=_is_sample(data_dir, symbols),
        build=report,
    )
    if echo:
        _tell(echo, entry, report)
    return path


def _tell(echo: Callable[[str], None], entry: dict[str, Any], report: Report) -> None:
    echo(
        f"wrote {entry['path']}: {entry['rows']} rows, {entry['first']}..{entry['last']}, "
        f"{len(entry['columns']) - 1} features, {report['warmup_rows']} warm-up rows dropped"
    )
    if "vix_range" in report:
        first, last = report["vix_range"]
        dates = report["vix_ffilled_dates"]
        shown = ", ".join(dates[:10]) + (", ..." if len(dates) > 10 else "")
        echo(
            f"VIX joined on the symbol's trading days {first}..{last}; "
            f"{report['vix_ffilled_days']} days forward-filled" + (f" ({shown})" if dates else "")
        )
