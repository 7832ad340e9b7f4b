"""The one exception type for user mistakes, and the guard that turns it into one line.

Anything raised as `ForecastError` reaches the user as a single line on stderr and a non-zero
exit (see `forecast.cli.main`); everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable


class ForecastError(Exception):
    """A user mistake (missing file, bad column, wrong flag value), reported in one line."""


# What a user can do about a file-system failure, by errno.
_WAY_OUT = {
    errno.EACCES: "choose a folder you may write to, or change its permissions",
    errno.EPERM: "choose a folder you may write to, or change its permissions",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "the disk is full: free space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or choose a folder on another disk",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter name or folder",
    errno.ENOTDIR: "a file stands where a folder is expected: move it or choose another path",
    errno.EEXIST: "a file stands where a folder is expected: move it or choose another path",
    errno.EISDIR: "a folder stands where a file is expected: name a file",
    errno.ENOENT: "check that the path exists",
    errno.EBUSY: "the path names a folder in use (such as `.`): name a file inside it",
}


def os_error_line(err: OSError) -> str:
    """A file-system failure as one line: what failed, on which path, and the way out."""
    path = err.filename if err.filename is not None else "?"
    reason = err.strerror or type(err).__name__
    way_out = _WAY_OUT.get(err.errno or -1, "check the path and the disk")
    return f"{path}: {reason}; {way_out}"


def one_line_text(text: str) -> str:
    """`text` on one line: a value that holds line breaks (a path, a symbol) cannot split a message."""
    return " ".join(text.splitlines()) if len(text.splitlines()) > 1 else text


def run_guarded(command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a command; a user mistake or a file-system failure becomes one line on stderr.

    Returns:
        The command's exit status; 2 for a ForecastError, 1 for a file-system failure, 130 for
        Ctrl-C, 143 for SIGTERM, 141 when stdout's reader left.
    """
    try:
        return command(argv)
    except ForecastError as err:
        print(f"forecast: error: {one_line_text(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forecast: interrupted", file=sys.stderr)
        return 130
    except SystemExit as err:
        # Lightning ends a run on SIGTERM with SIGTERMException, a SystemExit whose code is 0;
        # a killed run must not look like a finished one to the shell or a scheduler.
        if type(err).__name__ != "SIGTERMException":
            raise
        print("forecast: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # `forecast arch ... | head`: the reader left; say nothing more (Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        # a read-only folder, a full disk, a name too long, a file where a folder is expected:
        # the environment's failure, one line naming the path and the way out (writes are atomic,
        # so nothing half-written is left)
        print(f"forecast: error: {one_line_text(os_error_line(err))}", file=sys.stderr)
        return 1
