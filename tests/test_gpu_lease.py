"""The GPU lease script (scripts/gpu-lease.sh) and its wheel set, before any GPU is lent.

The wheel set is forecast's dependencies less the device image's packages (scripts/gpu-image-packages.txt,
from the device tool's KINDS.md), and the Makefile's GPU_WHEELS is that set. The slow test rehearses the
exact script on this CPU the way the device runs it: in a copy of the working tree (tracked and untracked
files, nothing ignored), with a fresh interpreter environment that holds the image's packages only (linked
from this venv: Python 3.11 and torch 2.13's CPU build here, where the image has 3.12 and torch 2.11 + CUDA
13.0), the missing ones arriving as wheels in `.whl/` (the same pins, for this Python), no `make`, and the
CUDA defaults forced (`REHEARSE=1`: gpu_check --rehearse).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-lease.sh"
SECTIONS = ("tests", "models", "search", "compile", "small")
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on what travels: working tree and carried paths


def load_script(name: str):
    """A module of scripts/ (not a package: they run on the image by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def makefile_list(name: str) -> list[str]:
    """A `NAME ?= a b \\ c` list of the Makefile."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(rf"^{name}\s*\?=(.*)$", text, re.MULTILINE)
    assert found, f"{name} not in the Makefile"
    return found.group(1).split()


def test_the_wheels_are_what_the_image_lacks_and_the_makefile_lists_them():
    wheels = load_script("gpu_wheels")
    image = wheels.image_packages()
    computed = [pin for pin, _ in wheels.wheels()]
    assert makefile_list("GPU_WHEELS") == computed  # `python3 scripts/gpu_wheels.py` refreshes it
    names = {wheels.canonical(p.split("==")[0]) for p in computed}
    assert not names & set(image)  # never a second torch, numpy or lightning over the image's
    assert {"optuna", "optuna-integration", "jsonargparse", "ta-lib", "sqlalchemy"} <= names
    assert {"torch", "numpy", "lightning", "pandas", "torchmetrics", "pytest", "hypothesis"} <= set(image)
    assert image["torch"] == "2.11.0" and image["numpy"] == "2.5.2"  # KINDS.md's readings


def test_a_dependency_under_a_marker_for_other_pythons_is_left_out():
    from packaging.requirements import Requirement

    wheels = load_script("gpu_wheels")
    assert not wheels.applies(Requirement("tomli>=1; python_version < '3.11'"), set())
    assert wheels.applies(Requirement("psycopg-binary; extra == 'binary'"), {"binary"})
    assert not wheels.applies(Requirement("psycopg-binary; extra == 'binary'"), set())
    assert not wheels.applies(Requirement("pywin32; sys_platform == 'win32'"), set())


def test_the_dry_run_plans_every_section_under_the_lease(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "out")})
    assert done.returncode == 0, done.stderr
    limits = dict(re.findall(r"^  (\w+) \(limit (\d+) s\)", done.stdout, re.MULTILINE))
    assert tuple(limits) == SECTIONS and sum(map(int, limits.values())) <= 480  # LEASE_S's default
    assert "python3 -m pytest -q -m gpu" in done.stdout and "--only compile" in done.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert "EXPECTED DEVICE TIME" in SCRIPT.read_text()


def test_a_killed_section_keeps_what_it_finished_and_the_summary_says_so(tmp_path):
    """A section's process writes its JSON after every model; killed in the 2B, the 200M is kept."""
    lease = load_script("lease_json")
    partial = {"models": [{"name": "200M", "planner_peak_gb": 20.0, "measured_peak_gb": 16.0,
                           "steady": {"mfu": 0.4, "samples_per_sec": 900.0}, "compile": False, "compiled": False}]}
    partial["summary"] = {}  # the section never finished: no summary of its own
    (tmp_path / "models.json").write_text(json.dumps(partial))
    lease.section(tmp_path, "models", 124, 130.2, 130)
    lease.section(tmp_path, "small", lease.SKIPPED, 0, 12)
    kept = json.loads((tmp_path / "models.json").read_text())
    assert kept["models"] == partial["models"] and kept["lease"]["status"] == "killed at its time limit"
    assert json.loads((tmp_path / "small.json").read_text())["lease"]["skipped"].startswith("time: 12 s left")
    lines, summary = lease.summary_lines(tmp_path, 480)
    assert summary["sections"]["models"]["lease"]["exit_code"] == 124
    assert any("killed" in line for line in lines) and any("too little to start" in line for line in lines)


# -- the rehearsal -----------------------------------------------------------------------------------
def image_environment(folder: Path) -> Path:
    """A fresh virtual environment holding the image's packages only, linked from this venv (no copies:
    torch alone is ~1 GB), and its python3. The image's other packages are not needed by forecast."""
    wheels = load_script("gpu_wheels")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    site = next(folder.glob("lib/python3*/site-packages"))
    image = wheels.image_packages()
    for dist in metadata.distributions():
        if wheels.canonical(dist.metadata["Name"]) not in image:
            continue
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    python3 = folder / "bin" / "python3"
    return python3


def tree_copy(dest: Path) -> None:
    """What the device gets: tracked and untracked-but-not-ignored files (links kept as links)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())


def wheels_here(pins: list[str]) -> Path:
    """GPU_WHEELS for THIS Python (the rehearsal's), downloaded once into a cache keyed by the pins."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    key = hashlib.sha256(" ".join(pins).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "forecast" / f"gpu-wheels-{tag}-{key}"
    if len(list(cache.glob("*.whl"))) < len(pins):
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", str(cache), *pins], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"cannot download GPU_WHEELS for {tag} (offline?): {done.stderr.strip()[-200:]}")
    return cache


@pytest.mark.slow  # ~2 min: the script's every section at the rehearsal's tiny sizes, each its own process
def test_the_lease_script_runs_on_the_image_packages_alone(tmp_path):
    tree, out = tmp_path / "tree", tmp_path / "out"
    tree_copy(tree)
    (tree / ".whl").symlink_to(wheels_here(makefile_list("GPU_WHEELS")))
    python3 = image_environment(tmp_path / "image")
    # No PYTHONPATH, no venv: what the device's shell has. The limits stretch for a shared, loaded CPU
    # (a section's imports alone take 7 s of CPU); the CPU time the script used is what must fit.
    env = {"PATH": f"{python3.parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "OUT": str(out),
           "SITE": str(tmp_path / "site"), "REHEARSE": "1", "LEASE_S": "900", "LIMIT_SCALE": "5",
           "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(["bash", "scripts/gpu-lease.sh"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=900)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    log = (out / "lease.log").read_text() if (out / "lease.log").exists() else ""
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-2000:], log[-3000:])
    print(f"lease rehearsal: {cpu:.0f} s of CPU, {wall:.0f} s wall")
    assert cpu < 180, (cpu, wall)
    assert "torch 2.13" in done.stdout and "no GPU" in done.stdout  # the rehearsal's versions, said
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["sections"]) == set(SECTIONS)
    assert {s: summary["sections"][s]["lease"]["status"] for s in SECTIONS} == dict.fromkeys(SECTIONS, "ok"), (
        done.stdout[-3000:], log[-3000:])
    tests = summary["sections"]["tests"]["lease"]["tests"]
    assert tests["failed"] == 0 and tests["skipped"] >= 2  # every gpu test collected, skipped without CUDA
    for name in ("models", "compile", "search", "small"):
        figures = json.loads((out / f"{name}.json").read_text())["summary"][name]
        assert figures["oom"] == 0 and not figures["skipped"] and figures["rows"], (name, figures)
        for row in figures["rows"]:
            assert row["planner_peak_gb"] > 0 and row["samples_per_sec"] > 0 and row["mfu"] > 0, (name, row)
    compiled, = summary["sections"]["compile"]["summary"]["rows"]
    assert compiled["compile"] == "eager" and compiled["compiled"] is True
    assert "compile compiled" in done.stdout and "compile off" in done.stdout
    assert sum(1 for _ in out.iterdir()) <= 8  # the device returns at most 8 files
