"""What readers of the search's studies (the report) may use: how studies are stored, named,
loaded and resolved. Everything else in `forecast.hpo` is internal to the search, and Optuna is
imported by the search package alone."""

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecast.hpo.config import OPERATIONAL_DATA_KEYS, differences, resolve
from forecast.hpo.objective import release_memory
from forecast.hpo.outputs import counts
from forecast.hpo.storage import describe, journal_path, open_storage
from forecast.hpo.study import parse_budget

Study = optuna.Study

__all__ = ["OPERATIONAL_DATA_KEYS", "FrozenTrial", "Study", "TrialState", "counts", "describe", "differences",
           "journal_path", "load_study", "open_storage", "parse_budget", "release_memory", "resolve",
           "study_names"]


def study_names(storage: Any) -> list[str]:
    """Names of every study in an opened storage."""
    return optuna.get_all_study_names(storage)


def load_study(name: str, storage: Any) -> Study:
    """One study of an opened storage."""
    return optuna.load_study(study_name=name, storage=storage)
