"""Feature tiers: registered columns, no look-ahead, completed weeks, the VIX join, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import talib

import forecast.data.tiers as tiers
from forecast.core.errors import ForecastError
from forecast.core.files import md5_file
from forecast.data.raw import forward_adjust, write_raw
from forecast.data.tiers import TIERS, build_and_write, build_tier, build_tier_report, vix_features

A20 = [
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
]
OHLCV = ["open", "high", "low", "close", "volume"]
VIX = [
    "vix_close",
    "vix_sma_10",
    "vix_sma_20",
    "vix_pct_60",
    "vix_z_20",
    "vix_regime",
    "vix_chg_1",
    "vix_chg_5",
]


@pytest.fixture
def raw(make_raw) -> pd.DataFrame:
    return make_raw(600)


@pytest.fixture
def vix(raw, make_vix) -> pd.DataFrame:
    """VIX from symbol row 40 on, with gaps of 1, 2 and 3 symbol days and one VIX-only day."""
    vix = make_vix(raw["Date"]).iloc[40:]
    vix = vix.drop(index=[100, 200, 201, 300, 301, 302, 560])
    weekdays = pd.bdate_range(raw["Date"][250], raw["Date"][350])
    holiday = vix.iloc[[0]].assign(Date=weekdays.difference(raw["Date"])[0])
    assert not raw["Date"].isin(holiday["Date"]).any()
    return pd.concat([vix, holiday]).sort_values("Date", ignore_index=True)


def test_registry_columns_are_exactly_as_specified():
    assert list(TIERS) == ["a20", "a25", "c"]
    assert list(TIERS["a20"].columns) == A20
    assert list(TIERS["a25"].columns) == OHLCV + A20
    assert list(TIERS["c"].columns) == OHLCV + A20 + VIX
    assert [len(t.columns) for t in TIERS.values()] == [20, 25, 33]
    assert [t.needs_vix for t in TIERS.values()] == [False, False, True]


@pytest.mark.parametrize("name", ["a20", "a25", "c"])
def test_built_tier_has_registered_columns_float64_and_no_nan(raw, vix, name):
    frame = build_tier(name, raw, vix)
    assert list(frame.columns) == ["Date", *TIERS[name].columns]
    assert (frame.dtypes.iloc[1:] == "float64").all()
    assert np.isfinite(frame.iloc[:, 1:].to_numpy()).all()
    assert frame["Date"].is_monotonic_increasing and frame.index.equals(pd.RangeIndex(len(frame)))
    # SMA 200 needs 199 rows of warm-up; nothing later is dropped.
    assert (
        frame["Date"].iloc[0] == raw["Date"][199] and frame["Date"].iloc[-1] == raw["Date"].iloc[-1]
    )


def test_a25_prices_are_forward_adjusted_and_volume_raw(raw):
    frame = build_tier("a25", raw)
    adjusted = forward_adjust(raw).set_index("Date")
    adjusted["sma_12"] = adjusted["Close"].rolling(12).mean()
    adjusted = adjusted.loc[frame["Date"]]
    for column in ("Open", "High", "Low", "Close", "Volume"):
        np.testing.assert_array_equal(frame[column.lower()], adjusted[column])
    np.testing.assert_allclose(frame["sma_12"], adjusted["sma_12"], rtol=1e-10)


# ---------------------------------------------------------------- no look-ahead


def cut_dates(dates: pd.Series) -> list[pd.Timestamp]:
    """15 cut dates after the warm-up, including a Thursday whose Friday is a holiday."""
    chosen = list(np.linspace(230, len(dates) - 2, 14).astype(int))
    weekday = dates.dt.weekday.to_numpy()
    chosen.append(int(np.flatnonzero((weekday[:-1] == 3) & (weekday[1:] == 0))[3]))
    return [dates[i] for i in sorted(chosen)]


def lookahead_mismatches(name: str, raw: pd.DataFrame, vix: pd.DataFrame | None) -> list[str]:
    """Cut dates t where a row at or before t differs between inputs ending at t and later."""
    full = build_tier(name, raw, vix).set_index("Date")
    bad = []
    for t in cut_dates(raw["Date"]):
        part = build_tier(
            name, raw[raw["Date"] <= t], None if vix is None else vix[vix["Date"] <= t]
        )
        part = part.set_index("Date")
        # A VIX gap at t ends tier c a few days early; every row it has must match.
        expected = full[full.index <= part.index[-1]]
        if (t - part.index[-1]).days > 7 or not part.equals(expected):
            bad.append(str(t.date()))
    return bad


@pytest.mark.parametrize("name", ["a25", "c"])
def test_no_lookahead(raw, vix, name):
    assert lookahead_mismatches(name, raw, vix if name == "c" else None) == []


def _current_week(dates, close, indicator):
    """Leaky: the value of the week in progress, which its later days will still change."""
    starts = tiers.week_starts(dates)
    last = np.r_[starts[1:] != starts[:-1], True]
    return indicator(close[last])[np.searchsorted(starts[last], starts, side="right") - 1]


def _next_change(x, lag):
    """Leaky: the change over the NEXT `lag` days."""
    out = np.full_like(x, 0.0)
    out[:-lag] = x[lag:] / x[:-lag] - 1.0
    return out


@pytest.mark.parametrize(
    ("name", "attr", "leak"),
    [
        ("a25", "completed_weekly", _current_week),
        ("c", "_lagged_change", _next_change),
    ],
)
def test_lookahead_check_catches_a_leak(raw, vix, monkeypatch, name, attr, leak):
    """The check above can fail: a leaky weekly indicator or VIX feature is caught."""
    monkeypatch.setattr(tiers, attr, leak)
    assert len(lookahead_mismatches(name, raw, vix if name == "c" else None)) >= 10


def test_weekly_values_come_from_weeks_completed_before_the_row(raw):
    frame = build_tier("a20", raw)
    adjusted = forward_adjust(raw)
    iso = adjusted["Date"].dt.isocalendar()
    week = iso["year"].astype(int) * 100 + iso["week"].astype(int)
    # Constant inside each calendar week: the value changes on the week's first trading day.
    own_week = week[raw["Date"].isin(frame["Date"])].to_numpy()
    assert (frame.groupby(own_week)[["rsi_14_w", "stochrsi_k_w"]].nunique() == 1).all().all()
    for i in range(0, len(frame), 37):
        day = frame["Date"][i]
        this_week = week[adjusted["Date"] == day].iloc[0]
        closes = (
            adjusted["Close"][week < this_week].groupby(week[week < this_week]).last().to_numpy()
        )
        assert frame["rsi_14_w"][i] == talib.RSI(closes, 14)[-1]
        assert frame["stochrsi_k_w"][i] == talib.STOCHRSI(closes, 14, 5, 3)[0][-1]


# ---------------------------------------------------------------- VIX


def test_vix_join_fills_short_gaps_and_reports_them(raw, vix):
    frame, report = build_tier_report("c", raw, vix)
    assert report["vix_range"] == [str(raw["Date"][40].date()), str(raw["Date"].iloc[-1].date())]
    assert report["vix_ffilled_days"] == 7
    assert report["vix_ffilled_dates"] == [
        str(raw["Date"][i].date()) for i in (100, 200, 201, 300, 301, 302, 560)
    ]
    closes = frame.set_index("Date")["vix_close"]
    assert closes[raw["Date"][302]] == closes[raw["Date"][299]]  # a 3-day gap carries day 299
    assert len(frame) == 600 - 199  # the VIX-only holiday adds no row


def test_vix_gap_longer_than_three_days_is_an_error(raw, make_vix):
    vix = make_vix(raw["Date"]).drop(index=[400, 401, 402, 403])
    with pytest.raises(
        ForecastError,
        match=f"VIX has no close for 4 trading days in a row from {raw['Date'][400].date()}",
    ):
        build_tier("c", raw, vix)


def test_vix_that_does_not_overlap_is_an_error(raw, make_vix):
    vix = make_vix(raw["Date"] - pd.Timedelta(days=5000))
    with pytest.raises(ForecastError, match="share no dates"):
        build_tier("c", raw, vix)


def test_vix_features_match_their_definitions(make_vix, raw):
    close = make_vix(raw["Date"])["Close"]
    features = vix_features(close.to_numpy())
    np.testing.assert_allclose(features["vix_sma_20"], close.rolling(20).mean(), rtol=1e-10)
    np.testing.assert_allclose(
        features["vix_z_20"],
        (close - close.rolling(20).mean()) / close.rolling(20).std(ddof=0),
        rtol=1e-8,
    )
    pct = close.rolling(60).apply(lambda w: (w <= w[-1]).mean(), raw=True)
    np.testing.assert_array_equal(features["vix_pct_60"], pct)
    np.testing.assert_allclose(features["vix_chg_5"], close.pct_change(5), rtol=1e-12)
    regime = vix_features(np.array([9.0, 14.99, 15.0, 25.0, 25.01, 80.0]))["vix_regime"]
    assert regime.tolist() == [0, 0, 1, 1, 2, 2]


def test_tier_c_needs_vix(raw):
    with pytest.raises(ForecastError, match="tier c needs VIX"):
        build_tier("c", raw)


def test_unknown_tier_and_too_short_input_are_errors(raw):
    with pytest.raises(ForecastError, match=r"unknown tier 'b' \(known: a20, a25, c\)"):
        build_tier("b", raw)
    with pytest.raises(ForecastError, match="no row has every feature"):
        build_tier("a25", raw.iloc[:150])


# ---------------------------------------------------------------- writing


def test_build_and_write_is_byte_identical_and_records_its_sources(raw, vix, tmp_path):
    paths = []
    for name in ("one", "two"):
        write_raw(tmp_path / name, "SPY", raw, source="unit test")
        write_raw(tmp_path / name, "VIX", vix, source="unit test", sample=True)
        paths.append(build_and_write(tmp_path / name, "spy", "c"))
    assert paths[0] == tmp_path / "one/processed/SPY_c.parquet"
    assert paths[0].read_bytes() == paths[1].read_bytes()
    entry = json.loads((tmp_path / "one/processed/manifest.json").read_text())["files"][
        "processed/SPY_c.parquet"
    ]
    assert entry["sources"] == {
        "SPY": md5_file(tmp_path / "one/raw/SPY.parquet"),
        "VIX": md5_file(tmp_path / "one/raw/VIX.parquet"),
    }
    assert entry["tier"] == "c" and entry["tier_version"] == TIERS["c"].version
    assert entry["md5"] == md5_file(paths[0]) and entry["rows"] == 401 and entry["sample"] is True
    assert entry["build"]["vix_ffilled_days"] == 7
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), build_tier("c", raw, vix))


def test_build_refuses_vix_for_a_tier_without_it(raw, data_dir):
    write_raw(data_dir, "SPY", raw, source="unit test")
    with pytest.raises(ForecastError, match="tier a25 uses no VIX"):
        build_and_write(data_dir, "SPY", "a25", vix_symbol="VIX")
    with pytest.raises(ForecastError, match="no raw data for VIX"):
        build_and_write(data_dir, "SPY", "c")
    assert not (data_dir / "processed").exists()
