"""Shared fixtures: synthetic raw prices, a temporary data directory, the real data folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import settings

from forecast.data.synthetic import synthetic_ohlcv as synthetic_raw
from forecast.data.synthetic import synthetic_vix

__all__ = ["synthetic_raw", "synthetic_vix"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Property tests in `make test` draw the same examples on every run (a red CI is a real defect, not a draw), and
# no example has a deadline (a loaded machine is slow, not wrong). HYPOTHESIS_PROFILE=explore draws afresh.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (`make test` runs two workers), every test on the PostgreSQL server runs in one worker, so the
    session fixture that may start the server (and stops what it started) exists once."""
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("postgres"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: tiny models on a shared 2-core box run faster without contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_raw() -> Callable[..., pd.DataFrame]:
    """The `synthetic_raw` factory."""
    return synthetic_raw


@pytest.fixture
def make_vix() -> Callable[..., pd.DataFrame]:
    """The `synthetic_vix` factory."""
    return synthetic_vix


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory (not yet created on disk)."""
    return tmp_path / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real SPY and VIX CSVs), or a skip when this checkout has none."""
    if not (SHARED_DATA / "SPY.csv").is_file() or not (SHARED_DATA / "VIX.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}; real-data tests skipped")
    return SHARED_DATA


def _snapshot(root: Path) -> dict[str, bytes | None]:
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes | None]]:
    """Every path under a folder with its bytes (None for folders): equal = unchanged."""
    return _snapshot
