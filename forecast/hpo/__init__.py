"""`forecast hpo` / `forecast sweep`: Optuna search per parameter budget (see forecast.hpo.loop).

Modules, in the order a search uses them: `options` (the commands' flags, each declared once), `cli`
(parsing, the `--jobs` workers), `space` (search-space YAML -> draws and CLI flags), `config` (the base
run's trial defaults, a study's name and fingerprint), `plan` (every check before the first trial),
`storage` (where studies live, dead workers' trials), `opening` (create or resume a study: sampler,
pruner, the same-study check), `loop` (the queue: each trial to the study furthest from N), `claims` (a
trial's place within N; the report's task queue), `objective` (one trial = one LightningCLI fit), `stop`
(graceful stop), `display` (live panel and the lines a search prints), `outputs` (trials.csv, best.yaml,
summary.md), `workers` (`--jobs` on the pool of `forecast.core.workers`), `years` (the sweep's training-years
axis), `dashboard`. Readers of the studies (the report) use `api` only.
"""
