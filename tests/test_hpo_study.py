"""forecast.hpo (plan, open, loop, outputs) end to end on a tiny synthetic tier: records, replays, resumes, faults, bad input and
the sweep, with real Optuna storage files and real fits."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as L
import pandas as pd
import pytest
import torch
import yaml
from conftest import synthetic_raw
from optuna.trial import TrialState
from search_fixtures import (  # noqa: F401  (fixtures; _one_thread is autouse)
    ROOT,
    SYMBOL,
    _one_thread,
    assert_no_duplicates,
    cli_args,
    data,
    finished,
    flags,
    load,
    options,
    space_file,
)

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.data.datamodule import ForecastDataModule
from forecast.data.raw import write_raw
from forecast.data.tiers import build_and_write
from forecast.hpo.loop import run_study
from forecast.hpo.opening import open_study
from forecast.hpo.plan import plan_study
from forecast.hpo.stop import StopControl
from forecast.training.baselines import prior_scores
from forecast.training.cli import cli_main
from forecast.training.config import resolve


@pytest.fixture(scope="module")
def three(data, space_file, tmp_path_factory):
    logs = tmp_path_factory.mktemp("three")
    outcome = run_study(options(data, space_file, logs, trials=3, epochs=3))
    return outcome, load(logs), logs


def test_a_three_trial_study_completes_with_its_records(three, data):
    outcome, study, logs = three
    assert outcome.ending == "done" and outcome.finished == 3
    assert outcome.study == "SYN-a25-threshold0.01-h1-20K"  # horizon and target readable from the name
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    # the grid's extremes ran first
    assert trials[0].user_attrs["arch_id"] == "d32-l1-h4-f2" and trials[1].user_attrs["arch_id"] == "d16-l4-h2-f4"
    for t in trials:
        a = t.user_attrs
        assert a["params"] > 0 and a["micro_batch"] == 64 and a["accumulate"] == 1
        assert a["epochs_run"] == 3 and a["reason"] == "complete" and a["wall_s"] > 0
        assert a["samples_per_sec"] > 0 and a["tokens_per_sec"] > a["samples_per_sec"] and a["planner_peak_gb"] > 0
        assert a["mfu"] is None and a["peak_memory_gb"] is None  # CPU: no known peak FLOPs, no device memory
        assert a["replay"].startswith("forecast fit --config") and "--model.lr=" in a["replay"]
        folder = Path(a["log_dir"])
        assert folder == outcome.folder / f"trial_{t.number:04d}"
        assert (folder / "config.yaml").is_file() and list(folder.glob("events.out.tfevents.*"))
        events = b"".join(p.read_bytes() for p in folder.glob("events.out.tfevents.*"))
        # one HParams record (TensorBoard shows the first): the module's, with the trial's draw in it
        assert events.count(b"_hparams_/session_start_info") == 1
        assert b"num_parameters" in events and b"d_model" in events and b"warmup_frac" in events
        # the objective is the BEST epoch's score, not the last one's
        assert t.value == pytest.approx(min(t.intermediate_values.values()))
        assert a["best_epoch"] == min(t.intermediate_values, key=t.intermediate_values.get)
    csv = pd.read_csv(outcome.folder / "trials.csv")
    assert len(csv) == 3 and {"value", "params_lr", "user_attrs_arch_id", "user_attrs_reason"} <= set(csv.columns)
    assert {f"user_attrs_{k}" for k in ("samples_per_sec", "mfu", "peak_memory_gb", "planner_peak_gb")} <= set(csv.columns)
    summary = (outcome.folder / "summary.md").read_text()
    assert "3/3 finished" in summary and "Best 3 complete trials" in summary
    best = study.best_trial  # its row counts epochs as the progress does: best epoch N of `epochs`, 1-based
    row = next(ln for ln in summary.splitlines() if ln.startswith(f"| {best.number} | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-3:-1] == [str(best.user_attrs["epochs_run"]), str(best.user_attrs["best_epoch"] + 1)]
    # the bar every trial must clear: the class prior's val loss on the same split and labels
    dm = ForecastDataModule(**resolve(["--config", str(ROOT / "configs" / "demo.yaml"), *flags(data, 3)])["data"])
    prior = prior_scores(dm, "val")["loss"]
    assert f"val/loss = {prior:.6g}" in summary and "Class prior" in summary
    assert f"The best trial is {abs(study.best_value - prior):.4g} " in summary
    # only the best trial keeps its checkpoint
    kept = [t.number for t in trials if list((Path(t.user_attrs["log_dir"]) / "checkpoints").glob("*.ckpt"))]
    assert kept == [study.best_trial.number]
    ckpts = list((Path(study.best_trial.user_attrs["log_dir"]) / "checkpoints").glob("*.ckpt"))
    assert [p.name.startswith("best-") for p in ckpts] == [True]  # no last.ckpt
    saved = torch.load(ckpts[0], weights_only=False)
    assert "state_dict" in saved and "optimizer_states" not in saved  # weights only: 4 bytes per parameter
    assert not list(outcome.folder.glob(".*.tmp"))  # no half-written output


def test_best_yaml_replays_the_best_trial(three, tmp_path):
    outcome, study, _ = three
    best_yaml = outcome.folder / "best.yaml"
    config = yaml.safe_load(best_yaml.read_text())
    assert config["model"]["lr"] == study.best_trial.params["lr"]
    assert config["data"]["horizon"] == 1 and config["seed_everything"] == 42
    cli = cli_main(["fit", "--config", str(best_yaml)])
    replayed = float(cli.trainer.checkpoint_callback.best_model_score)
    assert replayed == pytest.approx(study.best_value, abs=1e-5)


def test_resuming_with_other_settings_is_refused(three, data, space_file):
    _, _, logs = three
    changed = options(data, space_file, logs, trials=3)
    changed.overrides.append("--data.scaler=none")
    with pytest.raises(ForecastError, match="data.scaler"):
        open_study(plan_study(changed))


def test_resuming_on_a_rebuilt_tier_is_refused_in_one_line(three, data, space_file, tmp_path, capsys):
    """Same settings, other numbers (a re-imported series, the tier rebuilt): the study's data
    fingerprint no longer matches and the resume is refused before any trial."""
    _, study, logs = three
    other = tmp_path / "data"
    write_raw(other, SYMBOL, synthetic_raw(n=1000, start="2014-01-02", seed=7), source="another series")
    build_and_write(other, SYMBOL, "a25")
    args = cli_args(data, space_file, logs, 4, epochs=3)  # the same settings as the study (`three`): only the data differ
    args[args.index(f"--data.data_dir={data}")] = f"--data.data_dir={other}"  # an operational key: allowed
    assert forecast_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was run on other data (data fingerprint" in err[0], err
    assert len(load(logs).get_trials()) == len(study.get_trials())


def test_a_study_already_at_n_runs_nothing(three, data, space_file):
    _, study, logs = three
    outcome = run_study(options(data, space_file, logs, trials=3, epochs=3))
    assert outcome.ending == "done" and len(load(logs).get_trials()) == len(study.get_trials())


class _TouchStop(L.Callback):
    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        self.path.touch()


@pytest.mark.slow  # 10-60 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_stop_then_rerun_reaches_n_without_duplicates(data, space_file, tmp_path):
    opts = options(data, space_file, tmp_path, trials=3)
    stop_file = tmp_path / "SYN-a25-threshold0.01-h1-20K" / "STOP"
    first = run_study(opts, extra_callbacks=lambda trial: [_TouchStop(stop_file)] if trial.number == 0 else [])
    assert first.ending == "stopped" and first.finished == 1
    assert (first.folder / "trials.csv").is_file() and (first.folder / "summary.md").is_file()
    assert stop_file.exists()  # left where it is: the rerun ignores a STOP older than itself
    second = run_study(opts)
    assert second.ending == "done" and second.finished == 3
    study = load(tmp_path)
    assert len(finished(study)) == 3 and not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert_no_duplicates(study)


class _Faults(L.Callback):
    """Trial 1 runs out of memory, trial 2's weights go NaN, trial 3 hits a bug."""

    def __init__(self, number: int):
        self.number = number

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.number == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        if self.number == 3 and trainer.current_epoch == 1:
            raise ValueError("boom")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.number == 2:
            with torch.no_grad():
                pl_module.net.head.weight.fill_(float("nan"))


