"""No host sync on the training path on CUDA (a GPU test: `pytest -m gpu tests/test_gpu_sync.py`).

Steady-state training steps with the CUDA defaults (bf16-mixed, fused AdamW, clipping at 1.0, batches
gathered on the device from pinned indices, no training-batch metrics, throughput timed only on logging
steps) run under `torch.cuda.set_sync_debug_mode("error")`: any call that waits for the device (a
`.item()`, a blocking copy, a `nonzero`) raises there and names itself. Their CPU counterparts run in
tests/test_cuda_defaults_on_cpu.py.
"""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch

from forecast.bench.build import synthetic_tier
from forecast.training.cli import cli_main

pytestmark = pytest.mark.gpu

FIRST, LAST = 4, 16  # batches between which sync errors are on (after warm-up, before the logging step)


class SyncGuard(L.Callback):
    """Sync debug mode "error" from the end of batch FIRST to the start of batch LAST: the data
    fetch, forward, backward, clip, optimizer and scheduler steps of the batches between."""

    def __init__(self) -> None:
        self.guarded = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == FIRST:
            torch.cuda.set_sync_debug_mode("error")
        elif FIRST < batch_idx < LAST:
            self.guarded += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == LAST:
            torch.cuda.set_sync_debug_mode("default")

    def on_exception(self, trainer, pl_module, exception) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_steady_state_training_steps_never_sync_the_host(tmp_path):
    data = synthetic_tier(tmp_path / "data", rows=1200) + ["--data.min_windows=20"]
    guard = SyncGuard()
    cli = cli_main(["fit", "--config", "configs/demo.yaml", *data, "--trainer.accelerator=gpu", "--trainer.devices=1",
                    "--trainer.max_steps=20", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
                    "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=50", "--data.batch_size=16",
                    "--trainer.enable_progress_bar=false", "--trainer.enable_checkpointing=false",
                    "--early_stopping.strict=false", f"--trainer.logger.init_args.save_dir={tmp_path}"],
                   trainer_defaults={"callbacks": [guard]})
    assert str(cli.trainer.precision) == "bf16-mixed" and cli.trainer.optimizers[0].defaults["fused"]
    assert not cli.model.train_metrics_on and guard.guarded == LAST - FIRST - 1
