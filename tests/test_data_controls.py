"""The positive and negative controls of scaling in data, end to end: `forecast data synthetic` with a
planted (or no) signal -> `forecast sweep --train-years` -> `forecast report`. On the planted series
the report must find that more training years help; on the null series it must not (make test-slow:
minutes of training; the claim statistics alone are checked in seconds by test_data_scaling.py).

The model is the control setting (configs/model/patchtst_control.yaml: stationary inputs, the last 5
days as one patch, no RevIN), searched at budget 5K over its own architecture only (d16-l1-h2-f2,
4,929 parameters with the head) and the learning rate: the default PatchTST (RevIN, context 80) does
not learn the planted signal at all (docs/controls.md). Every selection trains for the all-years
run's optimizer steps (`data.train_epoch: all_years`, the default).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from forecast.cli import main as forecast_main
from forecast.report.data_scaling import MORE_HELPS

ROOT = Path(__file__).resolve().parents[1]
CLAIM = "5K trailing: per doubling of training years"
# the control architecture alone (d_model 16 / head_dim 8 = 2 heads), lr around the control's 3e-3
SPACE = """architecture:
  grid: {d_model: [16], n_layers: [1], head_dim: [8], ffn_ratio: [2]}
  tolerance: 0.25
params:
  lr: {key: model.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on one intra-op thread (conftest's `one_thread`)."""


def control_claims(signal: str, tmp_path: Path, seed: int = 0) -> pd.DataFrame:
    """The data claims of `forecast report` on a `signal` series (data seed `seed`): 2, 4 and all
    (~15) training years, 2 trials each, 1 fold x 2 model seeds."""
    data, logs, out = tmp_path / "data", tmp_path / "hpo", tmp_path / "report"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    assert forecast_main(["data", "synthetic", "SYN", "--signal", signal, "--seed", str(seed),
                          "--data-dir", str(data)]) == 0
    assert forecast_main(["data", "build", "--data-dir", str(data), "--symbol", "SYN", "--tier", "a25"]) == 0
    # demo.yaml: validation 2015-2016, test 2017-2018; 2, 4 and all (~15) training years before 2015
    assert forecast_main(["sweep", "--budgets", "5K", "--horizons", "1", "--train-years", "2", "4", "all",
                          "--trials", "2", "--search-space", str(space),
                          "--config", str(ROOT / "configs" / "demo.yaml"),
                          "--config", str(ROOT / "configs" / "model" / "patchtst_control.yaml"),
                          "--log-dir", str(logs), "--no-live", "--data.symbol=SYN", f"--data.data_dir={data}",
                          "--trainer.max_epochs=20", "--early_stopping.patience=5"]) == 0
    assert forecast_main(["report", "--storage", f"sqlite:///{logs / 'optuna.db'}", "--folds", "1", "--seeds", "2",
                          "--bootstrap", "300", "--out", str(out)]) == 0
    verdicts = pd.read_csv(out / "verdicts.csv")
    claims = verdicts[verdicts["comparison"] == CLAIM].set_index("metric")
    for metric, c in claims.iterrows():
        print(f"{signal} (data seed {seed}): {CLAIM}, {metric} {c['estimate']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}] "
              f"MDE {c['mde']:.4f}: {c['verdict']}")
    print((out / "data_scaling.csv").read_text())
    return claims


# Measured 2026-12-07 (this test, data seed 0, 1 CPU thread, ~4 min per signal alone, 8 min for both on a
# loaded machine). Test AUROC of the 5K model, 2 / 4 / all (15.2) years = 501 / 1003 / 3810 samples:
#   planted 0.520 / 0.578 / 0.616 (hist_gb on the same inputs 0.635 / 0.703 / 0.751; Bayes bound 0.725 at 1 day)
#   none    0.497 / 0.496 / 0.518 (hist_gb 0.548 / 0.525 / 0.498)
# Claims per doubling of training years (300 date-paired bootstrap draws, 1 fold x 2 seeds):
#   planted AUROC +0.0309 [+0.0075, +0.0548] MDE 0.034: more data helps
#           loss  -0.0093 [-0.0172, -0.0017] MDE 0.011: more data helps
#   none    AUROC +0.0079 [-0.0160, +0.0332] MDE 0.035: no evidence
#           loss  -0.0086 [-0.0164, -0.0022] MDE 0.010: more data helps  <- on NO signal: the 2-year runs
#           overfit noise (loss 0.560 against the prior's 0.536; all years 0.536 = the prior's 0.533).
# Data seeds 0-4 (`control_claims(signal, dir, seed)`): AUROC "more data helps" on planted 5 of 5, on none
# 0 of 5; loss "more data helps" on planted 3 of 5 and on none 3 of 5 (docs/controls.md has the table).
# So the data claim is judged by AUROC here; the loss claim is not evidence of a signal (docs/controls.md).
# Before equal optimizer steps (10K default PatchTST, fixed epochs) both series gave "helps" on loss with
# AUROC ~0.5 everywhere: the step confound, now removed (data.train_epoch all_years).
@pytest.mark.slow
@pytest.mark.parametrize("signal", ["planted", "none"])
def test_the_report_finds_more_data_helps_on_planted_data_and_not_on_none(signal, tmp_path):
    claims = control_claims(signal, tmp_path)
    assert (claims.loc["auroc", "verdict"] == MORE_HELPS) is (signal == "planted"), claims.to_dict()
