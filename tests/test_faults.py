"""Faults that must never lose data: a journal cut mid-record, a disk that fills, a sample written over
real prices, a report that would write into the studies it reads (issue 29)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import lightning.pytorch as L
import optuna
import pytest
import torch

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.data.manifest import load_manifest
from forecast.data.raw import write_raw
from forecast.data.synthetic import synthetic_ohlcv
from forecast.data.tiers import build_and_write
from forecast.hpo.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]
TINY_FIT = ["--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2", "--model.net.init_args.n_layers=1",
            "--model.net.init_args.d_ff=32", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--data.min_windows=10"]


def _small_study(path: Path) -> bytes:
    """A real journal study as `forecast hpo` leaves one: settings, trials with records, a last write."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=open_storage(str(path), 0))
    study.set_user_attr("fingerprint", {"data": {"symbol": "SPY"}, "budget": "2M"})
    for i in range(3):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        trial.set_user_attr("arch_id", f"d32-l{i}")
        study.tell(trial, 0.5 + i / 10)
    return path.read_bytes()


def _trials(path: Path) -> list[tuple[int, str, float | None]]:
    """The study as a fresh, plain Optuna reader sees it (raises if it cannot read the file)."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="s", storage=storage)
    return [(t.number, t.state.name, t.value) for t in study.get_trials()]


@pytest.mark.parametrize("every", [pytest.param(True, marks=pytest.mark.slow), False], ids=["every-byte", "some-bytes"])
def test_a_journal_cut_at_any_byte_of_its_last_record_is_read_whole_or_mended(every, tmp_path, capfd):
    whole = _small_study(tmp_path / "whole.journal")
    start = whole.rstrip(b"\n").rfind(b"\n") + 1  # the last record: whole[start:], its line break included
    n = len(whole)
    cuts = range(start, n + 1) if every else sorted({start, start + 1, (start + n) // 2, n - 2, n - 1, n})
    before = tmp_path / "before.journal"
    before.write_bytes(whole[:start])
    expected = {len(whole): _trials(tmp_path / "whole.journal"), start: _trials(before)}
    for cut in cuts:
        path = tmp_path / f"cut{cut}" / "s.journal"
        path.parent.mkdir()
        path.write_bytes(whole[:cut])
        storage = open_storage(str(path), 0)  # mends a torn tail before anything is appended
        study = optuna.load_study(study_name="s", storage=storage)
        seen = [(t.number, t.state.name, t.value) for t in study.get_trials()]
        assert seen == expected[len(whole) if cut >= len(whole) - 1 else start], cut  # whole, or the record dropped
        study.tell(study.ask(), 1.0)  # the next write lands on a clean line
        assert _trials(path) == [*seen, (len(seen), "COMPLETE", 1.0)], cut
        kept = sorted(path.parent.glob("s.journal.torn-*"))
        if start < cut < len(whole) - 1:  # a partial record: dropped, the file as it was kept beside it
            assert len(kept) == 1 and kept[0].read_bytes() == whole[:cut], cut
        else:
            assert kept == [], cut
    err = capfd.readouterr().err
    assert "its last record was cut off" in err and "kept the file as it was in" in err


# -- raw prices are never replaced by accident ---------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_sample_never_replaces_imported_prices_without_replace(tmp_path, capfd):
    data = tmp_path / "data"
    frame = synthetic_ohlcv(n=40)
    frame.to_csv(tmp_path / "vix.csv", index=False)
    assert forecast_main(["data", "import", "VIX", str(tmp_path / "vix.csv"), "--data-dir", str(data)]) == 0
    assert forecast_main(["data", "import", "VIX", str(tmp_path / "vix.csv"), "--data-dir", str(data)]) == 0  # same
    before = _tree(data)
    capfd.readouterr()
    assert forecast_main(["data", "sample", "--data-dir", str(data)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raw/VIX.parquet holds 40 rows" in err[0] and "vix.csv" in err[0], err
    assert "1259 rows 2014-01-03..2019-01-03 from sample" in err[0] and "--replace" in err[0], err
    assert _tree(data) == before  # not even the sample's SP500 was written
    frame.iloc[:30].to_csv(tmp_path / "short.csv", index=False)  # the same source, shorter: refused too
    assert forecast_main(["data", "import", "VIX", str(tmp_path / "short.csv"), "--data-dir", str(data)]) == 2
    assert _tree(data) == before
    assert forecast_main(["data", "import", "VIX", str(tmp_path / "short.csv"), "--data-dir", str(data),
                          "--replace"]) == 0
    assert load_manifest(data, "raw")["raw/VIX.parquet"]["rows"] == 30


# -- a disk that fills during fit ------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (root only: a mount), unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class FillTheDisk(L.Callback):
    """Fills the disk holding `folder` as the first validation ends, before its checkpoint is written."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (self.folder / "filler").exists():
            return
        with open(self.folder / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass


def test_a_checkpoint_that_does_not_fit_the_disk_leaves_nothing_and_names_itself(small_disk):
    from forecast.training.checkpoints import AtomicCheckpointIO

    target = small_disk / "checkpoints" / "best-000.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, target)  # fits
    before = target.read_bytes()
    with pytest.raises(OSError) as caught:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2_000_000)}}, target)  # 8 MB on a 4 MB disk
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert [p.name for p in target.parent.iterdir()] == ["best-000.ckpt"] and target.read_bytes() == before


