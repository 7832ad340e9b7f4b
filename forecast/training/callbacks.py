"""Callbacks every `forecast fit|predict` run gets besides Lightning's own: the predictions CSV and a line
per epoch when the progress bar is off, and the thread trial of a fit on the CPU."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info

from forecast.core.files import atomic_path
from forecast.core.metric_names import MONITOR
from forecast.core.threads import POLICY, ThreadTrial
from forecast.data.datamodule import ForecastDataModule
from forecast.training.runs import evaluation_path


class PredictionCSV(BasePredictionWriter):
    """Writes `predictions_<split>_<first>_<last>_<md5[:8]>.csv` (date, probability, label) into the run folder."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if trainer.log_dir is None or trainer.fast_dev_run:  # a smoke test writes no files (also without a logger)
            return
        dm: ForecastDataModule = trainer.datamodule
        split = dm.splits[dm.predict_split]
        probs = torch.cat(predictions).float().numpy()  # sequential sampler: rows in split order
        n = len(probs)  # all of the split, or its first n rows under --trainer.limit_predict_batches
        labels = dm.targets[torch.as_tensor(split.ends[:n])].numpy()
        frame = pd.DataFrame({"date": split.dates.date[:n], "probability": probs, "label": labels.astype(int)})
        path = evaluation_path(Path(trainer.log_dir), "predictions", dm, dm.predict_split, ".csv")
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6f")
        rank_zero_info(f"predictions: {path} ({len(frame)} rows)")


class EpochLine(Callback):
    """One line per epoch (train loss, val loss and AUROC) when the progress bar is off, so a run
    in a log file or CI still shows how it goes."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.progress_bar_callback is not None:
            return
        logged = trainer.callback_metrics
        shown = "  ".join(f"{k} {float(logged[k]):.4f}" for k in ("train/loss", MONITOR, "val/auroc") if k in logged)
        rank_zero_info(f"epoch {trainer.current_epoch}: {shown}")


class MeasuredThreads(Callback):
    """Runs the thread policy's trial (`forecast.core.threads.ThreadTrial`) on the fit's first training
    steps: 1 thread against all this process's cores, the faster kept. A fit that ends before the
    trial does goes back to the rule's choice."""

    def __init__(self, trial: ThreadTrial, params: int) -> None:
        self.trial, self.params = trial, params

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.trial.before_step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trial.after_step()

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.trial.done:
            POLICY.apply(self.params)
