"""`forecast hpo` / `forecast sweep` on a tiny synthetic tier: real Optuna storage files, real fits.

A "20K" budget over a test grid of d_model 16/32 gives four architectures of 15-20K parameters,
so a trial is one or two seconds of CPU. Processes are real where the contract is about
processes (SIGINT, kill -9, two workers on one journal file).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import optuna
import pandas as pd
import pytest
import torch
import yaml
from conftest import synthetic_raw
from optuna.trial import TrialState

from forecast.cli import main as forecast_main
from forecast.data.datamodule import ForecastDataModule
from forecast.data.raw import write_raw
from forecast.data.tiers import build_and_write
from forecast.errors import ForecastError
from forecast.hpo.outputs import is_finished
from forecast.hpo.space import bind, load_space, parse_param
from forecast.hpo.stop import AbortTrial, StopControl
from forecast.hpo.storage import WORKER_ATTR, open_storage, recover_dead_trials
from forecast.hpo.study import (
    HpoOptions,
    make_pruner,
    open_study,
    plan_study,
    run_study,
)
from forecast.sizing.budget import parse_budget
from forecast.training.baselines import prior_scores
from forecast.training.cli import cli_main
from forecast.training.config import resolve
from forecast.training.module import warmup_cosine

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "SYN"
VAL_START, TEST_START = "2016-07-01", "2017-03-01"
TINY_SPACE = """\
architecture:
  grid: {d_model: [16, 32], n_layers: [1, 2, 3, 4], head_dim: [8], ffn_ratio: [2, 4]}
params:
  lr: {key: model.lr, type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  weight_decay: {key: model.weight_decay, type: float, low: 1.0e-4, high: 0.3, log: true}
  dropout: {key: model.net.init_args.dropout, type: float, low: 0.0, high: 0.3}
  warmup_frac: {key: model.warmup_frac, type: float, low: 0.0, high: 0.2}
  head_dropout: {key: model.net.init_args.head_dropout, type: float, low: 0.0, high: 0.3}
  clip: {key: trainer.gradient_clip_val, type: categorical, choices: [0.5, 2.0]}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs tiny models on one intra-op thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_raw(root, SYMBOL, synthetic_raw(n=1000, start="2014-01-02"), source="synthetic test series")
    build_and_write(root, SYMBOL, "a25")
    return root


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(TINY_SPACE)
    return path


def flags(data: Path, epochs: int = 2) -> list[str]:
    """Trial flags: the demo config shrunk to the synthetic tier (context 32, patches of 8)."""
    return [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
            f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.min_windows=20",
            "--data.batch_size=64", "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
            f"--trainer.max_epochs={epochs}", "--trainer.log_every_n_steps=5"]


def options(data: Path, space: Path, logs: Path, trials: int = 3, **kw) -> HpoOptions:
    return HpoOptions(budget="20K", trials=trials, configs=[str(ROOT / "configs" / "demo.yaml")],
                      overrides=flags(data, kw.pop("epochs", 2)), search_space=space, log_dir=logs,
                      live=False, **kw)


def cli_args(data: Path, space: Path, logs: Path, trials: int, *extra: str, epochs: int = 2) -> list[str]:
    return ["hpo", "--budget", "20K", "--trials", str(trials), "--config", str(ROOT / "configs" / "demo.yaml"),
            "--search-space", str(space), "--log-dir", str(logs), "--no-live", *flags(data, epochs), *extra]


def load(logs: Path, storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{logs / 'optuna.db'}"
    names = optuna.get_all_study_names(open_storage(url, 0))
    return optuna.load_study(study_name=names[0], storage=open_storage(url, 0))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if is_finished(t)]


def assert_no_duplicates(study: optuna.Study) -> None:
    done = finished(study)
    assert len({t.number for t in done}) == len(done)
    draws = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(draws)) == len(draws), "a finished trial ran twice"


