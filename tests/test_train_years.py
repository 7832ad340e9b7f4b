"""The training-years axis: trailing windows and random whole-year blocks on fixed val/test dates."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from search_fixtures import data, flags, options, space_file  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.data.datamodule import ForecastDataModule
from forecast.data.raw import write_raw
from forecast.data.selection import drawn_years, whole_years
from forecast.data.synthetic import synthetic_ohlcv
from forecast.data.tiers import build_and_write
from forecast.hpo.config import study_name
from forecast.hpo.opening import open_study
from forecast.hpo.plan import plan_study
from forecast.hpo.storage import open_storage
from forecast.hpo.years import selection_flags
from forecast.training.cli import cli_main
from forecast.training.config import recorded_data
from forecast.training.resume import IDENTITY_DATA_KEYS, RESUME_DATA_KEYS, data_conflicts

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "SYN"
VAL_START, TEST_START = "2016-01-01", "2017-01-02"  # ~8 training years before validation


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("years")
    write_raw(root, SYMBOL, synthetic_ohlcv(n=2650, start="2007-06-01"), source="synthetic test series")
    build_and_write(root, SYMBOL, "a25")
    return root


def dm(data_dir: Path, **over) -> ForecastDataModule:
    kw = dict(symbol=SYMBOL, tier="a25", data_dir=str(data_dir), context_length=32, horizon=2, threshold=0.01,
              val_start=VAL_START, test_start=TEST_START, min_windows=20, batch_size=32)
    return ForecastDataModule(**{**kw, **over})


def test_trailing_years_train_only_on_the_years_before_validation(long_dir):
    full, four = dm(long_dir), dm(long_dir, train_years=4)
    first_val = full.splits["val"].dates[0]
    train = four.splits["train"].dates
    assert train[0] >= first_val - pd.DateOffset(years=4) > full.splits["train"].dates[0]
    assert (train[0] - (first_val - pd.DateOffset(years=4))).days < 7  # the whole window, not less
    assert four.selection.calendar_years == [2012, 2013, 2014, 2015]
    # the samples are exactly the full run's samples inside the window: purging as today
    np.testing.assert_array_equal(four.splits["train"].ends,
                                  full.splits["train"].ends[full.splits["train"].dates >= train[0]])
    for name in ("val", "test"):  # validation and test never move
        np.testing.assert_array_equal(four.splits[name].ends, full.splits[name].ends)
    assert "trailing 4 years = 2012..2015" in four.selection_line()
    assert f"{four.splits['train'].size} samples" in four.selection_line()


def test_no_training_target_reaches_validation_in_any_design(long_dir):
    for kw in ({"train_years": 2}, {"train_years": 3, "train_design": "blocks", "train_draw": 2},
               {"train_years": 1.5}):
        d = dm(long_dir, **kw)
        last_target = d.splits["train"].ends.max() + d.horizon
        assert last_target < d.splits["val"].ends.min() and last_target < d.bounds["val"][0]


def test_blocks_are_whole_calendar_years_and_another_draw_draws_others(long_dir):
    a, b = dm(long_dir, train_years=3, train_design="blocks", train_draw=0), \
        dm(long_dir, train_years=3, train_design="blocks", train_draw=1)
    for d in (a, b):
        years = d.selection.calendar_years
        assert len(years) == 3 and set(d.splits["train"].dates.year) == set(years)
        for y in years:  # every sample of the drawn year, none missing
            in_year = dm(long_dir).splits["train"].dates.year == y
            assert in_year.sum() == (d.splits["train"].dates.year == y).sum()
    assert a.selection.calendar_years != b.selection.calendar_years
    assert a.fingerprint() != b.fingerprint()
    smaller = dm(long_dir, train_years=2, train_design="blocks", train_draw=0)
    assert set(smaller.selection.calendar_years) < set(a.selection.calendar_years)  # one draw: nested amounts


def test_scaler_is_fitted_on_the_kept_rows_only(long_dir):
    four = dm(long_dir, train_years=4)
    kept = (four.dates >= pd.Timestamp("2012-01-01")) & (four.dates < four.dates[four.bounds["val"][0]])
    np.testing.assert_allclose(four.scale_mean, four.raw_features[kept].mean(axis=0))
    assert not np.allclose(four.scale_mean, dm(long_dir).scale_mean)
    assert dm(long_dir).fingerprint() != four.fingerprint()


def test_whole_years_and_draws_are_pure_functions_of_dates():
    dates = pd.bdate_range("2001-03-01", "2010-06-30")
    years = whole_years(dates, 0, len(dates) - 1)
    assert years == list(range(2002, 2010))  # 2001 starts in March, 2010 ends in June
    assert drawn_years(years, 3, 5) == drawn_years(years, 3, 5)
    assert set(drawn_years(years, 2, 5)) < set(drawn_years(years, 5, 5))
    with pytest.raises(ForecastError, match="holds 8 whole calendar years"):
        drawn_years(years, 9, 0)


@pytest.mark.parametrize(("kw", "words"), [
    ({"train_design": "blocks"}, "needs data.train_years"),
    ({"train_years": 2.5, "train_design": "blocks"}, "not a whole number"),
    ({"train_years": 2, "train_draw": 1}, "has none"),
    ({"train_years": 20, "train_design": "blocks"}, "at most"),
])
def test_impossible_selections_are_refused_in_words(long_dir, kw, words):
    with pytest.raises(ForecastError, match=words):
        dm(long_dir, **kw)


def test_study_names_record_the_selection():
    data = {"symbol": "SPY", "tier": "c", "task": "threshold", "threshold": 0.01, "horizon": 1}
    assert study_name({"data": data | {"train_years": None}}, "10K") == "SPY-c-threshold0.01-h1-10K"
    assert study_name({"data": data | {"train_years": 4.0}}, "10K") == "SPY-c-threshold0.01-h1-y4-10K"
    assert study_name({"data": data | {"train_years": 4, "train_design": "blocks", "train_draw": 2}},
                      "10K") == "SPY-c-threshold0.01-h1-y4b2-10K"


def test_fit_says_and_records_the_kept_years(long_dir, tmp_path, caplog):
    """`forecast fit --data.train_years 4`: the line it says, fit_summary.json's record and config.yaml."""
    args = ["--config", "configs/demo.yaml", f"--data.data_dir={long_dir}", f"--data.symbol={SYMBOL}",
            "--data.context_length=32", f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}",
            "--data.min_windows=20", "--data.train_years=4", "--model.net.init_args.patch_len=8",
            "--model.net.init_args.stride=4", "--model.net.init_args.d_model=8", "--model.net.init_args.n_heads=1",
            "--model.net.init_args.d_ff=16", "--model.net.init_args.n_layers=1", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.name=t",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]
    with caplog.at_level(logging.INFO):
        cli_main(["fit", *args])
    assert "train years: trailing 4 years = 2012..2015" in caplog.text
    summary = json.loads(next(tmp_path.rglob("fit_summary.json")).read_text())
    kept = summary["train_selection"]
    assert kept["calendar_years"] == [2012, 2013, 2014, 2015] and kept["years"] == 4
    assert kept["samples"] > 900 and kept["first"].startswith("2012-01")
    assert kept["samples_all_years"] > 1.5 * kept["samples"] and kept["epoch_samples"] == kept["samples_all_years"]
    assert f"epochs of {kept['epoch_samples']} samples drawn from them" in caplog.text
    config = next(tmp_path.rglob("config.yaml")).read_text()
    assert "train_years: 4" in config and "train_design: trailing" in config


