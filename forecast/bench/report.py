"""`make bench` entry for `forecast report`: the same retrains with `--jobs 1` and `--jobs 2`.

Small real studies (a synthetic a25 tier, one trial per budget on a tiny grid) in one SQLite storage,
copied twice so that each report starts with no retrain done; then `forecast report --jobs 1` and
`--jobs 2` on the copies, timed as whole commands (start-up, folds, baselines and the statistics
included), and their verdicts and predictions compared. Benchmarks report; no test asserts a timing.

    python -m forecast.bench.report --out bench_report.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forecast import configs
from forecast.bench import publish
from forecast.bench.hpo import SYMBOL, TEST_START, VAL_START, search_tier

SPACE = """\
architecture:
  grid: {d_model: [16, 32], n_layers: [1, 2, 3, 4], head_dim: [8], ffn_ratio: [2, 4]}
params:
  lr: {key: model.lr, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def _studies(root: Path, budgets: tuple[str, ...], epochs: int) -> str:
    from forecast.hpo.loop import run_study
    from forecast.hpo.options import HpoOptions

    data = search_tier(root / "data")
    space = root / "space.yaml"
    space.write_text(SPACE)
    logs = root / "logs"
    flags = [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
             f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.batch_size=64",
             "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
             f"--trainer.max_epochs={epochs}", f"--early_stopping.patience={epochs}"]
    for budget in budgets:
        run_study(HpoOptions(budget=budget, trials=1, configs=[str(configs.path("demo.yaml"))],
                             overrides=flags, search_space=space, log_dir=logs, no_live=True))
    return str(logs / "optuna.db")


def _report(db: Path, out: Path, jobs: int, folds: int, seeds: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FORECAST_THREADS")}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "forecast", "report", "--storage", f"sqlite:///{db}", "--folds",
                          str(folds), "--seeds", str(seeds), "--out", str(out), "--jobs", str(jobs),
                          "--bootstrap", "200"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"report --jobs {jobs} failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    return wall


def bench_report(budgets: tuple[str, ...] = ("6K", "20K"), folds: int = 3, seeds: int = 2,
                 epochs: int = 30) -> dict[str, Any]:
    """Wall time of `forecast report --jobs 1` and `--jobs 2` over the same retrains; same verdicts?"""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        root = Path(tmp)
        db = Path(_studies(root, budgets, epochs))
        walls = {}
        for jobs in (1, 2):
            copy = root / f"jobs{jobs}.db"
            shutil.copy(db, copy)
            print(f"   report --jobs {jobs} ...", flush=True)
            walls[jobs] = _report(copy, root / f"out{jobs}", jobs, folds, seeds)
        verdicts = [pd.read_csv(root / f"out{j}" / "verdicts.csv") for j in (1, 2)]
        preds = [pd.read_csv(root / f"out{j}" / "predictions.csv") for j in (1, 2)]
    same = verdicts[0]["verdict"].tolist() == verdicts[1]["verdict"].tolist()
    diff = float((preds[0]["probability"] - preds[1]["probability"]).abs().max())
    return {"retrains": len(budgets) * folds * seeds, "jobs_1_s": round(walls[1], 1), "jobs_2_s": round(walls[2], 1),
            "speedup": round(walls[1] / walls[2], 2), "goal": ">= 1.5 on 2 cores", "same_verdicts": same,
            "max_probability_difference": diff, "cores": len(os.sched_getaffinity(0)),
            "load_before": os.getloadavg()[0],
            "what": f"{len(budgets)} budgets x {folds} folds x {seeds} seeds, {epochs}-epoch retrains of 6K-20K "
                    "models; command wall time, start-up, folds, baselines and statistics included"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_report.json"))
    args = parser.parse_args(argv)
    publish(bench_report(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
