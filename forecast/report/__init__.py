"""`forecast report`: the scaling answer from finished studies, over walk-forward folds, with
baselines, date-paired intervals and plots.

Modules, in the order a report uses them: `collect` (storage -> studies and best trials, through
`forecast.hpo.api`), `retrain` (best config x fold x seed, each tested once from its best
checkpoint), `jobs` (the retrains as tasks claimed through the study storage, by `--jobs` workers
and any other report process on that storage), `regimes` (test AUROC by VIX level), `stats` (paired block bootstrap, verdicts, power
law; pure), `build` (the steps in order), `tables`, `plots`, `markdown`, `outputs` (files and
TensorBoard), `options` (`ReportOptions`: the command's flags, declared once), `cli` (`forecast report`).
"""
