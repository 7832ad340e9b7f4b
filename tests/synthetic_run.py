"""A small synthetic tier and a fitted run on it, shared by the training, sizing and split tests (import the
fixtures `data_dir` and `fitted` into a test module to use them)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest

from forecast.data.raw import write_raw
from forecast.data.synthetic import synthetic_ohlcv
from forecast.data.tiers import build_and_write
from forecast.training.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


SYMBOL = "SYN"
VAL_START, TEST_START = "2017-07-03", "2018-04-02"


def synthetic_raw():
    return synthetic_ohlcv(n=1300, start="2014-01-01")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_raw(root, SYMBOL, synthetic_raw(), source="synthetic test series")
    build_and_write(root, SYMBOL, "a25")
    return root


def dm_kwargs(data_dir: Path, **over) -> dict:
    kw = dict(symbol=SYMBOL, tier="a25", data_dir=str(data_dir), context_length=32, horizon=1,
              threshold=0.01, val_start=VAL_START, test_start=TEST_START, min_windows=20, batch_size=32)
    kw.update(over)
    return kw


def base_args(data_dir: Path, logs: Path, epochs: int = 3) -> list[str]:
    return [
        "--config", "configs/demo.yaml",
        f"--data.data_dir={data_dir}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
        f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.min_windows=20",
        "--data.batch_size=32",
        "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
        "--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2",
        "--model.net.init_args.d_ff=32", "--model.net.init_args.n_layers=1",
        "--model.lr=3e-3",
        f"--trainer.logger.init_args.save_dir={logs}", "--trainer.logger.init_args.name=t",
        f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


class RecordTrainLoss(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


@pytest.fixture(scope="module")
def fitted(data_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    record = RecordTrainLoss()
    cli = cli_main(["fit", *base_args(data_dir, logs, epochs=5), "--early_stopping.patience=100"],
                   trainer_defaults={"callbacks": [record]})
    cli.train_losses = record.losses
    return cli, logs
