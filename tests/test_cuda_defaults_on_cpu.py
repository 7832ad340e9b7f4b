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
from forecast.core.errors import ForecastError
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
    optimizer that unscales internally, whose clip would see scaled gradients (the module says so first). (The CPU's `16-mixed`
    flag becomes bf16-mixed in Lightning, so the fp16 plugin with its scaler is given directly.)"""
    from lightning.pytorch.plugins.precision import MixedPrecision

    cli = cli_main([*run_args(data, tmp_path, epochs=1), f"--model.fused={str(fused).lower()}"], run=False)
    probe = GradientProbe()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(accelerator="cpu", plugins=[plugin], gradient_clip_val=CLIP, max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[probe])
    if fused:  # asked for explicitly: one line before the first step, not Lightning's refusal at it
        with pytest.raises(ForecastError, match="cannot clip gradients under 16-mixed"):
            trainer.fit(cli.model, cli.datamodule)
        return
    trainer.fit(cli.model, cli.datamodule)
    assert plugin.scaler is not None and len(probe.after) == 3
    assert all(a == pytest.approx(CLIP, rel=1e-3) for a in probe.after)  # clipped after unscaling


def test_a_search_trial_and_a_report_retrain_run_the_cuda_settings(data, tmp_path, capsys):
    from forecast.report.options import ReportOptions
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


# -- issue #30: what reading found on the CUDA path -------------------------------------------------
def tiny_meta_net(n_layers: int = 1):
    from forecast.model import PatchTST

    with torch.device("meta"):
        return PatchTST(n_features=4, context_length=32, d_model=16, n_heads=2, d_ff=32, n_layers=n_layers)


@pytest.mark.parametrize(("root", "threads"), [("cuda", 2), ("cpu", 1)])
def test_compile_asks_the_trainers_device_not_the_unmoved_module(monkeypatch, root, threads):
    """`configure_model` runs before Lightning moves the module, so `self.device` is the CPU on every
    run: the inductor guard (one thread on the CPU) must ask where the run goes. The network stays
    on `meta` (nothing is allocated) and the strategy answers cuda:0: a GPU run keeps its threads."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from forecast.training.module import Forecaster

    monkeypatch.setattr(SingleDeviceStrategy, "root_device", property(lambda self: torch.device(root, 0)))
    model = Forecaster(tiny_meta_net(), compile=True)
    model.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.device("meta"):  # the Trainer calls it under its device's context
            model.configure_model()
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert model.run_device().type == root and model.device.type == "cpu"  # not moved yet
    assert all(p.is_meta for p in model.net.parameters()) and model.compile_record()["compile"] == "inductor"


class Layers(torch.nn.Module):
    """A network whose forward's graph depends on its depth (as PatchTST's on n_layers)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x.sum(-1)


def test_each_new_network_compiles_past_dynamos_recompile_limit(monkeypatch):
    """Every network shares its class's forward code object: a search's trials in one process add
    graphs to one dynamo cache, and past `recompile_limit` (8) later trials ran eager, silently. Here
    the limit is 1, so the second network would be the one: each new network starts from empty
    caches and its record says it ran compiled."""
    import torch._dynamo

    from forecast.training.module import Forecaster

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    for depth in (1, 2):
        model = Forecaster(Layers(depth), compile="eager")
        model.configure_model()
        model(torch.randn(8, 4))
        assert model.compile_record() == {"compile": "eager", "compiled": True, "compiled_graphs": 1,
                                           "eager_frames": 0}, depth
    model(torch.randn(8, 4, 4))  # another rank: past the limit of 1, dynamo runs this frame eager ...
    assert model.compile_record()["compiled"] is False  # ... and the record says so
    assert Forecaster(Layers(1)).compile_record()["compile"] is False


@pytest.mark.slow  # three trials traced by dynamo: ~1 min
def test_every_search_trial_records_that_it_ran_compiled(data, tmp_path, monkeypatch):
    """The search path: trials in one process, each compiled anew (a limit of 4 graphs is below what
    three trials trace together, each at least train + validation); each trial's user attr `compiled`,
    in trials.csv and summary.md."""
    import csv

    import optuna
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 4)
    storage = str(tmp_path / "optuna.journal")
    assert forecast_main(["hpo", "--budget", "100K", "--trials", "3", "--config", str(DEMO), "--storage", storage,
                          "--study-name", "compiled", "--log-dir", str(tmp_path), "--no-live", *data,
                          "--trainer.accelerator=cpu", "--model.compile=eager", "--trainer.max_epochs=1",
                          "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
                          "--data.batch_size=auto"]) == 0
    from forecast.hpo.storage import open_storage

    study = optuna.load_study(study_name="compiled", storage=open_storage(storage, 0))
    assert [t.user_attrs.get("compiled") for t in study.trials] == [True] * 3
    assert all(t.user_attrs["compiled_graphs"] >= 1 for t in study.trials)
    rows = list(csv.DictReader((tmp_path / "compiled" / "trials.csv").open()))
    assert [r["user_attrs_compiled"] for r in rows] == ["True"] * 3
    assert "compile (eager): 3 of 3 trials ran compiled" in (tmp_path / "compiled" / "summary.md").read_text()


def test_a_gpu_without_bf16_trains_16_mixed_with_clipping(data, tmp_path, monkeypatch):
    """A T4 or V100 has no bf16: precision 16-mixed (a GradScaler), the config's clipping at 1.0,
    and the default AdamW, which on CUDA was the fused one: Lightning refused that at step 1.
    Forced here: the module's CUDA answer and the fp16 plugin with its scaler (on the CPU
    Lightning turns the `16-mixed` flag into bf16-mixed)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from forecast.sizing.devices import default_precision
    from forecast.training.module import Forecaster

    assert default_precision("cuda", bf16_supported=False) == "16-mixed"
    monkeypatch.setattr(Forecaster, "run_device", lambda self: torch.device("cuda", 0))
    args = [a for a in run_args(data, tmp_path, epochs=1) if not a.startswith(("--model.fused", "--trainer.gradient"))]
    cli = cli_main(args, run=False)
    assert cli.model.hparams.fused is None and cli.trainer.gradient_clip_val == 1.0  # the defaults
    probe = GradientProbe()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(accelerator="cpu", plugins=[plugin], gradient_clip_val=1.0, max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[probe])
    trainer.fit(cli.model, cli.datamodule)
    assert trainer.global_step == 3 and not trainer.optimizers[0].defaults.get("fused")
    assert all(a <= 1.0 + 1e-3 for a in probe.after)  # clipped after unscaling
    # with the scaler gone (bf16-mixed on the same GPU) the default is fused again
    from forecast.training.module import adamw_options

    assert adamw_options(torch.device("cuda", 0)) == {"fused": True}
    assert adamw_options(torch.device("cuda", 0), scaler=True) == {}
