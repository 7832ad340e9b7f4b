"""The real files in ../shared/data, read in place (skipped with a message when absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.cli import main as data_main
from forecast.data.manifest import verify
from forecast.data.raw import read_raw
from forecast.data.tiers import build_and_write


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "SPY.csv").is_file() or not (SHARED_DATA / "VIX.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}; real-data tests skipped")
    data_dir = tmp_path_factory.mktemp("real") / "data"
    for symbol in ("SPY", "VIX"):
        assert (
            data_main(
                ["import", symbol, str(SHARED_DATA / f"{symbol}.csv"), "--data-dir", str(data_dir)]
            )
            == 0
        )
    return data_dir


@pytest.mark.parametrize("symbol", ["SPY", "VIX"])
def test_real_files_import_unchanged(real_dir, shared_data, symbol):
    """Every number as in the CSV, except High/Low of the bars `repair_bars` widened."""
    csv = pd.read_csv(shared_data / f"{symbol}.csv", float_precision="round_trip")
    raw = read_raw(real_dir, symbol)
    assert (raw["Date"].dt.strftime("%Y-%m-%d") == csv["Date"]).all()
    prices = csv[["Open", "High", "Low", "Close"]].to_numpy()
    np.testing.assert_array_equal(raw["High"].to_numpy(), prices.max(axis=1))
    np.testing.assert_array_equal(raw["Low"].to_numpy(), prices.min(axis=1))
    for column in ("Open", "Close", "Adj Close", "Volume"):
        np.testing.assert_array_equal(raw[column].to_numpy(), csv[column].to_numpy(dtype="float64"))


def test_real_inconsistent_bars_are_repaired_and_counted(real_dir):
    import json

    files = json.loads((real_dir / "raw/manifest.json").read_text())["files"]
    assert files["raw/SPY.parquet"]["repaired_bars"] == 0
    assert files["raw/SPY.parquet"]["notes"] == []  # no Adj Close / Close fall beyond rounding
    assert files["raw/VIX.parquet"]["repaired_bars"] == 47
    assert files["raw/VIX.parquet"]["notes"] == [
        "repaired 47 bars with High < Low or Open/Close outside [Low, High] (first 1992-02-11): "
        "High/Low widened to cover Open and Close"
    ]


def test_real_spy_tiers(real_dir):
    a25 = pd.read_parquet(build_and_write(real_dir, "SPY", "a25"))
    assert 7600 <= len(a25) <= 7800 and str(a25["Date"].iloc[-1].date()) == "2024-06-28"
    lines: list[str] = []
    c = pd.read_parquet(build_and_write(real_dir, "SPY", "c", echo=lines.append))
    assert c.shape[1] - 1 == 33 and str(c["Date"].iloc[-1].date()) == "2024-06-28"
    assert c["Date"].equals(a25["Date"])  # VIX covers all of SPY: same rows
    assert "3 days forward-filled (1997-01-31, 1997-11-26, 1999-12-31)" in lines[1]
    assert all(check.ok for check in verify(real_dir))