@pytest.mark.slow  # ~5 s: a real fit on a disk that fills (the checkpoint writer alone: the test above)
def test_a_full_disk_during_fit_leaves_no_checkpoint_that_test_would_pick(small_disk, tmp_path, monkeypatch, capfd):
    from forecast.training.cli import cli_main

    data = tmp_path / "data"
    write_raw(data, "SP500", synthetic_ohlcv(n=400), source="synthetic")
    build_and_write(data, "SP500", "a25")
    monkeypatch.setenv("FORECAST_DATA_DIR", str(data))
    logs = small_disk / "logs"
    args = ["fit", *_fit_args(logs)]
    with pytest.raises(OSError) as caught:
        cli_main(args, trainer_defaults={"callbacks": [FillTheDisk(small_disk)]})
    assert caught.value.errno == errno.ENOSPC and str(logs) in caught.value.filename  # the checkpoint, not a temp file
    assert ".tmp" not in caught.value.filename
    folder = logs / "demo" / "version_0" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == []  # nothing half-written, nothing hidden left
    (small_disk / "filler").unlink()
    capfd.readouterr()
    assert forecast_main(["test", *args[1:]]) == 2  # nothing to pick: one line, not a truncated best
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no best checkpoint" in err[0], err


# -- hangs and resources ---------------------------------------------------------------------------------
def test_the_yaml_refusal_search_is_linear_in_a_long_value():
    from forecast.core.bounded_yaml import unsafe_reason

    started = time.perf_counter()
    assert unsafe_reason("x" * 200_000) is None  # was quadratic: minutes at this length
    assert unsafe_reason("duplicate key " * 20_000) is None
    assert time.perf_counter() - started < 3
    assert unsafe_reason("a: 1.0e+400 at line 3 is not a finite number") == "1.0e+400 at line 3 is not a finite number"


@pytest.mark.parametrize("where", ["config", "grid"])
def test_yaml_nested_thousands_deep_is_one_line_not_a_recursion_error(where, tmp_path, capfd):
    deep = "[" * 5000 + "]" * 5000
    (tmp_path / "deep.yaml").write_text(f"data:\n  symbol: {deep}\n")
    argv = {"config": ["fit", "--config", str(ROOT / "configs/demo.yaml"), "--config", str(tmp_path / "deep.yaml")],
            "grid": ["arch", "--budget", "2M", "--grid", str(tmp_path / "deep.yaml")]}[where]
    assert forecast_main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nested more than 64 levels deep at line 2" in err[0], err


