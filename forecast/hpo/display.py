"""What a running search shows: a Rich live panel on a terminal, plain lines otherwise; one line per
trial and one per study at its end; nothing of Optuna's or Lightning's own logging (`quiet_search`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from forecast.core.metric_names import MONITOR
from forecast.hpo.outputs import best_trial, counts, n_finished
from forecast.hpo.stop import AbortTrial

if TYPE_CHECKING:
    from forecast.hpo.loop import Outcome


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


def show_study(display: Display, name: str, target: int, study: optuna.Study, trials: Sequence[FrozenTrial]) -> None:
    """The panel's numbers for one study: finished/N, counts by outcome, the best trial."""
    best = best_trial(study)
    text = "-" if best is None else f"{best.value:.5g} (trial {best.number}, {best.user_attrs.get('arch_id')})"
    display.update(study=name, target=target, finished=n_finished(trials), counts=counts(trials), best=text)


def trial_line(t: FrozenTrial) -> str:
    """`trial 3 pruned d32-l2-h4-f2 (4 epochs, 12 s): ...`: how one trial ended."""
    a = t.user_attrs
    value = f" {MONITOR}={t.value:.5g}" if t.value is not None and t.state == TrialState.COMPLETE else ""
    why = a.get("reason", t.state.name.lower())
    if why in ("surplus", "refused"):
        return f"trial {t.number} not run: {a.get('message')}"
    message = f": {a['message']}" if a.get("message") and why not in ("complete",) else ""
    return (f"trial {t.number} {why}{value} {a.get('arch_id')} ({a.get('epochs_run')} epochs, "
            f"{a.get('wall_s', 0):.0f} s){message}")


def closing_line(outcome: Outcome, study: optuna.Study) -> str:
    """How a study's run ended, its best trial, where its summary is, and whether a rerun continues it."""
    best = best_trial(study)
    best_text = "no complete trial" if best is None else f"best {MONITOR} {best.value:.5g} (trial {best.number})"
    verb = {"done": "done", "stopped": "stopped", "timeout": "timed out", "aborted": "aborted"}[outcome.ending]
    rerun = "" if outcome.ending == "done" else "; rerun the same command to continue"
    return (f"study {outcome.study} {verb}: {outcome.finished}/{outcome.target} trials finished, {best_text}; "
            f"see {outcome.folder / 'summary.md'}{rerun}")


class NoAbortTrace(logging.Filter):
    """Optuna logs a trial that raised with its traceback; for AbortTrial (a second Ctrl-C, the
    user's own doing) the warning line and the closing line say enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AbortTrial):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def quiet_search() -> Iterator[None]:
    """Lightning's per-trial lines and Optuna's own log stay out: the search prints one line per trial."""
    from forecast.training.messages import quiet_lightning

    optuna_level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures too: the search prints its own line per trial
    # private API: Optuna logs a trial's traceback under its private module's logger; no public switch for it
    no_trace, optimize_log = NoAbortTrace(), logging.getLogger("optuna.study._optimize")
    optimize_log.addFilter(no_trace)
    try:
        with quiet_lightning():
            yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        optimize_log.removeFilter(no_trace)
