"""`make bench` cannot skip silently: every bench module is imported and every `bench_*` entry is
registered in the runner; a failing entry makes the bench exit non-zero naming it; and (slow) every
entry runs at its smallest size, PostgreSQL included."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hpo_scale import pg_server

import forecast.bench
from forecast.bench.__main__ import main, sections

__all__ = ["pg_server"]

ROOT = Path(__file__).resolve().parents[1]
NOT_MAKE_BENCH = {"gpu_check"}  # `make gpu-check`, on a GPU (tests/test_gpu_check.py)


def test_every_bench_module_imports_and_each_entry_is_run_by_make_bench():
    registered = {fn for fn, _ in sections().values()}
    names = {m.name for m in pkgutil.iter_modules(forecast.bench.__path__)} - {"__main__"} - NOT_MAKE_BENCH
    assert names
    for name in sorted(names):
        module = importlib.import_module(f"forecast.bench.{name}")
        entries = {fn for n, fn in inspect.getmembers(module, inspect.isfunction)
                   if n.startswith("bench_") and fn.__module__ == module.__name__}
        composite = {getattr(module, "bench_scale", None)}  # runs storage + throughput, each registered
        missing = {fn.__name__ for fn in entries - registered - composite}
        assert not missing, f"forecast.bench.{name}: {missing} never run by make bench"
    for fn, smallest in sections().values():  # each smallest size is a valid call of its entry
        inspect.signature(fn).bind(**smallest)


def test_a_failing_entry_fails_the_bench_naming_it(tmp_path, monkeypatch, capsys):
    from forecast.bench import __main__ as runner

    def broken(**_):
        raise ImportError("No module named 'forecast.bench_memory'")

    entries = runner.sections()
    monkeypatch.setattr(runner, "sections", lambda: {"gather": entries["gather"], "memory": (broken, {})})
    out = tmp_path / "bench.json"
    assert main(["--smoke", "--out", str(out)]) == 1
    assert "1 entries failed: memory" in capsys.readouterr().err
    written = json.loads(out.read_text())
    assert "ImportError" in written["memory"]["failed"] and "failed" not in written["gather"]


def test_an_unknown_entry_is_refused():
    with pytest.raises(SystemExit):
        main(["--only", "nope"])


@pytest.mark.slow
def test_every_entry_runs_at_its_smallest_size(tmp_path, pg_server):
    out = tmp_path / "bench.json"
    env = {**os.environ, "FORECAST_TEST_PG_URL": pg_server}
    run = subprocess.run([sys.executable, "-m", "forecast.bench", "--smoke", "--out", str(out)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(sections()) <= set(results)
    assert not [k for k, v in results.items() if isinstance(v, dict) and "failed" in v]


def test_the_thread_table_interleaves_its_choices_in_a_rotating_order():
    """A neighbour's burst in one round must not fall on one choice only: each round starts one later."""
    from forecast.bench.cpu import _interleaved

    order: list[int | None] = []
    runs = _interleaved({"default": None, "1 thread": 1, "2 threads": 2}, 3,
                        lambda t: order.append(t) or {"threads": t})
    assert order == [None, 1, 2, 1, 2, None, 2, None, 1]
    assert {k: len(v) for k, v in runs.items()} == {"default": 3, "1 thread": 3, "2 threads": 3}
