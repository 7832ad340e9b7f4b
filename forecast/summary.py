"""`python -m forecast.summary RUNS`: the newest run's validation and test scores in two lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def newest_run(experiment: Path) -> Path | None:
    runs = [p for p in experiment.glob("version_*") if (p / "fit_summary.json").is_file()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    experiment = Path(argv[0] if argv else "logs/demo")
    run = newest_run(experiment)
    if run is None:
        print(f"forecast: error: no finished run under {experiment}", file=sys.stderr)
        return 2
    fit = json.loads((run / "fit_summary.json").read_text())
    print(f"run: {run}  ({fit['num_parameters']:,} parameters, best epoch {fit['best_epoch']})")
    print(f"validation (best epoch): auroc {fit.get('val/auroc', float('nan')):.4f}  loss {fit.get('val/loss'):.4f}")
    tests = sorted(run.glob("test_*.json"), key=lambda p: p.stat().st_mtime)
    if tests:
        test = json.loads(tests[-1].read_text())
        print(f"test (best checkpoint):  auroc {test['test/auroc']:.4f}  loss {test['test/loss']:.4f}")
    print(f"see it: tensorboard --logdir {experiment.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
