"""Benchmarks (`make bench`, `python -m forecast.bench`): figures and ratios measured in one run.

Not part of the product: nothing in `forecast` imports this package, and tests import none of it.
Modules: `__main__` (the runner: batch gather, Trainer vs plain loop), `memory` (planner vs
measured peaks), `hpo` (trial overhead, pruning saving), `scale` (storage overhead per trial,
trials per hour with `--jobs`).
"""

import json
from pathlib import Path
from typing import Any


def publish(results: dict[str, Any], out: Path) -> None:
    """Print a benchmark's results as JSON and write them atomically to `out`."""
    from forecast.io import write_json_atomic

    print(json.dumps(results, indent=2, default=str))
    write_json_atomic(out, results)
    print(f"written: {out}")
