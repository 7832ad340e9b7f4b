"""forecast.sizing.machine and the planner inside a fit: what cannot fit the memory or the disk is refused before
anything is written."""

from __future__ import annotations

import pytest
import torch
from synthetic_run import base_args, data_dir, fitted  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.training.cli import cli_main


def test_a_model_that_cannot_fit_the_memory_is_refused_before_anything_is_written(data_dir, tmp_path, capsys):
    args = [*base_args(data_dir, tmp_path), "--config", "configs/model/patchtst_2b.yaml", "--planner.memory_gb=16"]
    assert forecast_main(["fit", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this machine" in err[0] and "GB at micro-batch 1" in err[0]
    assert "12.0 GB usable of 16.0 GB (cpu, 32)" in err[0] and "--trainer.accelerator gpu" in err[0]
    assert not list(tmp_path.glob("t/version_*"))  # no run folder


def test_a_fixed_batch_that_cannot_fit_points_at_the_planner(data_dir, tmp_path, capsys):
    assert forecast_main(["fit", *base_args(data_dir, tmp_path), "--data.batch_size=4096",
                          "--planner.memory_gb=0.02"]) == 2
    err = capsys.readouterr().err.strip()
    assert "at --data.batch_size=4096" in err and "--data.batch_size auto" in err


def test_checkpoints_that_cannot_fit_on_the_disk_are_refused(data_dir, tmp_path, capsys):
    """A 25B-parameter model costs nothing to build on meta; its checkpoints would need ~0.9 TB."""
    huge = ["--model.net.init_args.d_model=16384", "--model.net.init_args.n_heads=16",
            "--model.net.init_args.d_ff=65536", "--model.net.init_args.n_layers=8", "--planner.memory_gb=1e9"]
    assert forecast_main(["fit", *base_args(data_dir, tmp_path), *huge]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough disk for the checkpoints" in err[0]
    assert "up to 3 x " in err[0] and "weights + AdamW moments" in err[0] and "GB free" in err[0]
    assert not list(tmp_path.glob("t/version_*"))


def test_checkpoint_sizes_and_counts():
    from forecast.sizing.machine import checkpoint_bytes, checkpoints_at_once

    assert checkpoint_bytes(2_000_000_000, weights_only=True) == 8_000_000_000
    assert checkpoint_bytes(2_000_000_000, weights_only=False) == 24_000_000_000
    assert checkpoints_at_once(save_top_k=1, save_last=True, max_epochs=50) == 3  # new best before old deleted + last
    assert checkpoints_at_once(save_top_k=1, save_last=False, max_epochs=50) == 2
    assert checkpoints_at_once(save_top_k=-1, save_last=False, max_epochs=5) == 6


def test_plain_fit_keeps_resumable_checkpoints(fitted):
    cli, _ = fitted
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert "optimizer_states" in best and "loops" in best  # what --ckpt_path needs to resume


@pytest.mark.parametrize("memory_gb,expect_accumulate", [(16.0, 1), (0.0015, 2)])  # 1.5 MB: 32 x 2
def test_batch_size_auto_uses_the_memory_planner(data_dir, tmp_path, memory_gb, expect_accumulate):
    """A smaller memory budget gives a smaller micro-batch and more accumulation, same effective batch."""
    args = [a for a in base_args(data_dir, tmp_path) if not a.startswith("--data.batch_size")]
    cli = cli_main([*args, "--data.batch_size=auto", "--planner.effective_batch=64",
                    f"--planner.memory_gb={memory_gb}", "--trainer.accelerator=cpu"], run=False)
    micro, accumulate = cli.datamodule.batch_size, cli.trainer.accumulate_grad_batches
    assert micro * accumulate == 64
    assert accumulate == expect_accumulate
