"""The one exception type for user mistakes.

Anything raised as `ForecastError` reaches the user as a single line on stderr and a non-zero
exit (see `forecast.cli.main`); everything else is a bug and keeps its traceback.
"""


class ForecastError(Exception):
    """A user mistake (missing file, bad column, wrong flag value), reported in one line."""
