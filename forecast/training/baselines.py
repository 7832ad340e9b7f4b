"""Baselines on the SAME samples, splits and labels as the model, with a fair chance to win.

- `prior`: always the training split's positive rate (the bar any model must clear).
- `logistic`: logistic regression, `hist_gb`: histogram gradient boosting, both on STATIONARY
  inputs built from the tier (`forecast.data.stationary`, shared with the network's
  `inputs: stationary`): returns over 1, 5 and 20 days and the last few days' returns, ranges and
  indicator values relative to the price (never a raw price level, whose scale drifts out of the
  training range), oscillators as they are, volume relative to its 20-day mean. Their regularisation is chosen on the split's validation period
  (lowest val log loss), as the transformer's epochs are; the model is fitted on train only.

`python -m forecast.training.baselines --config configs/spy.yaml [LightningCLI flags, e.g. --data.folds 4
--data.fold 1] [--out FILE]` prints split sizes, dates, positive rates and scores, and saves every
sample's predictions (date, split, baseline, probability, label) as CSV.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jsonargparse import ArgumentParser
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from forecast.core.files import atomic_path
from forecast.core.parsers import command_parser, parse, split_run_args
from forecast.data.datamodule import SPLITS, ForecastDataModule
from forecast.data.stationary import stationary_features as stationary_inputs

BASELINES = ("prior", "logistic", "hist_gb")
EPS = 1e-7
# Regularisation grids, chosen per split set on validation log loss. A C chosen at either end of
# LOGISTIC_C extends the grid once by a decade past that end (`EXTEND_BY`); a choice still at the
# end of the extended grid is flagged in its `chosen` text (the report prints it).
LOGISTIC_C = (0.001, 0.01, 0.1, 1.0)
EXTEND_BY = 10.0
HIST_GB = tuple({"max_leaf_nodes": leaves, "l2_regularization": l2, "max_iter": iters}
                for leaves, l2, iters in ((7, 1.0, 100), (15, 1.0, 200), (7, 10.0, 300), (31, 10.0, 100)))
def stationary_features(dm: ForecastDataModule) -> tuple[np.ndarray, list[str]]:
    """[rows, G] stationary inputs of the data module's tier and their names: the one definition in
    `forecast.data.stationary`, which `inputs: stationary` gives the network too."""
    return stationary_inputs(dm.raw_features, dm.feature_names)


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC, average precision, Brier score and log loss of probabilities `p` for labels `y`."""
    p = np.clip(p, EPS, 1 - EPS)
    return {
        "auroc": float(roc_auc_score(y, p)) if len(set(y)) > 1 else float("nan"),
        "ap": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "loss": float(log_loss(y, p, labels=[0, 1])),
    }


def labels(dm: ForecastDataModule, split: str) -> np.ndarray:
    return dm.targets[dm.splits[split].ends].numpy().astype(int)


def prior_scores(dm: ForecastDataModule, split: str) -> dict[str, float]:
    """Scores of always predicting the training split's positive rate."""
    y = labels(dm, split)
    return scores(y, np.full(len(y), labels(dm, "train").mean()))


@dataclass
class Baselines:
    """Every baseline's probabilities per split, and the regularisation chosen on validation."""

    probs: dict[str, dict[str, np.ndarray]]  # baseline -> split -> [N]
    chosen: dict[str, str] = field(default_factory=dict)  # baseline -> its chosen setting

    def scores(self, dm: ForecastDataModule) -> dict[str, dict[str, dict[str, float]]]:
        return {name: {split: scores(labels(dm, split), p) for split, p in per.items()}
                for name, per in self.probs.items()}


def fit_baselines(dm: ForecastDataModule, splits: tuple[str, ...] = SPLITS, seed: int = 0) -> Baselines:
    """Prior, logistic regression and HistGB fitted on train, tuned on val, predicted on `splits`.

    One OpenMP thread: HistGB's threads spin-wait on a busy machine (48 s instead of 0.7 s).
    """
    features, _ = stationary_features(dm)
    x = {s: features[dm.splits[s].ends] for s in SPLITS}
    y = {s: labels(dm, s) for s in SPLITS}
    out = Baselines({"prior": {s: np.full(len(y[s]), y["train"].mean()) for s in splits}})
    candidates = {
        "logistic": [(f"C={c:g}", _logistic(c)) for c in LOGISTIC_C],
        "hist_gb": [(", ".join(f"{k}={v:g}" for k, v in h.items()),
                     HistGradientBoostingClassifier(learning_rate=0.05, min_samples_leaf=40,
                                                    early_stopping=False, random_state=seed, **h))
                    for h in HIST_GB],
    }
    with threadpool_limits(1):
        for name, options in candidates.items():
            (setting, model), loss = _choose(options, x, y)
            if name == "logistic":
                setting, model = _extend_logistic(setting, model, loss, x, y)
            out.chosen[name] = setting
            out.probs[name] = {s: model.predict_proba(x[s])[:, 1] for s in splits}
    return out


