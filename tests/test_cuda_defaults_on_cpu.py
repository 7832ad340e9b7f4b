"""The combination the CUDA defaults choose, run on the CPU through the real commands.

On a GPU every run is bf16-mixed with a fused AdamW, gradient clipping at 1.0, batches gathered on the
device and no training-batch metrics. None of that may be reachable only there: here the same settings
are forced on the CPU and run through `forecast fit`, `forecast test` from the best checkpoint, one
search trial and one report retrain (issue #18: bf16-mixed + fused AdamW + clipping crashed at the first
optimizer step, on every GPU run, and no test ran it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forecast.bench.build import synthetic_tier
from forecast.cli import main as forecast_main
from forecast.training.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
CLIP = 0.05  # small enough that every step's gradient norm is above it: the clip must bind
# What `forecast fit` chooses on CUDA, forced (accelerator cpu keeps it on this machine)
CUDA_DEFAULTS = ["--trainer.accelerator=cpu", "--trainer.precision=bf16-mixed", "--model.fused=true",
                 "--model.train_metrics=false", f"--trainer.gradient_clip_val={CLIP}"]
TINY = ["--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2", "--model.net.init_args.d_ff=32",
        "--model.net.init_args.n_layers=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    return synthetic_tier(tmp_path_factory.mktemp("data"), rows=1200) + ["--data.min_windows=20"]


class GradientProbe(L.Callback):
    """Gradient norms of every optimizer step: before clipping (`on_before_optimizer_step` runs
    before the clip) and as the optimizer used them (a step post-hook: after the clip and the update,
    which leaves the gradients as they were)."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(lambda opt, *_: self.after.append(_norm(opt)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(_norm(optimizer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def _norm(optimizer: torch.optim.Optimizer) -> float:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def run_args(data: list[str], logs: Path, epochs: int) -> list[str]:
    return ["--config", str(DEMO), *data, *CUDA_DEFAULTS, *TINY, f"--trainer.max_epochs={epochs}",
            "--data.batch_size=64", "--model.lr=3e-3", f"--trainer.logger.init_args.save_dir={logs}"]


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    probe = GradientProbe()
    cli = cli_main(["fit", *run_args(data, logs, epochs=3)],
                   trainer_defaults={"callbacks": [probe]})
    return cli, probe, logs


def test_fit_runs_the_cuda_settings_and_the_loss_falls(fitted):
    cli, probe, _ = fitted
    assert str(cli.trainer.precision) == "bf16-mixed" and cli.trainer.precision_plugin.scaler is None
    assert cli.trainer.optimizers[0].defaults["fused"] is True and not cli.model.train_metrics_on
    assert cli.trainer.current_epoch == 3 and len(probe.losses) == 3
    assert probe.losses[-1] < probe.losses[0]


def test_gradients_are_clipped_to_the_set_norm(fitted):
    _, probe, _ = fitted
    assert len(probe.before) == len(probe.after) > 10
    for before, after in zip(probe.before, probe.after, strict=True):
        assert before > CLIP  # the clip binds on every step ...
        assert after == pytest.approx(CLIP, rel=1e-3)  # ... and the optimizer saw the clipped norm


