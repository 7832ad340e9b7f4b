"""forecast.training (cli, runs, checkpoints, callbacks, messages): fit / validate / test / predict end to end
through the LightningCLI on a small synthetic tier."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import pandas as pd
import pytest
import torch
import yaml
from synthetic_run import ROOT, base_args, data_dir, fitted  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.core.metric_names import MONITOR
from forecast.training.cli import cli_main


def test_fit_lowers_training_loss_and_saves_config_and_checkpoints(fitted):
    cli, logs = fitted
    run = Path(cli.trainer.log_dir)
    assert (run / "config.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert cli.model.net.n_features == 25  # linked from the data, never configured
    assert saved["data"]["context_length"] == 32 and cli.model.net.n_patches == (32 - 8) // 4 + 1
    assert saved["seed_everything"] == 42
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    summary = json.loads((run / "fit_summary.json").read_text())
    assert summary["num_parameters"] == sum(p.numel() for p in cli.model.net.parameters())
    losses = cli.trainer.callback_metrics
    assert "val/auroc" in losses and "train/auroc" in losses and "val/prob_std" in losses


def test_test_and_predict_use_the_best_checkpoint_not_the_last(fitted):
    cli, logs = fitted
    run = Path(cli.trainer.log_dir)
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    # Sabotage last.ckpt: if test/predict read it, their numbers change.
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    last["state_dict"] = {k: torch.zeros_like(v) for k, v in last["state_dict"].items()}
    torch.save(last, run / "checkpoints" / "last.ckpt")

    config = str(run / "config.yaml")
    test_cli = cli_main(["test", "--config", config, "--trainer.enable_progress_bar=false"])
    (written,) = run.glob("test_*.json")
    metrics = json.loads(written.read_text())
    split = cli.datamodule.splits["test"]
    assert written.name == f"test_{split.dates[0].date()}_{split.dates[-1].date()}_{cli.datamodule.fingerprint()[:8]}.json"
    assert (metrics["first"], metrics["samples"]) == (str(split.dates[0].date()), split.size)
    assert metrics["data_fingerprint"] == cli.datamodule.fingerprint()
    assert metrics["checkpoint"] == str(best)
    assert Path(test_cli.trainer.log_dir) == run  # logged into the same run
    assert 0 < metrics["test/auroc"] < 1 and metrics["test/prob_std"] > 1e-4  # zeroed weights give std 0

    cli_main(["test", "--config", config, "--trainer.enable_progress_bar=false"])  # again: kept beside the first
    assert {p.name for p in run.glob("test_*.json")} == {written.name, written.stem + "-2.json"}
    assert json.loads(written.read_text()) == metrics  # the earlier evaluation is untouched

    cli_main(["predict", "--config", config, "--trainer.enable_progress_bar=false"])
    (predictions,) = run.glob("predictions_test_*.csv")
    preds = pd.read_csv(predictions)
    assert list(preds.columns) == ["date", "probability", "label"]
    assert len(preds) == cli.datamodule.splits["test"].size
    assert preds["probability"].std() > 1e-4
    assert set(preds["label"]) <= {0, 1}


def test_checkpointing_off_fits_without_checkpoints_and_test_says_so(data_dir, tmp_path, capsys):
    cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1)])  # an older run, with checkpoints
    older = set(tmp_path.rglob("*.ckpt"))
    time.sleep(0.05)  # a newer mtime for the next run
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.enable_checkpointing=false"])
    assert cli.trainer.checkpoint_callback is None
    assert any(isinstance(c, L.callbacks.EarlyStopping) for c in cli.trainer.callbacks)  # the rest stays
    run = Path(cli.trainer.log_dir)
    assert json.loads((run / "fit_summary.json").read_text())["best_checkpoint"] is None
    assert set(tmp_path.rglob("*.ckpt")) == older
    capsys.readouterr()
    for config in ([], ["--config", str(run / "config.yaml")]):  # newest run, or that run's config
        assert forecast_main(["test", *base_args(data_dir, tmp_path), *config]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"run {run} saved no checkpoints" in err[0], err  # never the older run
    assert not list(run.glob("test_*.json"))


@pytest.mark.slow
def test_ddp_fit_on_two_cpu_processes(data_dir, tmp_path):
    """`forecast fit` under real DDP (gloo, two CPU processes) trains and saves its best checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=2),
                           "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(next(tmp_path.rglob("fit_summary.json")).read_text())
    assert summary["epochs_run"] == 2 and Path(summary["best_checkpoint"]).is_file()


