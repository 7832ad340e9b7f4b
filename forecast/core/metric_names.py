"""Metric names: what an epoch of each split logs, and the one name everything monitors.

`MONITOR` is the single name that checkpointing, early stopping, pruning and the search objective import;
`MONITOR_MODE` says which way is better. The torchmetrics objects that compute the values live in
`forecast.training.metrics` (a test holds the names here equal to that collection's keys), so reading a name
costs no torch import.
"""

from __future__ import annotations

MONITOR = "val/loss"
MONITOR_MODE = "min"
COLLAPSE_STD = 1e-3  # predicted-probability std below this means the model outputs one number
CLASSIFICATION = ("auroc", "ap", "acc", "precision", "recall", "f1", "brier")  # the collection's metrics
SPREAD = ("prob_std", "prob_min", "prob_max")  # ProbabilitySpread's values


def logged(split: str) -> tuple[str, ...]:
    """Every metric an epoch of `split` logs (`forecast.training.module`): its loss, the collection's
    metrics and the probabilities' spread; what checkpointing and early stopping may monitor."""
    return (f"{split}/loss", *(f"{split}/{k}" for k in (*CLASSIFICATION, *SPREAD)))
