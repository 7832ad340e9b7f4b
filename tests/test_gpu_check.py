"""`make gpu-check`: its answer on a machine without CUDA, and its code run end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_in_one_line_and_fails(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-m", "forecast.bench.gpu_check", "--out", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and not out.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device is visible")


@pytest.mark.slow
def test_smoke_runs_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-m", "forecast.bench.gpu_check", "--smoke", "--out", str(out)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    model = result["models"][0]
    assert model["steps"] == 6 and model["params"] > 0 and model["planner_peak_gb"] > 0
    assert model["steady"]["samples_per_sec"] > 0 and model["whole"]["train_tokens_per_sec"] > 0
    for name in ("search", "small"):
        assert result[name]["finished"] == result[name]["trials"] and result[name]["oom"] == 0
        assert all(r["samples_per_sec"] > 0 for r in result[name]["records"])
