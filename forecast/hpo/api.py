"""What readers of the search's studies (the report) may use: how studies are stored, named and
resolved. Everything else in `forecast.hpo` is internal to the search."""

from forecast.hpo.config import OPERATIONAL_DATA_KEYS, differences, resolve
from forecast.hpo.objective import release_memory
from forecast.hpo.outputs import counts
from forecast.hpo.storage import describe, journal_path, open_storage
from forecast.hpo.study import parse_budget

__all__ = ["OPERATIONAL_DATA_KEYS", "counts", "describe", "differences", "journal_path", "open_storage",
           "parse_budget", "release_memory", "resolve"]
