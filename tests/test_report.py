"""`forecast report` end to end on tiny real studies: a synthetic tier with VIX (tier c), two
budgets ("6K" and "20K" on a test grid of d_model 16/32), one 1-epoch trial each in a real
SQLite storage, then a report with two seeds per best config (real retrains, one epoch each).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import synthetic_raw, synthetic_vix
from optuna.trial import TrialState, create_trial
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from forecast.cli import main as forecast_main
from forecast.data.raw import write_raw
from forecast.data.tiers import build_and_write
from forecast.hpo.study import HpoOptions, run_study
from forecast.report.build import ReportOptions, make_report
from forecast.report.stats import HELPS, HURTS, NO_EVIDENCE

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "SYN"
SPACE = """\
architecture:
  grid: {d_model: [16, 32], n_layers: [1, 2, 3, 4], head_dim: [8], ffn_ratio: [2, 4]}
params:
  lr: {key: model.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  dropout: {key: model.net.init_args.dropout, type: float, low: 0.0, high: 0.2}
"""
BUDGETS = ("6K", "20K")
SEEDS = 2
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs tiny models on one intra-op thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[str, Path]:
    """Two 1-trial studies (6K, 20K) of one series in one SQLite storage: (url, log dir)."""
    root = tmp_path_factory.mktemp("hpo")
    data = root / "data"
    raw = synthetic_raw(n=1000, start="2014-01-02")
    write_raw(data, SYMBOL, raw, source="synthetic test series")
    write_raw(data, "VIX", synthetic_vix(raw["Date"]), source="synthetic VIX")
    build_and_write(data, SYMBOL, "c")
    space = root / "space.yaml"
    space.write_text(SPACE)
    logs = root / "logs"
    flags = [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.tier=c", "--data.context_length=32",
             "--data.val_start=2016-07-01", "--data.test_start=2017-03-01", "--data.min_windows=20",
             "--data.batch_size=64", "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
             "--trainer.max_epochs=1"]
    for budget in BUDGETS:
        run_study(HpoOptions(budget=budget, trials=1, configs=[str(ROOT / "configs" / "demo.yaml")],
                             overrides=flags, search_space=space, log_dir=logs, live=False))
    return f"sqlite:///{logs / 'optuna.db'}", logs


@pytest.fixture(scope="module")
def report(studies, tmp_path_factory):
    url, _ = studies
    out = tmp_path_factory.mktemp("report")
    said: list[str] = []
    result = make_report(ReportOptions(storage=url, seeds=SEEDS, out=out, bootstrap=20), say=said.append)
    return result, out, said


def _study(url: str, budget: str) -> optuna.Study:
    return optuna.load_study(study_name=f"{SYMBOL}-c-threshold0.01-h1-{budget}", storage=url)


# -- tables --------------------------------------------------------------------------------------
def test_scaling_table_has_one_row_per_budget_with_seed_intervals(report, studies):
    _, out, _ = report
    url, _ = studies
    table = pd.read_csv(out / "scaling.csv")
    assert list(table["budget"]) == list(BUDGETS) and set(table["status"]) == {"ok"}
    assert {"symbol", "tier", "task", "horizon", "study", "trial", "params", "arch", "search_val_loss",
            "seeds", "retrain_val_loss_mean"} <= set(table.columns)
    for metric in ("loss", "auroc", "ap", "brier"):
        lo, mean, hi = (table[f"test_{metric}_{k}"] for k in ("lo", "mean", "hi"))
        assert (lo <= mean).all() and (mean <= hi).all()
    assert (table[["test_auroc_lo", "test_ap_lo", "test_brier_lo"]] >= 0).all().all()
    assert (table["seeds"] == SEEDS).all() and (table["horizon"] == 1).all()
    base = pd.read_csv(out / "baselines.csv").query("split == 'test'").set_index("baseline")["loss"]
    assert (table["best_baseline"] == base.idxmin()).all()  # the strongest on test: conservative
    gap = table["test_loss_mean"] - base.min()
    assert table["test_loss_minus_baseline_mean"].to_numpy() == pytest.approx(gap.to_numpy(), abs=1e-5)
    for _, row in table.iterrows():  # read from the storage, not re-derived
        best = _study(url, row["budget"]).best_trial
        assert row["params"] == best.user_attrs["params"] and row["arch"] == best.user_attrs["arch_id"]
        assert row["search_val_loss"] == pytest.approx(best.value)


def test_runs_are_tested_once_from_their_best_checkpoint(report):
    result, out, said = report
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(BUDGETS) * SEEDS and sorted(set(runs["seed"])) == list(range(SEEDS))
    assert not runs["reused"].any()
    for _, run in runs.iterrows():
        folder = Path(run["folder"])
        assert folder == out / "runs" / run["study"] / f"seed_{run['seed']}"
        record = json.loads((folder / "result.json").read_text())
        assert record["test"]["test/loss"] == pytest.approx(run["test_loss"])
        assert (folder / "config.yaml").is_file() and list(folder.glob("events.out.tfevents.*"))
        assert not list(folder.rglob("*.ckpt"))  # deleted once tested
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert config["seed_everything"] == run["seed"]
        assert len(record["probs"]) > 0 and record["history"][0]["epoch"] == 0
    assert sum(line.startswith("[") for line in said) == len(runs)  # one progress line per retrain
    # the two seeds really differ (fresh seeds, not one run copied)
    first = runs[runs["budget"] == BUDGETS[0]]["test_loss"]
    assert first.nunique() == SEEDS


def test_fits_baselines_and_regimes_tables(report):
    _, out, _ = report
    fits = pd.read_csv(out / "fits.csv")
    assert len(fits) == 1 and fits.loc[0, "verdict"] in (HELPS, HURTS, NO_EVIDENCE)
    assert fits.loc[0, "budgets"] == 2 and "slope test" in fits.loc[0, "method"]
    assert pd.isna(fits.loc[0, "alpha_mean"])  # two budgets: no power law, said in `method`
    base = pd.read_csv(out / "baselines.csv")
    assert set(base["baseline"]) == {"prior", "logistic", "hist_gb"} and set(base["split"]) == {"val", "test"}
    assert (base[base["baseline"] == "prior"]["auroc"] == 0.5).all()
    regimes = pd.read_csv(out / "regimes.csv")
    assert list(regimes["regime"].unique()) == ["VIX < 15", "VIX 15-25", "VIX > 25"]
    assert len(regimes) == 3 * len(BUDGETS)
    test_windows = pd.read_csv(out / "runs.csv")  # levels partition the test split
    n_test = len(json.loads((Path(test_windows.loc[0, "folder"]) / "result.json").read_text())["probs"])
    assert regimes.groupby("budget")["windows"].sum().eq(n_test).all()


def test_report_md_reads_without_the_code(report):
    result, out, _ = report
    text = (out / "report.md").read_text()
    for needle in ("## Answer", "## How to read this", "Student-t interval", "SYN c threshold0.01 h=1",
                   "class prior", "logistic regression", "HistGradientBoosting", "Test AUROC by VIX level",
                   "too few for the 3-parameter power law", f"**{result.series[0].scaling.verdict}**",
                   "scaling.png", "learning_6K.png"):
        assert needle in text, needle
    assert "Could not be reported" not in text and not list(out.glob(".*.tmp"))


# -- plots ---------------------------------------------------------------------------------------
def test_plots_are_written_and_logged_to_tensorboard(report):
    _, out, _ = report
    for name in ("scaling.png", *(f"learning_{b}.png" for b in BUDGETS)):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["images"]) == {"report/scaling", *(f"report/learning_{b}" for b in BUDGETS)}


# -- a rerun reuses every retrain; the command line --------------------------------------------
def test_rerun_reuses_the_retrains_and_prints_the_verdict(report, studies, capsys):
    _, out, _ = report
    url, _ = studies
    before = (out / "runs.csv").read_text()
    assert forecast_main(["report", "--storage", url, "--seeds", str(SEEDS), "--out", str(out),
                          "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert "reused" in printed and "SYN c threshold0.01 h=1: " in printed
    runs = pd.read_csv(out / "runs.csv")
    assert runs["reused"].all()
    assert runs.drop(columns="reused").equals(pd.read_csv(pd.io.common.StringIO(before)).drop(columns="reused"))


def test_changed_data_retrains_instead_of_reusing(report, studies, tmp_path, monkeypatch):
    """A rebuilt tier (another data fingerprint) must not pass for the retrains made on the old one."""
    from forecast.data.datamodule import ForecastDataModule

    _, out, _ = report
    url, _ = studies
    copy = tmp_path / "report"
    shutil.copytree(out, copy)
    monkeypatch.setattr(ForecastDataModule, "fingerprint", lambda self: "rebuilt")
    make_report(ReportOptions(storage=url, seeds=1, out=copy, bootstrap=0), say=lambda _: None)
    runs = pd.read_csv(copy / "runs.csv")
    assert len(runs) == len(BUDGETS) and not runs["reused"].any()


# -- bad input -----------------------------------------------------------------------------------
def _no_complete_trial(tmp_path: Path, url: str) -> str:
    """A study with the right records but only a failed trial."""
    stamp = _study(url, BUDGETS[0]).user_attrs["fingerprint"]
    target = f"sqlite:///{tmp_path / 'failed.db'}"
    study = optuna.create_study(study_name="failed-study", storage=target)
    study.set_user_attr("fingerprint", stamp)
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"reason": "oom"}))
    return target


@pytest.mark.parametrize("case,message", [
    ("missing", "no Optuna storage at"),
    ("empty", "holds no study"),
    ("unknown", "no study named 'nope'"),
    ("no_complete", "has no complete trial (1 failed)"),
    ("seeds", "--seeds must be >= 1"),
    ("flag", "--data.horizon: not an option"),
    ("devices", "report retrains run on one device"),
])
def test_bad_input_is_one_line(studies, tmp_path, capsys, case, message):
    url, _ = studies
    args = {"missing": ["--storage", f"sqlite:///{tmp_path / 'none.db'}"],
            "empty": ["--storage", f"sqlite:///{tmp_path / 'empty.db'}"],
            "unknown": ["--storage", url, "--study", "nope"],
            "seeds": ["--storage", url, "--seeds", "0"],
            "flag": ["--storage", url, "--data.horizon=3"],
            "devices": ["--storage", url, "--trainer.devices", "2"]}.get(case)
    if case == "empty":
        optuna.delete_study(study_name=optuna.create_study(storage=args[1]).study_name, storage=args[1])
    if case == "no_complete":
        args = ["--storage", _no_complete_trial(tmp_path, url)]
    assert forecast_main(["report", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()  # nothing written before the mistake was found
    assert not (tmp_path / "none.db").exists()  # reading never creates a storage


def test_a_best_config_that_no_longer_loads_is_reported_not_skipped(studies, tmp_path, capsys):
    url, logs = studies
    name = f"{SYMBOL}-c-threshold0.01-h1-{BUDGETS[0]}"
    copy = tmp_path / "broken.db"
    shutil.copy(logs / "optuna.db", copy)  # same studies, same trial log folders
    best_yaml = logs / name / "best.yaml"
    original = best_yaml.read_text()
    try:
        best_yaml.write_text(original + "not_an_option: 1\n")
        out = tmp_path / "out"
        assert forecast_main(["report", "--storage", f"sqlite:///{copy}", "--study", name, "--out", str(out)]) == 1
    finally:
        best_yaml.write_text(original)
    err = capsys.readouterr().err
    assert f"study {name} not reported: best config does not load" in err and "not_an_option" in err
    text = (out / "report.md").read_text()
    assert "## Could not be reported" in text and "not_an_option" in text
    row = pd.read_csv(out / "scaling.csv").iloc[0]
    assert row["study"] == name and row["status"].startswith("best config does not load")
    assert (out / "scaling.png").read_bytes().startswith(PNG)


def test_without_best_yaml_the_trials_replay_command_rebuilds_the_config(studies, tmp_path, capsys):
    url, logs = studies
    name = f"{SYMBOL}-c-threshold0.01-h1-{BUDGETS[0]}"
    best_yaml = logs / name / "best.yaml"
    moved = best_yaml.rename(tmp_path / "best.yaml")  # as when the best trial ran on another machine
    try:
        out = tmp_path / "out"
        assert forecast_main(["report", "--storage", url, "--study", name, "--seeds", "1", "--out", str(out)]) == 0
    finally:
        moved.rename(best_yaml)
    text = (out / "report.md").read_text()
    assert "config rebuilt from trial 0's replay command" in text
    run = pd.read_csv(out / "runs.csv").iloc[0]
    assert run["params"] == _study(url, BUDGETS[0]).best_trial.user_attrs["params"]


def test_a_failed_retrain_is_reported_with_its_reason(studies, tmp_path, capsys):
    url, _ = studies
    name = f"{SYMBOL}-c-threshold0.01-h1-{BUDGETS[0]}"
    out = tmp_path / "out"
    args = ["report", "--storage", url, "--study", name, "--seeds", "1", "--out", str(out), "--trainer.max_epochs=0"]
    assert forecast_main(args) == 1
    assert "retrain with seed 0 failed" in capsys.readouterr().err
    assert pd.read_csv(out / "scaling.csv").loc[0, "status"].startswith("retrain with seed 0 failed")
