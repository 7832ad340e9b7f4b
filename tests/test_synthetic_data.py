"""`forecast data synthetic`: the planted and null control series, their stated effect, and the command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecast.cli import main as forecast_main
from forecast.data.raw import check_raw, read_raw
from forecast.data.synthetic import (
    SIGMA,
    _vols,
    bayes_auroc,
    control_series,
    planted_state,
)
from forecast.data.targets import threshold_targets


def _states(close: np.ndarray) -> np.ndarray:
    """g[t] recomputed from the closes alone (what a model could compute from its window)."""
    r = np.r_[0.0, np.diff(np.log(close))]
    return np.array([planted_state(r[: t + 1]) for t in range(len(r))])


@pytest.fixture(scope="module")
def series() -> dict[str, pd.DataFrame]:
    return {signal: control_series(signal, years=20, seed=3) for signal in ("planted", "none")}


def test_dated_like_the_sample_valid_and_the_same_marginals(series) -> None:
    for frame in series.values():
        checked, _ = check_raw(frame, "synthetic")
        assert len(checked) == len(frame) and 4900 < len(frame) < 5100
        assert (frame["Date"].iloc[0], frame["Date"].iloc[-1]) == (pd.Timestamp("1999-01-04"), pd.Timestamp("2018-12-31"))
    planted, null = (np.diff(np.log(series[s]["Close"].to_numpy())) for s in ("planted", "none"))
    assert abs(planted.std() / SIGMA - 1) < 0.05 and abs(null.std() / SIGMA - 1) < 0.05
    assert abs(np.mean(np.abs(planted)) / np.mean(np.abs(null)) - 1) < 0.05  # one distribution, shuffled


def test_planted_touch_rates_follow_the_state_and_the_null_ones_do_not(series) -> None:
    """The +1% touch after g=+1 and g=-1 is what `bayes_auroc` states on planted data, and equal on none."""
    auroc, after_up, after_down = bayes_auroc(0.8)
    assert abs(auroc - 0.725) < 0.005
    for signal, (up, down) in (("planted", (after_up, after_down)), ("none", (None, None))):
        frame = series[signal]
        y = threshold_targets(frame["High"].to_numpy(), frame["Close"].to_numpy(), 1, 0.01)[:-1]
        g = _states(frame["Close"].to_numpy())[:-1]
        rate_up, rate_down = y[g > 0].mean(), y[g < 0].mean()
        if signal == "planted":
            assert abs(rate_up - up) < 0.03 and abs(rate_down - down) < 0.03
        else:
            assert abs(rate_up - rate_down) < 0.04


def test_state_is_an_xor_of_the_last_two_days() -> None:
    assert planted_state(np.array([0.3, 0.01, 0.02])) == 1.0  # up, then up
    assert planted_state(np.array([-0.01, -0.02])) == 1.0  # down, then down
    assert planted_state(np.array([0.01, -0.02])) == -1.0  # up, then down
    assert planted_state(np.array([0.01])) == 0.0  # too short to say


def test_shorter_series_is_the_end_of_the_longer_one() -> None:
    long, short = control_series("planted", years=6, seed=1), control_series("planted", years=2, seed=1)
    tail = long.iloc[-len(short):].reset_index(drop=True)
    assert (tail["Date"] == short["Date"]).all()
    ratio = tail["Close"] / short["Close"]
    assert np.allclose(ratio, ratio.iloc[0])
    assert np.allclose(tail["High"] / tail["Close"], short["High"] / short["Close"])


def test_strength_zero_has_one_volatility() -> None:
    assert _vols(0.0) == pytest.approx((SIGMA, SIGMA))
    high, low = _vols(0.8)
    assert high > SIGMA > low and (high**2 + low**2) / 2 == pytest.approx(SIGMA**2)


def test_command_writes_manifested_raw_files_that_build_tiers(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    code = forecast_main(["data", "synthetic", "SYN", "--signal", "planted", "--years", "3", "--seed", "2",
                          "--vix", "SYNVIX", "--data-dir", str(data)])
    assert code == 0
    said = capsys.readouterr().out
    assert "Bayes AUROC 0.725 at h=1" in said and "raw/SYNVIX.parquet" in said
    manifest = json.loads((data / "raw" / "manifest.json").read_text())["files"]
    assert {"raw/SYN.parquet", "raw/SYNVIX.parquet"} <= set(manifest)
    assert manifest["raw/SYN.parquet"]["first"] == "2016-01-04"
    assert "synthetic planted" in manifest["raw/SYN.parquet"]["source"]
    assert read_raw(data, "SYN")["Close"].equals(control_series("planted", 3, 2)["Close"])
    assert forecast_main(["data", "build", "--symbol", "SYN", "--tier", "c", "--vix", "SYNVIX",
                          "--data-dir", str(data)]) == 0
    assert forecast_main(["data", "verify", "--data-dir", str(data)]) == 0


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--signal", "maybe"], "signal"), (["--signal", "none", "--years", "0"], "years"),
    (["--signal", "none", "--strength", "4"], "strength"), ([], "signal"),
])
def test_command_refuses_bad_options_in_one_line(tmp_path, capsys, flags, fragment) -> None:
    assert forecast_main(["data", "synthetic", "SYN", *flags, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()
