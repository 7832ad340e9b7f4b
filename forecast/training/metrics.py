"""The torchmetrics collection every split computes, keyed by `forecast.core.metric_names`."""

from __future__ import annotations

import torch
from torchmetrics import CatMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)
from torchmetrics.regression import MeanSquaredError

from forecast.core.metric_names import SPREAD


class ProbabilitySpread(Metric):
    """std, min and max of the predicted probabilities: a collapse to the class prior shows here."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.probs = CatMetric(nan_strategy="disable")  # keep NaN: a diverged model must show, not crash

    def update(self, probs: torch.Tensor) -> None:
        self.probs.update(probs.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        p = self.probs.compute()
        return dict(zip(SPREAD, (p.std(unbiased=False), p.min(), p.max()), strict=True))

    def reset(self) -> None:
        super().reset()
        self.probs.reset()


def classification_metrics(prefix: str, validate_args: bool = False) -> MetricCollection:
    """AUROC, AP, accuracy/precision/recall/F1 at 0.5 and the Brier score, keyed `<prefix>/<name>`.

    Args:
        prefix: the split ("train", "val", "test").
        validate_args: torchmetrics' checks of every update's values (probabilities in [0, 1],
            labels in {0, 1}); off by default: they read values back from the device (a host sync
            per step on CUDA), and the module feeds sigmoid outputs and the data module's 0/1 labels.
    """
    checks = {"validate_args": validate_args}
    return MetricCollection(
        {
            "auroc": BinaryAUROC(**checks),
            "ap": BinaryAveragePrecision(**checks),
            "acc": BinaryAccuracy(threshold=0.5, **checks),
            "precision": BinaryPrecision(threshold=0.5, **checks),
            "recall": BinaryRecall(threshold=0.5, **checks),
            "f1": BinaryF1Score(threshold=0.5, **checks),
            "brier": MeanSquaredError(),  # mean (p - y)^2 on probabilities
        },
        prefix=f"{prefix}/",
    )
