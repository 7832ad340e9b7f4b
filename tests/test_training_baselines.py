"""forecast.training.baselines: the baselines command on the same samples and labels as the model."""

from __future__ import annotations

import pandas as pd
from synthetic_run import base_args, data_dir, dm_kwargs  # noqa: F401  (fixtures)

from forecast.data.datamodule import ForecastDataModule


def test_baselines_command_prints_the_splits_and_saves_every_prediction(data_dir, tmp_path, capsys):
    from forecast.training.baselines import main as baselines_main

    out = tmp_path / "baselines.csv"
    assert baselines_main([*base_args(data_dir, tmp_path), "--data.folds=2", "--data.fold=1",
                           "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    dm = ForecastDataModule(**dm_kwargs(data_dir, folds=2, fold=1))
    for name, split in dm.splits.items():
        assert f"{name:<5} {split.size:5d} samples {split.dates[0].date()}..{split.dates[-1].date()}" in printed
    assert "fold 1 of 2" in printed and "C=" in printed  # the regularisation chosen on validation
    preds = pd.read_csv(out)
    assert set(preds["baseline"]) == {"prior", "logistic", "hist_gb"}
    assert len(preds) == 3 * sum(s.size for s in dm.splits.values())
    test = preds[(preds["split"] == "test") & (preds["baseline"] == "logistic")]
    assert list(pd.to_datetime(test["date"])) == list(dm.splits["test"].dates)
