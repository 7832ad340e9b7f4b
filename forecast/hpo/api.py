"""What readers of the search's studies (the report) may use: how studies are stored, named and
loaded, and what they hold. Everything else in `forecast.hpo` is internal to the search, and Optuna is
imported by the search package alone. (Run configs, budgets and device memory are not search logic:
the report takes those from `forecast.training.config` and `forecast.sizing`.)"""

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from forecast.hpo.claims import QUEUE_STUDY, Claim, TaskQueue, TaskState
from forecast.hpo.outputs import counts
from forecast.hpo.storage import describe, journal_path, open_storage

Study = optuna.Study
DATA_FINGERPRINT = "data_fingerprint"  # key in a study's `fingerprint`: md5 of the numbers its trials trained on

__all__ = ["DATA_FINGERPRINT", "QUEUE_STUDY", "Claim", "FrozenTrial", "Study", "TaskQueue", "TaskState", "TrialState", "counts",
           "describe", "journal_path", "load_study", "open_storage", "study_names"]


def study_names(storage: Any) -> list[str]:
    """Names of every search study in an opened storage (the report's task queue left out)."""
    return [n for n in optuna.get_all_study_names(storage) if n != QUEUE_STUDY]


def load_study(name: str, storage: Any) -> Study:
    """One study of an opened storage."""
    return optuna.load_study(study_name=name, storage=storage)
