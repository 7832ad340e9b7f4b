"""`forecast report`: the scaling answer from finished studies, with baselines, seed intervals
and plots.

Modules, in the order a report uses them: `collect` (storage -> studies and best trials),
`retrain` (best config x seeds, each tested once from its best checkpoint), `regimes` (test
AUROC by VIX level), `stats` (intervals, power law, verdict; pure), `build` (the steps in
order), `tables`, `plots`, `markdown`, `outputs` (files and TensorBoard), `cli` (arguments).
"""

from forecast.report.cli import main

__all__ = ["main"]
