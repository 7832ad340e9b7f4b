"""Sources of raw prices: yfinance (faked, never the network), CSV files, the arch sample."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import yfinance
from fake_yfinance import FakeDownload, yahoo_frame

from forecast.core.errors import ForecastError
from forecast.data.cli import main as data_main
from forecast.data.raw import read_raw, validate_raw
from forecast.data.sources import fetch_yahoo, flatten_yahoo, read_price_csv


@pytest.fixture
def fake(monkeypatch, make_raw, make_vix):
    """yfinance.download replaced by a fake serving SPY and ^VIX; time.sleep made instant."""
    spy = make_raw(80)
    fake = FakeDownload({"SPY": spy, "^VIX": make_vix(spy["Date"])})
    monkeypatch.setattr(yfinance, "download", fake)
    monkeypatch.setattr("forecast.data.sources.time.sleep", lambda s: None)
    return fake


def test_fake_has_yfinance_real_shape(make_raw):
    frame = yahoo_frame({"SPY": make_raw(3)})
    assert frame.columns.names == ["Price", "Ticker"]
    assert list(frame.columns) == [
        (p, "SPY") for p in ("Adj Close", "Close", "High", "Low", "Open", "Volume")
    ]
    assert frame.index.name == "Date"


@pytest.mark.parametrize("group_by", ["column", "ticker"])
def test_flatten_two_level_columns(make_raw, group_by):
    raw = make_raw(20)
    both = yahoo_frame({"SPY": raw, "QQQ": make_raw(20, seed=5)}, group_by=group_by)
    pd.testing.assert_frame_equal(validate_raw(flatten_yahoo(both, "SPY"), "t"), raw)
    with pytest.raises(ForecastError, match="IWM: not among the tickers"):
        flatten_yahoo(both, "IWM")


def test_fetch_asks_for_unadjusted_prices_and_flattens(fake):
    frame = fetch_yahoo("SPY", start="2018-01-01", end="2018-12-31")
    pd.testing.assert_frame_equal(validate_raw(frame, "t"), fake.frames["SPY"])
    ticker, kwargs = fake.calls[0]
    assert ticker == "SPY" and kwargs["auto_adjust"] is False
    assert kwargs["start"] == "2018-01-01" and kwargs["end"] == "2019-01-01"  # inclusive end


def test_fetch_retries_with_exponential_backoff_and_jitter(fake):
    fake.failures = ["raise", "empty", "raise"]
    waits: list[float] = []
    frame = fetch_yahoo("SPY", sleep=waits.append, rng=random.Random(0))
    assert len(fake.calls) == 4 and len(frame) == 80
    assert [int(w) for w in waits] == [1, 2, 4]  # 1, 2, 4 s plus jitter below 1 s
    assert len({w % 1 for w in waits}) == 3  # the jitter differs between waits


def test_fetch_gives_up_after_four_attempts(fake):
    fake.failures = ["raise", "empty", "raise", "empty", "raise"]
    waits: list[float] = []
    with pytest.raises(
        ForecastError, match=r"no data for SPY in 4 attempts \(last: empty result\)"
    ):
        fetch_yahoo("SPY", sleep=waits.append)
    assert len(fake.calls) == 4 and len(waits) == 3


def test_download_stores_caret_vix_as_vix(fake, data_dir):
    assert data_main(["download", "SPY", "^VIX", "--data-dir", str(data_dir)]) == 0
    assert [c[0] for c in fake.calls] == ["SPY", "^VIX"]
    pd.testing.assert_frame_equal(read_raw(data_dir, "VIX"), fake.frames["^VIX"])
    pd.testing.assert_frame_equal(read_raw(data_dir, "SPY"), fake.frames["SPY"])
    manifest = json.loads((data_dir / "raw/manifest.json").read_text())["files"]
    assert sorted(manifest) == ["raw/SPY.parquet", "raw/VIX.parquet"]
    assert manifest["raw/VIX.parquet"]["source"].startswith("yfinance ^VIX")


def test_download_of_unknown_symbol_is_an_error_and_writes_nothing(fake, data_dir):
    with pytest.raises(ForecastError, match="no data for NOPE in 4 attempts"):
        data_main(["download", "SPY", "NOPE", "--data-dir", str(data_dir)])
    assert not data_dir.exists()  # SPY was fetched but nothing is written unless all succeed


def test_import_three_header_csv_that_pandas_writes_for_yfinance(make_raw, data_dir, tmp_path):
    raw = make_raw(50)
    path = tmp_path / "spy.csv"
    yahoo_frame({"SPY": raw}).to_csv(path)
    assert path.read_text().splitlines()[:3] == [
        "Price,Adj Close,Close,High,Low,Open,Volume",
        "Ticker,SPY,SPY,SPY,SPY,SPY,SPY",
        "Date,,,,,,",
    ]
    assert data_main(["import", "SPY", str(path), "--data-dir", str(data_dir)]) == 0
    pd.testing.assert_frame_equal(read_raw(data_dir, "SPY"), raw)


def test_import_picks_the_symbol_from_a_multi_ticker_csv(make_raw, tmp_path):
    raw = make_raw(30)
    path = tmp_path / "two.csv"
    yahoo_frame({"QQQ": make_raw(30, seed=3), "^VIX": raw}).to_csv(path)
    pd.testing.assert_frame_equal(validate_raw(read_price_csv(path, "VIX"), "t"), raw)


def test_import_yahoo_csv_in_any_column_order_reads_values_exactly(make_raw, tmp_path):
    raw = make_raw(50)
    path = tmp_path / "spy.csv"
    columns = ["Adj Close", "Volume", "Date", "High", "Close", "Open", "Low"]
    raw[columns].to_csv(path, index=False, float_format="%.17g")
    pd.testing.assert_frame_equal(
        validate_raw(read_price_csv(path, "SPY"), "t"), raw, check_exact=True
    )


def test_sample_writes_arch_series_marked_as_sample(data_dir, capsys):
    assert data_main(["sample", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "Open/High/Low/Adj Close set to Close" in out
    sp500, vix = read_raw(data_dir, "SP500"), read_raw(data_dir, "VIX")
    assert (str(sp500.Date.iloc[0].date()), str(sp500.Date.iloc[-1].date())) == (
        "1999-01-04",
        "2018-12-31",
    )
    assert str(vix.Date.iloc[0].date()).startswith("2014") and str(
        vix.Date.iloc[-1].date()
    ).startswith("2019")
    assert (vix["Open"] == vix["Close"]).all() and (vix["Volume"] == 0).all()
    assert (sp500["Volume"] > 0).all() and (sp500["High"] >= sp500["Low"]).all()
    manifest = json.loads((data_dir / "raw/manifest.json").read_text())["files"]
    assert all(entry["sample"] is True for entry in manifest.values()) and len(manifest) == 2
    assert "Volume 0" in manifest["raw/VIX.parquet"]["source"]


def test_yfinance_log_lines_become_the_reason_not_stderr_noise(monkeypatch, capsys):
    import logging

    def failing(tickers, **kwargs):
        logging.getLogger("yfinance").error("['XYZ']: possibly delisted; no timezone found")
        return pd.DataFrame()

    monkeypatch.setattr(yfinance, "download", failing)
    told: list[str] = []
    with pytest.raises(ForecastError, match=r"\(last: \['XYZ'\]: possibly delisted; no timezone"):
        fetch_yahoo("XYZ", sleep=lambda s: None, echo=told.append)
    assert capsys.readouterr().err == ""
    assert len(told) == 3 and told[0].startswith("XYZ: attempt 1 of 4 failed (['XYZ']: possibly")
