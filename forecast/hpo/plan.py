"""A study checked before its first trial: options, configs, search space, data, memory, disk and storage.

`plan_study` turns one study's options into a `StudyPlan`, or raises `ForecastError` with one line. It
parses the budget once, builds the real CLI parser once (it resolves the run every trial starts from, then
checks the search space's ends over it), and builds the data module once (bad paths or split dates fail here,
not in every trial). Nothing trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecast import configs
from forecast.core.domains import check_name
from forecast.core.errors import ForecastError
from forecast.core.files import check_writable
from forecast.core.metric_names import MONITOR, MONITOR_MODE
from forecast.hpo import config as cfg
from forecast.hpo.api import DATA_FINGERPRINT
from forecast.hpo.objective import ExtraCallbacks, TrialSetup
from forecast.hpo.options import HpoOptions
from forecast.hpo.space import ARCH_ARGS, NET_PREFIX, SearchSpace, SpaceSpec, bind, load_space
from forecast.hpo.storage import default_url, open_storage
from forecast.sizing.budget import parse_budget
from forecast.sizing.devices import one_device
from forecast.sizing.machine import check_search
from forecast.training.config import flag_keys, lookup, parse_run

if TYPE_CHECKING:
    from forecast.training.cli import ParsedRun

DEFAULT_CONFIG = configs.path("spy.yaml")


@dataclass
class StudyPlan:
    """A checked study, ready to run: nothing here can fail for a user-mistake reason any more."""

    options: HpoOptions
    name: str
    folder: Path
    url: str
    storage: Any
    setup: TrialSetup
    fingerprint: dict[str, Any]
    max_epochs: int | None
    prior: dict[str, float] | None = None  # the class prior's val scores: the bar to clear

    @property
    def space(self) -> SearchSpace:
        return self.setup.space


@dataclass(frozen=True)
class DataReference:
    """What the search needs of the trials' data, from one data module built before any trial."""

    n_features: int
    prior: dict[str, float]  # the class prior's validation scores, the bar every trial should clear
    fingerprint: str  # md5 of the numbers the trials train and validate on
    epoch_samples: int  # training samples one epoch draws (`data.train_epoch`)


def plan_study(options: HpoOptions, extra_callbacks: ExtraCallbacks | None = None) -> StudyPlan:
    """Check the options, configs, search space and storage; raise `ForecastError` on a mistake.

    Nothing is trained here. The data module is built once, and the ends of the space are parsed
    by the real CLI parser.
    """
    check_writable([options.log_dir])  # a read-only --log-dir is said as such, not as "no free disk"
    budget = parse_budget(options.budget)
    spec = load_space(options.search_space)
    check_no_clash(options.overrides, [p.key for p in spec.params])
    config_args = [a for c in options.configs or [DEFAULT_CONFIG] for a in ("--config", str(c))]
    user_args = [*config_args, *options.overrides]
    base_args = [*config_args, *cfg.TRIAL_DEFAULTS, *options.overrides]  # configs first: flags win
    run = parse_run(base_args)  # the one LightningCLI parser of this plan: the ends are checked with it
    config = run.config
    one_device(config["trainer"], "search trials")
    check_model(config, spec)
    data = data_reference(config)
    # val/loss with a pos_weight is a weighted BCE: not comparable with the prior's log-loss
    prior = None if config["model"].get("pos_weight") is not None else data.prior
    net = config["model"]["net"]["init_args"]
    space = bind(spec, budget, data.n_features, config["data"]["context_length"],
                 net["patch_len"], net["stride"], net["patch_mode"], net["revin"])
    check_ends(run, space)
    said = check_search(config, space.tree.archs, data.n_features, data.epoch_samples, options.log_dir,
                        options.keep_checkpoints, options.trials, f"budget {options.budget}")
    if said:
        print(said, flush=True)
    # a --study-name is a Name already; a derived one must be one folder inside --log-dir too
    name = options.study_name or check_name(cfg.study_name(config, budget.label), "study name")
    url = options.storage_url or default_url(options.log_dir)
    setup = TrialSetup(base_args, user_args, space, options.log_dir, name, extra_callbacks)
    searched = [*(p.key for p in spec.params), *(NET_PREFIX + a for a in ARCH_ARGS)]
    fingerprint = normalize(cfg.fingerprint(config, budget.label, {**spec.as_dict(), "monitor": MONITOR,
                                                                   "mode": MONITOR_MODE}, searched))
    fingerprint[DATA_FINGERPRINT] = data.fingerprint  # the exact numbers trials see, not only settings
    return StudyPlan(options, name, options.log_dir / name, url, open_storage(url, options.heartbeat),
                     setup, fingerprint, config["trainer"].get("max_epochs"), prior)


def check_no_clash(overrides: list[str], searched: list[str]) -> None:
    """A flag may not fix what the search varies (the trial's value would silently win)."""
    fixed = flag_keys(overrides) & {*searched, *(NET_PREFIX + a for a in ARCH_ARGS)}
    if fixed:
        raise ForecastError(f"--{sorted(fixed)[0]} is searched by this study; drop the flag or the "
                            "search-space entry")


def check_model(config: dict[str, Any], spec: SpaceSpec) -> None:
    """The search sizes PatchTST, and every searched key is an argument of the run."""
    if config["model"]["net"].get("class_path") != "forecast.model.PatchTST":
        raise ForecastError("the search sizes forecast.model.PatchTST; the config's model.net is "
                            f"{config['model']['net'].get('class_path')}")
    for p in spec.params:
        found, _ = lookup(config, p.key)
        if not found:
            raise ForecastError(f"{spec.path}: params.{p.name} sets {p.key}, which the model, "
                                "optimizer, data and trainer have no argument for")


def check_ends(run: ParsedRun, space: SearchSpace) -> None:
    """The ends of every range (`SearchSpace.end_overrides`) over the base run, parsed and checked by the
    run's own parser (`run`, built once): a value no trial could run with fails now, in one line."""
    for draw in space.end_overrides():
        run.check(draw)


def data_reference(config: dict[str, Any]) -> DataReference:
    """Build the data module once (bad data settings fail here, before any trial)."""
    from forecast.data.datamodule import ForecastDataModule
    from forecast.training.baselines import prior_scores

    dm = ForecastDataModule(**config["data"])
    return DataReference(dm.n_features, {"positive_rate": dm.balance["train"], **prior_scores(dm, "val")},
                         dm.fingerprint(), dm.epoch_samples)


def normalize(obj: Any) -> Any:
    """`obj` as JSON gives it back (tuples as lists, other values as text): as the storage returns it."""
    return json.loads(json.dumps(obj, default=str))