def test_oom_nan_and_errors_are_recorded_and_the_study_goes_on(data, space_file, tmp_path):
    outcome = run_study(options(data, space_file, tmp_path, trials=5, pruner="none"),
                        extra_callbacks=lambda trial: [_Faults(trial.number)])
    assert outcome.ending == "done" and outcome.finished == 5
    t = {trial.number: trial for trial in load(tmp_path).get_trials()}
    assert t[1].state == TrialState.FAIL and t[1].user_attrs["reason"] == "oom"
    assert "out of memory" in t[1].user_attrs["message"]
    assert t[2].state == TrialState.PRUNED and t[2].user_attrs["reason"] == "diverged"
    assert "nan" in t[2].user_attrs["message"]
    assert t[3].state == TrialState.FAIL and t[3].user_attrs["reason"] == "error"
    assert t[3].user_attrs["message"] == "ValueError: boom"
    assert "ValueError: boom" in (Path(t[3].user_attrs["log_dir"]) / "error.txt").read_text()
    assert t[0].state == t[4].state == TrialState.COMPLETE and math.isfinite(t[4].value)
    summary = (outcome.folder / "summary.md").read_text()
    assert "1 oom" in summary and "1 diverged" in summary and "1 error" in summary


class _AbortSurfacesAsAnotherError(L.Callback):
    """A second stop signal lands, and what reaches the objective is some other exception (as when
    Lightning's teardown moves a network that is still on `meta`)."""

    def __init__(self, stop: StopControl):
        self.stop = stop

    def on_train_start(self, trainer, pl_module):
        self.stop.aborted, self.stop.abort_signal = True, "SIGINT"
        raise NotImplementedError("Cannot copy out of meta tensor; no data!")


