"""Like-for-like inputs: one definition of the stationary features (forecast.data.stationary), used
by the baselines and, with `data.inputs: stationary`, by the network; a real tiny fit on them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import synthetic_raw, synthetic_vix
from hypothesis import given
from hypothesis import strategies as st

from forecast.cli import main as forecast_main
from forecast.data.datamodule import ForecastDataModule
from forecast.data.raw import write_raw
from forecast.data.stationary import stationary_frame, stationary_names
from forecast.data.tiers import TIERS, build_and_write
from forecast.hpo.config import fingerprint, study_name
from forecast.model import PatchTST
from forecast.sizing.budget import tier_features
from forecast.training.baselines import LOGISTIC_C, fit_baselines, stationary_features
from forecast.training.cli import cli_main
from forecast.training.config import recorded_data

SYMBOL = "SYN"
VAL_START, TEST_START = "2017-07-03", "2018-04-02"
ALL_COLUMNS = sorted({c for t in TIERS.values() for c in t.columns})


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models on one intra-op thread (conftest's `one_thread`)."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    raw = synthetic_raw(n=900, start="2015-01-02")
    write_raw(root, SYMBOL, raw, source="synthetic test series")
    write_raw(root, "VIX", synthetic_vix(raw["Date"]), source="synthetic VIX")
    build_and_write(root, SYMBOL, "c")
    return root


def dm(data_dir: Path, **over) -> ForecastDataModule:
    kw = dict(symbol=SYMBOL, tier="c", data_dir=str(data_dir), context_length=32, val_start=VAL_START,
              test_start=TEST_START, min_windows=20, batch_size=32)
    return ForecastDataModule(**{**kw, **over})


@given(st.lists(st.sampled_from(ALL_COLUMNS), unique=True, min_size=1))
def test_names_known_before_any_data_are_the_columns_built(columns):
    """Any subset of tier columns, in any order: `stationary_names` (what sizes the network before a
    file is read) lists exactly the columns `stationary_frame` builds, in its order."""
    rng = np.random.default_rng(len(columns))
    raw = np.abs(rng.normal(100, 5, size=(40, len(columns))))
    frame = stationary_frame(pd.DataFrame(raw, columns=columns))
    assert list(frame.columns) == stationary_names(columns)
    assert np.isfinite(frame.to_numpy()).all()
    assert not {"close", "open", "high", "low", "sma_200", "vix_close"} & set(frame.columns)  # no price level


def test_every_tier_counts_its_stationary_inputs():
    for name, tier in TIERS.items():
        assert tier_features(name, "stationary") == len(stationary_names(tier.columns)) > 0
        assert tier_features(name) == len(tier.columns)


def test_the_network_and_the_baselines_see_the_same_stationary_inputs(data_dir):
    tier, stat = dm(data_dir), dm(data_dir, inputs="stationary")
    x, names = stationary_features(stat)  # the baselines' inputs, from the same tier's raw columns
    assert stat.input_names == names and stat.n_features == len(names) == x.shape[1] != tier.n_features
    train = np.arange(len(stat.dates)) < stat.bounds["train"][1]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    expected = (x - mean) / np.where(std > 0, std, 1.0)  # scaled on training rows only
    np.testing.assert_allclose(stat.features.numpy(), expected, rtol=1e-5, atol=1e-5)
    # same samples, labels and raw columns; only what the network sees differs
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(stat.splits[split].ends, tier.splits[split].ends)
    assert torch.equal(stat.targets, tier.targets) and stat.feature_names == tier.feature_names
    assert stat.fingerprint() != tier.fingerprint()


def test_other_inputs_are_refused_by_the_parser(capsys):
    """`data.inputs` is a Literal: the run's parser refuses another value in one line (the data module does not
    check it again)."""
    assert forecast_main(["fit", "--config", "configs/demo.yaml", "--data.inputs=returns"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["forecast: error: forecast fit: data.inputs: 'returns' is not one of 'tier', 'stationary' "
                   "(see forecast fit --help)"]


def test_fit_on_stationary_inputs_links_the_feature_count(data_dir, tmp_path, capsys):
    args = ["fit", "--config", "configs/demo.yaml", f"--data.data_dir={data_dir}", f"--data.symbol={SYMBOL}",
            "--data.tier=c", "--data.inputs=stationary", "--data.context_length=32",
            f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.min_windows=20",
            "--data.batch_size=32", "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
            "--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2",
            "--model.net.init_args.d_ff=32", "--model.net.init_args.n_layers=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    cli = cli_main(args)
    assert cli.model.net.n_features == len(stationary_names(TIERS["c"].columns))
    assert np.isfinite(cli.trainer.callback_metrics["val/loss"].item())
    # `forecast arch --inputs stationary` counts the parameters of the network this fit builds
    capsys.readouterr()
    assert forecast_main(["arch", "--budget", "200K", "--tier", "c", "--inputs", "stationary", "--context-length",
                          "32", "--patch-len", "8", "--stride", "4", "--patch-mode", "mixing", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    net = PatchTST(n_features=cli.model.net.n_features, context_length=32, patch_len=8, stride=4, patch_mode="mixing",
                   d_model=row["d_model"], n_layers=row["n_layers"], n_heads=row["n_heads"], d_ff=row["d_ff"])
    assert sum(p.numel() for p in net.parameters()) == row["params"]
    config = {"data": {"symbol": "SPY", "tier": "c", "task": "threshold", "threshold": 0.01, "horizon": 1}}
    assert study_name(config, "2M") == "SPY-c-threshold0.01-h1-2M"  # unchanged for the tier's columns
    config["data"]["inputs"] = "stationary"
    assert study_name(config, "2M") == "SPY-c-stationary-threshold0.01-h1-2M"  # never resumes the other
    config["model"] = {"net": {"init_args": {}}}
    assert fingerprint(config, "2M", {})["data"]["inputs"] == "stationary"
    config["data"]["inputs"] = "tier"  # the default leaves a study's fingerprint as it was before the option
    assert "inputs" not in fingerprint(config, "2M", {})["data"]
    # a study recorded with the default spelled out and one recorded without it hold the same data
    assert recorded_data({"tier": "c", "inputs": "tier", "data_dir": "x"}) == recorded_data({"tier": "c"})
    assert recorded_data({"tier": "c", "inputs": "stationary"}) == {"tier": "c", "inputs": "stationary"}


# -- the logistic baseline's grid ------------------------------------------------------------------
def _noise_datamodule(n: int = 900, signal: float = 0.0, seed: int = 0) -> SimpleNamespace:
    """Labels that depend on the last return with strength `signal` (0: pure noise)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    ret = np.r_[0.0, np.diff(np.log(close))]
    y = (signal * ret / 0.01 + rng.normal(size=n) > 0).astype(np.float32)
    raw = np.stack([close, close * 1.01, rng.uniform(20, 80, n)], axis=1)
    ends = np.arange(30, n)
    splits = {s: SimpleNamespace(ends=e) for s, e in zip(("train", "val", "test"), np.array_split(ends, 3), strict=True)}
    return SimpleNamespace(raw_features=raw, feature_names=["close", "sma_12", "rsi_14"],
                           targets=torch.from_numpy(y), splits=splits)


@pytest.mark.parametrize("signal", [0.0, 0.5, 20.0])
def test_a_logistic_c_at_its_grid_edge_extends_the_grid_once_or_is_flagged(signal):
    chosen = fit_baselines(_noise_datamodule(signal=signal)).chosen["logistic"]
    c = float(chosen.split()[0].removeprefix("C="))
    edge_of_grid = c in (LOGISTIC_C[0], LOGISTIC_C[-1]) or c not in LOGISTIC_C
    assert edge_of_grid == ("extend" in chosen)  # an edge choice always says what was tried
    if c not in LOGISTIC_C:
        assert "at the edge of its grid" in chosen  # the extension won: flagged, not hidden
    if signal == 0.0:
        assert c <= LOGISTIC_C[0]  # pure noise: the strongest regularisation, and the grid was extended
