"""`python -m forecast`: the same command as the `forecast` console script."""

import sys

from forecast.core.allowlist import drop_working_folder

drop_working_folder()  # the working folder is data, never code: nothing in it may be imported
sys.argv[0] = "forecast"  # messages name the command the user knows, not __main__.py

from forecast.cli import main  # noqa: E402  (after the working folder left sys.path)

sys.exit(main())