def _choose(options: list[tuple[str, Any]], x: dict[str, np.ndarray], y: dict[str, np.ndarray]
            ) -> tuple[tuple[str, Any], float]:
    """The (setting, fitted model) with the lowest validation log loss, and that loss."""
    best, best_loss = None, np.inf
    for setting, model in options:
        model.fit(x["train"], y["train"])
        loss = log_loss(y["val"], np.clip(model.predict_proba(x["val"])[:, 1], EPS, 1 - EPS), labels=[0, 1])
        if loss < best_loss:
            best, best_loss = (setting, model), loss
    return best, best_loss


def _logistic(c: float) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _extend_logistic(setting: str, model: Any, loss: float, x: dict[str, np.ndarray], y: dict[str, np.ndarray]
                     ) -> tuple[str, Any]:
    """A C at either end of `LOGISTIC_C`: try one decade further once; say where the choice lies."""
    c = float(setting.removeprefix("C="))
    if c not in (LOGISTIC_C[0], LOGISTIC_C[-1]):
        return setting, model
    further = c / EXTEND_BY if c == LOGISTIC_C[0] else c * EXTEND_BY
    (new_setting, new_model), new_loss = _choose([(f"C={further:g}", _logistic(further))], x, y)
    if new_loss < loss:
        return f"{new_setting} (at the edge of its grid even after extending it once to {further:g})", new_model
    return f"{setting} (grid extended once to C={further:g}, not better)", model


def baseline_scores(dm: ForecastDataModule, splits: tuple[str, ...] = ("val", "test"), seed: int = 0) -> dict:
    """{baseline: {split: {auroc, ap, brier, loss}}} (see `fit_baselines`)."""
    return fit_baselines(dm, splits, seed).scores(dm)


def predictions_frame(dm: ForecastDataModule, fitted: Baselines) -> pd.DataFrame:
    """One row per sample and baseline: date, split, baseline, probability, label."""
    frames = []
    for name, per in fitted.probs.items():
        for split, p in per.items():
            frames.append(pd.DataFrame({"date": dm.splits[split].dates.date, "split": split, "baseline": name,
                                        "probability": p, "label": labels(dm, split)}))
    return pd.concat(frames, ignore_index=True)


def parser() -> ArgumentParser:
    """`forecast baselines` (also `python -m forecast.training.baselines`): its own option; --config and run flags as for `forecast fit`."""
    p = command_parser("forecast baselines", "The baselines of a run config on its val and test "
                       "samples; --config FILE and --data.* flags as for `forecast fit`.")
    p.add_argument("--out", type=Path | None, default=None, metavar="CSV",
                   help="predictions CSV (default: logs/baselines/<symbol>-<tier>-h<h>-fold<k>of<K>-<md5>.csv)")
    return p


def main(argv: list[str] | None = None) -> int:
    from forecast.training.cli import cli_main

    own, run = split_run_args(list(sys.argv[1:] if argv is None else argv))
    out = parse(parser(), own).out
    cli = cli_main([*(a for c in run.configs for a in ("--config", c)), *run.flags], run=False)
    dm = cli.datamodule
    fitted = fit_baselines(dm)
    print(f"{dm.symbol} {dm.tier} {dm.task} h={dm.horizon}" + (f", fold {dm.fold} of {dm.folds}" if dm.folds > 1 else ""))
    for name, split in dm.splits.items():
        print(f"{name:<5} {split.size:5d} samples {split.dates[0].date()}..{split.dates[-1].date()}, "
              f"{100 * dm.balance[name]:.1f}% positive")
    print(f"{'baseline':<10} {'split':<5} {'auroc':>7} {'ap':>7} {'brier':>7} {'loss':>7}  chosen on val")
    for name, per_split in fitted.scores(dm).items():
        for split, s in per_split.items():
            print(f"{name:<10} {split:<5} {s['auroc']:7.4f} {s['ap']:7.4f} {s['brier']:7.4f} {s['loss']:7.4f}  "
                  f"{fitted.chosen.get(name, '')}")
    out = out or Path("logs") / "baselines" / (f"{dm.symbol}-{dm.tier}-h{dm.horizon}-fold{dm.fold}of{dm.folds}-"
                                               f"{dm.fingerprint()[:8]}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        predictions_frame(dm, fitted).to_csv(tmp, index=False, float_format="%.6f")
    print(f"predictions: {out}")
    return 0


if __name__ == "__main__":
    from forecast.core.errors import run_guarded

    raise SystemExit(run_guarded(main, sys.argv[1:]))