# -- the search space --------------------------------------------------------------------
def test_architectures_are_drawn_from_the_grid_only(space_file):
    spec = load_space(space_file)
    space = bind(spec, 20_000, 25, 32, 8, 4, "mixing")
    grid = set(space.tree.archs)
    assert {a.id for a in grid} == {"d32-l1-h4-f2", "d32-l1-h4-f4", "d32-l2-h4-f2", "d16-l4-h2-f4"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(60):
        trial = study.ask()
        drawn.add(space.tree.suggest(trial))
        study.tell(trial, 0.0)
    assert drawn == grid  # every grid point is reachable and nothing else ever comes out
    # extremes first: widest (= shallowest) and narrowest (= deepest), each once
    assert [a.id for a in space.tree.extremes()] == ["d32-l1-h4-f2", "d16-l4-h2-f4"]
    assert space.enqueued() == [{"d_model": 32, "ffn_ratio@d32": 2, "n_layers@d32-f2": 1}, {"d_model": 16}]


def test_shipped_search_space_binds_for_every_budget():
    spec = load_space(ROOT / "configs" / "hpo" / "search_space.yaml")
    assert {p.name for p in spec.params} >= {"lr", "weight_decay", "dropout", "warmup_frac"}
    assert {p.name: p.log for p in spec.params}["lr"]
    for budget in ("2M", "20M", "200M", "2B"):
        space = bind(spec, budget, 25, 80, 16, 8, "mixing")
        extremes = space.tree.extremes()
        assert max(a.d_model for a in space.tree.archs) == extremes[0].d_model
        assert max(a.n_layers for a in space.tree.archs) in {a.n_layers for a in extremes}
        for arch in extremes:  # the enqueued params select exactly that architecture
            fixed = optuna.trial.FixedTrial({**space.tree.params_of(arch)})
            assert space.tree.suggest(fixed) == arch


@pytest.mark.parametrize("spec,message", [
    ({"key": "model.net.init_args.d_model", "type": "int", "low": 8, "high": 64}, "architecture grid decides"),
    ({"key": "data.context_length", "type": "int", "low": 8, "high": 64}, "changes the budget's grid"),
    ({"key": "model.lr", "type": "loguniform", "low": 1e-4, "high": 1e-2}, "type must be one of"),
    ({"key": "model.lr", "type": "float", "low": 0.0, "high": 1e-2, "log": True}, "log scale needs low > 0"),
    ({"key": "model.lr", "type": "float", "low": 1.0, "high": 0.1}, "low <= high"),
])
def test_bad_search_space_entries_are_one_line(tmp_path, spec, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"x": spec}}))
    with pytest.raises(ForecastError, match=message):
        load_space(path)


@pytest.mark.parametrize("max_epochs,first_prunable", [(6, 2), (3, 1)])
def test_median_pruner_prunes_after_warm_up_and_never_at_the_last_epoch(max_epochs, first_prunable):
    last = max_epochs - 1
    study = optuna.create_study(pruner=make_pruner("median", max_epochs))
    for _ in range(5):  # the startup trials: 0.5 until their last epoch, then 0.1
        done = study.ask()
        for step in range(max_epochs):
            done.report(0.1 if step == last else 0.5, step)
        study.tell(done, 0.1)
    bad = study.ask()  # worse than the median from the start
    for step in range(first_prunable):
        bad.report(0.9, step)
        assert not bad.should_prune(), f"pruned in warm-up at epoch {step}"
    bad.report(0.9, first_prunable)
    assert bad.should_prune()
    late = study.ask()  # level with the median until the last epoch, worse there
    for step in range(last):
        late.report(0.5, step)
        assert not late.should_prune()
    late.report(0.5, last)
    assert not late.should_prune()  # the median pruner alone would prune here, after all the work


def test_budgets_by_name_or_count():
    assert parse_budget("2M") == ("2M", 2_000_000)
    assert parse_budget("50k") == ("50K", 50_000)
    assert parse_budget("1.5M") == ("1.5M", 1_500_000)
    with pytest.raises(ForecastError, match="unknown budget"):
        parse_budget("3X")
    with pytest.raises(ForecastError, match="type must be"):
        parse_param("x", {"key": "model.lr", "type": None}, "s.yaml")


