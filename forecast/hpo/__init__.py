"""`forecast hpo` / `forecast sweep`: Optuna search per parameter budget (see forecast.hpo.study).

Modules, in the order a search uses them: `space` (search-space YAML -> draws and CLI flags),
`config` (the base run, resolved by the real parser), `storage` (where studies live, dead
workers' trials), `objective` (one trial = one LightningCLI fit), `stop` (graceful stop),
`display` (live panel), `outputs` (trials.csv, best.yaml, summary.md), `study` (the loop),
`workers` (`--jobs` on the pool of `forecast.core.workers`), `cli` (argument parsing). Readers of the studies (the report) use `api` only.
"""
