"""A study cannot mix incomparable trials, and a report cannot change what it confirms.

A resumed study is refused when a setting that changes what a trial measures (epochs, batch, accumulation,
early stopping, optimizer, fixed model settings, ...) differs from what the study recorded; the settings in
`UNMEASURED` (files, display, hardware) may differ. The report takes only flags from its allowlist.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_study_resume.py
"""

from __future__ import annotations

import shutil

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_fixtures import data, load, options, space_file  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.hpo.config import MEASURED
from forecast.hpo.loop import run_study
from forecast.hpo.opening import open_study
from forecast.hpo.plan import plan_study
from forecast.hpo.storage import open_storage
from forecast.report.retrain import ALLOWED_KEYS, check_overrides
from forecast.training.config import is_unmeasured, resolve
from forecast.training.resume import flatten

FEW = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Settings a trial measures with, and values other than the study's (epochs 2, batch 64, demo.yaml).
MEASURED_CHANGES = {
    "trainer.max_epochs": st.integers(3, 9),
    "trainer.accumulate_grad_batches": st.integers(2, 8),
    "trainer.limit_train_batches": st.floats(0.1, 0.9),
    "trainer.check_val_every_n_epoch": st.integers(2, 4),
    "early_stopping.patience": st.integers(1, 3),
    "early_stopping.min_delta": st.floats(0.01, 0.1),
    "model.min_lr_ratio": st.floats(0.01, 0.5),
    "model.pos_weight": st.floats(1.5, 5.0),
    "data.batch_size": st.sampled_from([16, 32, 128]),
    "planner.effective_batch": st.sampled_from([64, 128, 512]),
}
UNMEASURED_CHANGES = {
    "trainer.enable_progress_bar": st.just("true"),
    "trainer.log_every_n_steps": st.integers(1, 50),
    "trainer.precision": st.sampled_from(["32-true", "bf16-mixed"]),
    "data.num_workers": st.just(0),
    "model.train_metrics": st.just("false"),
    "planner.memory_gb": st.integers(4, 64),
    "checkpoint.save_top_k": st.integers(1, 3),
}


@pytest.fixture(scope="module")
def one(data, space_file, tmp_path_factory):
    """A finished one-trial study (its SQLite storage and logs)."""
    logs = tmp_path_factory.mktemp("one")
    assert run_study(options(data, space_file, logs, trials=1)).ending == "done"
    return logs


def resumed(data, space_file, logs, *flags: str):
    changed = options(data, space_file, logs, trials=1)
    changed.overrides += list(flags)
    return open_study(plan_study(changed))


@FEW
@given(draw=st.data())
def test_a_resume_that_changes_what_a_trial_measures_is_refused(draw, one, data, space_file):
    key = draw.draw(st.sampled_from(sorted(MEASURED_CHANGES)))
    value = draw.draw(MEASURED_CHANGES[key])
    with pytest.raises(ForecastError, match=rf"was run with other settings \(.*{key.replace('.', r'[.]')}"):
        resumed(data, space_file, one, f"--{key}={value}")
    assert len(load(one).get_trials()) == 1


@FEW
@given(draw=st.data())
def test_a_resume_that_changes_only_how_trials_run_is_accepted(draw, one, data, space_file):
    key = draw.draw(st.sampled_from(sorted(UNMEASURED_CHANGES)))
    study = resumed(data, space_file, one, f"--{key}={draw.draw(UNMEASURED_CHANGES[key])}")
    assert len(study.get_trials()) == 1


def test_the_command_line_says_which_setting_changed(one, data, space_file, capsys):
    from search_fixtures import cli_args

    argv = cli_args(data, space_file, one, 1) + ["--trainer.accumulate_grad_batches=4"]
    assert forecast_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "measured.trainer.accumulate_grad_batches: 1 -> 4" in err[0], err


def test_a_study_recorded_before_this_check_records_its_settings_then_holds_them(one, data, space_file, tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(one, logs)
    storage = open_storage(f"sqlite:///{logs / 'optuna.db'}", 0)
    study = load(logs)
    old = {k: v for k, v in study.user_attrs["fingerprint"].items() if k != MEASURED}  # as written before
    study.set_user_attr("fingerprint", old)
    resumed(data, space_file, logs)  # accepted: nothing to compare with yet
    stored = optuna.load_study(study_name=study.study_name, storage=storage).user_attrs["fingerprint"]
    assert stored[MEASURED]["trainer.max_epochs"] == 2 and "trainer.logger.init_args.save_dir" not in stored[MEASURED]
    with pytest.raises(ForecastError, match="trainer.max_epochs"):
        resumed(data, space_file, logs, "--trainer.max_epochs=5")


# -- the report's flags -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def every_key():
    """Every dotted setting of a resolved run config (the parser's own schema, shipped demo config)."""
    from pathlib import Path

    return sorted(flatten(resolve(["--config", str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")])))


def test_every_flag_the_report_allows_is_unmeasured_but_max_epochs(every_key):
    assert set(ALLOWED_KEYS) <= set(every_key)
    assert [k for k in ALLOWED_KEYS if not is_unmeasured(k)] == ["trainer.max_epochs"]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_report_refuses_every_other_setting(data, every_key):
    key = data.draw(st.sampled_from([k for k in every_key if k not in ALLOWED_KEYS]))
    with pytest.raises(ForecastError, match=rf"--{key.replace('.', '[.]')}: not an option of forecast report"):
        check_overrides([f"--{key}=1"])
    check_overrides([f"--{k}=1" for k in ALLOWED_KEYS])  # the allowed ones together: accepted


@pytest.mark.parametrize("flag", ["--trainer.limit_test_batches=1", "--trainer.gradient_clip_val=5",
                                  "--data.batch_size=8", "--planner.effective_batch=32"])
def test_a_report_flag_that_changes_a_retrain_is_one_line_before_anything(flag, tmp_path, capsys):
    assert forecast_main(["report", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--out",
                          str(tmp_path / "out"), flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag.split('=')[0]}: not an option of forecast report" in err[0], err
    assert list(tmp_path.iterdir()) == []
