"""The report's numbers as tidy tables (one CSV each; report.md shows the same numbers).

  verdicts.csv     one row per series x claim x metric: estimate, lo, hi, method, verdict
  folds.csv        one row per series x fold x model (budget, seed) or baseline: test period,
                   samples, positive rate, AUROC, loss
  scaling.csv      one row per study (series x budget): best trial, pooled test loss and AUROC
                   with their bootstrap intervals
  runs.csv         one row per retrain (fold x seed): its test metrics and where its logs are
  predictions.csv  one row per test sample x model seed or baseline: date, probability, label
  regimes.csv      one row per study x VIX level (tiers with VIX only)
  search.csv       one row per study: its trials, where the best was found, unconverged or not and why
  data_scaling.csv one row per model (budget or baseline) x design x training years: pooled test loss
                   and AUROC with intervals (studies trained on fewer years only)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from forecast.core.metric_names import MONITOR
from forecast.report.build import Report, SeriesResult
from forecast.report.collect import Series
from forecast.report.data_scaling import data_frame_rows
from forecast.report.equivalence import not_excluded
from forecast.report.limits import enough
from forecast.report.stats import LEVEL
from forecast.training.baselines import BASELINES, scores


def _series_cols(s: Series) -> dict[str, Any]:
    return {"symbol": s.symbol, "tier": s.tier, "inputs": s.inputs, "task": s.task, "horizon": s.horizon,
            "train": s.train}


def verdicts_frame(report: Report) -> pd.DataFrame:
    """verdicts.csv: every claim with its interval, minimum detectable effect (80% power at 5%),
    equivalence margin, the largest effect its interval leaves open, verdict and how it was made."""
    rows = [{**_series_cols(r.series), "comparison": c.comparison, "kind": c.kind, "metric": c.metric,
             "estimate": c.estimate, "lo": c.lo, "hi": c.hi, "mde": c.mde, "margin": c.delta,
             "not_excluded": not_excluded(c.lo, c.hi), "verdict": c.verdict,
             "search": r.search_note(c), "method": c.method}
            for r in report.series for c in r.comparisons]
    rows += [{**_series_cols(res.family), "train": "by years", "comparison": c.comparison, "kind": c.kind,
              "metric": c.metric, "estimate": c.estimate, "lo": c.lo, "hi": c.hi, "mde": c.mde, "margin": c.delta,
              "not_excluded": not_excluded(c.lo, c.hi), "verdict": c.verdict, "search": res.search_note(c),
              "method": c.method}
             for res in report.data for c in res.comparisons]  # the training-years claims
    return pd.DataFrame(rows)


def data_scaling_frame(report: Report) -> pd.DataFrame:
    """data_scaling.csv: test loss and AUROC per (model, design, training years), with intervals
    (`forecast.report.data_scaling`); empty when no study trained on fewer years."""
    return pd.DataFrame(data_frame_rows(report.data, _series_cols))


def _scored(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    s = scores(y.astype(int), p)
    return {"auroc": s["auroc"], "loss": s["loss"]}


def folds_frame(report: Report) -> pd.DataFrame:
    """folds.csv: each fold's test period and every model seed's and baseline's score on it."""
    return pd.concat([series_folds(r) for r in report.series], ignore_index=True) if report.series else pd.DataFrame()


def series_folds(r: SeriesResult) -> pd.DataFrame:
    """The folds.csv rows of one series."""
    rows = []
    for f in r.folds:
        head = {**_series_cols(r.series), "fold": f.index, "test_start": f.test[0], "test_end": f.test[1],
                "train_end": f.train[1], "val_start": f.val[0], "windows": len(f.dates),
                "positive_rate": float(f.labels.mean()), "too_few": not enough(f.labels)}
        for s in r.reported:
            for run in sorted((x for x in s.runs if x.fold == f.index), key=lambda x: x.seed):
                rows.append({**head, "budget": s.entry.budget, "params": s.entry.best.params, "seed": run.seed,
                             **_scored(f.labels, np.asarray(run.probs)), "epochs_run": run.epochs_run})
        for b in BASELINES:
            rows.append({**head, "budget": b, "params": math.nan, "seed": math.nan,
                         **_scored(f.labels, f.baselines[b]), "chosen": f.chosen.get(b, "")})
    return pd.DataFrame(rows)


def _pooled_interval(r: SeriesResult, metric: str, name: str) -> dict[str, float]:
    d = r.draws
    drawn = np.asarray(d.column(metric, name, draws=True))
    drawn = drawn[np.isfinite(drawn)]
    lo, hi = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if len(drawn) > 1 else (math.nan, math.nan)
    return {f"test_{metric}": d.column(metric, name), f"test_{metric}_lo": float(lo), f"test_{metric}_hi": float(hi)}