@pytest.mark.parametrize(
    "override,message",
    [
        (["--data.context_length=4"], "patch_len"),
        (["--data.horizon=0"], "data.horizon: '0' is not an integer in 1.."),
        (["--data.val_start=1990-01-01"], "outside"),
        (["--data.test_start=2030-01-01"], "outside"),
        (["--data.min_windows=100000"], "windows"),
        (["--data.tier=zz"], "data.tier: 'zz' is not one of 'a20', 'a25', 'c'"),
        (["--data.symbol=NOPE"], "missing processed file"),
        (["--data.batch_size=auto", "--planner.memory_gb=0.00001"], "does not fit this machine"),
        # found by the fuzzer (make fuzz, 6,600 examples): Lightning refusing two settings together,
        # a day count past any array, an int64 overflow, and a strategy that pickles the module
        (["--checkpoint.every_n_train_steps=3", "--checkpoint.every_n_epochs=2"],
         "settings refused by Lightning: Combination of parameters every_n_train_steps=3, every_n_epochs=2"),
        (["--data.gap=1000000000000000000000000000000"], "data.gap: '1000000000000000000000000000000' is not an integer in 0.."),
        (["--trainer.max_steps=9223372036854775808"], "at most 2**63-1"),
        (["--trainer.strategy=ddp_spawn"], "trainer.strategy: 'ddp_spawn' is not one of 'auto', 'ddp', "),
        (["--trainer.num_nodes=2"], "trainer.num_nodes=2, but no cluster launched this process"),  # hung 30 min
        pytest.param(["--trainer.accelerator=cuda"], "asks for CUDA, but no CUDA device is visible here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")),
        pytest.param(["--trainer.strategy=xla_debug"], "Requirement 'torch_xla",
                     marks=pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None,
                                              reason="torch_xla is installed")),
    ],
)
def test_bad_config_is_one_clear_line(data_dir, tmp_path, capsys, override, message):
    code = forecast_main(["fit", *base_args(data_dir, tmp_path), *override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not any(tmp_path.rglob("*.ckpt"))


def test_bad_config_from_a_subprocess_has_no_traceback(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path),
                           "--data.horizon=-2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("forecast: error: forecast fit: data.horizon:")


def test_run_folders_follow_default_root_dir_unless_a_save_dir_is_given(data_dir, tmp_path):
    args = [a for a in base_args(data_dir, tmp_path, epochs=1) if "logger.init_args.save_dir" not in a]
    cli = cli_main(["fit", *args, f"--trainer.default_root_dir={tmp_path / 'root'}"])
    assert Path(cli.trainer.log_dir).parent.parent == tmp_path / "root"
    test = cli_main(["test", *args, f"--trainer.default_root_dir={tmp_path / 'root'}"])  # finds that run
    assert Path(test.trainer.log_dir) == Path(cli.trainer.log_dir)
    given = cli_main(["fit", *args, f"--trainer.default_root_dir={tmp_path / 'root'}",
                      f"--trainer.logger.init_args.save_dir={tmp_path / 'mine'}"])
    assert Path(given.trainer.log_dir).parent.parent == tmp_path / "mine"


def test_without_a_progress_bar_fit_prints_one_line_per_epoch_and_no_third_party_noise(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=2)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 0", "epoch 1"]
    assert all("train/loss" in line and "val/loss" in line for line in lines)
    assert "Tip:" not in out and "LeafSpec" not in out


def test_sigterm_mid_fit_exits_143_with_one_line(data_dir, tmp_path):
    """Lightning ends a fit on SIGTERM with a SystemExit of code 0; ours must not look finished."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=500),
                             "--early_stopping.patience=1000"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(tmp_path.rglob("best-*.ckpt")):  # an epoch has finished: training is under way
        assert proc.poll() is None and time.time() < deadline, "fit ended or never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "forecast: stopped by SIGTERM"



def test_the_cli_builds_the_network_on_meta_and_fit_materialises_it(data_dir, tmp_path):
    """No host copy of the weights before the Trainer: they get storage on its device in fit."""
    cli = cli_main([*base_args(data_dir, tmp_path, epochs=1), "--trainer.limit_train_batches=2",
                    "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu"], run=False)
    count = cli.model.num_parameters
    assert all(p.is_meta for p in cli.model.net.parameters())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in cli.model.net.parameters())
    assert cli.model.num_parameters == count and cli.trainer.global_step == 2


def test_forecast_cli_uses_no_private_lightning_cli_member():
    """Private LightningCLI members change between releases without notice (the CLI and the modules of its steps)."""
    import ast
    import inspect

    from lightning.pytorch.cli import LightningCLI

    from forecast.training import arguments, checks, cli, planning, runs, trainer

    def private_names(source: str) -> set[str]:
        tree = ast.parse(source)
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        return {n for n in names if n.startswith("_") and not n.startswith("__")}

    lightning_cli = private_names(inspect.getsource(LightningCLI))  # methods and instance attributes
    assert "_subcommand_parsers" in lightning_cli and "_instantiate_trainer" in lightning_cli
    for module in (cli, arguments, checks, planning, trainer, runs):
        assert private_names(inspect.getsource(module)) & lightning_cli == set(), module.__name__


def test_checkpoint_flags_reach_the_checkpoint_and_resolve_builds_nothing(data_dir, tmp_path):
    from forecast.training.config import resolve

    args = [*base_args(data_dir, tmp_path, epochs=1), "--checkpoint.save_last=false", "--checkpoint.save_top_k=2"]
    ckpt = cli_main(args, run=False).trainer.checkpoint_callback
    assert ckpt.save_last is False and ckpt.save_top_k == 2 and ckpt.monitor == MONITOR
    # the same arguments resolved without building anything: no data is read from a missing folder
    config = resolve([*args, f"--data.data_dir={tmp_path / 'missing'}"])
    assert config["checkpoint"]["save_top_k"] == 2 and config["data"]["data_dir"] == str(tmp_path / "missing")
    assert resolve([*args, "--seed_everything=true"])["seed_everything"] is True  # as given, not drawn
    with pytest.raises(ForecastError):
        cli_main([*args, f"--data.data_dir={tmp_path / 'missing'}"], run=False)
