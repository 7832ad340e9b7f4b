"""What the descriptive tables may print: a number only where its cell can carry one.

- A cell (a VIX regime, a fold) with fewer than `MIN_PER_CLASS` positive or negative samples shows
  "too few": an AUROC over 2 positives is a statement about 2 days (the real-SPY regime table once
  printed AUROC 0.135 [0.135, 0.135] for a level with 2 positives of 65).
- An interval over fewer than 2 distinct values is not printed (`forecast.report.stats.t_interval`
  gives none): a zero-width interval claims a certainty nothing measured.
"""

from __future__ import annotations

import numpy as np

MIN_PER_CLASS = 10  # positives AND negatives a cell needs before its AUROC or loss is shown
TOO_FEW = "too few"


def class_counts(labels: np.ndarray) -> tuple[int, int]:
    """(positives, negatives) of 0/1 labels."""
    y = np.asarray(labels)
    return int((y == 1).sum()), int((y == 0).sum())


def enough(labels: np.ndarray, least: int = MIN_PER_CLASS) -> bool:
    """Whether a cell holds at least `least` positives and `least` negatives."""
    return min(class_counts(labels)) >= least


def too_few_text(labels: np.ndarray) -> str:
    """`too few (2 of 65 positive)`."""
    positives, negatives = class_counts(labels)
    return f"{TOO_FEW} ({positives} of {positives + negatives} positive)"