def test_stop_control_ignores_old_stop_files_and_aborts_only_on_a_second_signal(tmp_path):
    stop_file = tmp_path / "STOP"
    stop_file.touch()
    os.utime(stop_file, (time.time() - 60, time.time() - 60))  # left by the run being resumed
    said: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with StopControl(stop_file, notify=said.append, keyboard=False) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: stop.requested, timeout=5)  # the handler runs in this (main) thread
        assert stop.reason == "SIGINT"
        stop.in_trial = True
        with pytest.raises(AbortTrial):
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=5)  # ended by the handler's AbortTrial, else times out
    assert signal.getsignal(signal.SIGINT) is before
    assert said and said[0].startswith("stop requested (SIGINT)")
    fresh = StopControl(tmp_path / "other" / "STOP", keyboard=False)
    fresh.watch(stop_file)
    assert not fresh.requested
    stop_file.touch()  # touched after this control started: a request
    assert fresh.requested and "STOP found" in fresh.reason


# -- every sampled value reaches what the Trainer and model receive -------------------------
class _Capture(L.Callback):
    """Record the optimizer and schedule the module built, then stop before any step."""

    def on_train_start(self, trainer, pl_module):
        self.groups = [dict(g, params=None) for g in trainer.optimizers[0].param_groups]
        self.total = int(trainer.estimated_stepping_batches)
        self.first_factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0](0)
        raise KeyError("captured")  # any exception ends the fit here


def _observe(data, space_file, tmp_path, params: dict) -> dict:
    plan = plan_study(options(data, space_file, tmp_path / "logs"))
    sample = plan.space.suggest(optuna.trial.FixedTrial(params))
    capture = _Capture()
    cli = cli_main(plan.setup.trial_args(sample, 0), run=False, trainer_defaults={"callbacks": [capture]})
    with pytest.raises(KeyError, match="captured"):
        cli.trainer.fit(cli.model, cli.datamodule)
    net, block = cli.model.net, cli.model.net.blocks[0]
    return {
        "d_model": net.embed.out_features, "n_layers": len(net.blocks), "n_heads": block.attn.n_heads,
        "d_ff": block.ffn.fc1.out_features, "params": sum(p.numel() for p in net.parameters()),
        "arch_params": sample.arch.params,
        "lr": capture.groups[0]["initial_lr"], "weight_decay": capture.groups[0]["weight_decay"],
        "dropout": (block.attn.resid_drop.p, block.ffn.drop.p, net.drop.p),
        "warmup_factor": capture.first_factor, "total": capture.total,
        "head_dropout": net.head_drop.p, "clip": cli.trainer.gradient_clip_val,
    }


def test_each_sampled_value_changes_what_the_trainer_and_model_receive(data, space_file, tmp_path):
    a = {"d_model": 32, "ffn_ratio@d32": 2, "n_layers@d32-f2": 2, "lr": 1e-3, "weight_decay": 0.01,
         "dropout": 0.1, "warmup_frac": 0.2, "head_dropout": 0.05, "clip": 0.5}
    b = {"d_model": 16, "lr": 4e-3, "weight_decay": 0.2, "dropout": 0.25, "warmup_frac": 0.0,
         "head_dropout": 0.2, "clip": 2.0}
    seen_a, seen_b = (_observe(data, space_file, tmp_path / n, p) for n, p in (("a", a), ("b", b)))
    assert (seen_a["d_model"], seen_a["n_layers"], seen_a["n_heads"], seen_a["d_ff"]) == (32, 2, 4, 64)
    assert (seen_b["d_model"], seen_b["n_layers"], seen_b["n_heads"], seen_b["d_ff"]) == (16, 4, 2, 64)
    for seen, draw in ((seen_a, a), (seen_b, b)):
        assert seen["params"] == seen["arch_params"]  # the exact count the budget used
        assert seen["lr"] == draw["lr"] and seen["weight_decay"] == draw["weight_decay"]
        assert seen["dropout"] == (draw["dropout"],) * 3
        assert seen["warmup_factor"] == warmup_cosine(seen["total"], draw["warmup_frac"])(0)
        assert seen["head_dropout"] == draw["head_dropout"] and seen["clip"] == draw["clip"]
    differs = {k for k in seen_a if seen_a[k] != seen_b[k]}
    assert differs >= {"d_model", "n_layers", "lr", "weight_decay", "dropout", "warmup_factor",
                       "head_dropout", "clip"}


