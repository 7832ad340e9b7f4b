"""`python -m forecast data ...` end to end in a subprocess: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def forecast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forecast", "data", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("forecast: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def spy_csv(tmp_path, make_raw) -> Path:
    path = tmp_path / "SPY.csv"
    make_raw(300).to_csv(path, index=False, date_format="%Y-%m-%d")
    return path


def test_import_build_verify_info(spy_csv, data_dir):
    assert forecast("import", "SPY", str(spy_csv), "--data-dir", str(data_dir)).returncode == 0
    built = forecast("build", "--symbol", "SPY", "--tier", "a25", "--data-dir", str(data_dir))
    assert built.returncode == 0 and "wrote processed/SPY_a25.parquet: 101 rows" in built.stdout
    checked = forecast("verify", "--data-dir", str(data_dir))
    assert checked.returncode == 0 and "2 of 2 files ok" in checked.stdout


def test_bad_rows_give_one_line_and_change_nothing(spy_csv, data_dir, snapshot):
    assert forecast("import", "SPY", str(spy_csv), "--data-dir", str(data_dir)).returncode == 0
    before = snapshot(data_dir)
    lines = spy_csv.read_text().splitlines()
    lines[5] = lines[4]  # data row 5 repeats row 4
    bad = spy_csv.with_name("dup.csv")
    bad.write_text("\n".join(lines) + "\n")
    assert_one_line_error(
        forecast("import", "SPY", str(bad), "--data-dir", str(data_dir)),
        str(bad),
        "row 5 (",
        "duplicate date (also row 4)",
    )
    bad.write_text(spy_csv.read_text().replace("Adj Close", "Adjusted"))
    assert_one_line_error(
        forecast("import", "SPY", str(bad), "--data-dir", str(data_dir)),
        str(bad),
        "missing column(s) Adj Close",
    )
    assert snapshot(data_dir) == before


def test_user_mistakes_are_one_line(tmp_path, data_dir):
    assert_one_line_error(
        forecast("import", "SPY", str(tmp_path / "none.csv"), "--data-dir", str(data_dir)),
        "none.csv: no such file",
    )
    assert_one_line_error(
        forecast("build", "--tier", "a25", "--data-dir", str(data_dir)),
        "the following arguments are required: build.symbol",
    )
    assert_one_line_error(
        forecast("build", "--symbol", "SPY", "--data-dir", str(data_dir)), "no raw data for SPY"
    )
    assert not data_dir.exists()


def test_verify_exits_1_naming_the_changed_file(spy_csv, data_dir):
    assert forecast("import", "SPY", str(spy_csv), "--data-dir", str(data_dir)).returncode == 0
    path = data_dir / "raw/SPY.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))
    result = forecast("verify", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith("mismatch: raw/SPY.parquet: md5 ")