def _steps(long_dir: Path, save: Path, *flags: str) -> tuple[int, int]:
    """(optimizer steps, kept training samples) of a 1-epoch fit of a tiny model (no checkpoints)."""
    args = ["--config", "configs/demo.yaml", f"--data.data_dir={long_dir}", f"--data.symbol={SYMBOL}",
            "--data.context_length=8", f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}",
            "--data.min_windows=20", "--data.batch_size=64", "--model.net.init_args.patch_len=8",
            "--model.net.init_args.stride=8", "--model.net.init_args.d_model=8", "--model.net.init_args.n_heads=1",
            "--model.net.init_args.d_ff=8", "--model.net.init_args.n_layers=1", "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=1", f"--trainer.logger.init_args.save_dir={save}",
            "--trainer.enable_checkpointing=false", "--trainer.logger.init_args.name=" + "-".join(flags or ["all"]),
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *flags]
    cli = cli_main(["fit", *args])
    return cli.trainer.global_step, cli.datamodule.splits["train"].size


def test_fewer_years_get_the_optimizer_steps_of_all_years(long_dir, tmp_path):
    """The step confound: in one epoch, 1 trailing year takes exactly the optimizer steps of all ~8
    years (each epoch draws the all-years epoch's samples from the kept ones), and so do drawn
    blocks; `--data.train_epoch kept` is one pass over the kept samples, ~1/8 of the steps (~4 s)."""
    every, n_all = _steps(long_dir, tmp_path)
    assert every == -(-n_all // 64)  # one epoch of the all-years batches
    one, n_one = _steps(long_dir, tmp_path, "--data.train_years=1")
    assert n_one < n_all / 5 and one == every
    blocks = dm(long_dir, context_length=8, horizon=1, batch_size=64, train_years=2, train_design="blocks", train_draw=1)
    assert len(blocks.train_dataloader()) == every and blocks.epoch_samples == n_all
    kept = dm(long_dir, context_length=8, horizon=1, batch_size=64, train_years=1, train_epoch="kept")
    assert kept.epoch_samples == n_one and len(kept.train_dataloader()) == -(-n_one // 64) < every / 5


def test_an_epoch_of_a_selection_draws_each_kept_sample_equally_often():
    from forecast.data.selection import RepeatedPermutations
    torch.manual_seed(0)
    drawn = list(RepeatedPermutations(7, 30))
    assert len(drawn) == 30 and len(RepeatedPermutations(7, 30)) == 30
    counts = np.bincount(drawn, minlength=7)
    assert counts.min() >= 4 and counts.max() <= 5  # 4 whole permutations, then 2 of the fifth
    assert sorted(drawn[:7]) == list(range(7)) and drawn[:7] != drawn[7:14]  # whole and reshuffled
    torch.manual_seed(0)
    assert list(RepeatedPermutations(7, 30)) == drawn  # seeded by torch (seed_everything)


def test_sweep_selections_cover_years_designs_and_draws():
    flags = selection_flags([2, 4.0, "all"], ["trailing", "blocks"], 2)
    assert [f[0].split("=")[1] + f[1].split("=")[1][0] + f[2].split("=")[1] for f in flags] == \
        ["2t0", "2b0", "2b1", "4t0", "4b0", "4b1", "nullt0"]
    assert selection_flags([1.5], ["trailing"], 3) == [["--data.train_years=1.5", "--data.train_design=trailing",
                                                         "--data.train_draw=0"]]
    with pytest.raises(ForecastError, match="whole calendar years"):
        selection_flags([1.5], ["blocks"], 1)
    with pytest.raises(ForecastError, match="twice"):
        selection_flags([2, 2.0], ["trailing"], 1)


def test_a_study_records_its_selection_and_the_default_stays_out_of_older_records():
    base = {"symbol": "SPY", "tier": "c", "inputs": "tier"}
    assert recorded_data({**base, "train_years": None, "train_design": "trailing", "train_draw": 0}) == \
        {"symbol": "SPY", "tier": "c"}  # studies made before the axis still resume
    assert recorded_data({**base, "train_years": 4.0, "train_design": "blocks", "train_draw": 1}) == \
        {"symbol": "SPY", "tier": "c", "train_years": 4.0, "train_design": "blocks", "train_draw": 1}


@pytest.mark.slow
def test_a_study_resumed_with_another_selection_is_refused(data, space_file, tmp_path):
    """(~13 s: two study plans build the data module and check the space's ends)"""
    one_year = options(data, space_file, tmp_path, trials=1, study_name="s", epochs=1)
    one_year.overrides += ["--data.train_years=1"]
    open_study(plan_study(one_year))  # made, no trial run
    with pytest.raises(ForecastError, match=r"was run with other settings \(data.train_years: 1.0 -> None"):
        open_study(plan_study(options(data, space_file, tmp_path, trials=1, study_name="s", epochs=1)))


@pytest.mark.slow
def test_sweep_fills_one_study_per_selection_from_one_queue(data, space_file, tmp_path, capsys):
    """`forecast sweep --train-years 1 all --designs trailing blocks`: three studies from one queue
    (1 trailing year, 1 drawn year, all years), named by their selection (~40 s)."""
    logs = tmp_path / "logs"
    args = ["sweep", "--budgets", "20K", "--horizons", "1", "--train-years", "1", "all", "--designs", "trailing",
            "blocks", "--trials", "1", "--config", str(ROOT / "configs" / "demo.yaml"), "--search-space",
            str(space_file), "--log-dir", str(logs), "--no-live", *flags(data, epochs=1)]
    assert forecast_main([*args, "--data.train_years=2"]) != 0
    assert "--data.train_years is set by --train-years" in capsys.readouterr().err
    assert forecast_main(args) == 0
    url = f"sqlite:///{logs / 'optuna.db'}"
    names = sorted(optuna.get_all_study_names(open_storage(url, 0)))
    assert names == ["SYN-a25-threshold0.01-h1-20K", "SYN-a25-threshold0.01-h1-y1-20K",
                     "SYN-a25-threshold0.01-h1-y1b0-20K"]
    for name, years in zip(names, (None, 1, 1), strict=True):
        study = optuna.load_study(study_name=name, storage=open_storage(url, 0))
        assert study.user_attrs["fingerprint"]["data"].get("train_years") == years
        assert [t.state.name for t in study.trials] == ["COMPLETE"]


def test_a_resumed_fit_with_another_selection_is_refused_and_a_test_is_not():
    saved = {"task": "threshold", "horizon": 1, "train_years": 4.0, "train_design": "blocks", "train_draw": 1}
    run = {**saved, "train_draw": 2}
    assert data_conflicts(saved, run, RESUME_DATA_KEYS) == ["data.train_draw: 1 -> 2"]
    assert data_conflicts(saved, run, IDENTITY_DATA_KEYS) == []  # testing it on the same test days is fine
