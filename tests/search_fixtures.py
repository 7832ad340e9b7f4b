"""A tiny synthetic tier, a test search space and helpers shared by the search tests (`test_hpo_*.py`) and
the report and house tests. `forecast hpo` / `forecast sweep` on a tiny synthetic tier: real Optuna storage files, real fits.

A "20K" budget over a test grid of d_model 16/32 gives four architectures of 15-20K parameters,
so a trial is one or two seconds of CPU. Processes are real where the contract is about
processes (SIGINT, kill -9, two workers on one journal file)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import synthetic_raw

from forecast.data.raw import write_raw
from forecast.data.tiers import build_and_write
from forecast.hpo.options import HpoOptions
from forecast.hpo.outputs import is_finished
from forecast.hpo.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]


SYMBOL = "SYN"
VAL_START, TEST_START = "2016-07-01", "2017-03-01"


TINY_SPACE = """\
architecture:
  grid: {d_model: [16, 32], n_layers: [1, 2, 3, 4], head_dim: [8], ffn_ratio: [2, 4]}
params:
  lr: {key: model.lr, type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  weight_decay: {key: model.weight_decay, type: float, low: 1.0e-4, high: 0.3, log: true}
  dropout: {key: model.net.init_args.dropout, type: float, low: 0.0, high: 0.3}
  warmup_frac: {key: model.warmup_frac, type: float, low: 0.0, high: 0.2}
  head_dropout: {key: model.net.init_args.head_dropout, type: float, low: 0.0, high: 0.3}
  clip: {key: trainer.gradient_clip_val, type: categorical, choices: [0.5, 2.0]}
"""


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs tiny models on one intra-op thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_raw(root, SYMBOL, synthetic_raw(n=1000, start="2014-01-02"), source="synthetic test series")
    build_and_write(root, SYMBOL, "a25")
    return root


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(TINY_SPACE)
    return path


def flags(data: Path, epochs: int = 2) -> list[str]:
    """Trial flags: the demo config shrunk to the synthetic tier (context 32, patches of 8)."""
    return [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
            f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.min_windows=20",
            "--data.batch_size=64", "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
            f"--trainer.max_epochs={epochs}", "--trainer.log_every_n_steps=5"]


def options(data: Path, space: Path, logs: Path, trials: int = 3, **kw) -> HpoOptions:
    return HpoOptions(budget="20K", trials=trials, configs=[str(ROOT / "configs" / "demo.yaml")],
                      overrides=flags(data, kw.pop("epochs", 2)), search_space=space, log_dir=logs,
                      no_live=True, **kw)


def cli_args(data: Path, space: Path, logs: Path, trials: int, *extra: str, epochs: int = 2) -> list[str]:
    return ["hpo", "--budget", "20K", "--trials", str(trials), "--config", str(ROOT / "configs" / "demo.yaml"),
            "--search-space", str(space), "--log-dir", str(logs), "--no-live", *flags(data, epochs), *extra]


def load(logs: Path, storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{logs / 'optuna.db'}"
    names = optuna.get_all_study_names(open_storage(url, 0))
    return optuna.load_study(study_name=names[0], storage=open_storage(url, 0))


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if is_finished(t)]


def assert_no_duplicates(study: optuna.Study) -> None:
    done = finished(study)
    assert len({t.number for t in done}) == len(done)
    draws = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(draws)) == len(draws), "a finished trial ran twice"


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll `condition` until it holds (a process ending first, or the timeout, fails the test)."""
    end = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        if time.time() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)
