"""The training path end to end on a small synthetic tier: DataModule, LightningModule, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from forecast.cli import main as forecast_main
from forecast.data.datamodule import ForecastDataModule
from forecast.data.manifest import write_tracked
from forecast.data.raw import forward_adjust, read_raw, write_raw
from forecast.data.synthetic import synthetic_ohlcv
from forecast.data.targets import threshold_targets
from forecast.data.tiers import build_and_write
from forecast.errors import ForecastError
from forecast.metrics import MONITOR
from forecast.train import cli_main

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


# -- DataModule ----------------------------------------------------------------------------
@pytest.mark.parametrize("horizon,gap", [(1, 0), (5, 0), (3, 7)])
def test_no_target_crosses_a_split_boundary_and_no_split_loses_its_first_days(data_dir, horizon, gap):
    dm = ForecastDataModule(**dm_kwargs(data_dir, horizon=horizon, gap=gap))
    bounds = {"train": (pd.Timestamp.min, pd.Timestamp(VAL_START)),
              "val": (pd.Timestamp(VAL_START), pd.Timestamp(TEST_START)),
              "test": (pd.Timestamp(TEST_START), pd.Timestamp.max)}
    for name, split in dm.splits.items():
        lo, hi = bounds[name]
        prediction_day, last_target_day = dm.dates[split.ends], dm.dates[split.ends + horizon]
        assert (prediction_day >= lo).all() and (last_target_day < hi).all(), name
        assert split.size >= 20
    # the context reaches back: the first val sample is the first val day (+ gap), not L days later
    val_rows = np.flatnonzero(dm.dates >= pd.Timestamp(VAL_START))
    assert dm.splits["val"].ends[0] == val_rows[0] + gap
    # purged: the last training sample's last target day is the day before validation begins
    assert dm.splits["train"].ends[-1] + horizon == val_rows[0] - 1


def test_targets_come_from_unscaled_forward_adjusted_prices(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir, horizon=3, threshold=0.02))
    prices = forward_adjust(read_raw(data_dir, SYMBOL)).set_index("Date").loc[dm.dates]
    expected = threshold_targets(prices["High"].to_numpy(), prices["Close"].to_numpy(), 3, 0.02)
    for split in dm.splits.values():
        np.testing.assert_array_equal(dm.targets[split.ends].numpy(), expected[split.ends])


def test_batches_are_the_windows_they_claim(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    x, y = next(iter(dm.val_dataloader()))  # sequential: first val windows in order
    t = dm.splits["val"].ends[:3]
    assert x.shape == (dm._eval_batch(), 32, dm.n_features) and x.dtype == torch.float32
    for i, end in enumerate(t):
        torch.testing.assert_close(x[i], dm.features[end - 31 : end + 1])
        assert y[i] == dm.targets[end]


@pytest.mark.parametrize("device", ["cpu", "meta", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_batches_are_gathered_where_the_features_live(data_dir, device):
    """The device-resident path: features and targets copied to the device once, every batch a
    gather there (on `meta` any step through the host would fail), the host copy untouched."""
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    features, targets = dm.resident(device)
    assert features.device.type == device and dm.resident(device)[0] is features  # copied once
    assert dm.features.device.type == "cpu"  # fingerprint, predictions and baselines read the host copy
    on_device = dm.dataset("val", device)
    x, y = on_device.__getitems__([0, 5, 2])
    assert x.device.type == device and y.device.type == device and x.shape == (3, 32, dm.n_features)
    if device != "meta":
        hx, hy = dm.dataset("val").__getitems__([0, 5, 2])
        torch.testing.assert_close(x.cpu(), hx)
        torch.testing.assert_close(y.cpu(), hy)


def test_loaders_gather_on_the_trainers_device_unless_workers_make_the_batches(data_dir):
    dm = ForecastDataModule(**dm_kwargs(data_dir))
    dm.trainer = L.Trainer(accelerator="cpu", logger=False)
    assert dm._loader_device() == torch.device("cpu")
    dm.num_workers = 2
    assert dm._loader_device() is None


def test_ddp_resharding_keeps_whole_batches_of_true_windows(data_dir):
    """What Lightning does to our loaders under DDP (a DistributedSampler swapped in, the rest
    rebuilt): each rank gets [B, L, F] batches of the right windows, and the ranks cover the split."""
    from lightning.pytorch.utilities.data import _update_dataloader  # Lightning's own re-sharding
    from torch.utils.data import DistributedSampler

    dm = ForecastDataModule(**dm_kwargs(data_dir))
    loader, ends = dm.val_dataloader(), dm.splits["val"].ends
    covered: set[int] = set()
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=False)
        positions = list(sampler)  # this rank's share of the split's samples
        xs, ys = zip(*_update_dataloader(loader, sampler), strict=True)
        assert all(b.shape[1:] == (32, dm.n_features) and len(b) <= loader.batch_size for b in xs)
        x, y = torch.cat(xs), torch.cat(ys)
        assert len(x) == len(positions)
        for i, p in enumerate(positions):
            t = ends[p]
            torch.testing.assert_close(x[i], dm.features[t - 31 : t + 1])
            assert y[i] == dm.targets[t]
        covered |= set(positions)
    assert covered == set(range(len(ends)))


def test_scaler_never_sees_validation_or_test_rows(data_dir, tmp_path):
    """Changing every val/test feature value must not move the scaler."""
    base = ForecastDataModule(**dm_kwargs(data_dir))
    tier_file = data_dir / "processed" / f"{SYMBOL}_a25.parquet"
    other = tmp_path / "data"
    write_raw(other, SYMBOL, read_raw(data_dir, SYMBOL), source="copy")
    frame = pd.read_parquet(tier_file)
    later = frame["Date"] >= pd.Timestamp(VAL_START)
    cols = [c for c in frame.columns if c != "Date"]
    frame.loc[later, cols] = frame.loc[later, cols] * 1000 + 7
    write_tracked(other, "processed", other / "processed" / tier_file.name, frame)  # the manifest vouches for it
    moved = ForecastDataModule(**dm_kwargs(other))
    np.testing.assert_array_equal(base.scale_mean, moved.scale_mean)
    np.testing.assert_array_equal(base.scale_std, moved.scale_std)
    train_rows = base.dates < pd.Timestamp(VAL_START)
    assert abs(base.features[train_rows].mean()) < 0.05  # standardised on training rows
    assert abs(moved.features[~train_rows].mean()) > 10  # val/test were not refitted


def test_fingerprint_follows_the_numbers_a_model_sees(data_dir, tmp_path):
    """Same files and settings: same fingerprint; a rebuilt tier or other labels/splits: another."""
    base = ForecastDataModule(**dm_kwargs(data_dir)).fingerprint()
    assert ForecastDataModule(**dm_kwargs(data_dir, batch_size=7)).fingerprint() == base  # not data
    assert ForecastDataModule(**dm_kwargs(data_dir, horizon=3)).fingerprint() != base  # labels
    assert ForecastDataModule(**dm_kwargs(data_dir, val_start="2017-08-01")).fingerprint() != base  # splits
    rebuilt = tmp_path / "data"
    raw = synthetic_raw()
    raw.loc[raw.index[-1], "High"] *= 1.05  # one revised price on the last day
    write_raw(rebuilt, SYMBOL, raw, source="revised")
    build_and_write(rebuilt, SYMBOL, "a25")
    assert ForecastDataModule(**dm_kwargs(rebuilt)).fingerprint() != base


# -- fit / test / predict through the CLI ----------------------------------------------------
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


def test_fit_lowers_training_loss_and_saves_config_and_checkpoints(fitted):
    cli, logs = fitted
    run = Path(cli.trainer.log_dir)
    assert (run / "config.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert cli.model.net.n_features == 25  # linked from the data, never configured
    assert saved["data"]["context_length"] == 32 and cli.model.net.n_patches == (32 - 8) // 4 + 1
    assert saved["seed_everything"] == 42
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    summary = json.loads((run / "fit_summary.json").read_text())
    assert summary["num_parameters"] == sum(p.numel() for p in cli.model.net.parameters())
    losses = cli.trainer.callback_metrics
    assert "val/auroc" in losses and "train/auroc" in losses and "val/prob_std" in losses


def test_short_fit_lowers_training_loss(fitted):
    cli, _ = fitted
    losses = cli.train_losses
    assert cli.trainer.current_epoch == 5 and len(losses) == 5
    assert losses[-1] < losses[0] - 0.01, losses


@pytest.mark.parametrize("memory_gb,expect_accumulate", [(16.0, 1), (0.0015, 2)])  # 1.5 MB: 32 x 2
def test_batch_size_auto_uses_the_memory_planner(data_dir, tmp_path, memory_gb, expect_accumulate):
    """A smaller memory budget gives a smaller micro-batch and more accumulation, same effective batch."""
    args = [a for a in base_args(data_dir, tmp_path) if not a.startswith("--data.batch_size")]
    cli = cli_main([*args, "--data.batch_size=auto", "--planner.effective_batch=64",
                    f"--planner.memory_gb={memory_gb}", "--trainer.accelerator=cpu"], run=False)
    micro, accumulate = cli.datamodule.batch_size, cli.trainer.accumulate_grad_batches
    assert micro * accumulate == 64
    assert accumulate == expect_accumulate


def test_weight_decay_reaches_the_optimizer(fitted):
    cli, _ = fitted
    groups = cli.trainer.optimizers[0].param_groups
    decay = [g for g in groups if g["weight_decay"] > 0]
    assert decay and decay[0]["weight_decay"] == cli.model.hparams.weight_decay
    matrices = {id(p) for g in decay for p in g["params"]}
    assert all(p.ndim >= 2 for p in cli.model.parameters() if id(p) in matrices)
    assert all(id(p) not in matrices for p in cli.model.parameters() if p.ndim < 2)


def test_an_optimizer_given_the_lightning_cli_way_keeps_the_groups_lr_and_schedule(data_dir, tmp_path):
    args = [*base_args(data_dir, tmp_path, epochs=1), "--model.weight_decay=0.2",
            "--model.optimizer=torch.optim.SGD", "--model.optimizer.momentum=0.9", "--model.optimizer.lr=0.5"]
    cli = cli_main(["fit", *args])
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is torch.optim.SGD
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]  # matrices, then the rest
    assert {g["momentum"] for g in optimizer.param_groups} == {0.9}
    assert {g["initial_lr"] for g in optimizer.param_groups} == {3e-3}  # model.lr wins over the optimizer's
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler) is torch.optim.lr_scheduler.LambdaLR
    saved = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert saved["model"]["optimizer"]["class_path"] == "torch.optim.SGD"  # replayable by forecast fit
    assert forecast_main(["test", *base_args(data_dir, tmp_path)]) == 0  # its checkpoint loads


def test_test_and_predict_use_the_best_checkpoint_not_the_last(fitted):
    cli, logs = fitted
    run = Path(cli.trainer.log_dir)
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    # Sabotage last.ckpt: if test/predict read it, their numbers change.
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    last["state_dict"] = {k: torch.zeros_like(v) for k, v in last["state_dict"].items()}
    torch.save(last, run / "checkpoints" / "last.ckpt")

    config = str(run / "config.yaml")
    test_cli = cli_main(["test", "--config", config, "--trainer.enable_progress_bar=false"])
    (written,) = run.glob("test_*.json")
    metrics = json.loads(written.read_text())
    split = cli.datamodule.splits["test"]
    assert written.name == f"test_{split.dates[0].date()}_{split.dates[-1].date()}_{cli.datamodule.fingerprint()[:8]}.json"
    assert (metrics["first"], metrics["samples"]) == (str(split.dates[0].date()), split.size)
    assert metrics["data_fingerprint"] == cli.datamodule.fingerprint()
    assert metrics["checkpoint"] == str(best)
    assert Path(test_cli.trainer.log_dir) == run  # logged into the same run
    assert 0 < metrics["test/auroc"] < 1 and metrics["test/prob_std"] > 1e-4  # zeroed weights give std 0

    cli_main(["test", "--config", config, "--trainer.enable_progress_bar=false"])  # again: kept beside the first
    assert {p.name for p in run.glob("test_*.json")} == {written.name, written.stem + "-2.json"}
    assert json.loads(written.read_text()) == metrics  # the earlier evaluation is untouched

    cli_main(["predict", "--config", config, "--trainer.enable_progress_bar=false"])
    (predictions,) = run.glob("predictions_test_*.csv")
    preds = pd.read_csv(predictions)
    assert list(preds.columns) == ["date", "probability", "label"]
    assert len(preds) == cli.datamodule.splits["test"].size
    assert preds["probability"].std() > 1e-4
    assert set(preds["label"]) <= {0, 1}


def test_train_metrics_off_keeps_the_training_loss_and_every_val_metric(data_dir, tmp_path):
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--model.train_metrics=false"])
    logged = cli.trainer.callback_metrics
    assert "train/loss" in logged and not any(k.startswith("train/") and k != "train/loss" for k in logged)
    assert {"val/loss", "val/auroc", "val/ap", "val/prob_std"} <= set(logged)


def test_checkpointing_off_fits_without_checkpoints_and_test_says_so(data_dir, tmp_path, capsys):
    cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1)])  # an older run, with checkpoints
    older = set(tmp_path.rglob("*.ckpt"))
    time.sleep(0.05)  # a newer mtime for the next run
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.enable_checkpointing=false"])
    assert cli.trainer.checkpoint_callback is None
    assert any(isinstance(c, L.callbacks.EarlyStopping) for c in cli.trainer.callbacks)  # the rest stays
    run = Path(cli.trainer.log_dir)
    assert json.loads((run / "fit_summary.json").read_text())["best_checkpoint"] is None
    assert set(tmp_path.rglob("*.ckpt")) == older
    capsys.readouterr()
    for config in ([], ["--config", str(run / "config.yaml")]):  # newest run, or that run's config
        assert forecast_main(["test", *base_args(data_dir, tmp_path), *config]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"run {run} saved no checkpoints" in err[0], err  # never the older run
    assert not list(run.glob("test_*.json"))


@pytest.mark.parametrize("devices,message", [("2", "run on one device"), ("0,1", "run on one device"),
                                             ("gpu", "expected a count")])
def test_evaluation_on_several_devices_is_refused(fitted, capsys, devices, message):
    cli, _ = fitted
    config = str(Path(cli.trainer.log_dir) / "config.yaml")
    assert forecast_main(["test", "--config", config, f"--trainer.devices={devices}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_ddp_fit_on_two_cpu_processes(data_dir, tmp_path):
    """`forecast fit` under real DDP (gloo, two CPU processes) trains and saves its best checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=2),
                           "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(next(tmp_path.rglob("fit_summary.json")).read_text())
    assert summary["epochs_run"] == 2 and Path(summary["best_checkpoint"]).is_file()


