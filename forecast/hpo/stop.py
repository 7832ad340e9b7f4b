"""A graceful stop: Ctrl-C, SIGTERM, the key `q` or a STOP file end the search after the trial.

The first request lets the running trial finish; the search then writes its outputs and exits 0.
A second Ctrl-C (or SIGTERM) while a trial trains raises `AbortTrial` in the main thread, which
ends that trial as FAIL (reason `aborted`). A STOP file counts only if it was touched after this
process started, so the file that stopped the last run does not stop the rerun.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

STOP_FILE = "STOP"
ABORTED_EXIT = 130  # a second stop aborted a trial: the process exits as an interrupted command
POLL_S = 0.5  # how often the STOP file and the keyboard are looked at
SIGNALS = (signal.SIGINT, signal.SIGTERM)
CLOCK_SLACK_S = 0.05  # file times come from the kernel's coarse clock, a few ms behind time.time()


class AbortTrial(Exception):
    """A second interrupt while a trial trains: end that trial now, as failed."""


class StopControl:
    """Collects stop requests from signals, the keyboard and a STOP file.

    Args:
        stop_file: a file whose appearance asks for a stop (`<log_dir>/<study>/STOP`); more
            can be added with `watch`.
        notify: receives one line when a request arrives.
        keyboard: watch for `q` (only when stdin is a terminal in the foreground).
        started: STOP files older than this are ignored (default: now).
    """

    def __init__(self, stop_file: Path, notify: Callable[[str], None] = print, keyboard: bool = True,
                 started: float | None = None) -> None:
        self.stop_files = [stop_file]
        self.notify = notify
        self.keyboard = keyboard
        self.started = time.time() if started is None else started
        self.reason: str | None = None
        self.in_trial = False  # set by the objective around `trainer.fit`
        self.aborted = False
        self.abort_signal = "stop signal"  # the name of the signal that aborted the trial, once one has
        self.signals = 0  # SIGINT/SIGTERM received: the first stops gracefully, the second aborts
        self._messages: list[str] = []  # said by the watcher thread, never inside a signal handler
        self._old: dict[int, object] = {}
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests -------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """Whether a stop was asked for (looks at the STOP file too)."""
        self.check_file()
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask for a stop after the running trial (the first reason is kept)."""
        if self.reason is None:
            self.reason = reason
            again = "again" if self.signals else "twice"
            self._messages.append(f"stop requested ({reason}): the running trial finishes, then "
                                  f"outputs are written; Ctrl-C {again} aborts the trial")

    def flush(self) -> None:
        """Say what was requested since the last call."""
        while self._messages:
            self.notify(self._messages.pop(0))

    def watch(self, stop_file: Path) -> None:
        """Also stop when `stop_file` appears (a sweep watches each study's folder in turn)."""
        if stop_file not in self.stop_files:
            self.stop_files.append(stop_file)

    def check_file(self) -> None:
        for path in list(self.stop_files):
            try:
                touched = path.stat().st_mtime
            except OSError:
                continue
            if touched >= self.started - CLOCK_SLACK_S:  # older: left from the run this one resumes
                self.request(f"{path} found")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals += 1
        if self.signals == 1:
            self.request(name)
        elif self.in_trial and not self.aborted:
            self.aborted, self.abort_signal = True, name
            raise AbortTrial(f"aborted by a second {name}")
        else:
            self._messages.append(f"{name}: already stopping")

    def install_signals(self) -> None:
        """(Re)install this object's handlers; the main thread only, as Python requires.

        Lightning installs its own SIGTERM handler for each `fit`, which would end the trial at
        the next batch; the objective calls this again once the fit has started.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            old = signal.signal(sig, self._on_signal)
            self._old.setdefault(sig, old)

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> StopControl:
        self.install_signals()
        self._thread = threading.Thread(target=self._watch, name="hpo-stop-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_S)
        self.flush()
        if threading.current_thread() is threading.main_thread():
            for sig, old in self._old.items():
                signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()

    def _watch(self) -> None:
        fd = _terminal_stdin() if self.keyboard else None
        if fd is None:
            while not self._halt.wait(POLL_S):
                self.check_file()
                self.flush()
            return
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)  # keys arrive one by one, without Enter; output is untouched
            while not self._halt.is_set():
                ready, _, _ = select.select([fd], [], [], POLL_S)
                if ready and os.read(fd, 1) in (b"q", b"Q"):
                    self.request("q key")
                self.check_file()
                self.flush()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminal_stdin() -> int | None:
    """stdin's descriptor when it is a terminal this process owns (foreground), else None."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None
