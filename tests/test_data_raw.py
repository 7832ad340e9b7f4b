"""Raw prices: validation, the raw file contract, and the forward adjustment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecast.core.errors import ForecastError
from forecast.data.cli import main as data_main
from forecast.data.paths import raw_path, resolve_data_dir, storage_symbol, tier_path
from forecast.data.raw import (
    RAW_COLUMNS,
    check_raw,
    forward_adjust,
    read_raw,
    validate_raw,
    write_raw,
)


def test_paths_follow_the_layout(tmp_path, monkeypatch):
    assert raw_path(tmp_path, "^vix") == tmp_path / "raw" / "VIX.parquet"
    assert tier_path(tmp_path, "spy", "a25") == tmp_path / "processed" / "SPY_a25.parquet"
    monkeypatch.setenv("FORECAST_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("FORECAST_DATA_DIR")
    assert str(resolve_data_dir(None)) == "data"
    with pytest.raises(ForecastError, match="bad symbol"):
        storage_symbol("../etc/passwd")


def test_validate_accepts_any_column_order_and_loose_names(make_raw):
    raw = make_raw(50)
    shuffled = raw[["Volume", "Close", "Date", "Adj Close", "Low", "Open", "High"]].rename(
        columns={"Adj Close": "adj_close", "Close": "close"}
    )
    shuffled["Date"] = shuffled["Date"].dt.strftime("%Y-%m-%d")
    clean = validate_raw(shuffled, "x.csv")
    assert list(clean.columns) == RAW_COLUMNS
    assert clean["Date"].dtype == "datetime64[ns]"
    assert (clean.dtypes[1:] == "float64").all()
    pd.testing.assert_frame_equal(clean, raw)


def test_unsorted_input_is_sorted_and_reported(make_raw):
    raw = make_raw(30)
    clean, notes = check_raw(raw.iloc[::-1], "x.csv")
    pd.testing.assert_frame_equal(clean, raw)
    assert any("sorted" in note for note in notes)


def test_inconsistent_bars_are_repaired_in_one_place_and_counted(make_raw, data_dir):
    raw = make_raw(30)
    raw.loc[3, "Open"] = raw.loc[3, "High"] * 1.01  # Open above High
    raw.loc[7, ["Close", "Adj Close"]] *= raw.loc[7, "Low"] * 0.99 / raw.loc[7, "Close"]  # Close below Low
    raw.loc[9, ["High", "Low"]] = raw.loc[9, ["Low", "High"]].to_numpy()  # High < Low
    clean, notes = check_raw(raw, "vix.csv")
    assert len(clean) == 30
    assert notes == [
        f"repaired 3 bars with High < Low or Open/Close outside [Low, High] (first "
        f"{raw.Date[3].date()}): High/Low widened to cover Open and Close"
    ]
    ohlc = clean[["Open", "High", "Low", "Close"]]
    assert (clean["High"] == ohlc.max(axis=1)).all() and (clean["Low"] == ohlc.min(axis=1)).all()
    assert clean.loc[3, "High"] == raw.loc[3, "Open"]  # the label's High now covers the Open
    untouched = ~clean.index.isin([3, 7, 9])
    pd.testing.assert_frame_equal(clean[untouched], raw[untouched])
    assert write_raw(data_dir, "VIX", raw, source="vix.csv")["repaired_bars"] == 3


def test_a_falling_adjustment_ratio_is_flagged_with_its_dates(make_raw):
    raw = make_raw(30)
    assert check_raw(raw, "x.csv")[1] == []
    raw.loc[12:, "Adj Close"] *= 0.98  # Adj Close / Close steps down 2% on row 12: no dividend does that
    _, notes = check_raw(raw, "x.csv")
    assert notes == [
        f"warning: Adj Close / Close fell on 1 day ({raw.Date[12].date()}); "
        "no dividend does that: check the source"
    ]


def test_rows_dated_in_the_future_are_refused(make_raw):
    raw = make_raw(5)
    raw.loc[4, "Date"] = pd.Timestamp.now().normalize() + pd.Timedelta(days=400)
    with pytest.raises(ForecastError, match=r"row 5 \(.*\): date is in the future"):
        check_raw(raw, "x.csv")


def test_missing_or_empty_volume_becomes_zero(make_raw):
    raw = make_raw(10)
    clean, notes = check_raw(raw.drop(columns="Volume"), "vix.csv")
    assert (clean["Volume"] == 0).all() and "no Volume column" in notes[0]
    raw.loc[2, "Volume"] = np.nan
    clean, notes = check_raw(raw, "x")
    assert clean["Volume"][2] == 0.0 and notes == ["1 empty Volume values set to 0"]


def test_tz_aware_and_timestamped_dates_keep_their_trading_day(make_raw):
    raw = make_raw(5)
    text = raw.assign(Date=raw["Date"].dt.strftime("%Y-%m-%d 00:00:00-05:00"))
    pd.testing.assert_frame_equal(validate_raw(text, "x"), raw)
    aware = raw.assign(Date=raw["Date"].dt.tz_localize("America/New_York"))
    pd.testing.assert_frame_equal(validate_raw(aware, "x"), raw)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.assign(Date=f["Date"].where(f.index != 4, f["Date"][3])),
            "x.csv: row 5 ({d[3]}): duplicate date (also row 4)",
        ),
        (lambda f: f.drop(columns="Adj Close"), "x.csv: missing column(s) Adj Close (found: "),
        (
            lambda f: f.assign(Close=f["Close"].where(f.index != 6)),
            "x.csv: row 7 ({d[6]}): Close = nan (prices must be finite numbers > 0)",
        ),
        (
            lambda f: f.assign(Low=f["Low"].where(f.index != 2, -1.0)),
            "x.csv: row 3 ({d[2]}): Low = -1.0 (prices must be finite numbers > 0)",
        ),
        (
            lambda f: f.assign(Open=f["Open"].where(f.index != 1, 0.0)),
            "x.csv: row 2 ({d[1]}): Open = 0.0",
        ),
        (
            lambda f: f.assign(
                Date=f["Date"].dt.strftime("%Y-%m-%d").where(f.index != 8, "2018-13-45")
            ),
            "x.csv: row 9: unparsable date '2018-13-45'",
        ),
        (
            lambda f: f.assign(Volume=f["Volume"].where(f.index != 0, -5.0)),
            "x.csv: row 1 ({d[0]}): Volume = -5.0",
        ),
        (lambda f: f.iloc[:0], "x.csv: no data rows"),
    ],
    ids=["duplicate", "missing-column", "nan", "negative", "zero", "bad-date", "volume", "empty"],
)
def test_bad_input_names_source_and_first_bad_row(make_raw, edit, message):
    raw = make_raw(20)
    with pytest.raises(ForecastError) as err:
        validate_raw(edit(raw), "x.csv")
    assert str(err.value).startswith(message.format(d=[str(d.date()) for d in raw["Date"]]))
    assert "\n" not in str(err.value)


def test_write_then_read_round_trips_with_a_manifest_entry(make_raw, data_dir):
    raw = make_raw(40)
    entry = write_raw(data_dir, "^gspc", raw.iloc[::-1], source="unit test")
    pd.testing.assert_frame_equal(read_raw(data_dir, "GSPC"), raw)
    manifest = json.loads((data_dir / "raw" / "manifest.json").read_text())["files"]
    assert manifest == {"raw/GSPC.parquet": entry}
    assert entry["rows"] == 40 and entry["symbol"] == "GSPC" and entry["sample"] is False
    assert (entry["first"], entry["last"]) == (str(raw.Date[0].date()), str(raw.Date[39].date()))
    assert entry["columns"] == RAW_COLUMNS and entry["source"] == "unit test"


def test_same_input_gives_byte_identical_raw_file(make_raw, tmp_path):
    for name in ("one", "two"):
        write_raw(tmp_path / name, "SPY", make_raw(100), source="unit test")
    assert (tmp_path / "one/raw/SPY.parquet").read_bytes() == (
        tmp_path / "two/raw/SPY.parquet"
    ).read_bytes()


def test_read_raw_without_a_file_says_how_to_get_one(data_dir):
    with pytest.raises(ForecastError, match=r"no raw data for SPY .*forecast data download"):
        read_raw(data_dir, "SPY")


def test_forward_adjust_scales_by_dividends_up_to_each_row(make_raw):
    raw = make_raw(200, dividend_every=50, dividend_yield=0.01)
    adjusted = forward_adjust(raw)
    assert list(adjusted.columns) == ["Date", "Open", "High", "Low", "Close", "Volume"]
    assert adjusted.index.equals(raw.index)
    # The first row is as traded; each ex-dividend row (49, 99, ...) lifts it and every later
    # row by 1/0.99.
    factor = 0.99 ** -((np.arange(200) + 1) // 50)
    for column in ("Open", "High", "Low", "Close"):
        np.testing.assert_allclose(adjusted[column], raw[column] * factor, rtol=1e-12)
    np.testing.assert_array_equal(adjusted["Volume"], raw["Volume"])
    # Day-over-day returns of the adjusted close are total returns (Adj Close returns).
    np.testing.assert_allclose(
        adjusted["Close"].pct_change()[1:], raw["Adj Close"].pct_change()[1:], rtol=1e-10
    )


def test_forward_adjust_is_causal_and_ignores_later_dividends(make_raw):
    raw = make_raw(200)
    full = forward_adjust(raw)
    for cut in (1, 37, 120):
        pd.testing.assert_frame_equal(
            forward_adjust(raw.iloc[:cut]), full.iloc[:cut], check_exact=True
        )
    # A re-download after a new dividend scales every Adj Close by one factor: nothing changes.
    later = raw.assign(**{"Adj Close": raw["Adj Close"] * 0.97})
    pd.testing.assert_frame_equal(forward_adjust(later), full, rtol=1e-12)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"Date,Open,High,Low,Close,Adj Close,Volume\n", "no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01", "not a readable CSV file"),
        (b"Date,Open,High,Low,Close,Volume\n2020-01-02,1,1,1,1,5\n", "missing column(s) Adj Close"),
        (
            b"Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,1,1,1,1,1,5\n2020-01-02,1,1,1,1,1,5\n",
            "row 2 (2020-01-02): duplicate date (also row 1)",
        ),
        (
            b"Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,1,1,1,1,1,5\n2020-01-03,1,1,,1,1,5\n",
            "row 2 (2020-01-03): Low = nan",
        ),
        (
            b"Date,Open,High,Low,Close,Adj Close,Volume\n01/02/2020,1,1,1,1,1,5\n",
            "row 1: unparsable date '01/02/2020'",
        ),
        (
            b"Date,Open,High,Low,Close,Adj Close,Volume\n2020-01-02,1,1,abc,1,1,5\n",
            "row 1 (2020-01-02): Low = 'abc'",
        ),
    ],
    ids=[
        "empty",
        "header-only",
        "binary",
        "missing-column",
        "duplicate",
        "nan",
        "date",
        "text-price",
    ],
)
def test_bad_file_import_changes_nothing(make_raw, data_dir, tmp_path, snapshot, content, message):
    write_raw(data_dir, "SPY", make_raw(30), source="before")
    before = snapshot(data_dir)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(ForecastError) as err:
        data_main(["import", "SPY", str(bad), "--data-dir", str(data_dir)])
    assert str(err.value).startswith(f"{bad}: ") and message in str(err.value)
    assert snapshot(data_dir) == before


def test_missing_file_and_folder_are_one_line_errors(data_dir, tmp_path):
    for path, message in ((tmp_path / "nope.csv", "no such file"), (tmp_path, "no such file")):
        with pytest.raises(ForecastError, match=message):
            data_main(["import", "SPY", str(path), "--data-dir", str(data_dir)])
    assert not data_dir.exists()