# -- bad configs: one line, non-zero exit, before training ------------------------------------
@pytest.mark.parametrize(
    "override,message",
    [
        (["--data.context_length=4"], "patch_len"),
        (["--data.horizon=0"], "horizon must be >= 1"),
        (["--data.val_start=1990-01-01"], "outside"),
        (["--data.test_start=2030-01-01"], "outside"),
        (["--data.min_windows=100000"], "windows"),
        (["--data.tier=zz"], "unknown tier"),
        (["--data.symbol=NOPE"], "missing processed file"),
        (["--data.batch_size=auto", "--planner.memory_gb=0.00001"], "one sample needs"),
    ],
)
def test_bad_config_is_one_clear_line(data_dir, tmp_path, capsys, override, message):
    code = forecast_main(["fit", *base_args(data_dir, tmp_path), *override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not any(tmp_path.rglob("*.ckpt"))


def test_bad_config_from_a_subprocess_has_no_traceback(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path),
                           "--data.horizon=-2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("forecast: error: horizon")


def test_run_folders_follow_default_root_dir_unless_a_save_dir_is_given(data_dir, tmp_path):
    args = [a for a in base_args(data_dir, tmp_path, epochs=1) if "logger.init_args.save_dir" not in a]
    cli = cli_main(["fit", *args, f"--trainer.default_root_dir={tmp_path / 'root'}"])
    assert Path(cli.trainer.log_dir).parent.parent == tmp_path / "root"
    test = cli_main(["test", *args, f"--trainer.default_root_dir={tmp_path / 'root'}"])  # finds that run
    assert Path(test.trainer.log_dir) == Path(cli.trainer.log_dir)
    given = cli_main(["fit", *args, f"--trainer.default_root_dir={tmp_path / 'root'}",
                      f"--trainer.logger.init_args.save_dir={tmp_path / 'mine'}"])
    assert Path(given.trainer.log_dir).parent.parent == tmp_path / "mine"


def test_without_a_progress_bar_fit_prints_one_line_per_epoch_and_no_third_party_noise(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=2)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 0", "epoch 1"]
    assert all("train/loss" in line and "val/loss" in line for line in lines)
    assert "Tip:" not in out and "LeafSpec" not in out


# -- configs -----------------------------------------------------------------------------------
CONFIGS = sorted(Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parts[1] != "hpo" and p.name != "arch_grid.yaml"],
                         ids=str)
def test_every_run_config_is_accepted_by_the_cli(path, capsys):
    """Each run config, on top of the demo, parses against the real parser (nothing is trained)."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", "configs/demo.yaml", "--config", str(path), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["class_path"] == "forecast.model.PatchTST"
    assert printed["early_stopping"]["monitor"] == MONITOR


def test_sigterm_mid_fit_exits_143_with_one_line(data_dir, tmp_path):
    """Lightning ends a fit on SIGTERM with a SystemExit of code 0; ours must not look finished."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "forecast", "fit", *base_args(data_dir, tmp_path, epochs=500),
                             "--early_stopping.patience=1000"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(tmp_path.rglob("best-*.ckpt")):  # an epoch has finished: training is under way
        assert proc.poll() is None and time.time() < deadline, "fit ended or never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "forecast: stopped by SIGTERM"



def test_baselines_command_prints_the_splits_and_saves_every_prediction(data_dir, tmp_path, capsys):
    from forecast.baselines import main as baselines_main

    out = tmp_path / "baselines.csv"
    assert baselines_main([*base_args(data_dir, tmp_path), "--data.folds=2", "--data.fold=1",
                           "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    dm = ForecastDataModule(**dm_kwargs(data_dir, folds=2, fold=1))
    for name, split in dm.splits.items():
        assert f"{name:<5} {split.size:5d} samples {split.dates[0].date()}..{split.dates[-1].date()}" in printed
    assert "fold 1 of 2" in printed and "C=" in printed  # the regularisation chosen on validation
    preds = pd.read_csv(out)
    assert set(preds["baseline"]) == {"prior", "logistic", "hist_gb"}
    assert len(preds) == 3 * sum(s.size for s in dm.splits.values())
    test = preds[(preds["split"] == "test") & (preds["baseline"] == "logistic")]
    assert list(pd.to_datetime(test["date"])) == list(dm.splits["test"].dates)


# -- where the network is built, precision, throughput ----------------------------------------
def test_the_cli_builds_the_network_on_meta_and_fit_materialises_it(data_dir, tmp_path):
    """No host copy of the weights before the Trainer: they get storage on its device in fit."""
    cli = cli_main([*base_args(data_dir, tmp_path, epochs=1), "--trainer.limit_train_batches=2",
                    "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu"], run=False)
    count = cli.model.num_parameters
    assert all(p.is_meta for p in cli.model.net.parameters())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in cli.model.net.parameters())
    assert cli.model.num_parameters == count and cli.trainer.global_step == 2


def test_precision_follows_the_accelerator_used_not_the_machine(data_dir, tmp_path):
    from forecast.devices import accelerator_kind, default_precision

    assert default_precision(accelerator_kind("cpu", cuda_available=True)) == "32-true"
    assert default_precision(accelerator_kind("auto", cuda_available=True)) == "bf16-mixed"
    assert default_precision(accelerator_kind("gpu", cuda_available=True), bf16_supported=False) == "16-mixed"
    assert default_precision(accelerator_kind("auto", cuda_available=False)) == "32-true"
    cli = cli_main([*base_args(data_dir, tmp_path), "--trainer.accelerator=cpu"], run=False)
    assert cli.trainer.precision == "32-true"
    chosen = cli_main([*base_args(data_dir, tmp_path), "--trainer.precision=bf16-mixed"], run=False)
    assert chosen.trainer.precision == "bf16-mixed"  # a precision the user sets is kept


def test_fit_summary_records_training_throughput(fitted):
    cli, _ = fitted
    summary = json.loads((Path(cli.trainer.log_dir) / "fit_summary.json").read_text())
    rate = summary["train_samples_per_sec"]
    assert rate > 0 and summary["train_tokens_per_sec"] == pytest.approx(rate * cli.model.net.n_patches)
    assert summary["train_flops_per_sec"] == pytest.approx(rate * cli.model.flops_per_sample)
    assert summary["train_mfu"] is None  # no peak is known for a CPU
    events = b"".join(p.read_bytes() for p in Path(cli.trainer.log_dir).glob("events.out.tfevents.*"))
    assert b"train/device/samples_per_sec" in events and b"train/device/items_per_sec" in events  # TensorBoard


@pytest.mark.parametrize("backend", ["eager", pytest.param("true", marks=pytest.mark.slow)])  # inductor: ~2 min
def test_compile_is_opt_in_and_keeps_checkpoint_names(data_dir, tmp_path, backend):
    """--model.compile compiles the network where it runs (here a tiny one on the CPU)."""
    from torch._dynamo.utils import counters

    counters.clear()
    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.limit_train_batches=2",
                    "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu", f"--model.compile={backend}"])
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured the forward
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)
    saved = {k.removeprefix("net.") for k in best["state_dict"] if k.startswith("net.")}
    assert saved == set(cli.model.net.state_dict())  # no `_orig_mod.` in the names


