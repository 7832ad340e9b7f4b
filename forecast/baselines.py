"""Baselines on the SAME splits and labels as the model: the class prior, logistic regression
and histogram gradient boosting on the last day's (train-scaled) features.

`python -m forecast.baselines --config configs/spy.yaml [more LightningCLI flags]` prints them.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from forecast.data.datamodule import ForecastDataModule


def last_day_features(dm: ForecastDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features of each sample's window-end day and its label: [N, F], [N]."""
    ends = dm.splits[split].ends
    return dm.features[ends].numpy(), dm.targets[ends].numpy().astype(int)


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "auroc": float(roc_auc_score(y, p)) if len(set(y)) > 1 else float("nan"),
        "ap": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "loss": float(log_loss(y, p, labels=[0, 1])),
    }


def prior_scores(dm: ForecastDataModule, split: str) -> dict[str, float]:
    """Scores of always predicting the training split's positive rate: the bar any model must clear."""
    _, y_train = last_day_features(dm, "train")
    _, y = last_day_features(dm, split)
    return scores(y, np.full(len(y), y_train.mean()))


def baseline_scores(dm: ForecastDataModule, splits: tuple[str, ...] = ("val", "test"), seed: int = 0) -> dict:
    """{baseline: {split: {auroc, ap, brier, loss}}}, each fitted on the train split only."""
    x_train, y_train = last_day_features(dm, "train")
    models = {
        "logistic": LogisticRegression(max_iter=2000, C=1.0),
        "hist_gb": HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed),
    }
    out: dict[str, dict[str, dict[str, float]]] = {"prior": {}}
    for split in splits:
        out["prior"][split] = prior_scores(dm, split)
    for name, model in models.items():
        with threadpool_limits(1):  # HistGB's threads spin-wait on a busy machine (48 s vs 0.7 s)
            model.fit(x_train, y_train)
        out[name] = {}
        for split in splits:
            x, y = last_day_features(dm, split)
            out[name][split] = scores(y, model.predict_proba(x)[:, 1])
    return out


def main(argv: list[str] | None = None) -> int:
    from forecast.train import cli_main

    cli = cli_main(list(sys.argv[1:] if argv is None else argv), run=False)
    results = baseline_scores(cli.datamodule)
    print(f"{'baseline':<10} {'split':<5} {'auroc':>7} {'ap':>7} {'brier':>7} {'loss':>7}")
    for name, per_split in results.items():
        for split, s in per_split.items():
            print(f"{name:<10} {split:<5} {s['auroc']:7.4f} {s['ap']:7.4f} {s['brier']:7.4f} {s['loss']:7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
