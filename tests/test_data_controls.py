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


# Measured 2026-12-07 (10K, 2 trials, 6 epochs, 1 fold x 2 seeds): planted -0.0408 [-0.0642, -0.0214] nats per
# doubling (MDE 0.031), none -0.0409 [-0.0651, -0.0229] (MDE 0.030): "more data helps" on BOTH. Test AUROC stayed
# near 0.5 on both (0.44-0.57): no model learned the planted signal. At a fixed number of epochs a 1-year run takes
# ~1/15 of the optimizer steps of an all-years run (24 vs ~360 at batch 64), so its loss (0.54-0.68 against the
# prior's ~0.45) measures under-training, not data. The none case fails until the design holds the training
# steps fixed across training years; the planted pass is that same effect, not a found signal.
STEP_CONFOUND = pytest.mark.xfail(strict=True, reason="fewer training years = fewer optimizer steps at a fixed "
                                                      "epoch count: under-trained small-data runs lose on null data too")


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["planted", pytest.param("none", marks=STEP_CONFOUND)])
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