def test_adamw_is_fused_on_cuda_only(fitted):
    from forecast.module import adamw_options

    assert adamw_options(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_options(torch.device("cpu")) == {}
    assert not cli_fused(fitted[0])  # the CPU run kept the default implementation


def cli_fused(cli) -> bool:
    return bool(cli.trainer.optimizers[0].defaults.get("fused"))


# -- does the run fit this machine ------------------------------------------------------------
def test_a_model_that_cannot_fit_the_memory_is_refused_before_anything_is_written(data_dir, tmp_path, capsys):
    args = [*base_args(data_dir, tmp_path), "--config", "configs/model/patchtst_2b.yaml", "--planner.memory_gb=16"]
    assert forecast_main(["fit", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this machine" in err[0] and "GB at micro-batch 1" in err[0]
    assert "12.0 GB usable of 16.0 GB (cpu, 32)" in err[0] and "--trainer.accelerator gpu" in err[0]
    assert not list(tmp_path.glob("t/version_*"))  # no run folder


def test_a_fixed_batch_that_cannot_fit_points_at_the_planner(data_dir, tmp_path, capsys):
    assert forecast_main(["fit", *base_args(data_dir, tmp_path), "--data.batch_size=4096",
                          "--planner.memory_gb=0.02"]) == 2
    err = capsys.readouterr().err.strip()
    assert "at --data.batch_size=4096" in err and "--data.batch_size auto" in err


def test_checkpoints_that_cannot_fit_on_the_disk_are_refused(data_dir, tmp_path, capsys):
    """A 25B-parameter model costs nothing to build on meta; its checkpoints would need ~0.9 TB."""
    huge = ["--model.net.init_args.d_model=16384", "--model.net.init_args.n_heads=16",
            "--model.net.init_args.d_ff=65536", "--model.net.init_args.n_layers=8", "--planner.memory_gb=1e9"]
    assert forecast_main(["fit", *base_args(data_dir, tmp_path), *huge]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough disk for the checkpoints" in err[0]
    assert "up to 3 x " in err[0] and "weights + AdamW moments" in err[0] and "GB free" in err[0]
    assert not list(tmp_path.glob("t/version_*"))


def test_checkpoint_sizes_and_counts():
    from forecast.machine import checkpoint_bytes, checkpoints_at_once

    assert checkpoint_bytes(2_000_000_000, weights_only=True) == 8_000_000_000
    assert checkpoint_bytes(2_000_000_000, weights_only=False) == 24_000_000_000
    assert checkpoints_at_once(save_top_k=1, save_last=True, max_epochs=50) == 3  # new best before old deleted + last
    assert checkpoints_at_once(save_top_k=1, save_last=False, max_epochs=50) == 2
    assert checkpoints_at_once(save_top_k=-1, save_last=False, max_epochs=5) == 6


def test_plain_fit_keeps_resumable_checkpoints(fitted):
    cli, _ = fitted
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert "optimizer_states" in best and "loops" in best  # what --ckpt_path needs to resume


def test_mfu_divides_by_the_h200s_dense_peak_and_lightnings_elsewhere():
    from lightning.fabric.utilities.throughput import get_available_flops

    from forecast.throughput import dense_peak

    assert dense_peak("NVIDIA H200", torch.bfloat16, None) == 989_400_000_000_000  # Lightning: none for this name
    assert dense_peak("NVIDIA H200", "tfloat32", None) == 494_700_000_000_000
    assert dense_peak("NVIDIA H100 80GB HBM3", torch.bfloat16, 989_400_000_000_000) == 989_400_000_000_000
    assert get_available_flops(torch.device("cpu"), torch.float32) is None  # so CPU runs report no MFU


def test_fp32_matmuls_use_tensor_cores_on_cuda_only():
    from forecast.devices import use_tensor_cores

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        use_tensor_cores("cpu")
        assert torch.get_float32_matmul_precision() == "highest"
        use_tensor_cores("cuda")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.gpu
def test_on_cuda_throughput_times_only_the_logged_steps_and_epoch_ends(data_dir, tmp_path):
    from lightning.pytorch.trainer.states import RunningStage

    from forecast.throughput import Throughput

    cli = cli_main(["fit", *base_args(data_dir, tmp_path, epochs=1), "--trainer.accelerator=gpu",
                    "--trainer.log_every_n_steps=5", "--trainer.limit_train_batches=12"])
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, Throughput))
    timed = list(monitor._throughputs[RunningStage.TRAINING]._batches)
    assert timed[-1] == 12 and len(timed) <= 3  # about every 5th batch and the epoch's last, not all 12
    assert json.loads((Path(cli.trainer.log_dir) / "fit_summary.json").read_text())["train_samples_per_sec"] > 0


def test_forecast_cli_uses_no_private_lightning_cli_member():
    """Private LightningCLI members change between releases without notice."""
    import ast
    import inspect

    from lightning.pytorch.cli import LightningCLI

    import forecast.train as train

    def private_names(source: str) -> set[str]:
        tree = ast.parse(source)
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        return {n for n in names if n.startswith("_") and not n.startswith("__")}

    lightning_cli = private_names(inspect.getsource(LightningCLI))  # methods and instance attributes
    assert "_subcommand_parsers" in lightning_cli and "_instantiate_trainer" in lightning_cli
    assert private_names(inspect.getsource(train)) & lightning_cli == set()


def test_checkpoint_flags_reach_the_checkpoint_and_resolve_builds_nothing(data_dir, tmp_path):
    from forecast.train import resolve_config

    args = [*base_args(data_dir, tmp_path, epochs=1), "--checkpoint.save_last=false", "--checkpoint.save_top_k=2"]
    ckpt = cli_main(args, run=False).trainer.checkpoint_callback
    assert ckpt.save_last is False and ckpt.save_top_k == 2 and ckpt.monitor == MONITOR
    # the same arguments resolved without building anything: no data is read from a missing folder
    config = resolve_config([*args, f"--data.data_dir={tmp_path / 'missing'}"])
    assert config["checkpoint"]["save_top_k"] == 2 and config["data"]["data_dir"] == str(tmp_path / "missing")
    assert resolve_config([*args, "--seed_everything=true"])["seed_everything"] is True  # as given, not drawn
    with pytest.raises(ForecastError):
        cli_main([*args, f"--data.data_dir={tmp_path / 'missing'}"], run=False)
