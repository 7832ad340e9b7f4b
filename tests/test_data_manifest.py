"""Manifests: entries written with every file, and `verify` catching any change on disk."""

from __future__ import annotations

import json

import pytest

from forecast.core.errors import ForecastError
from forecast.data.cli import main as data_main
from forecast.data.manifest import verify
from forecast.data.raw import write_raw
from forecast.data.tiers import build_and_write


@pytest.fixture
def filled(data_dir, make_raw, make_vix):
    """A data dir with raw SPY and VIX and the c tier built from them."""
    raw = make_raw(300)
    write_raw(data_dir, "SPY", raw, source="unit test")
    write_raw(data_dir, "VIX", make_vix(raw["Date"]), source="unit test")
    build_and_write(data_dir, "SPY", "c")
    return data_dir


def flip_one_byte(path, at=None):
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def problems(data_dir) -> dict[str, list[str]]:
    return {c.path: c.problems for c in verify(data_dir) if not c.ok}


def test_fresh_data_verifies_clean(filled, capsys):
    assert problems(filled) == {}
    assert data_main(["verify", "--data-dir", str(filled)]) == 0
    assert "3 of 3 files ok" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["raw/VIX.parquet", "processed/SPY_c.parquet"])
def test_verify_catches_one_changed_byte(filled, capsys, name):
    flip_one_byte(filled / name)
    found = problems(filled)
    assert found.pop(name)[0].startswith("md5 ")
    # A changed raw file also makes the tier built from it stale.
    stale = {"processed/SPY_c.parquet": ["source VIX changed since the build (rebuild it)"]}
    assert found == (stale if name.startswith("raw/") else {})
    assert data_main(["verify", "--data-dir", str(filled)]) == 1
    err = capsys.readouterr().err
    assert f"mismatch: {name}: md5 " in err


def test_verify_names_every_mismatch(filled, make_raw, capsys):
    write_raw(filled, "SPY", make_raw(300, seed=9), source="newer")  # tier c is now stale
    (filled / "raw/VIX.parquet").unlink()
    (filled / "processed/stray.parquet").write_bytes(b"PAR1")
    found = problems(filled)
    assert found == {
        "raw/VIX.parquet": ["file is missing"],
        "processed/SPY_c.parquet": [
            "source SPY changed since the build (rebuild it)",
            "source raw/VIX.parquet is missing",
        ],
        "processed/stray.parquet": ["not in the manifest"],
    }
    assert data_main(["verify", "--data-dir", str(filled)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_verify_catches_an_edited_manifest(filled):
    manifest = filled / "raw/manifest.json"
    doc = json.loads(manifest.read_text())
    doc["files"]["raw/SPY.parquet"]["columns"][1] = "Opne"
    manifest.write_text(json.dumps(doc))
    assert list(problems(filled)) == ["raw/SPY.parquet"]
    flip_one_byte(manifest, at=0)  # '{' -> 'z': no longer JSON
    assert "raw/manifest.json" in problems(filled)


def test_verify_without_manifests_is_an_error(data_dir):
    with pytest.raises(ForecastError, match="no manifest under"):
        verify(data_dir)


def test_a_damaged_manifest_blocks_writes(filled, make_raw, snapshot):
    flip_one_byte(filled / "raw/manifest.json", at=0)
    before = snapshot(filled)
    with pytest.raises(ForecastError, match="not a readable manifest"):
        write_raw(filled, "QQQ", make_raw(20), source="unit test")
    assert snapshot(filled) == before


def test_info_lists_what_is_on_disk(filled, capsys):
    assert data_main(["info", "--data-dir", str(filled)]) == 0
    out = capsys.readouterr().out
    for text in (
        "raw/SPY.parquet",
        "raw/VIX.parquet",
        "processed/SPY_c.parquet",
        "tier c v1 of SPY, VIX",
    ):
        assert text in out


def test_info_on_an_empty_dir_says_how_to_start(data_dir, capsys):
    assert data_main(["info", "--data-dir", str(data_dir)]) == 0
    assert "forecast data sample" in capsys.readouterr().out


def _write_many(data_dir: str, worker: int, count: int) -> None:
    from conftest import synthetic_raw

    raw = synthetic_raw(80, seed=worker)
    for i in range(count):
        write_raw(data_dir, f"W{worker}S{i}", raw, source=f"worker {worker}")


def test_concurrent_writers_keep_every_entry(data_dir):
    """Two processes writing different symbols at once: no entry is lost to a read-modify-write race."""
    import multiprocessing

    count = 25
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(data_dir), w, count)) for w in (0, 1)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    entries = json.loads((data_dir / "raw" / "manifest.json").read_text())["files"]
    assert set(entries) == {f"raw/W{w}S{i}.parquet" for w in (0, 1) for i in range(count)}
    assert problems(data_dir) == {}
