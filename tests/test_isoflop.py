"""`forecast isoflop`: the FLOPs -> steps arithmetic, the skip rules and one run's planned steps and schedule
(fast, about 5 s), and end to end on a small synthetic tier with --jobs 2 and a rerun that reuses every finished
run (slow: about 2.5 minutes on 2 shared cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synthetic_run import SYMBOL, TEST_START, VAL_START, data_dir  # noqa: F401 - fixture

from forecast.core.errors import ForecastError
from forecast.report.isoflop import MAX_EPOCHS, optimizer_steps, skip_reason
from forecast.report.isoflop_cli import main
from forecast.report.isoflop_outputs import compute_part, compute_section, read_law
from forecast.sizing.budget import training_flops_per_sample

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "FORECAST_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_steps_spend_at_most_the_budget_and_one_more_step_would_exceed_it():
    fps = training_flops_per_sample(25, 32, 8, 4, d_model=24, n_layers=1, d_ff=48)
    batch = 32
    for compute in (fps * batch * 75, fps * batch * 75 + 1, fps * batch * 76 - 1, 1e9, 3.3e12):
        steps = optimizer_steps(compute, fps, batch)
        assert steps * fps * batch <= compute < (steps + 1) * fps * batch
    assert optimizer_steps(fps * batch * 75, fps, batch) == 75  # exactly on a step boundary
    assert optimizer_steps(fps * batch - 1, fps, batch) == 0


def test_skip_rules_under_one_step_and_over_the_epoch_limit():
    assert skip_reason(0, 0.0) == "under one optimizer step"
    assert skip_reason(1, 0.01) is None
    assert skip_reason(10_000, MAX_EPOCHS) is None  # the limit itself still runs
    assert "over 1,000" in skip_reason(10_000, MAX_EPOCHS + 0.5)


def test_a_command_without_config_is_one_clear_mistake():
    with pytest.raises(ForecastError, match="--config FILE is required"):
        main(["--flops", "1e9", "--budgets", "10K", "--storage", "sqlite:///none.db"])


def test_the_report_keeps_the_compute_axis_of_an_isoflop_in_the_same_out(tmp_path):
    assert compute_part(tmp_path) == {} and compute_section(tmp_path) == ""
    (tmp_path / "law.json").write_text(json.dumps({"series": [], "compute": {"axis": "C"}, "skipped": []}))
    (tmp_path / "isoflop.md").write_text("## Compute\n")
    assert compute_part(tmp_path) == {"compute": {"axis": "C"}, "skipped": []}
    assert compute_section(tmp_path) == "\n## Compute\n"
    (tmp_path / "law.json").write_text("[1, 2]")
    with pytest.raises(ForecastError, match="not a JSON object"):
        read_law(tmp_path)


def _args(data: Path, storage: str, out: Path, *extra: str) -> list[str]:
    return ["--config", "forecast/configs/demo.yaml", f"--data.data_dir={data}", f"--data.symbol={SYMBOL}",
            "--data.context_length=32", f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}",
            "--data.min_windows=20", "--data.batch_size=32", "--model.net.init_args.patch_len=8",
            "--model.net.init_args.stride=4", "--model.lr=3e-3", "--storage", storage, "--out", str(out),
            "--seeds", "1", "--folds", "2", "--bootstrap", "20", *extra]


def _isoflop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forecast", "isoflop", *args], env=ENV, cwd=ROOT, text=True,
                          capture_output=True, timeout=600)


@pytest.mark.slow
def test_isoflop_end_to_end_with_two_jobs_then_a_rerun_reuses_every_run(data_dir, tmp_path):  # noqa: F811
    storage, out = f"sqlite:///{tmp_path / 'iso.db'}", tmp_path / "out"
    # 1e6: under one step for every size; 1e13: tens of thousands of epochs at 10K; 1e9: 2 sizes x 2 folds run
    args = _args(data_dir, storage, out, "--flops", "1e6", "1e9", "1e13", "--budgets", "10K", "30K")
    out.mkdir()
    (out / "law.json").write_text(json.dumps({"series": ["the report's"]}))  # a report wrote into this --out
    first = _isoflop(*args, "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "skipped C=1e+06 10K" in first.stdout and "under one optimizer step" in first.stdout
    assert "skipped C=1e+13 10K" in first.stdout and "over 1,000" in first.stdout
    assert "[w1] this worker ran" in first.stdout  # the second process claimed runs too
    frame = pd.read_csv(out / "isoflop.csv")
    assert len(frame) == 4 and set(frame.compute) == {1e9} and set(frame.fold) == {0, 1}
    assert (frame.flops <= 1e9).all() and (frame.flops + frame.batch * frame.flops / frame.samples_seen > 1e9).all()
    assert (frame.samples_seen == frame.steps * 32).all() and frame.loss.between(0.3, 1.5).all()
    assert (frame.groupby("budget").steps.nunique() == 1).all()  # the same step budget on every fold
    law = json.loads((out / "law.json").read_text())
    assert law["compute"]["axis"] == "C" and len(law["skipped"]) == 4 and law["series"] == ["the report's"]
    assert all((out / f).stat().st_size > 0 for f in ("isoflop.png", "frontier.png", "isoflop.md"))
    assert "## Compute" in (out / "isoflop.md").read_text()

    second = _isoflop(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4 of the 4 runs finished before (reused)" in second.stdout
    assert "test loss" not in second.stdout  # nothing trained again
    assert pd.read_csv(out / "isoflop.csv").equals(frame)


def test_a_run_trains_its_planned_steps_and_the_schedule_ends_at_the_budget(data_dir, tmp_path):  # noqa: F811
    from forecast.report.isoflop import IsoflopOptions, plan_cells, plan_sizes, run_args, selections
    from forecast.training.cli import cli_main
    from forecast.training.config import resolve

    own = _args(data_dir, "sqlite:///" + str(tmp_path / "s.db"), tmp_path)[:12]
    options = IsoflopOptions(storage=f"sqlite:///{tmp_path / 's.db'}", flops=[3e8], budgets=["10K"], run_args=own)
    options.folds = 2
    config = resolve(own)
    sels = selections(options, config)
    folds = sels[0].folds
    cell = plan_cells(options, config, sels, plan_sizes(options, config, folds[0].module.n_features))[0]
    assert cell.skipped is None and cell.steps > 1
    logger = "--trainer.logger.init_args."
    cli = cli_main([*run_args(cell, options, folds[0], 0), f"{logger}save_dir={tmp_path}", f"{logger}name=t"],
                   run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == cell.steps
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    floor = cli.model.hparams.lr * cli.model.hparams.min_lr_ratio
    assert scheduler.get_last_lr()[0] == pytest.approx(floor, abs=1e-9)  # the cosine ran to its end, no further


@pytest.mark.slow
def test_kill_9_during_isoflop_loses_no_finished_run(data_dir, tmp_path):  # noqa: F811
    storage, out = f"sqlite:///{tmp_path / 'iso.db'}", tmp_path / "out"
    args = _args(data_dir, storage, out, "--flops", "1e9", "--budgets", "10K", "30K")
    proc = subprocess.Popen([sys.executable, "-m", "forecast", "isoflop", *args], env=ENV, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    seen = []
    for text in proc.stdout:  # until the first run has finished (the second one is then in flight)
        seen.append(text)
        if text.startswith("[1/4]"):
            break
    proc.kill()  # SIGKILL: no Python cleanup
    proc.wait(timeout=60)
    assert any(t.startswith("[1/4]") for t in seen), "".join(seen)
    assert not (out / "isoflop.csv").exists()

    rerun = _isoflop(*args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "isoflop: 1 of the 4 runs finished before (reused)" in rerun.stdout
    assert rerun.stdout.count("test loss") == 3  # the killed one's run in flight is redone, the finished one not
    assert len(pd.read_csv(out / "isoflop.csv")) == 4
