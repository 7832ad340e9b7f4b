"""`make bench` entries for the search (`forecast hpo`), on a small synthetic study.

  trial_overhead  seconds from a trial's start (the objective is called) to its first training
                  step: sampling, LightningCLI parse, data module, model, Trainer setup, sanity
                  check. Median and max over the trials of the unpruned study.
  pruning         the same study (same seed, same synthetic tier, N trials) with the median
                  pruner and without: epochs trained in total, wall time, best validation score.

Benchmarks report; no test asserts a timing.

    python -m forecast.bench.hpo --out bench_hpo.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from forecast.bench import publish

SYMBOL = "SYN"
VAL_START, TEST_START = "2016-10-03", "2017-10-02"  # data: 2013-10 (after warm-up) to 2019-01
# A 20K-parameter budget over a tiny grid: four architectures of 15-20K parameters for
# 25 features, context 32, patches of 8 every 4 steps, so a trial takes seconds on a CPU.
SPACE = """\
architecture:
  grid: {d_model: [16, 32], n_layers: [1, 2, 3, 4], head_dim: [8], ffn_ratio: [2, 4]}
params:
  lr: {key: model.lr, type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  weight_decay: {key: model.weight_decay, type: float, low: 1.0e-4, high: 0.3, log: true}
  dropout: {key: model.net.init_args.dropout, type: float, low: 0.0, high: 0.3}
  warmup_frac: {key: model.warmup_frac, type: float, low: 0.0, high: 0.2}
"""


def search_tier(root: Path) -> Path:
    from forecast.data.raw import write_raw
    from forecast.data.synthetic import synthetic_ohlcv
    from forecast.data.tiers import build_and_write

    write_raw(root, SYMBOL, synthetic_ohlcv(n=1500, start="2013-01-01"), source="synthetic bench series")
    build_and_write(root, SYMBOL, "a25")
    return root


def _study(data: Path, space: Path, logs: Path, pruner: str, trials: int, epochs: int) -> dict[str, Any]:
    """Run one study and measure it from its trials' records."""
    from optuna.trial import TrialState

    from forecast.hpo.loop import run_study
    from forecast.hpo.opening import open_study
    from forecast.hpo.options import HpoOptions
    from forecast.hpo.plan import plan_study

    flags = [f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", "--data.context_length=32",
             f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.batch_size=64",
             "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
             f"--trainer.max_epochs={epochs}", f"--early_stopping.patience={epochs}"]  # pruning alone ends trials early
    options = HpoOptions(budget="20K", trials=trials, overrides=flags, search_space=space, log_dir=logs,
                         pruner=pruner, no_live=True, configs=[str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")])
    start = time.perf_counter()
    outcome = run_study(options)
    wall = time.perf_counter() - start
    study = open_study(plan_study(options))
    done = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    first = [t.user_attrs["first_step_s"] for t in done if t.user_attrs.get("first_step_s") is not None]
    return {
        "pruner": pruner, "trials": outcome.finished,
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "epochs": sum(int(t.user_attrs.get("epochs_run") or 0) for t in done),
        "wall_s": round(wall, 2), "best_val_loss": study.best_value,
        "first_step_s": first,
    }


def bench_hpo(trials: int = 12, epochs: int = 10) -> dict[str, Any]:
    """Trial overhead and the pruning saving on a small synthetic study.

    Args:
        trials: trials per study (the median pruner starts judging after 5).
        epochs: max epochs of a trial.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 20K-parameter models: extra threads only add contention
    try:
        with tempfile.TemporaryDirectory(prefix="bench_hpo_") as tmp:
            root = Path(tmp)
            data = search_tier(root / "data")
            space = root / "space.yaml"
            space.write_text(SPACE)
            pruned = _study(data, space, root / "pruned", "median", trials, epochs)
            full = _study(data, space, root / "unpruned", "none", trials, epochs)
    finally:
        torch.set_num_threads(threads)
    overhead = full.pop("first_step_s")
    pruned.pop("first_step_s")
    return {
        "trial_overhead": {"median_s": statistics.median(overhead), "max_s": max(overhead),
                           "what": "seconds from a trial's start to its first training step"},
        "pruning": {
            "median_pruner": pruned, "no_pruner": full,
            "epoch_ratio": pruned["epochs"] / max(1, full["epochs"]),
            "wall_ratio": pruned["wall_s"] / full["wall_s"],
            "what": f"{trials} trials of up to {epochs} epochs, same seed and data",
        },
        "torch_threads": 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.hpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_hpo.json"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    results = bench_hpo(args.trials, args.epochs)
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
