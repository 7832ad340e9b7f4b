"""Synthetic daily series with the raw layout (`forecast.data.raw.RAW_COLUMNS`).

`synthetic_ohlcv` / `synthetic_vix`, for tests and benchmarks: random walks, not markets; they
exercise every code path (holidays, dividends, VIX regimes) without shipping data.

`control_series`, for `forecast data synthetic`: the positive and negative controls of a scaling
study (docs/controls.md). `planted`: tomorrow's volatility, and so the +1% touch, follows the XOR
of today's and yesterday's return signs; at the default strength 0.8 the Bayes-optimal AUROC at
horizon 1 is 0.725 (`bayes_auroc`). `none`: the same moves shuffled in time, no signal.

The same seed gives the same frame on every machine.
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


# ------------------------------------------------------------------ planted and null controls
#
# `forecast data synthetic`: a price series whose next-day +1% touch has a known, learnable,
# nonlinear cause (`planted`), or none (`none`), dated like the offline sample. Every constant is
# the S&P 500 sample's (1999-2018), so the series looks like the demo's data to every feature.

SIGMA = 0.012  # daily std of log(Close[t+1] / Close[t]) (sample: 0.0120)
GAP = 0.0016  # std of log(Open[t+1] / Close[t]), the overnight gap (sample: 0.0016)
UPPER_WICK = 0.0025  # mean of log(High / max(Open, Close)) (sample: 0.0025)
LOWER_WICK = 0.0031  # mean of log(min(Open, Close) / Low) (sample: 0.0031)
LAST_YEAR = 2018  # the offline sample ends 2018-12-31
SPAN_YEARS = 100  # one seed's moves span 1919-2018; `years` keeps the last ones (see control_series)
DEFAULT_STRENGTH = 0.8
TOUCH = 0.01  # the demo's threshold task: High[t+1] >= Close[t] * 1.01


def trading_days(years: int, last_year: int = LAST_YEAR) -> pd.DatetimeIndex:
    """Weekdays of the `years` calendar years ending with `last_year`, less US federal holidays
    (years=20: 1999-01-04 .. 2018-12-31, about 5,020 days, like the sample's 5,031)."""
    from pandas.tseries.holiday import USFederalHolidayCalendar

    days = pd.bdate_range(f"{last_year - years + 1}-01-01", f"{last_year}-12-31")
    return days.difference(USFederalHolidayCalendar().holidays(days[0], days[-1]))


def planted_state(returns: np.ndarray) -> float:
    """The planted state g after the last of `returns` (log returns, oldest first): +1 when the
    last day moved the way the day before did, -1 when it reversed it, 0 without 2 days.

    g[t] = sign(r[t]) * sign(r[t-1]): an XOR of two signs, so no linear function of past returns,
    prices or indicators predicts it, yet the last 3 closes decide it (the stationary inputs'
    `ret_1` and `ret_1_lag1` of row t, `forecast.data.stationary`).
    """
    if len(returns) < 2:
        return 0.0
    return float(np.sign(returns[-1]) * np.sign(returns[-2]))


def _vols(strength: float) -> tuple[float, float]:
    """Close-to-close std after g = +1 and after g = -1: SIGMA * exp(+-strength), scaled so that
    their mean variance is SIGMA**2 (g is a fair coin: the same marginal volatility at every strength)."""
    scale = SIGMA / np.sqrt(np.cosh(2 * strength))
    return scale * np.exp(strength), scale * np.exp(-strength)


def planted_moves(n: int, seed: int, strength: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Daily moves of the planted series, and the state g[t] each day ends in.

    Day t+1's close-to-close std is `_vols(strength)[0]` when g[t] = +1 (more likely to touch +1%),
    `[1]` when g[t] = -1. A return's sign is a fair coin whatever its std, so g[t] = sign(r[t]) *
    sign(r[t-1]) is a fair coin independent of everything before day t-1 and of every magnitude:
    past volatility (ATR, ranges) tells nothing of the next day's; only the XOR does.

    Returns:
        (moves, g): columns gap, ret, upper, lower (log moves) and volume, one row per day.
    """
    rng = np.random.default_rng(seed)
    high_vol, low_vol = _vols(strength)
    shocks = rng.standard_normal(n)
    shocks[0] = 0.0  # day 0 has no return
    signs = np.sign(shocks)  # a return's sign is its shock's, whatever its std
    g = signs * np.r_[0.0, signs[:-1]]  # planted_state of each day: sign(r[t]) * sign(r[t-1])
    before = np.r_[0.0, g[:-1]]  # g[t-1], which sets day t's std
    ret = np.select([before > 0, before < 0], [high_vol, low_vol], SIGMA) * shocks
    moves = pd.DataFrame({
        "gap": rng.normal(0.0, GAP, n),
        "ret": ret,
        "upper": rng.exponential(UPPER_WICK, n),
        "lower": rng.exponential(LOWER_WICK, n),
        "volume": np.exp(rng.normal(np.log(2.5e9), 0.5, n)),
    })
    return moves, g


def bars_from_moves(days: pd.DatetimeIndex, moves: pd.DataFrame, start: float = 1000.0) -> pd.DataFrame:
    """Raw OHLCV (no dividends: Adj Close = Close) from daily log moves, day 0 closing at `start`.

    Open[t] = Close[t-1] * exp(gap), Close[t] = Close[t-1] * exp(ret), High = max(Open, Close) *
    exp(upper), Low = min(Open, Close) * exp(-lower).
    """
    close = start * np.exp(np.cumsum(moves["ret"].to_numpy()))
    previous = np.r_[start, close[:-1]]
    open_ = previous * np.exp(moves["gap"].to_numpy())
    return pd.DataFrame({
        "Date": days.astype("datetime64[ns]"),
        "Open": open_,
        "High": np.maximum(open_, close) * np.exp(moves["upper"].to_numpy()),
        "Low": np.minimum(open_, close) * np.exp(-moves["lower"].to_numpy()),
        "Close": close,
        "Adj Close": close,
        "Volume": np.round(moves["volume"].to_numpy()),
    })


def touch_probability(sigma: float, threshold: float = TOUCH, draws: int = 2_000_000) -> float:
    """P(High[t+1] >= Close[t] * (1 + threshold)) when day t+1's close-to-close std is `sigma`:
    P(max(gap, ret) + upper >= log(1 + threshold)), by Monte Carlo with a fixed seed (+-0.0003)."""
    rng = np.random.default_rng(12345)
    top = np.maximum(rng.normal(0.0, GAP, draws), rng.normal(0.0, sigma, draws))
    return float(np.mean(top + rng.exponential(UPPER_WICK, draws) >= np.log1p(threshold)))


def bayes_auroc(strength: float, threshold: float = TOUCH) -> tuple[float, float, float]:
    """The planted effect at horizon 1: (Bayes-optimal AUROC, P(touch | g=+1), P(touch | g=-1)).

    The best possible predictor knows g[t] and nothing more helps. g = +1 and -1 are equally
    likely (`planted_moves`), so with p, q the two touch rates a positive comes from g=+1 with
    a = p / (p + q), a negative with b = (1 - p) / (2 - p - q), and
    AUROC = a (1 - b) + (a b + (1 - a)(1 - b)) / 2.
    """
    high_vol, low_vol = _vols(strength)
    p, q = touch_probability(high_vol, threshold), touch_probability(low_vol, threshold)
    a, b = p / (p + q), (1 - p) / (2 - p - q)
    return a * (1 - b) + (a * b + (1 - a) * (1 - b)) / 2, p, q


def control_series(signal: str, years: int = 20, seed: int = 0,
                   strength: float = DEFAULT_STRENGTH) -> pd.DataFrame:
    """The planted or null control series in raw layout, on `trading_days(years)`.

    `planted`: day t+1's volatility follows the XOR state g[t] (`planted_moves`). At the default
    strength 0.8 the two volatilities are 1.66% and 0.34% a day (1.20% on average, as the
    sample); P(touch +1% tomorrow) is 0.339 after g=+1 and 0.054 after g=-1 (base rate 0.20; the
    sample's is 0.22), and the Bayes-optimal AUROC at horizon 1 is 0.725 (`bayes_auroc`;
    strength 0.5: 0.642, 0.3: 0.578). No model can do better. Measured on seed 0 (test 2011-2018)
    with scikit-learn on the last row's stationary inputs: gradient boosting reaches AUROC 0.54
    trained on 2 years, 0.67 on 8 and 0.70 on 12; logistic regression, which cannot form the XOR,
    0.49-0.52 at every length. docs/controls.md has the PatchTST figures.

    `none`: the same daily moves shuffled in time: the same marginal distribution of every bar,
    and no dependence of any day on the past (a random walk), so no model beats the base rate.

    One seed's moves span 1919-2018 (`SPAN_YEARS`), and `years` keeps their last years: the
    series of `--years 4` is the last 4 years of `--years 20` up to a constant price factor (the
    price before the first day is always 1000), so two lengths share their later bars and targets exactly.

    Args:
        signal: "planted" or "none".
        years: calendar years ending 2018 (20: the sample's 1999-2018), at most 100.
        seed: the moves' random seed (the shuffle of `none` too).
        strength: log ratio of the volatility after g=+1 to the mean one (0: no effect).
    """
    if signal not in ("planted", "none"):
        raise ValueError(f"unknown signal {signal!r}")
    span = trading_days(SPAN_YEARS)
    moves, _ = planted_moves(len(span), seed, strength)
    if signal == "none":
        moves = moves.iloc[np.random.default_rng([seed, 1]).permutation(len(moves))]
    days = trading_days(years)
    moves = moves.iloc[len(span) - len(days):].reset_index(drop=True)
    return bars_from_moves(days, moves)
