"""What a running search shows: a Rich live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from forecast.core.metric_names import MONITOR


@dataclass
class Status:
    """The numbers the panel shows."""

    study: str
    target: int
    finished: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    best: str = "-"
    trial: str = "-"
    epoch: str = ""
    note: str = ""


class Display:
    """Live panel (trials done/N, best so far, the running trial's epoch) or plain lines.

    Args:
        study: the study name.
        target: N, the finished trials the search aims for.
        live: draw a live panel; default when stdout is a terminal.
        hint: how to stop, shown on the panel.
    """

    def __init__(self, study: str, target: int, live: bool | None = None, hint: str = "") -> None:
        self.status = Status(study, target, note=hint)
        self.live_enabled = sys.stdout.isatty() if live is None else live
        self.console = Console()
        self._live: Live | None = None

    def __enter__(self) -> Display:
        if self.live_enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4,
                              redirect_stdout=True, redirect_stderr=True)
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def say(self, line: str) -> None:
        """One line above the panel (or on stdout)."""
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def update(self, **changes: Any) -> None:
        """Change shown fields (see `Status`) and redraw."""
        for key, value in changes.items():
            setattr(self.status, key, value)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Table:
        s = self.status
        counts = ", ".join(f"{n} {state}" for state, n in s.counts.items() if n) or "none yet"
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("study", s.study)
        table.add_row("trials", f"{s.finished}/{s.target} finished ({counts})")
        table.add_row("best", f"{MONITOR} {s.best}")
        table.add_row("running", f"{s.trial} {s.epoch}".strip())
        if s.note:
            table.add_row("", s.note)
        return table
