"""The import allowlist: what read data (config files, flags, checkpoints' saved settings, study storage)
may make this program import.

Inputs are data, never code. A `class_path` (or any other import path a value names) resolves only
inside `ALLOWLIST` plus the packages the user names with `FORECAST_TRUST` (or `forecast --trust PKG`),
and the check is on the *string*, before anything is imported: jsonargparse's public import-path
policy (`set_parsing_settings(import_path_denylist=["*"], import_path_allowlist=...)`) runs it ahead of
every import its parsers make for a value. The working folder is never importable (`drop_working_folder`).
`install` also registers the bounded YAML loader (`forecast.core.bounded_yaml`) for every parse.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

import yaml

from forecast.core.bounded_yaml import load_value
from forecast.core.errors import ForecastError

# What a value may name: this package, optimizers and LR schedulers, Lightning's callbacks and loggers.
ALLOWLIST = ("forecast", "torch.optim", "lightning.pytorch.callbacks", "lightning.pytorch.loggers")
TRUST_ENV = "FORECAST_TRUST"  # comma-separated packages (or modules) the user adds to ALLOWLIST

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def trusted_packages(env: str | None = None) -> tuple[str, ...]:
    """ALLOWLIST plus the user's `FORECAST_TRUST` entries.

    Args:
        env: the variable's value (default: read from the environment).

    Raises:
        ForecastError: an entry that is not a dotted Python name, or names jsonargparse (a value that
            could name the parser could change this policy itself).
    """
    text = os.environ.get(TRUST_ENV, "") if env is None else env
    extra = [e.strip() for e in text.split(",") if e.strip()]
    for entry in extra:
        if not _DOTTED.fullmatch(entry) or entry.split(".")[0] == "jsonargparse":
            raise ForecastError(f"{TRUST_ENV}: {entry!r} is not a package this program can trust (a dotted "
                                "Python name such as mypackage or mypackage.nets; comma-separated)")
    return tuple(dict.fromkeys([*ALLOWLIST, *extra]))


def add_trusted(entries: Iterable[str]) -> None:
    """Add packages to `FORECAST_TRUST` in this process's environment, so that worker processes
    (`forecast hpo --jobs N`) inherit them; each is checked as `trusted_packages` does."""
    current = os.environ.get(TRUST_ENV, "")
    entries = list(entries)
    joined = ",".join([e for e in current.split(",") if e.strip()] + entries)
    trusted_packages(joined)
    if entries:
        os.environ[TRUST_ENV] = joined


def install() -> None:
    """Before any parse: only allowlisted import paths, checked on the string; the safe YAML loader.

    Idempotent; reads `FORECAST_TRUST` each time, so a later call sees what the user added.
    """
    from jsonargparse import set_loader, set_parsing_settings

    allowed = set(trusted_packages())
    # '*' denies every path that no more specific entry allows; the allowlist is the exception. The
    # settings only add entries, so what an earlier call allowed and the user no longer names is denied.
    revoked = sorted(_ALLOWED - allowed)
    set_parsing_settings(import_path_denylist=["*", *revoked], import_path_allowlist=sorted(allowed))
    _ALLOWED.clear()
    _ALLOWED.update(allowed)
    set_loader("yaml", load_value, exceptions=(yaml.YAMLError,))

_ALLOWED: set[str] = set()  # what `install` allowed last (one process may parse many runs: tests, a search)


def drop_working_folder() -> None:
    """`python -m forecast` puts the working folder first on sys.path (as `python -P` would not): a
    module there named like one we import, or like a class path, would run. Drop that entry."""
    if sys.flags.safe_path or not sys.path:
        return
    first = sys.path[0]
    if first == "" or os.path.abspath(first) == os.getcwd():
        del sys.path[0]


def refused_import(message: str) -> str | None:
    """A one-line reason when jsonargparse's message says an import path was denied, else None."""
    found = re.search(r"Importing '([\w.]+)' is not allowed", message)
    if found is None:
        return None
    return (f"{found.group(1)!r} is outside the classes a config may name ({', '.join(trusted_packages())}); "
            f"to use your own package, name it: {TRUST_ENV}=yourpackage or `forecast --trust yourpackage ...`")
