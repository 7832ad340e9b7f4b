"""forecast.training.module: the LightningModule's optimizer, metrics, fusion and compile, through real fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from synthetic_run import base_args, data_dir, fitted  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.core import metric_names
from forecast.training.cli import cli_main


def test_weight_decay_reaches_the_optimizer(fitted):
    cli, _ = fitted
    groups = cli.trainer.optimizers[0].param_groups
    decay = [g for g in groups if g["weight_decay"] > 0]
    assert decay and decay[0]["weight_decay"] == cli.model.hparams.weight_decay
    matrices = {id(p) for g in decay for p in g["params"]}
    assert all(p.ndim >= 2 for p in cli.model.parameters() if id(p) in matrices)
    assert all(id(p) not in matrices for p in cli.model.parameters() if p.ndim < 2)


def test_an_optimizer_given_the_lightning_cli_way_keeps_the_groups_lr_and_schedule(data_dir, tmp_path):
    args = [*base_args(data_dir, tmp_path, epochs=1), "--model.weight_decay=0.2",
            "--model.optimizer=torch.optim.SGD", "--model.optimizer.momentum=0.9", "--model.optimizer.lr=0.5"]
    cli = cli_main(["fit", *args])
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is torch.optim.SGD
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]  # matrices, then the rest
    assert {g["momentum"] for g in optimizer.param_groups} == {0.9}
    assert {g["initial_lr"] for g in optimizer.param_groups} == {3e-3}  # model.lr wins over the optimizer's
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler) is torch.optim.lr_scheduler.LambdaLR
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["model"]["optimizer"]["class_path"] == "torch.optim.SGD"  # replayable by forecast fit
    assert forecast_main(["test", *base_args(data_dir, tmp_path)]) == 0  # its checkpoint loads


def test_train_metrics_off_keeps_the_training_loss_and_every_val_metric(data_dir, tmp_path):
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--model.train_metrics=false"])
    logged = cli.trainer.callback_metrics
    assert "train/loss" in logged and not any(k.startswith("train/") and k != "train/loss" for k in logged)
    assert {k for k in logged if k.startswith("val/")} == set(metric_names.logged("val"))  # the names are the run's


@pytest.mark.parametrize("backend", ["eager", pytest.param("true", marks=pytest.mark.slow)])  # inductor: ~2 min
def test_compile_is_opt_in_and_keeps_checkpoint_names(data_dir, tmp_path, backend, monkeypatch):
    """--model.compile compiles the network where it runs (here a tiny one on the CPU). Asked for 2
    threads (make test runs on one), compile on the CPU still trains on one: inductor's CPU backward
    crashed the process on 2 with torch 2.13 (`one_thread_for_cpu_inductor`)."""
    from torch._dynamo.utils import counters

    counters.clear()
    before = torch.get_num_threads()
    monkeypatch.setenv("FORECAST_THREADS", "2")
    try:
        cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.limit_train_batches=2",
                        "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu", f"--model.compile={backend}"])
        assert torch.get_num_threads() == (1 if backend == "true" else 2)
    finally:
        torch.set_num_threads(before)  # this xdist worker's next tests
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured the forward
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)
    saved = {k.removeprefix("net.") for k in best["state_dict"] if k.startswith("net.")}
    assert saved == set(cli.model.net.state_dict())  # no `_orig_mod.` in the names


def test_adamw_is_fused_on_cuda_only(fitted):
    from forecast.training.module import adamw_options

    assert adamw_options(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_options(torch.device("cpu")) == {}
    assert not cli_fused(fitted[0])  # the CPU run kept the default implementation


def cli_fused(cli) -> bool:
    return bool(cli.trainer.optimizers[0].defaults.get("fused"))


def test_short_fit_lowers_training_loss(fitted):
    cli, _ = fitted
    losses = cli.train_losses
    assert cli.trainer.current_epoch == 5 and len(losses) == 5
    assert losses[-1] < losses[0] - 0.01, losses


def test_inductor_on_the_cpu_runs_on_one_thread(capsys):
    """torch 2.13's CPU inductor backward of a 2M PatchTST aborted the process on 2 threads (exit 134,
    "free(): invalid next size"); a compiled run on the CPU gets one thread, and says so."""
    from forecast.training.module import one_thread_for_cpu_inductor

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        one_thread_for_cpu_inductor()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
