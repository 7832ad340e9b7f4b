"""The one exception type for user mistakes, and an argparse parser that raises it.

Anything raised as `ForecastError` reaches the user as a single line on stderr and a non-zero
exit (see `forecast.cli.main`); everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ForecastError(Exception):
    """A user mistake (missing file, bad column, wrong flag value), reported in one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (a ForecastError), not the usage block + exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ForecastError(f"{self.prog}: {message} (see --help)")
