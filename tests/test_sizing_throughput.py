"""forecast.sizing.throughput: samples/s, tokens/s and MFU of a fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from synthetic_run import base_args, data_dir, fitted  # noqa: F401  (fixtures)

from forecast.training.cli import cli_main


def test_fit_summary_records_training_throughput(fitted):
    cli, _ = fitted
    summary = json.loads((Path(cli.trainer.log_dir) / "fit_summary.json").read_text())
    rate = summary["train_samples_per_sec"]
    assert rate > 0 and summary["train_tokens_per_sec"] == pytest.approx(rate * cli.model.net.n_patches)
    assert summary["train_flops_per_sec"] == pytest.approx(rate * cli.model.flops_per_sample)
    assert summary["train_mfu"] is None  # no peak is known for a CPU
    events = b"".join(p.read_bytes() for p in Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
    assert b"train/device/samples_per_sec" in events and b"train/device/items_per_sec" in events  # TensorBoard


def test_mfu_divides_by_the_h200s_dense_peak_and_lightnings_elsewhere():
    from lightning.fabric.utilities.throughput import get_available_flops

    from forecast.sizing.throughput import dense_peak

    assert dense_peak("NVIDIA H200", torch.bfloat16, None) == 989_400_000_000_000  # Lightning: none for this name
    assert dense_peak("NVIDIA H200", "tfloat32", None) == 494_700_000_000_000
    assert dense_peak("NVIDIA H100 80GB HBM3", torch.bfloat16, 989_400_000_000_000) == 989_400_000_000_000
    assert get_available_flops(torch.device("cpu"), torch.float32) is None  # so CPU runs report no MFU


def test_throughput_times_only_the_logged_steps_and_epoch_ends(data_dir, tmp_path):
    """The clock is read (and on CUDA the device synchronised) on logging steps and the epoch's last
    batch only; the same code on every device, so this CPU run checks what a GPU run does."""
    from forecast.sizing.throughput import Throughput

    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.accelerator=cpu",
                    "--trainer.log_every_n_steps=5", "--trainer.limit_train_batches=12"])
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, Throughput))
    assert monitor.timed_at == [5, 10, 12]  # every 5th batch and the epoch's last, not all 12
    assert json.loads((Path(cli.trainer.log_dir) / "fit_summary.json").read_text())["train_samples_per_sec"] > 0


def test_a_given_peak_gives_an_mfu_on_the_cpu(data_dir, tmp_path):
    """--throughput.peak_tflops: the MFU path runs where no device peak is known."""
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.accelerator=cpu",
                    "--trainer.limit_train_batches=4", "--throughput.peak_tflops=0.5"])
    summary = json.loads((Path(cli.trainer.log_dir) / "fit_summary.json").read_text())
    assert summary["train_mfu"] == pytest.approx(summary["train_flops_per_sec"] / 0.5e12)