# -- a study end to end ------------------------------------------------------------------------
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
    args = cli_args(data, space_file, logs, 4)
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
        self.stop.aborted = True
        raise NotImplementedError("Cannot copy out of meta tensor; no data!")


def test_an_abort_that_surfaces_as_another_error_is_recorded_as_aborted(data, space_file, tmp_path):
    with StopControl(tmp_path / "STOP", notify=lambda _: None, keyboard=False) as stop:
        outcome = run_study(options(data, space_file, tmp_path, trials=2), stop=stop,
                            extra_callbacks=lambda trial: [_AbortSurfacesAsAnotherError(stop)])
    assert outcome.ending == "aborted"  # the search ends, as on any second Ctrl-C
    (trial,) = load(tmp_path).get_trials(states=(TrialState.FAIL, TrialState.COMPLETE))  # one ran
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "aborted"
    assert "NotImplementedError" in trial.user_attrs["message"]


# -- bad input: one line, exit 2, before any trial --------------------------------------------
@pytest.mark.parametrize("change,message", [
    ({"budget": "3X"}, "unknown budget '3X'"),
    ({"space": {"params": {"foo": {"key": "model.net.init_args.foo", "type": "float", "low": 0, "high": 1}}}},
     "no argument for"),
    ({"space": {"architecture": {"grid": {"d_model": [16, 32], "n_layers": [1, 2, 3, 4], "head_dim": [8],
                                          "ffn_ratio": [2, 4]}},
                "params": {"clip": {"key": "trainer.gradient_clip_val", "type": "categorical",
                                    "choices": [0.5, "lots"]}}}}, "invalid trial config"),
    ({"extra": ["--storage", "postgresql://user:secret@127.0.0.1:1/none"]}, "cannot open storage"),
    ({"trials": 0}, "--trials must be >= 1"),
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


# -- processes: signals, crashes, two workers -------------------------------------------------
def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forecast", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        if time.time() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def _read_until(proc: subprocess.Popen, text: str) -> None:
    """Read the process's output up to a line holding `text` (fails if it ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"process ended before printing {text!r}:\n{''.join(seen)}")


def _storage_states(logs: Path, storage: str | None = None) -> list[TrialState]:
    try:
        return [t.state for t in load(logs, storage).get_trials()]
    except (IndexError, KeyError, ValueError):
        return []


def test_sigint_stops_cleanly_a_second_one_aborts_and_a_rerun_finishes(data, space_file, tmp_path):
    args = cli_args(data, space_file, tmp_path, 3, epochs=30)
    folder = tmp_path / "SYN-a25-threshold0.01-h1-20K"
    outputs = {"trials.csv", "summary.md", "best.yaml"}
    # one Ctrl-C: the running trial finishes, outputs are written, exit 0
    proc = _spawn(args)
    _wait_for(lambda: (folder / "trial_0000" / "config.yaml").exists(), proc=proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "stop requested (SIGINT)" in out and "stopped:" in out
    states = [t.state for t in load(tmp_path).get_trials()]
    assert states[0] == TrialState.COMPLETE and TrialState.RUNNING not in states
    assert outputs <= {p.name for p in folder.iterdir()}
    # the rerun continues; two Ctrl-C in its trial abort that trial (FAIL), exit 130
    proc = _spawn(args)
    # its weights exist (HParams are logged at fit start, after the model is built on the device)
    _wait_for(lambda: any((folder / "trial_0001").glob("events.out.tfevents.*")), proc=proc)
    proc.send_signal(signal.SIGINT)
    _read_until(proc, "stop requested (SIGINT)")  # the first is handled before the second is sent
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out  # Optuna's warning line and the closing line say it, no trace
    aborted = load(tmp_path).get_trials()[1]
    assert aborted.state == TrialState.FAIL and aborted.user_attrs["reason"] == "aborted"
    assert not load(tmp_path).get_trials(states=(TrialState.RUNNING,))
    assert "aborted by a second SIGINT" in (folder / "summary.md").read_text()
    # and the same command again reaches N (an aborted trial does not count)
    assert forecast_main(cli_args(data, space_file, tmp_path, 3, epochs=1)) == 0  # epochs may change
    study = load(tmp_path)
    assert len(finished(study)) == 3 and not is_finished(study.get_trials()[1])
    assert_no_duplicates(study)


def test_kill_9_mid_trial_then_a_rerun_finishes_without_losing_a_trial(data, space_file, tmp_path):
    args = cli_args(data, space_file, tmp_path, 3, epochs=6)
    proc = _spawn(args)
    _wait_for(lambda: _storage_states(tmp_path)[:2] == [TrialState.COMPLETE, TrialState.RUNNING], proc=proc)
    proc.kill()
    proc.communicate(timeout=30)
    before = load(tmp_path).get_trials()
    killed = before[1].number
    assert before[1].state == TrialState.RUNNING  # left behind by the dead process
    assert forecast_main(cli_args(data, space_file, tmp_path, 3, epochs=2)) == 0  # rerun, in this process
    study = load(tmp_path)
    after = {t.number: t for t in study.get_trials()}
    assert after[0].value == before[0].value  # the finished trial is kept as it was
    assert after[killed].state == TrialState.FAIL and after[killed].user_attrs["reason"] == "interrupted"
    retries = [t for t in after.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == after[killed].params and is_finished(retries[0])
    assert len(finished(study)) == 3 and not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)


def test_two_processes_on_one_journal_reach_n_together(data, space_file, tmp_path):
    journal = str(tmp_path / "study.journal")
    args = cli_args(data, space_file, tmp_path, 4, "--storage", journal, epochs=1)
    procs = [_spawn(args) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = load(tmp_path, journal)
    assert len(finished(study)) == 4  # not 5 or 6: each process stops when the study is at N
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert_no_duplicates(study)


def test_heartbeat_fails_a_stale_trial_on_rdb_and_retries_it(tmp_path):
    """A worker on another machine is seen only through its heartbeat (no pid to check here):
    a RUNNING trial whose last beat is older than the grace period is failed and retried once."""
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    storage = open_storage(url, 1)  # beat every second, stale after 2
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    storage.record_heartbeat(trial._trial_id)  # what the dead worker's heartbeat thread last wrote
    assert recover_dead_trials(study, storage) == []  # still within the grace period
    # grace 2 s (SQLite clocks the beats in whole seconds): found stale once that much has passed
    _wait_for(lambda: recover_dead_trials(study, storage) == [0], timeout=10)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    assert recover_dead_trials(study, storage) == []  # retried once, not again


def test_a_trial_killed_before_recording_its_start_fails_as_interrupted(tmp_path):
    """Killed between writing its worker id and its other start attributes: failed with a reason."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = open_storage(f"sqlite:///{tmp_path / 'early.db'}", 0)
    study = optuna.create_study(study_name="early", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{dead.pid}:0")
    assert recover_dead_trials(study, storage) == [0]
    failed = study.get_trials()[0]
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "interrupted"


def test_resolve_reports_parser_errors_in_one_line():
    with pytest.raises(ForecastError, match="Option 'nope' is not accepted"):
        resolve(["--config", str(ROOT / "configs" / "demo.yaml"), "--model.net.init_args.nope=1"])


def test_a_budget_that_cannot_fit_is_refused_before_any_trial(data, tmp_path, capsys):
    """The issue's case: 2B on a CPU machine with 24 GB is refused up front, with the way out."""
    args = ["hpo", "--budget", "2B", "--trials", "1", "--config", str(ROOT / "configs" / "demo.yaml"),
            "--log-dir", str(tmp_path / "logs"), "--no-live", *flags(data), "--trainer.accelerator=cpu",
            "--planner.memory_gb=24"]
    assert forecast_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget 2B does not fit this machine" in err[0] and "a smaller budget" in err[0]
    assert not list((tmp_path / "logs").rglob("trial_*"))


def test_a_cpu_search_says_how_long_an_epoch_takes(data, space_file, tmp_path, capsys):
    plan_study(options(data, space_file, tmp_path / "logs"))
    out = capsys.readouterr().out
    assert "CPU: one epoch of d32-l" in out and "GFLOP" in out and "at least" in out
