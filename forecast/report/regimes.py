"""Test AUROC by VIX level (below 15, 15 to 25, above 25) for tiers that carry VIX.

The level of a test window is the VIX close of its last day, unscaled from the data module's
features (the tier's own `vix_close` column, so the report reads no second source). The bounds
match the tier's `vix_regime` feature: < 15, 15..25 inclusive, > 25.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from forecast.report.limits import MIN_PER_CLASS, class_counts, enough
from forecast.report.stats import Interval, clipped, t_interval

VIX_COLUMN = "vix_close"
LEVELS = (("VIX < 15", -math.inf, 15.0), ("VIX 15-25", 15.0, 25.0), ("VIX > 25", 25.0, math.inf))


@dataclass(frozen=True)
class Regime:
    """One VIX level of the test split: its windows, base rate and the seeds' AUROC."""

    name: str
    windows: int
    positive_rate: float
    auroc: Interval  # NaN when the level holds too few positives or negatives (`limits.enough`)
    positives: int = 0

    @property
    def too_few(self) -> bool:
        return min(self.positives, self.windows - self.positives) < MIN_PER_CLASS


def vix_at_test_windows(dm) -> np.ndarray | None:
    """Unscaled VIX close on each test window's last day, or None when the tier has no VIX.

    Args:
        dm: a `ForecastDataModule` (its unscaled `raw_features`).
    """
    if VIX_COLUMN not in dm.feature_names:
        return None
    return dm.raw_features[dm.splits["test"].ends, dm.feature_names.index(VIX_COLUMN)]


def level_masks(vix: np.ndarray) -> list[np.ndarray]:
    """One boolean mask per level of `LEVELS` (15 and 25 belong to the middle level)."""
    return [vix < 15.0, (vix >= 15.0) & (vix <= 25.0), vix > 25.0]


def regimes(vix: np.ndarray, labels: np.ndarray, probs_by_seed: Sequence[Sequence[float]]) -> list[Regime]:
    """AUROC per VIX level, mean and t-interval over seeds.

    Args:
        vix: VIX close per test window.
        labels: 0/1 label per test window.
        probs_by_seed: each seed's predicted probability per test window (same order).

    Returns:
        One `Regime` per level; its AUROC is NaN where the level holds fewer than `MIN_PER_CLASS`
        positives or negatives (the table says "too few").
    """
    out = []
    for (name, _, _), mask in zip(LEVELS, level_masks(vix), strict=True):
        y = labels[mask]
        rate = float(y.mean()) if len(y) else math.nan
        scores = [_auroc(y, np.asarray(p)[mask]) for p in probs_by_seed] if enough(y) else []
        out.append(Regime(name, int(mask.sum()), rate, clipped(t_interval(scores), 0.0, 1.0), class_counts(y)[0]))
    return out


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else math.nan