def test_an_abort_that_surfaces_as_another_error_is_recorded_as_aborted(data, space_file, tmp_path):
    with StopControl(tmp_path / "STOP", notify=lambda _: None, keyboard=False) as stop:
        outcome = run_study(options(data, space_file, tmp_path, trials=2), stop=stop,
                            extra_callbacks=lambda trial: [_AbortSurfacesAsAnotherError(stop)])
    assert outcome.ending == "aborted"  # the search ends, as on any second Ctrl-C
    (trial,) = load(tmp_path).get_trials(states=(TrialState.FAIL, TrialState.COMPLETE))  # one ran
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "aborted"
    assert trial.user_attrs["message"] == "aborted by a second SIGINT (NotImplementedError after it)"


@pytest.mark.parametrize("change,message", [
    ({"budget": "3X"}, "unknown budget '3X'"),
    ({"space": {"params": {"foo": {"key": "model.net.init_args.foo", "type": "float", "low": 0, "high": 1}}}},
     "no argument for"),
    ({"space": {"architecture": {"grid": {"d_model": [16, 32], "n_layers": [1, 2, 3, 4], "head_dim": [8],
                                          "ffn_ratio": [2, 4]}},
                "params": {"clip": {"key": "trainer.gradient_clip_val", "type": "categorical",
                                    "choices": [0.5, "lots"]}}}}, "invalid trial config"),
    ({"extra": ["--storage", "postgresql://user:secret@127.0.0.1:1/none"]}, "cannot open storage"),
    ({"trials": 0}, "trials: '0' is not an integer >= 1"),
    ({"extra": ["--model.lr=0.1"]}, "--model.lr is searched"),
    ({"extra": ["--data.val_start=1990-01-01"]}, "outside"),
    ({"extra": ["--trainer.devices=2"]}, "search trials run on one device"),
])
def test_bad_input_is_one_line_before_any_trial(data, space_file, tmp_path, capsys, change, message):
    space = space_file
    if "space" in change:
        space = tmp_path / "space.yaml"
        space.write_text(yaml.safe_dump(change["space"]))
    args = cli_args(data, space, tmp_path / "logs", change.get("trials", 3), *change.get("extra", []))
    if "budget" in change:
        args[args.index("20K")] = change["budget"]
    assert forecast_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "secret" not in err[0]
    assert not list(tmp_path.rglob("trial_*"))


def test_sweep_runs_the_matrix_and_skips_finished_studies(data, space_file, tmp_path, capsys):
    args = cli_args(data, space_file, tmp_path, 1)[1:]
    args = ["sweep", "--budgets", "20K", "--horizons", "1", "2", *[a for a in args if a not in ("--budget", "20K")]]
    assert forecast_main(args) == 0
    study_names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert study_names == ["SYN-a25-threshold0.01-h1-20K", "SYN-a25-threshold0.01-h2-20K"]
    best = yaml.safe_load((tmp_path / study_names[1] / "best.yaml").read_text())
    assert best["data"]["horizon"] == 2  # the horizon really reached the trial
    capsys.readouterr()
    assert forecast_main(args) == 0  # rerun: both studies are finished, nothing trains
    out = capsys.readouterr().out
    assert out.count("done: 1/1 trials finished") == 2 and "trial 1 " not in out


def test_a_budget_that_cannot_fit_is_refused_before_any_trial(data, tmp_path, capsys):
    """The issue's case: 2B on a CPU machine with 24 GB is refused up front, with the way out."""
    args = ["hpo", "--budget", "2B", "--trials", "1", "--config", str(ROOT / "configs" / "demo.yaml"),
            "--log-dir", str(tmp_path / "logs"), "--no-live", *flags(data), "--trainer.accelerator=cpu",
            "--planner.memory_gb=24"]
    assert forecast_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget 2B does not fit this machine" in err[0] and "a smaller budget" in err[0]
    assert not list((tmp_path / "logs").rglob("trial_*"))


@pytest.mark.parametrize("train_epoch", ["all_years", "kept"])
def test_a_cpu_search_says_how_long_an_epoch_takes(data, space_file, tmp_path, capsys, train_epoch):
    """On a training-years selection an epoch draws as many samples as an all-years epoch (`all_years`,
    the default) or one pass over the kept years' (`kept`): the estimate counts what an epoch draws."""
    opts = options(data, space_file, tmp_path / "logs")
    opts.overrides += ["--data.train_years=1", f"--data.train_epoch={train_epoch}"]
    plan_study(opts)
    out = capsys.readouterr().out
    assert "CPU: one epoch of d32-l" in out and "GFLOP" in out and "at least" in out
    dm = ForecastDataModule(**resolve(["--config", str(ROOT / "configs" / "demo.yaml"), *opts.overrides])["data"])
    kept, every = dm.splits["train"].size, dm.samples_all_years
    assert kept < every  # one year of about two and a half
    assert f" is {every if train_epoch == 'all_years' else kept:,} windows x " in out
