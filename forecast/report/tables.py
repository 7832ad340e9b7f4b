"""The report's numbers as tidy tables (one CSV each; report.md shows the same numbers).

  scaling.csv    one row per study (series x budget): best trial, seeds' test metrics mean/lo/hi
  fits.csv       one row per series: verdict, slope and difference intervals, power law, alpha
  baselines.csv  one row per series x baseline x split
  runs.csv       one row per retrain (seed): its test metrics and where its logs are
  regimes.csv    one row per study x VIX level (tiers with VIX only)
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from forecast.metrics import MONITOR
from forecast.report.build import BASELINES, METRICS, Report, SeriesResult, StudyResult
from forecast.report.collect import Series
from forecast.report.stats import Interval


def _series_cols(s: Series) -> dict[str, Any]:
    return {"symbol": s.symbol, "tier": s.tier, "task": s.task, "horizon": s.horizon}


def _interval_cols(prefix: str, iv: Interval) -> dict[str, float]:
    return {f"{prefix}_mean": iv.estimate, f"{prefix}_lo": iv.lo, f"{prefix}_hi": iv.hi}


def scaling_frame(report: Report) -> pd.DataFrame:
    """scaling.csv: one row per study, problems included (status says why)."""
    rows = []
    for r in report.series:
        for s in r.studies:
            rows.append({**_study_row(r.series, s), "best_baseline": r.best_baseline,
                         **_interval_cols("test_loss_minus_baseline", r.versus_baseline(s))})
    return pd.DataFrame(rows)


def _study_row(series: Series, s: StudyResult) -> dict[str, Any]:
    e, b = s.entry, s.entry.best
    row: dict[str, Any] = {
        **_series_cols(series), "budget": e.budget, "study": e.name,
        "status": "ok" if s.ok else (s.problem or "no retrain"),
        "trial": b.number, "params": b.params, "arch": b.arch,
        f"search_{MONITOR.replace('/', '_')}": b.value, "seeds": len(s.runs),
        **_interval_cols("retrain_" + MONITOR.replace("/", "_"), s.val_retrained()),
    }
    for name in METRICS:
        row.update(_interval_cols(f"test_{name}", s.metric(name)))
    return row


def fits_frame(report: Report) -> pd.DataFrame:
    """fits.csv: the verdict of each series with the intervals it rests on."""
    return pd.DataFrame([_fit_row(r) for r in report.series])


def _fit_row(r: SeriesResult) -> dict[str, Any]:
    sc, fit = r.scaling, r.scaling.fit
    usable = fit is not None and not fit.degenerate
    return {
        **_series_cols(r.series), "budgets": len(r.reported), "verdict": sc.verdict,
        **_interval_cols("loss_slope_per_decade", sc.slope),
        **_interval_cols("loss_largest_minus_smallest", sc.difference),
        **_interval_cols("auroc_slope_per_decade", r.auroc_slope),
        "l_inf": fit.l_inf if usable else math.nan, "n0": fit.n0 if usable else math.nan,
        **_interval_cols("alpha", sc.alpha), "method": sc.method,
    }


def baselines_frame(report: Report) -> pd.DataFrame:
    """baselines.csv: prior, logistic regression and HistGB on the model's exact splits."""
    rows = []
    for r in report.series:
        for name in BASELINES:
            for split, scores in ((r.baselines or {}).get(name) or {}).items():
                rows.append({**_series_cols(r.series), "baseline": name, "split": split, **scores})
    return pd.DataFrame(rows)


def runs_frame(report: Report) -> pd.DataFrame:
    """runs.csv: every retrain."""
    rows = []
    for r in report.series:
        for s in r.studies:
            for run in s.runs:
                rows.append({
                    **_series_cols(r.series), "budget": s.entry.budget, "study": s.entry.name, "seed": run.seed,
                    "params": run.params, "epochs_run": run.epochs_run, "best_epoch": run.val_best.get("epoch"),
                    "val_" + MONITOR.split("/")[-1]: run.val_best.get(MONITOR),
                    **{f"test_{m}": run.test.get(key) for m, (key, *_) in METRICS.items()},
                    "wall_s": run.wall_s, "reused": run.cached, "folder": run.folder,
                })
    return pd.DataFrame(rows)


def regimes_frame(report: Report) -> pd.DataFrame:
    """regimes.csv: test AUROC per VIX level, per study."""
    rows = []
    for r in report.series:
        for s in r.studies:
            for g in s.regimes:
                rows.append({**_series_cols(r.series), "budget": s.entry.budget, "regime": g.name,
                             "windows": g.windows, "positive_rate": g.positive_rate,
                             **_interval_cols("test_auroc", g.auroc)})
    return pd.DataFrame(rows)


TABLES = {
    "scaling.csv": scaling_frame,
    "fits.csv": fits_frame,
    "baselines.csv": baselines_frame,
    "runs.csv": runs_frame,
    "regimes.csv": regimes_frame,
}
