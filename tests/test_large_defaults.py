"""The shipped 2B config fits one 80 GB GPU and a 64 GB disk with no extra flags, and `forecast arch
--disk-gb` says so; a last checkpoint is kept only where the disk allows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.bench.build import synthetic_tier
from forecast.sizing.arch import default_fit, shipped_settings
from forecast.sizing.arch import main as arch_main
from forecast.sizing.machine import GB, free_bytes
from forecast.training.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
TWO_B = ROOT / "configs" / "model" / "patchtst_2b.yaml"


def arch_json(capsys, *flags: str) -> list[dict]:
    assert arch_main(["--budget", "2B", "--device", "cuda", "--format", "json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_2b_default_fit_and_search_fit_80_gb_and_a_64_gb_disk(capsys):
    rows = arch_json(capsys, "--memory-gb", "80", "--disk-gb", "64")
    shipped, = [r for r in rows if r["shipped_config"]]
    assert shipped["shipped_config"] == "configs/model/patchtst_2b.yaml" and shipped["id"] == "d4096-l10-h64-f4"
    fit, params = shipped["default_fit"], shipped["params"]
    assert fit["fits"] and fit["memory_fits"] and fit["resumable_last"] and fit["weights_dtype"] == "bfloat16"
    # 2 best files of bf16 weights (a new best before the old one goes) + fp32 weights and AdamW moments
    assert fit["disk_gb"] == pytest.approx((2 * 2 * params + 12 * params) / GB)
    assert shipped["micro_batch"] * shipped["accumulate"] == 256 and shipped["micro_batch"] > 64
    assert all(r["default_search"]["fits"] for r in rows)


def test_a_smaller_disk_drops_the_last_checkpoint_then_refuses(capsys):
    row = lambda disk: next(r for r in arch_json(capsys, "--memory-gb", "80", "--disk-gb", disk)  # noqa: E731
                            if r["shipped_config"])
    assert row("20")["default_fit"]["fits"] and not row("20")["default_fit"]["resumable_last"]
    assert not row("5")["default_fit"]["fits"]
    small_gpu = arch_json(capsys, "--memory-gb", "16", "--disk-gb", "64")
    assert not any(r["default_fit"]["memory_fits"] for r in small_gpu)
    assert not small_gpu[0]["default_search"]["fits"]


@settings(max_examples=200, deadline=None)
@given(params=st.integers(1, 10**11), disk=st.integers(0, 10**13), memory=st.booleans(),
       weights_only=st.booleans(), dtype=st.sampled_from(["float32", "bfloat16"]), last=st.booleans())
def test_a_default_fit_keeps_what_the_disk_holds(params, disk, memory, weights_only, dtype, last):
    settings_ = {"save_top_k": 1, "save_last": last, "save_weights_only": weights_only, "weights_dtype": dtype}
    fit = default_fit(params, memory, settings_, disk)
    best = 2 * params * ((2 if dtype == "bfloat16" else 4) if weights_only else 12)
    assert fit["fits"] == (memory and best <= disk)
    assert fit["resumable_last"] == (last and best + 12 * params <= disk)
    if fit["fits"]:
        assert fit["disk_gb"] * GB <= disk + 1


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    return [*synthetic_tier(tmp_path_factory.mktemp("data"), rows=1200), "--data.min_windows=20",
            "--trainer.accelerator=cpu", "--planner.memory_gb=1e6"]  # nothing is allocated: the net is on meta


def test_the_shipped_2b_config_builds_with_its_defaults(data, tmp_path):
    cli = cli_main(["--config", str(ROOT / "configs" / "spy.yaml"), "--config", str(TWO_B), *data,
                    f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    best, last = cli.trainer.checkpoint_callbacks
    assert best.save_weights_only and not best.save_last and best.save_top_k == 1
    assert not last.save_weights_only and last.save_top_k == 0  # last.ckpt can resume
    assert last.save_last == (free_bytes(tmp_path) >= 16 * cli.model.num_parameters)
    assert cli.model.hparams.weights_dtype == "bfloat16" and isinstance(cli.datamodule.batch_size, int)
    assert shipped_settings("2B")["save_weights_only"] is True


def test_a_last_checkpoint_the_disk_cannot_hold_is_dropped_with_a_line(data, tmp_path, caplog):
    """A model (on meta) whose bf16 best checkpoints take half the free disk and whose resumable last
    would take twice it: the run keeps the best and says it keeps no last."""
    params_wanted = free_bytes(tmp_path) // 8  # best: 2 files x 2 bytes = free / 2; last: 12 bytes = 1.5 x free
    layers = max(1, round(params_wanted / (12 * 8192**2)))
    big = ["--model.net.init_args.d_model=8192", "--model.net.init_args.n_heads=64",
           "--model.net.init_args.d_ff=32768", f"--model.net.init_args.n_layers={layers}",
           "--checkpoint.save_weights_only=true", "--model.weights_dtype=bfloat16", "--data.batch_size=1"]
    with caplog.at_level("INFO"):
        cli = cli_main(["--config", str(ROOT / "configs" / "demo.yaml"), *data, *big,
                        f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    params, free = cli.model.num_parameters, free_bytes(tmp_path)
    assert 4 * params <= free < 16 * params  # the case this test is about
    best, last = cli.trainer.checkpoint_callbacks
    assert best.save_top_k == 1 and not last.save_last
    assert any("no last.ckpt" in r.getMessage() for r in caplog.records)
