"""Benchmarks (`make bench`, `python -m forecast.bench`): figures and ratios measured in one run.

Not part of the product: nothing in `forecast` imports this package; tests/test_bench.py imports
every module (an entry `make bench` never runs fails it) and, marked slow, runs each at its smallest
size. Modules: `__main__` (the runner: every entry, batch gather, Trainer vs plain loop), `memory`
(planner vs measured peaks), `build` (host memory of a 200M build), `hpo` (trial overhead, pruning
saving), `scale` (storage overhead per trial, trials per hour with `--jobs`), `cpu` (the thread
policy against fixed choices, training FLOP/s over a matmul probe), `report` (`forecast report
--jobs 1` vs `--jobs 2`), `gpu_check` (`make gpu-check`).
"""

import json
from pathlib import Path
from typing import Any


def publish(results: dict[str, Any], out: Path) -> None:
    """Print a benchmark's results as JSON and write them atomically to `out`."""
    from forecast.core.files import write_json_atomic

    print(json.dumps(results, indent=2, default=str))
    write_json_atomic(out, results)
    print(f"written: {out}")
