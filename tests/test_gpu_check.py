"""`make gpu-check`: its answer on a machine without CUDA, and its own script rehearsed end to end on the
CPU (`make gpu-rehearsal`) with the settings the CUDA defaults choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
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
    assert "make gpu-rehearsal" in lines[0]


@pytest.mark.slow  # ~1.5 min; scripts/gpu-lease.sh's rehearsal (tests/test_gpu_lease.py) runs each section too
def test_make_gpu_rehearsal_runs_every_section_with_the_cuda_defaults(tmp_path):
    """The make target itself (the script's every section, two real search workers), into OUT."""
    out = tmp_path / "out"
    # -o install: the venv running this test is the one to use (never rebuilt from here)
    done = subprocess.run(["make", "-s", "-o", "install", "gpu-rehearsal", f"OUT={out}",
                           f"BIN={Path(sys.executable).parent}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    result = json.loads((out / "gpu_check.json").read_text())
    assert json.loads(done.stdout[done.stdout.index("\n{\n") + 1:done.stdout.rindex("}") + 1]) == result  # printed too
    assert result["rehearsal"] is True and {"models", "search", "small", "compile"} <= set(result)
    assert not [k for k in ("models", "search", "small", "compile") if "error" in result[k] or "skipped" in result[k]]
    compiled, = result["compile"]
    assert compiled["compile"] == "eager" and compiled["compiled"] is True and compiled["compiled_graphs"] >= 1
    for name in ("models", "search", "small", "compile"):  # one row per model or trial, side by side
        summary = result["summary"][name]
        assert summary["oom"] == 0 and not summary["skipped"] and summary["rows"]
        assert all(r["planner_peak_gb"] > 0 and r["samples_per_sec"] > 0 and r["mfu"] > 0 for r in summary["rows"])
    model, = result["models"]
    assert "error" not in model and model["steps"] == 6 and model["params"] > 0 and model["planner_peak_gb"] > 0
    # what the CUDA defaults choose, forced on the CPU
    assert model["precision"] == "bf16-mixed" and model["fused_adamw"] is True and model["train_metrics"] is False
    assert model["steady"]["samples_per_sec"] > 0 and model["whole"]["train_tokens_per_sec"] > 0
    assert 0 < model["steady"]["mfu"] < 1 and model["available_flops"] == 1e12  # the given peak
    for name in ("search", "small"):
        assert result[name]["exit_code"] == 0 and result[name]["oom"] == 0
        assert result[name]["finished"] == result[name]["trials"]
        assert all(r["samples_per_sec"] > 0 and r["mfu"] > 0 for r in result[name]["records"])
    assert result["small"]["workers"] == 2


def test_a_failing_model_is_recorded_and_the_next_still_runs(tmp_path):
    from forecast.bench.gpu_check import REHEARSAL, run

    sizes = replace(REHEARSAL, models=(("broken", "no_such_model.yaml"), REHEARSAL.models[0]))
    result = run(tmp_path / "gpu_check.json", 600, {"models"}, sizes)
    broken, tiny = result["models"]
    assert broken["name"] == "broken" and "no_such_model.yaml" in broken["error"]
    assert tiny["name"] == "tiny" and tiny["steps"] == 6 and "error" not in tiny
    assert json.loads((tmp_path / "gpu_check.json").read_text())["models"] == result["models"]
    assert "search" not in result  # only the sections asked for
    rows = result["summary"]["models"]["rows"]
    assert [r["what"] for r in rows] == ["broken", "tiny"] and rows[0]["error"] and rows[0]["oom"] is False
    assert rows[1]["compile"] is False and rows[1]["planner_peak_gb"] > 0


def test_a_model_that_would_start_too_late_is_skipped_for_time(tmp_path):
    """Within a section, a model starts only with `min_model_s` of the section's time left; the
    rest are recorded as skipped for time, in the section's summary too."""
    from forecast.bench.gpu_check import REHEARSAL, run

    sizes = replace(REHEARSAL, min_model_s=3600.0)
    result = run(tmp_path / "gpu_check.json", 60, {"models"}, sizes)
    skipped, = result["models"]
    assert skipped["name"] == "tiny" and skipped["skipped"].startswith("time:")
    assert result["summary"]["models"]["skipped"] == [f"tiny: {skipped['skipped']}"]
