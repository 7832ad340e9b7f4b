"""A stand-in for `yfinance.download` that returns yfinance's real frame shape, offline.

yfinance >= 0.2.51 concatenates one frame per ticker with keys (Ticker, Price), swaps the
levels to (Price, Ticker) and sorts them, so even one ticker gives two-level columns:
`('Adj Close', 'SPY'), ('Close', 'SPY'), ...`, index `Date` (tz-naive for daily bars).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


def yahoo_frame(frames: dict[str, pd.DataFrame], group_by: str = "column") -> pd.DataFrame:
    """What `yf.download(list(frames), auto_adjust=False)` returns for raw-layout `frames`."""
    per_ticker = {
        ticker: frame.set_index("Date").rename_axis("Date")[
            ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
        ]
        for ticker, frame in frames.items()
    }
    data = pd.concat(
        per_ticker.values(), axis=1, sort=True, keys=per_ticker.keys(), names=["Ticker", "Price"]
    )
    if group_by == "column":
        data.columns = data.columns.swaplevel(0, 1)
        data = data.sort_index(level=0, axis=1)
    return data


@dataclass
class FakeDownload:
    """Callable like `yf.download`: fails the first `failures` calls, then serves `frames`.

    Attributes:
        frames: raw-layout frame per Yahoo ticker (`^VIX`, `SPY`).
        failures: what the first calls do instead: "raise" or "empty", one per call.
        calls: (ticker, kwargs) of every call, for assertions.
    """

    frames: dict[str, pd.DataFrame]
    failures: list[str] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, tickers: str, **kwargs: Any) -> pd.DataFrame:
        self.calls.append((tickers, kwargs))
        if len(self.calls) <= len(self.failures):
            if self.failures[len(self.calls) - 1] == "raise":
                raise ConnectionError("Too Many Requests. Rate limited. Try after a while.")
            return pd.DataFrame()  # what yfinance returns when a ticker failed
        if tickers not in self.frames:
            return pd.DataFrame()
        return yahoo_frame({tickers: self.frames[tickers]})
