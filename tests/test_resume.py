"""Resumes and tests that cannot lie: a checkpoint is tested only for the task, horizon, tier, context and
features it was trained for and with its own architecture; a finished run says so instead of "resuming";
a checkpoint's saved settings never silently replace the user's own, and are data (no class outside the
allowlist). Each refusal is one line and writes nothing.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_resume.py
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import TINY, fit_args, fitted, run, sample, tree  # noqa: F401  (fixtures)
from test_trust import refused as refused_in_one_line

from forecast.training.resume import finished

RUN = "demo/version_0"
FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def case(sample, fitted, tmp_path, monkeypatch):  # noqa: F811
    """A copy of the fitted run's logs in a fresh working folder, with the sample data."""
    shutil.copytree(fitted, tmp_path / "logs")
    monkeypatch.setenv("FORECAST_DATA_DIR", str(sample))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capfd, case: Path, argv: list[str], expected: str) -> str:
    """`forecast ARGV` keeps test_trust's one-line refusal contract, and the folder is unchanged."""
    before = tree(case)
    line = refused_in_one_line(capfd, argv, expected)
    assert tree(case) == before
    return line


def ckpt(case: Path, which: str = "last") -> Path:
    folder = case / "logs" / RUN / "checkpoints"
    return folder / "last.ckpt" if which == "last" else sorted(folder.glob("best-*.ckpt"))[-1]


def edited(case: Path, change) -> Path:
    """A copy of the run's last checkpoint with `change(dict)` applied, saved as plain data."""
    data = torch.load(ckpt(case), map_location="cpu", weights_only=True)
    change(data)
    path = ckpt(case).with_name("edited.ckpt")  # in the run's folder: a test of it logs into that run
    torch.save(data, path)
    return path


# -- testing a checkpoint for what it was trained for ---------------------------------------------
OTHER_DATA = {  # a valid value other than the demo's, per setting the model was trained FOR
    "horizon": st.integers(2, 10).map(str),
    "task": st.just("direction"),
    "threshold": st.sampled_from(["0.005", "0.02", "0.03"]),
    "tier": st.sampled_from(["a20", "c"]),
    "context_length": st.sampled_from(["40", "64", "96"]),
    "scaler": st.just("none"),
}


@FAST
@given(data=st.data(), command=st.sampled_from(["test", "validate", "predict"]), explicit=st.booleans())
def test_a_checkpoint_is_evaluated_only_on_the_data_it_was_trained_for(data, command, explicit, case, capfd):
    key = data.draw(st.sampled_from(sorted(OTHER_DATA)))
    value = data.draw(OTHER_DATA[key])
    path = ["--ckpt_path", str(ckpt(case, "best"))] if explicit else []  # default: the run's best checkpoint
    line = refused(capfd, case, [command, *fit_args(case / "logs"), f"--data.{key}={value}", *path],
                   "was trained for other data than this run's")
    assert f"data.{key}:" in line


def test_the_features_the_checkpoint_recorded_are_checked(case, capfd):
    def rename(data):
        data["ForecastDataModule"]["feature_names"][3] = "renamed"
    line = refused(capfd, case, ["test", *fit_args(case / "logs"), "--ckpt_path", str(edited(case, rename))],
                   "features: 25 in the checkpoint, 25 in the run")
    assert "renamed" in line


def test_another_architecture_is_one_line_before_the_trainer_starts(case, capfd):
    line = refused(capfd, case, ["test", *fit_args(case / "logs"), "--model.net.init_args.d_model=32"],
                   "holds another architecture than this run builds")
    assert "in the checkpoint" in line


def test_the_checkpoint_it_was_trained_with_still_tests(case, capfd):
    assert run(["test", *fit_args(case / "logs")]) == 0
    assert len(list((case / "logs" / RUN).glob("test_*.json"))) == 1


# -- resuming -----------------------------------------------------------------------------------
def test_resuming_a_finished_run_says_it_is_finished(case, capfd):
    refused(capfd, case, ["fit", *fit_args(case / "logs"), "--ckpt_path", str(ckpt(case))],
            "is of a finished run: its 1 epochs are done (trainer.max_epochs=1)")


def test_a_run_that_stopped_early_is_finished_too(case, capfd):
    def stopped(data):
        for name, state in data["callbacks"].items():
            if name.startswith("EarlyStopping"):
                state.update(stopped_epoch=0, stopping_reason=1)
    refused(capfd, case, ["fit", *fit_args(case / "logs"), "--trainer.max_epochs=5", "--ckpt_path",
                          str(edited(case, stopped))], "it stopped early after epoch 1")


