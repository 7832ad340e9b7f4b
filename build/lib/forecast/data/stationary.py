"""Stationary inputs: the ONE definition of the features whose scale does not drift with the price.

The baselines (`forecast.baselines`) always use them, and the data module gives them to the
network with `inputs: stationary`, so the transformer and the logistic regression can be
compared on identical inputs (`forecast report` shows which inputs each model had).

Built from a tier's unscaled columns: log returns over 1, 5 and 20 days and the last few days'
1-day returns, ranges and indicator values relative to the price (never a raw price level, whose
scale drifts out of the training range), oscillators as they are, volume relative to its 20-day
mean, VIX as a log level and its moving averages relative to it. Row t uses rows <= t only
(returns and rolling means look back), like the tier itself; the first rows' undefined returns
are 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

Inputs = Literal["tier", "stationary"]
INPUTS: tuple[str, ...] = ("tier", "stationary")
# Columns whose value is a price level: expressed relative to the close (x / close - 1).
PRICE_LEVEL = ("open", "high", "low", "dema_9", "dema_10", "dema_20", "dema_25", "dema_90", "sma_12",
               "sma_50", "sma_100", "sma_200", "vwap_20")
PER_PRICE = ("atr_14", "macd")  # price units, not levels: divided by the close
RETURN_LAGS = (1, 2, 3, 4)  # earlier days' 1-day returns (a window model also sees them in its context)
VOLUME_MEAN_DAYS = 20
VIX_SMA = ("vix_sma_10", "vix_sma_20")
# Columns consumed by a transformation above; every other column is an oscillator or a change and
# is kept as it is.
TRANSFORMED = {"close", "volume", "obv", "adosc", "vix_close", *VIX_SMA, *PRICE_LEVEL, *PER_PRICE}


def stationary_names(columns: Sequence[str]) -> list[str]:
    """Names of the stationary inputs built from a tier with these columns (no data needed).

    The order is the column order of `stationary_frame`, so `len(stationary_names(cols))` is the
    network's feature count under `inputs: stationary` before any file is read.
    """
    cols = set(columns)
    names: list[str] = []
    if "close" in cols:
        names += ["ret_1", *(f"ret_1_lag{lag}" for lag in RETURN_LAGS), "ret_5", "ret_20"]
        names += [f"{c}_rel" for c in PRICE_LEVEL if c in cols]
        names += [f"{c}_rel" for c in PER_PRICE if c in cols]
    if {"high", "low", "close"} <= cols:
        names.append("range")
    if "volume" in cols:
        names += ["volume_rel", *(f"{c}_rel" for c in ("obv", "adosc") if c in cols)]
    if "vix_close" in cols:
        names += ["vix_log", *(f"{c}_rel" for c in VIX_SMA if c in cols)]
    return names + [c for c in columns if c not in TRANSFORMED]


def stationary_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The stationary inputs of a tier's unscaled columns, one row per tier row (no NaN or inf).

    Args:
        raw: the tier's columns (prices forward-adjusted, as the tier stores them), unscaled.
    """
    out: dict[str, pd.Series] = {}
    close = raw.get("close")
    if close is not None:
        log_close = np.log(close)
        ret = log_close.diff()
        out["ret_1"] = ret
        for lag in RETURN_LAGS:
            out[f"ret_1_lag{lag}"] = ret.shift(lag)
        out["ret_5"], out["ret_20"] = log_close.diff(5), log_close.diff(20)
        for col in PRICE_LEVEL:
            if col in raw:
                out[f"{col}_rel"] = raw[col] / close - 1
        for col in PER_PRICE:
            if col in raw:
                out[f"{col}_rel"] = raw[col] / close
    if "high" in raw and "low" in raw and close is not None:
        out["range"] = (raw["high"] - raw["low"]) / close
    if "volume" in raw:
        # +1 keeps a zero-volume day (an index) finite
        mean_volume = raw["volume"].rolling(VOLUME_MEAN_DAYS, min_periods=1).mean() + 1.0
        out["volume_rel"] = np.log((raw["volume"] + 1.0) / mean_volume)
        for col in ("obv", "adosc"):
            if col in raw:
                step = raw[col].diff(5) if col == "obv" else raw[col]  # OBV is a running sum: its change
                out[f"{col}_rel"] = step / mean_volume
    if "vix_close" in raw:
        vix = raw["vix_close"].clip(lower=1e-6)
        out["vix_log"] = np.log(vix)
        for col in VIX_SMA:
            if col in raw:
                out[f"{col}_rel"] = raw[col] / vix - 1
    for col in raw.columns:
        if col not in TRANSFORMED:
            out[col] = raw[col]
    return pd.DataFrame(out, index=raw.index).replace([np.inf, -np.inf], np.nan).fillna(0.0)


def stationary_features(raw: np.ndarray, columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """[rows, G] float64 stationary inputs of a tier's unscaled values [rows, F], and their names."""
    frame = stationary_frame(pd.DataFrame(raw, columns=list(columns)))
    return frame.to_numpy(dtype=np.float64), list(frame.columns)
