"""Labels: pure functions of unscaled (forward-adjusted) prices. Never of scaled features.

Row t's label looks only at days t+1..t+h; the last h rows have no label (NaN), because
their future is not in the data.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Task = Literal["threshold", "direction"]


def threshold_targets(high: np.ndarray, close: np.ndarray, horizon: int, threshold: float) -> np.ndarray:
    """1 if max(High[t+1..t+h]) >= Close[t] * (1 + threshold), else 0; NaN for the last h rows."""
    n = len(close)
    y = np.full(n, np.nan)
    if n <= horizon:
        return y
    # future_high[t] = max(High[t+1 .. t+h]) for t = 0 .. n-h-1
    future_high = sliding_window_view(np.asarray(high[1:], dtype=float), horizon).max(axis=1)
    y[: n - horizon] = future_high >= np.asarray(close[: n - horizon], dtype=float) * (1 + threshold)
    return y


def direction_targets(close: np.ndarray, horizon: int) -> np.ndarray:
    """1 if Close[t+h] > Close[t], else 0; NaN for the last h rows."""
    close = np.asarray(close, dtype=float)
    y = np.full(len(close), np.nan)
    if len(close) > horizon:
        y[:-horizon] = close[horizon:] > close[:-horizon]
    return y


def make_targets(high: np.ndarray, close: np.ndarray, task: Task, horizon: int, threshold: float) -> np.ndarray:
    """Labels for `task` as float64 (0/1, NaN where the horizon runs past the data)."""
    if task == "threshold":
        return threshold_targets(high, close, horizon, threshold)
    if task == "direction":
        return direction_targets(close, horizon)
    raise ValueError(f"unknown task {task!r}")