def test_resuming_with_epochs_left_trains_them(case):
    assert run(["fit", *fit_args(case / "logs"), "--trainer.max_epochs=2", "--ckpt_path", str(ckpt(case))]) == 0
    summary = json.loads((case / "logs" / "demo" / "version_1" / "fit_summary.json").read_text())
    assert summary["epochs_run"] == 2


@pytest.mark.parametrize("source", ["flag", "config"])
def test_an_explicit_setting_the_checkpoint_would_replace_is_refused(source, case, capfd):
    """Lightning merges a checkpoint's saved model settings over the run's: the user's own value would lose."""
    if source == "flag":
        extra = ["--model.lr=0.0005"]
    else:
        (case / "lr.yaml").write_text("model:\n  lr: 0.0005\n")
        extra = ["--config", str(case / "lr.yaml")]
    refused(capfd, case, ["fit", *fit_args(case / "logs"), "--trainer.max_epochs=2", *extra,
                          "--ckpt_path", str(ckpt(case))], "model.lr: checkpoint 0.001, this run 0.0005")


def test_a_defaulted_setting_the_checkpoint_replaces_is_said(case, caplog):
    path = edited(case, lambda data: data["hyper_parameters"].update(min_lr_ratio=0.1))  # demo.yaml leaves it
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        assert run(["test", *fit_args(case / "logs"), "--ckpt_path", str(path)]) == 0
    assert "from the checkpoint: model.min_lr_ratio: checkpoint 0.1, this run 0.0" in caplog.text


def test_a_callback_setting_the_checkpoint_would_put_back_is_refused(case, capfd):
    refused(capfd, case, ["fit", *fit_args(case / "logs"), "--trainer.max_epochs=3", "--early_stopping.patience=9",
                          "--ckpt_path", str(ckpt(case))], "early_stopping.patience: 4 -> 9")


# -- a checkpoint's saved settings are data -------------------------------------------------------
@pytest.mark.parametrize("change,expected", [
    (lambda hp: hp.update(optimizer={"class_path": "ckpt_planted.Net"}), "'ckpt_planted.Net' is outside the classes"),
    (lambda hp: hp.update(optimizer="ckpt_planted.Net"), "'ckpt_planted.Net' is outside the classes"),
    (lambda hp: hp.update(lr="fast"), "model.lr: 'fast' is not a number"),
    (lambda hp: hp.update(lr=float("inf")), "model.lr: inf is not a finite number"),
    (lambda hp: hp.update(unknown_setting=1), "unknown_setting"),
], ids=["class-path", "import-path", "wrong-type", "non-finite", "unknown-key"])
def test_a_checkpoints_saved_settings_are_validated_and_import_nothing(change, expected, case, capfd, monkeypatch):
    marker = case / "MARKER"
    (case / "planted").mkdir()
    (case / "planted" / "ckpt_planted.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(case / "planted"))  # importable: only the allowlist stands in the way
    path = edited(case, lambda data: change(data["hyper_parameters"]))
    refused(capfd, case, ["test", *fit_args(case / "logs"), "--ckpt_path", str(path)], expected)
    assert not marker.exists() and "ckpt_planted" not in sys.modules


def test_finished_counts_the_epoch_a_checkpoint_was_saved_at_the_end_of():
    """Lightning saves at an epoch's end before it counts the epoch completed; it resumes after it."""
    at_end = {"loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 1, "processed": 2}}}}, "epoch": 1}
    assert finished(at_end, 2, -1) == "its 2 epochs are done (trainer.max_epochs=2)"
    assert finished(at_end, 3, -1) is None
    assert finished({"epoch": 4, "global_step": 50}, None, 50) == "its 50 steps are done (trainer.max_steps=50)"
    assert finished({"epoch": 4}, None, None) is None  # Lightning's default: 1000 epochs


def test_a_checkpoint_from_outside_a_run_logs_into_a_new_run_not_the_folders_above_it(case):
    """A copied or downloaded checkpoint has no run around it: its evaluation is a new version of the
    config's logger, and nothing is written beside or above the file (it once went to its grandparent)."""
    outside = case / "downloads" / "model"
    outside.mkdir(parents=True)
    copy = outside / "model.ckpt"
    shutil.copy(ckpt(case, "best"), copy)
    before, runs = tree(case / "downloads"), set((case / "logs" / RUN).parent.glob("version_*"))
    assert run(["test", *fit_args(case / "logs"), "--ckpt_path", str(copy)]) == 0
    assert tree(case / "downloads") == before
    new = set((case / "logs" / RUN).parent.glob("version_*")) - runs
    assert len(new) == 1 and list(new.pop().glob("test*.json"))
