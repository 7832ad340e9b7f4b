"""The package's layers hold: import-linter's contracts (pyproject.toml) pass, and a planted
upward import is caught by the same check, so a cycle or an upward import fails CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def run_lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def lint():
    if not LINT.exists():
        pytest.skip("import-linter is not installed (make install brings it)")
    return run_lint


def test_the_layer_contracts_hold(lint):
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(lint, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "forecast", copy / "forecast", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    model = copy / "forecast" / "model.py"
    model.write_text(model.read_text() + "\nfrom forecast.report import stats  # upward: model -> report\n")
    result = lint(copy)
    assert result.returncode != 0 and "forecast.model -> forecast.report" in result.stdout
