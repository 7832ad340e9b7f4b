"""The positive and negative controls of scaling in data, end to end: `forecast data synthetic` with a
planted (or no) signal -> `forecast sweep --train-years` -> `forecast report`. On the planted series
the report must find that more training years help; on the null series it must not (make test-slow:
minutes of training; the claim statistics alone are checked in seconds by test_data_scaling.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from forecast.cli import main as forecast_main
from forecast.report.data_scaling import MORE_HELPS

ROOT = Path(__file__).resolve().parents[1]
CLAIM = "10K trailing: per doubling of training years"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on one intra-op thread (conftest's `one_thread`)."""


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["planted", "none"])
def test_the_report_finds_more_data_helps_on_planted_data_and_not_on_none(signal, tmp_path):
    data, logs, out = tmp_path / "data", tmp_path / "hpo", tmp_path / "report"
    assert forecast_main(["data", "synthetic", "SYN", "--signal", signal, "--data-dir", str(data)]) == 0
    assert forecast_main(["data", "build", "--data-dir", str(data), "--symbol", "SYN", "--tier", "a25"]) == 0
    # demo.yaml: validation 2015-2016, test 2017-2018; 1, 2, 4 and all (~15) training years before 2015
    assert forecast_main(["sweep", "--budgets", "10K", "--horizons", "1", "--train-years", "1", "2", "4", "all",
                          "--trials", "2", "--config", str(ROOT / "configs" / "demo.yaml"), "--log-dir", str(logs),
                          "--no-live", "--data.symbol=SYN", f"--data.data_dir={data}", "--trainer.max_epochs=6",
                          "--early_stopping.patience=3"]) == 0
    assert forecast_main(["report", "--storage", f"sqlite:///{logs / 'optuna.db'}", "--folds", "1", "--seeds", "2",
                          "--bootstrap", "300", "--out", str(out)]) == 0
    verdicts = pd.read_csv(out / "verdicts.csv")
    claim = verdicts[(verdicts["comparison"] == CLAIM) & (verdicts["metric"] == "loss")].iloc[0]
    print(f"{signal}: {CLAIM}, loss {claim['estimate']:+.4f} [{claim['lo']:+.4f}, {claim['hi']:+.4f}] "
          f"MDE {claim['mde']:.4f}: {claim['verdict']}")
    assert (claim["verdict"] == MORE_HELPS) is (signal == "planted"), claim.to_dict()
