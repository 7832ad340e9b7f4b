"""Benchmarks (`make bench`, `python -m forecast.bench`): figures and ratios measured in one run.

Not part of the product: nothing in `forecast` imports this package, and tests import none of it.
Modules: `__main__` (the runner: batch gather, Trainer vs plain loop), `memory` (planner vs
measured peaks), `hpo` (trial overhead, pruning saving), `scale` (storage overhead per trial,
trials per hour with `--jobs`).
"""