def scaling_frame(report: Report) -> pd.DataFrame:
    """scaling.csv: one row per study, problems included (status says why)."""
    rows = []
    for r in report.series:
        for s in r.studies:
            e, b = s.entry, s.entry.best
            row: dict[str, Any] = {
                **_series_cols(r.series), "budget": e.budget, "study": e.name,
                "status": "ok" if s.ok else (s.problem or "no retrain"), "trial": b.number, "params": b.params,
                "arch": b.arch, f"search_{MONITOR.replace('/', '_')}": b.value,
                "folds": len({x.fold for x in s.runs}), "seeds": len({x.seed for x in s.runs}),
            }
            if s.ok and r.draws is not None:
                row.update(_pooled_interval(r, "loss", e.budget))
                row.update(_pooled_interval(r, "auroc", e.budget))
            rows.append(row)
        if r.draws is not None:
            for b in BASELINES:
                rows.append({**_series_cols(r.series), "budget": b, "study": "", "status": "baseline",
                             **_pooled_interval(r, "loss", b), **_pooled_interval(r, "auroc", b)})
    return pd.DataFrame(rows)


def runs_frame(report: Report) -> pd.DataFrame:
    """runs.csv: every retrain."""
    rows = []
    for r in report.series:
        for s in r.studies:
            for run in s.runs:
                rows.append({
                    **_series_cols(r.series), "budget": s.entry.budget, "study": s.entry.name, "fold": run.fold,
                    "seed": run.seed, "params": run.params, "epochs_run": run.epochs_run,
                    "best_epoch": run.val_best.get("epoch"), "val_" + MONITOR.split("/")[-1]: run.val_best.get(MONITOR),
                    "test_loss": run.test.get("test/loss"), "test_auroc": run.test.get("test/auroc"),
                    "windows": len(run.probs), "wall_s": run.wall_s, "reused": run.cached, "folder": run.folder,
                })
    return pd.DataFrame(rows)


def predictions_frame(report: Report) -> pd.DataFrame:
    """predictions.csv: every test sample's probability from every model seed and baseline."""
    frames = []
    for r in report.series:
        for f in r.folds:
            base = {**_series_cols(r.series), "fold": f.index}
            dates = f.dates.date
            for s in r.studies:
                for run in (x for x in s.runs if x.fold == f.index):
                    frames.append(pd.DataFrame({**base, "model": s.entry.budget, "seed": run.seed, "date": dates,
                                                "probability": run.probs, "label": f.labels}))
            for b in BASELINES:
                frames.append(pd.DataFrame({**base, "model": b, "seed": -1, "date": dates,
                                            "probability": f.baselines[b], "label": f.labels}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def regimes_frame(report: Report) -> pd.DataFrame:
    """regimes.csv: test AUROC per VIX level, per study, pooled over folds (mean over seeds)."""
    rows = []
    for r in report.series:
        for s in r.studies:
            for g in s.regimes:
                rows.append({**_series_cols(r.series), "budget": s.entry.budget, "regime": g.name,
                             "windows": g.windows, "positives": g.positives, "too_few": g.too_few,
                             "positive_rate": g.positive_rate,
                             "test_auroc_mean": g.auroc.estimate, "test_auroc_lo": g.auroc.lo,
                             "test_auroc_hi": g.auroc.hi})
    return pd.DataFrame(rows)


def search_frame(report: Report) -> pd.DataFrame:
    """search.csv: each study's search sufficiency (`forecast.report.sufficiency`)."""
    rows = []
    for r in report.series:
        for s in r.studies:
            q = s.search
            if q is None:
                continue
            rows.append({**_series_cols(r.series), "budget": s.entry.budget, "study": s.entry.name,
                         "complete": q.complete, "pruned": q.pruned, "failed": q.failed, "best_trial": q.best_trial,
                         "best_at": q.best_at, "best_epoch": q.best_epoch, "max_epochs": q.max_epochs,
                         "unconverged": q.unconverged, "reasons": "; ".join(q.reasons),
                         "warnings": "; ".join(q.warnings)})
    return pd.DataFrame(rows)


TABLES = {
    "verdicts.csv": verdicts_frame,
    "folds.csv": folds_frame,
    "scaling.csv": scaling_frame,
    "runs.csv": runs_frame,
    "predictions.csv": predictions_frame,
    "regimes.csv": regimes_frame,
    "search.csv": search_frame,
    "data_scaling.csv": data_scaling_frame,
}
