"""`forecast isoflop`: the FLOPs -> steps arithmetic, the skip rules and one run's planned steps and schedule
(fast, about 5 s), and end to end on a small synthetic tier with --jobs 2 and a rerun that reuses every finished
run (slow: about 2.5 minutes on 2 shared cores)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_the_options_dataclass_is_the_parser():
    from forecast.core.options import flags_of, from_args
    from forecast.core.parsers import parse
    from forecast.report.isoflop_cli import parser
    from forecast.report.isoflop_options import IsoflopOptions

    assert set(flags_of(IsoflopOptions).values()) == {
        "--flops", "--budgets", "--storage", "--seeds", "--folds", "--train-years", "--lr-sweep", "--grid", "--test-start",
        "--test-end", "--out", "--bootstrap", "--jobs", "--devices", "--heartbeat"}  # run_args, argv: not flags
    text = parser().format_help()
    assert "seeds 0..S-1 per fold (default: 2)" in text and "(default: logs/isoflop)" in text
    options = from_args(parse(parser(), ["--flops", "1e9", "--budgets", "10K", "--storage", "s", "--train-years",
                                         "2", "all"]), IsoflopOptions, run_args=["--config", "c.yaml"])
    assert options.train_years == [2.0, "all"] and options.lr_sweep == 0 and options.run_args == ["--config", "c.yaml"]
    for bad, says in ((["--train-years", "0"], "train_years"), (["--lr-sweep", "-1"], "lr_sweep"),
                      (["--train-years", "some"], "train_years")):
        with pytest.raises(ForecastError, match=says):
            parse(parser(), ["--flops", "1e9", "--budgets", "10K", "--storage", "s", *bad])


def test_the_lr_sweep_is_half_decades_centred_on_the_config_lr():
    from forecast.report.isoflop import sweep_lrs

    assert sweep_lrs(1e-3, 1) == [1e-3]
    five = sweep_lrs(1e-3, 5)
    assert five[2] == 1e-3 and five[0] == pytest.approx(1e-4) and five[4] == pytest.approx(1e-2)
    assert all(b / a == pytest.approx(10**0.5) for a, b in zip(five, five[1:], strict=False))
    two = sweep_lrs(1e-3, 2)
    assert two[0] * two[1] == pytest.approx(1e-6)  # symmetric about the config's lr in log


def test_each_size_sweeps_its_lr_at_the_least_compute_that_gives_it_enough_steps():
    """A size is swept at its smallest budget of `SWEEP_MIN_STEPS` steps, not where it trains 2 steps; a size
    with fewer everywhere at its longest run; one cell per size."""
    from forecast.report.isoflop import SWEEP_MIN_STEPS, Cell, Selection, Size, sweep_cells

    every = Selection("all", [], [None])

    def cell(compute, budget, steps):
        return Cell(compute, Size(budget, {}, 0, 1e-3, "config", 1), 32, steps, [1.0], None, every)

    cells = [cell(1e8, "10K", 400), cell(1e9, "10K", 4000), cell(1e8, "1M", 2), cell(1e9, "1M", 20),
             cell(1e10, "1M", SWEEP_MIN_STEPS), cell(1e11, "1M", 10 * SWEEP_MIN_STEPS),
             cell(1e8, "3M", 1), cell(1e9, "3M", 7)]
    chosen = {c.size.budget: (c.compute, c.steps) for c in sweep_cells(cells)}
    assert chosen == {"10K": (1e8, 400), "1M": (1e10, SWEEP_MIN_STEPS), "3M": (1e9, 7)}


def test_train_years_beside_a_selection_flag_is_one_clear_mistake():
    with pytest.raises(ForecastError, match="data.train_years is set by --train-years"):
        main(["--flops", "1e9", "--budgets", "10K", "--storage", "sqlite:///none.db", "--train-years", "2",
              "--config", "forecast/configs/demo.yaml", "--data.train_years=3"])


def _arms(years_tokens: list[float], sizes: list[float], loss_of, draws: int = 40):
    """Arms of one compute budget over sizes x distinct tokens, losses from `loss_of(N, D)` with noise."""
    from types import SimpleNamespace

    from forecast.report.isoflop_outputs import Arms
    from forecast.report.stats import Arm

    rng = np.random.default_rng(0)
    cells = Arms(np.zeros(1), [], [], [], [])
    for n in sizes:
        for k, d in enumerate(years_tokens):
            cells.arms.append(Arm(f"{n:g} {k}", np.zeros((1, 1)), n))
            cells.compute.append(1e9)
            cells.years.append(str(k + 1))
            cells.tokens.append(d)
    loss = np.array([loss_of(a.params, t) for a, t in zip(cells.arms, cells.tokens, strict=True)])
    noise = rng.normal(0, 0.002, (draws, len(loss)))
    return cells, SimpleNamespace(loss=loss * (1 + rng.normal(0, 0.001, len(loss))), loss_draws=loss * (1 + noise))


def test_l_of_n_and_d_is_fitted_from_four_distinct_amounts_of_data_and_descriptive_below():
    from forecast.report.isoflop_outputs import data_law

    def truth(n, d):
        return 0.5 + 40.0 / n**0.6 + 30.0 / d**0.5

    cells, d = _arms([500, 1000, 2000, 4000], [1e4, 3e4, 1e5], truth)
    law = data_law(1e9, cells, d)
    assert law["status"] == "law" and law["fit"] is not None and len(law["points"]) == 12
    assert law["fit"]["beta"]["claimed"] and 0.3 < law["fit"]["beta"]["estimate"] < 0.8
    few, d3 = _arms([500, 1000, 2000], [1e4, 3e4, 1e5], truth)
    law3 = data_law(1e9, few, d3)
    assert law3["status"] == "descriptive" and law3["fit"] is None and "3 distinct values of D" in law3["why"]


def test_a_run_on_fewer_training_years_learns_from_the_kept_samples(data_dir, tmp_path):  # noqa: F811
    from forecast.report.isoflop import (
        IsoflopOptions,
        Run,
        fit_and_test,
        plan_cells,
        plan_sizes,
        run_args,
        selections,
    )
    from forecast.training.config import resolve

    own = _args(data_dir, "sqlite:///" + str(tmp_path / "s.db"), tmp_path)[:12]
    options = IsoflopOptions(storage=f"sqlite:///{tmp_path / 's.db'}", flops=[2e8], budgets=["10K"], run_args=own,
                             folds=1, train_years=[1.0, "all"])
    config = resolve(own)
    sels = selections(options, config)
    assert [s.years for s in sels] == ["1", "all"] and sels[0].flags[0] == "--data.train_years=1"
    assert sels[0].folds[0].dates.equals(sels[1].folds[0].dates)  # the same test dates whatever the years
    one, every = (s.folds[0].module.splits["train"].size for s in sels)
    assert 200 < one < every / 2
    cell = plan_cells(options, config, sels, plan_sizes(options, config, sels[0].folds[0].module.n_features))[0]
    assert cell.years == "1" and cell.epochs == [cell.steps * 32 / one]
    fold = sels[0].folds[0]
    record = fit_and_test(Run(cell, fold, 0, run_args(cell, options, fold, 0)), tmp_path)
    assert record["train_years"] == "1" and record["train_samples"] == one and record["lr_source"] == "config"
    assert record["train_tokens"] == one * 7 and math.isfinite(record["val_loss"]) and record["steps"] == cell.steps


@pytest.mark.slow
def test_train_years_and_the_lr_sweep_end_to_end_with_two_jobs_then_a_rerun_reuses_them(data_dir, tmp_path):  # noqa: F811
    storage, out = f"sqlite:///{tmp_path / 'iso.db'}", tmp_path / "out"
    args = _args(data_dir, storage, out, "--flops", "1e9", "--budgets", "10K", "--train-years", "1", "all",
                 "--lr-sweep", "3")
    first = _isoflop(*args, "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "lr sweep: 3 runs (1 sizes x 3 learning rates)" in first.stdout
    chosen = next(t for t in first.stdout.splitlines() if t.startswith("isoflop: lr sweep of 10K: lr "))
    assert "; at C=1e+09, " in chosen  # the one budget: fewer than SWEEP_MIN_STEPS steps there, its longest run
    # the sweep's winning run is the cell's own fold-0 seed-0 all-years run: reused, not trained twice
    assert "isoflop: 1 of the 4 runs finished before (reused; 1 from the lr sweep)" in first.stdout
    frame = pd.read_csv(out / "isoflop.csv", dtype={"train_years": str})
    assert len(frame) == 4 and set(frame.train_years) == {"1", "all"} and (frame.lr_source == "sweep").all()
    assert frame.lr.nunique() == 1 and f"lr {frame.lr[0]:.3g} " in chosen
    kept = frame.groupby("train_years").train_samples.mean()
    assert kept["1"] < kept["all"] / 2 and (frame.train_tokens == frame.train_samples * 7).all()
    assert (frame.groupby("train_years").steps.nunique() == 1).all() and frame.steps.nunique() == 1  # same C
    law = json.loads((out / "law.json").read_text())
    assert set(law["compute_by_train_years"]) == {"1", "all"} and law["data_law"][0]["status"] == "descriptive"
    assert "| 1e+09 | 1 | 10K |" in (out / "isoflop.md").read_text()

    second = _isoflop(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert chosen in second.stdout and "4 of the 4 runs finished before (reused; 1 from the lr sweep)" in second.stdout
    assert "test loss" not in second.stdout  # neither the sweep nor a cell trained again
    assert pd.read_csv(out / "isoflop.csv", dtype={"train_years": str}).equals(frame)


def test_only_an_all_years_study_of_the_same_series_and_window_stands_for_a_size():
    from forecast.report.collect import BestTrial, Series, StudyEntry
    from forecast.report.isoflop import stand_ins

    data = {"symbol": "SPY", "tier": "c", "inputs": "stationary", "task": "threshold", "horizon": 1,
            "threshold": 0.01, "context_length": 5}
    best = BestTrial(0, 0.4, 10_000, "d16-l1", 1, 2, {"lr": 1e-3}, {0: 0.4}, Path("."), "")

    def entry(name, size, train_years=None, **changed):
        series = Series("SPY", "c", "threshold0.01", 1, "stationary", train_years)
        return StudyEntry(name, series, "10K", size, {**data, **changed}, {}, best)

    entries = [entry("all-10K", 10_000), entry("y2-10K", 10_000, train_years=2.0),
               entry("ctx80-30K", 30_000, context_length=80), entry("tier-30K", 30_000, inputs="tier"),
               entry("h3-100K", 100_000, horizon=3), entry("all-100K", 100_000)]
    chosen = {size: e.name for size, e in stand_ins(entries, data).items()}
    assert chosen == {10_000: "all-10K", 100_000: "all-100K"}
    assert stand_ins(list(reversed(entries)), data)[10_000].name == "all-10K"  # not whichever came last


def test_a_size_without_a_study_takes_the_closest_shape_of_the_grid_it_is_given(tmp_path):
    from forecast.core.errors import ForecastError
    from forecast.report.isoflop import _size

    config = {"data": {"context_length": 5}, "model": {"lr": 3e-3, "net": {"init_args": {
        "patch_len": 5, "stride": 5, "patch_mode": "mixing", "revin": False}}}}
    grid = tmp_path / "grid.yaml"
    grid.write_text("d_model: [16, 256]\nn_layers: [2]\nhead_dim: [64]\nnarrow_heads: [2]\nffn_ratio: [2]\n")
    small, large = (_size(b, config, 40, {}, grid) for b in ("10K", "1M"))
    # the exact counts of these networks without RevIN (its affine holds 2 x 40 more)
    assert (small.arch["d_model"], small.arch["n_layers"], small.params) == (16, 2, 7729)
    assert (large.arch["d_model"], large.params, large.lr, large.source) == (256, 1_106_689, 3e-3, "config")
    assert _size("10K", config, 40, {}).arch != small.arch  # the default grid has closer shapes
    with pytest.raises(ForecastError, match="no grid architecture lies within"):
        _size("100K", config, 40, {}, grid)