def test_test_reloads_the_best_checkpoint(fitted, data):
    cli, _, logs = fitted
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert forecast_main(["test", *run_args(data, logs, epochs=3)]) == 0
    run = best.parent.parent
    result = json.loads(next(run.glob("test_*.json")).read_text())
    assert result["checkpoint"] == str(best) and 0 < result["test/loss"] < 5
    saved = torch.load(best, weights_only=True)["state_dict"]  # tensors and plain data only
    assert {k.removeprefix("net.") for k in saved if k.startswith("net.")} == set(cli.model.net.state_dict())
    # the weights `test` evaluated are the file's: reloading them into the network reproduces the loss
    reloaded = cli_main(["validate", *run_args(data, logs, epochs=3), f"--ckpt_path={best}"])
    assert float(reloaded.trainer.callback_metrics["val/loss"]) == pytest.approx(
        json.loads((run / "fit_summary.json").read_text())["val/loss"], rel=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_with_a_scaler_lightning_keeps_clipping_and_refuses_fused(data, tmp_path, fused):
    """16-mixed has a GradScaler: Lightning unscales before clipping (kept), and so refuses an
    optimizer that unscales internally, whose clip would see scaled gradients. (The CPU's `16-mixed`
    flag becomes bf16-mixed in Lightning, so the fp16 plugin with its scaler is given directly.)"""
    from lightning.pytorch.plugins.precision import MixedPrecision

    cli = cli_main([*run_args(data, tmp_path, epochs=1), f"--model.fused={str(fused).lower()}"], run=False)
    probe = GradientProbe()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(accelerator="cpu", plugins=[plugin], gradient_clip_val=CLIP, max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[probe])
    if fused:
        with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
            trainer.fit(cli.model, cli.datamodule)
        return
    trainer.fit(cli.model, cli.datamodule)
    assert plugin.scaler is not None and len(probe.after) == 3
    assert all(a == pytest.approx(CLIP, rel=1e-3) for a in probe.after)  # clipped after unscaling


def test_a_search_trial_and_a_report_retrain_run_the_cuda_settings(data, tmp_path, capsys):
    from forecast.report.build import ReportOptions
    from forecast.report.outputs import make_report

    storage = str(tmp_path / "hpo" / "optuna.journal")
    assert forecast_main(["hpo", "--budget", "100K", "--trials", "1", "--config", str(DEMO), "--storage", storage,
                          "--study-name", "rehearsal", "--log-dir", str(tmp_path / "hpo"), "--no-live", *data,
                          *CUDA_DEFAULTS, "--trainer.max_epochs=2", "--data.batch_size=auto"]) == 0
    trial_config = next((tmp_path / "hpo").rglob("config.yaml")).read_text()
    assert "precision: bf16-mixed" in trial_config and "fused: true" in trial_config
    report = make_report(ReportOptions(storage=storage, seeds=1, folds=1, out=tmp_path / "report", bootstrap=0,
                                       overrides=["--trainer.max_epochs=1"]), say=lambda _: None)
    assert not report.problems
    study, = report.series[0].studies
    run, = study.runs
    assert run.epochs_run == 1 and 0 < run.test["test/loss"] < 5 and len(run.probs) == len(run.labels) > 0
    retrain_config = (Path(run.folder) / "config.yaml").read_text()
    assert "precision: bf16-mixed" in retrain_config and "fused: true" in retrain_config


@pytest.mark.slow  # inductor compiles C++ kernels for the CPU: ~1-2 min
@pytest.mark.skipif(not any(map(shutil.which, ("c++", "g++", "clang++"))), reason="no C++ compiler for inductor")
def test_the_cuda_settings_with_compile_train_and_test(data, tmp_path):
    args = [*run_args(data, tmp_path, epochs=1), "--model.compile=true", "--trainer.limit_train_batches=4",
            "--trainer.limit_val_batches=2"]
    cli = cli_main(["fit", *args])
    assert cli.trainer.optimizers[0].defaults["fused"] is True and cli.trainer.global_step == 4
    assert forecast_main(["test", *args]) == 0


# -- DDP: each rank asks its own device ------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(0, 15), min_size=1, max_size=8, unique=True), pick=st.integers(0, 7))
def test_each_rank_asks_its_own_device(ids, pick):
    """Before Lightning sets a rank's device, a memory or bf16 query goes to the rank's own GPU:
    the LOCAL_RANK-th of `trainer.devices` (a list or "0,2"), or that index among a count's devices."""
    from forecast.sizing.devices import cuda_index

    rank = pick % len(ids)
    assert cuda_index(ids, rank) == ids[rank]
    assert cuda_index(",".join(map(str, ids)) + ",", rank) == ids[rank]
    assert cuda_index(len(ids), rank) == cuda_index("auto", rank) == rank


def test_the_local_rank_comes_from_lightnings_launcher(monkeypatch):
    from forecast.sizing.devices import cuda_index

    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cuda_index([3, 5]) == 5 and cuda_index(2) == 1
    monkeypatch.delenv("LOCAL_RANK")
    assert cuda_index([3, 5]) == 3  # the launching process is rank 0


def test_no_cuda_query_goes_to_the_current_device():
    """`torch.cuda.is_bf16_supported()`, `mem_get_info()` and `get_device_name()` without a device ask
    the current one: cuda:0 in every DDP rank before Lightning sets its device (a context, and ~500 MB,
    on GPU 0 per rank). The package always names the device."""
    calls = ("is_bf16_supported()", "mem_get_info()", "get_device_name()", "get_device_capability()",
             "max_memory_allocated()", "reset_peak_memory_stats()")
    for path in (ROOT / "forecast").rglob("*.py"):
        text = path.read_text()
        assert not [c for c in calls if c in text], path