def test_a_flag_value_nested_thousands_deep_is_refused_by_the_loader():
    from forecast.core.bounded_yaml import UnsafeYAML, load_value

    with pytest.raises(UnsafeYAML, match="nested more than 64 levels deep"):
        load_value("[" * 5000 + "]" * 5000)
    assert load_value("[" * 10 + "1" + "]" * 10) == json.loads("[" * 10 + "1" + "]" * 10)


@pytest.mark.parametrize("value", ["100000", "²", "-1", "0", "4x"])
def test_a_bad_thread_count_in_the_environment_is_one_line_naming_it(value, monkeypatch, capfd):
    monkeypatch.setenv("FORECAST_THREADS", value)
    assert forecast_main(["fit", "--config", str(ROOT / "configs/demo.yaml")]) == 2  # said before anything runs
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"FORECAST_THREADS={value!r}: expected a number of threads from 1 to" in err[0], err


# -- read-only folders -------------------------------------------------------------------------------------
@pytest.fixture
def read_only_logs(sample_run, tmp_path):
    """A copy of a finished run's logs on a read-only tmpfs (root only: a mount)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        shutil.copytree(sample_run / "logs", folder / "logs")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder / "logs"
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    """A tiny finished fit on a synthetic tier: <root>/data and <root>/logs/demo/version_0."""
    root = tmp_path_factory.mktemp("run")
    write_raw(root / "data", "SP500", synthetic_ohlcv(n=400), source="synthetic")
    build_and_write(root / "data", "SP500", "a25")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORECAST_DATA_DIR", str(root / "data"))
        assert forecast_main(["fit", *_fit_args(root / "logs")]) == 0
    return root


def _fit_args(logs: Path) -> list[str]:
    return ["--config", str(ROOT / "configs" / "demo.yaml"), f"--trainer.logger.init_args.save_dir={logs}", *TINY_FIT,
            "--data.val_start=2019-04-01", "--data.test_start=2019-06-03", "--data.context_length=32",
            "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4"]


@pytest.mark.slow  # ~10 s: a fit, then four commands on a read-only copy of its logs
@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_a_read_only_run_folder_is_one_line_naming_it(command, sample_run, read_only_logs, monkeypatch, capfd):
    monkeypatch.setenv("FORECAST_DATA_DIR", str(sample_run / "data"))
    capfd.readouterr()
    assert forecast_main([command, *_fit_args(read_only_logs)]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and len(err) <= 2, err
    assert str(read_only_logs) in err[-1] and "the file system is read-only" in err[-1], err


# -- user-edited grids and search spaces: a schema, checked before anything runs ----------------------------
GRID = {"d_model": [64, 128], "n_layers": [1, 2], "head_dim": [64], "ffn_ratio": [2, 4]}


@pytest.mark.parametrize("key,value,expected", [
    ("d_model", 64, "d_model must be a list of numbers, got 64"),
    ("d_model", [0, 64], "d_model holds 0"),
    ("n_layers", ["deep"], "n_layers holds 'deep'"),
    ("head_dim", ["50%"], "head_dim holds '50%'"),
    ("n_layers", [1.5], "n_layers holds 1.5"),
    ("ffn_ratio", [-2], "ffn_ratio holds -2"),
    ("ffn_ratio", [True], "ffn_ratio holds True"),
])
def test_a_broken_grid_is_one_line(key, value, expected):
    from forecast.sizing.budget import check_grid

    with pytest.raises(ForecastError, match=re.escape(expected)):
        check_grid({**GRID, key: value}, "grid")


@pytest.mark.parametrize("edit,expected", [
    ({"architecture": [1]}, "architecture and params must be mappings"),
    ({"architecture": {"grid": 3}}, "architecture.grid must be a mapping of lists or a file name"),
    ({"architecture": {"tolerance": "25%"}}, "architecture.tolerance must be a number between 0 and 1"),
    ({"architecture": {"grid": {**GRID, "d_model": [64, "x"]}}}, "d_model holds 'x'"),
    ({"params": {"lr": {"key": "model.lr", "type": "float", "low": 0.1, "high": 0.5, "step": -0.1}}},
     "params.lr.step must be a number > 0"),
    ({"params": {"lr": {"key": "model.lr", "type": "float", "low": 0.1, "high": 0.5, "log": "yes"}}},
     "params.lr.log must be true or false"),
    ({"params": {"n": {"key": "data.batch_size", "type": "int", "low": 1.5, "high": 8}}}, "an int range needs whole"),
    ({"params": {"c": {"key": "trainer.gradient_clip_val", "type": "categorical", "choices": [[1], 2]}}},
     "choices must hold single values"),
])
def test_a_broken_search_space_is_one_line_naming_the_field(edit, expected, tmp_path):
    import yaml

    from forecast.hpo.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"architecture": {"grid": GRID},
                                    "params": {"lr": {"key": "model.lr", "type": "float", "low": 1e-4, "high": 1e-2}},
                                    **edit}))
    with pytest.raises(ForecastError, match=re.escape(expected)):
        load_space(path)


# -- smaller ones --------------------------------------------------------------------------------------------
def test_a_price_near_zero_is_refused_as_its_twin_above_is(tmp_path, capfd):
    frame = synthetic_ohlcv(n=30)
    frame.loc[15, ["Open", "High", "Low", "Close", "Adj Close"]] = 1e-298
    frame.to_csv(tmp_path / "p.csv", index=False)
    assert forecast_main(["data", "import", "SPY", str(tmp_path / "p.csv"), "--data-dir", str(tmp_path / "d")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prices below 1e-06 on 1 day(s)" in err[0], err
    assert not (tmp_path / "d").exists()


def test_a_csv_with_a_byte_order_mark_imports(tmp_path):
    frame = synthetic_ohlcv(n=30)
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode())
    assert forecast_main(["data", "import", "SPY", str(tmp_path / "bom.csv"), "--data-dir", str(tmp_path / "d")]) == 0
    assert load_manifest(tmp_path / "d", "raw")["raw/SPY.parquet"]["rows"] == 30


def test_an_empty_file_named_as_storage_is_refused_not_filled(tmp_path):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    with pytest.raises(ForecastError, match="is an empty file"):
        open_storage(f"sqlite:///{db}", 0)
    assert db.read_bytes() == b""


def test_a_refused_setup_in_a_new_study_folder_leaves_no_folder(tmp_path):
    from forecast.hpo.opening import locked

    folder = tmp_path / "logs" / "study"
    with pytest.raises(ForecastError), locked(folder):
        raise ForecastError("refused")
    assert not folder.exists()
    folder.mkdir()
    with locked(folder):  # a folder that was there stays, its lock too (flock files are kept)
        pass
    assert (folder / ".lock").exists()


def test_a_killed_writers_temporary_file_is_cleaned_by_the_next_write(tmp_path):
    from forecast.core.files import STALE_S, write_text_atomic

    stale, fresh = tmp_path / ".a.json.k1ll3d.tmp", tmp_path / ".a.json.l1v3.tmp"
    for f in (stale, fresh):
        f.write_text("half")
    os.utime(stale, (time.time() - STALE_S - 60,) * 2)
    (tmp_path / ".b.json.0ther.tmp").write_text("another file's")
    os.utime(tmp_path / ".b.json.0ther.tmp", (time.time() - STALE_S - 60,) * 2)
    write_text_atomic(tmp_path / "a.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.json.l1v3.tmp", ".b.json.0ther.tmp", "a.json"]


@pytest.mark.slow  # waits SQLITE_WAIT_S (10 s) for the lock by design
def test_a_locked_sqlite_storage_is_one_line_within_seconds(tmp_path):
    import sqlite3

    from forecast.hpo.storage import SQLITE_WAIT_S

    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_storage(url, 0)  # the tables
    holder = sqlite3.connect(tmp_path / "l.db")
    holder.execute("BEGIN EXCLUSIVE")
    started = time.time()
    try:
        with pytest.raises(ForecastError, match="database is locked"):
            open_storage(url, 0)
    finally:
        holder.rollback()
        holder.close()
    assert time.time() - started < SQLITE_WAIT_S + 10
