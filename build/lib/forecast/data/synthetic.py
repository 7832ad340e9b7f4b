"""Synthetic daily series with the raw layout (`forecast.data.raw.RAW_COLUMNS`), for tests and benchmarks.

Random walks, not markets: they exercise every code path (holidays, dividends, VIX regimes)
without shipping data, and the same seed gives the same frame on every machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter


def synthetic_ohlcv(
    n: int = 600,
    start: str = "2018-01-02",
    seed: int = 0,
    dividend_every: int = 63,
    dividend_yield: float = 0.004,
) -> pd.DataFrame:
    """A raw OHLCV frame with realistic random-walk prices, `n` rows of business days from `start`.

    About 4% of weekdays are dropped as holidays (so some weeks lack their Friday or Monday).
    Adj Close follows Yahoo's convention: Close times (1 - dividend_yield) for every dividend
    AFTER the row, so the Adj Close / Close ratio steps up on each ex-dividend day.
    """
    rng = np.random.default_rng(seed)
    days = pd.bdate_range(start, periods=n + n // 5 + 10)
    days = days[rng.random(len(days)) > 0.04][:n]
    close = 100.0 * np.exp(np.cumsum(rng.normal(3e-4, 0.012, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.004, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, n)))
    ex_dividend = np.arange(n) % dividend_every == dividend_every - 1
    later = np.cumsum(ex_dividend[::-1])[::-1] - ex_dividend  # dividends strictly after each row
    return pd.DataFrame(
        {
            "Date": days.astype("datetime64[ns]"),
            "Open": open_,
            "High": high,
            "Low": low,
            "Close": close,
            "Adj Close": close * (1.0 - dividend_yield) ** later,
            "Volume": rng.integers(1_000_000, 5_000_000, n).astype("float64"),
        }
    )


def synthetic_vix(dates: pd.Series, seed: int = 1) -> pd.DataFrame:
    """A VIX-like raw frame on `dates`: mean-reverting closes crossing 15 and 25, OHLC = Close."""
    shocks = np.random.default_rng(seed).normal(0.0, 0.08, len(dates))
    # log(level / 18) is an AR(1) with coefficient 0.95: y[t] = 0.95 y[t-1] + shock[t].
    level = 18.0 * np.exp(lfilter([1.0], [1.0, -0.95], shocks))
    return pd.DataFrame(
        {
            "Date": pd.Series(dates).reset_index(drop=True),
            "Open": level,
            "High": level,
            "Low": level,
            "Close": level,
            "Adj Close": level,
            "Volume": 0.0,
        }
    )
