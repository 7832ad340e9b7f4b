"""What `forecast isoflop` writes into `--out`: isoflop.csv, law.json (the frontier N_opt(C) per training-years
value, and L(N, D) per compute budget), isoflop.png, frontier.png and isoflop.md (the report's "Compute" section).

Each finished cell (compute budget, training years, size) is one arm of the report's joint bootstrap
(`stats.paired_bootstrap`): its probabilities [seeds, test dates pooled over the folds] (every training-years
value is tested on the same dates), so the intervals come from the same date-and-seed draws as every other claim,
refitted on each draw (`law.fit_frontier`, `law.fit_law`).

- The frontier N_opt(C) is fitted per training-years value: each value is its own iso-FLOP grid (fewer years
  means more passes over the same samples at a given C, so its optimum may sit elsewhere), and pooling them would
  mix that with size. law.json's "compute" is the frontier of the value with most history (all years when run).
- L(N, D) = E + A/N^alpha + B/D^beta (`law.fit_law`, the one fitter) is fitted per compute budget over its cells'
  sizes and distinct training tokens D (the kept years' training samples x patches per window, mean over the
  folds), where the budget has >= `MIN_POINTS` distinct D and >= 2 sizes; otherwise it is descriptive only.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forecast.core.errors import ForecastError
from forecast.core.files import atomic_path, write_json_atomic, write_text_atomic
from forecast.hpo.years import ALL
from forecast.report.isoflop import Isoflop
from forecast.report.law import (
    DESCRIPTIVE,
    LAW,
    MIN_POINTS,
    NO_EVIDENCE,
    Frontier,
    fit_frontier,
    fit_law,
    interval_record,
)
from forecast.report.stats import Arm, paired_bootstrap

SECTION = "isoflop.md"  # the "Compute" section; `forecast report` into the same --out appends it to report.md
COMPUTE_KEYS = ("compute", "compute_by_train_years", "data_law", "skipped")  # isoflop's part of law.json; "series" is the report's


def read_law(out: Path) -> dict[str, Any]:
    """law.json of `out` as written so far (by `forecast report` or `forecast isoflop`), or {} when there is none.

    Raises:
        ForecastError: it is not a JSON object.
    """
    path = out / "law.json"
    if not path.is_file():
        return {}
    try:
        law = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ForecastError(f"{path} is not readable JSON ({err}); remove it or choose another --out") from None
    if not isinstance(law, dict):
        raise ForecastError(f"{path} is not a JSON object; remove it or choose another --out")
    return law


def compute_part(out: Path) -> dict[str, Any]:
    """The compute axis a `forecast isoflop` wrote into `out`'s law.json (kept when the report rewrites it)."""
    law = read_law(out)
    return {k: law[k] for k in COMPUTE_KEYS if k in law}


def compute_section(out: Path) -> str:
    """The "Compute" section a `forecast isoflop` wrote into `out`, for report.md ("" when none)."""
    path = out / SECTION
    return "\n" + path.read_text() if path.is_file() else ""


COLUMNS = ("compute", "train_years", "budget", "params", "lr", "lr_source", "fold", "seed", "steps", "batch",
           "epochs", "train_samples", "train_tokens", "samples_seen", "tokens_seen", "flops", "val_loss", "loss",
           "auroc", "wall_s")


def table(iso: Isoflop) -> pd.DataFrame:
    """One row per finished cell x fold x seed (isoflop.csv)."""
    rows = [{k: r[k] for k in COLUMNS} for r in iso.results]
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values(["compute", "train_years", "params", "fold", "seed"])


@dataclass
class Arms:
    """The complete cells (every fold x seed done) as bootstrap arms, with what each one is."""

    y: np.ndarray  # [D] the labels over the folds
    arms: list[Arm]
    compute: list[float]
    years: list[str]
    tokens: list[float]  # distinct training tokens D, mean over the folds


def arms(iso: Isoflop) -> Arms:
    """The labels [D] over the folds, one arm per complete cell (every fold x seed done), its compute, training
    years and distinct training tokens."""
    y = np.concatenate([f.labels for f in iso.folds]).astype(float)
    by = {(r["compute"], r["train_years"], r["budget"], r["fold"], r["seed"]): r for r in iso.results}
    out = Arms(y, [], [], [], [])
    for c in iso.cells:
        keys = [[(c.compute, c.years, c.size.budget, f.index, s) for f in iso.folds] for s in iso.seeds]
        if c.skipped or not all(k in by for row in keys for k in row):
            continue
        probs = np.array([np.concatenate([by[k]["probs"] for k in row]) for row in keys], dtype=float)
        out.arms.append(Arm(f"C={c.compute:.3g} {c.size.budget} {c.years}", probs, float(c.size.params)))
        out.compute.append(c.compute)
        out.years.append(c.years)
        out.tokens.append(float(np.mean([by[k]["train_tokens"] for k in keys[0]])))
    return out


@dataclass
class Fits:
    """What the outputs show: the frontier per training-years value (most history first) and L(N, D) per compute
    budget, over one joint bootstrap of every complete cell."""

    cells: Arms
    draws: Any  # stats.Draws (None with no complete cell)
    frontiers: dict[str, Frontier] = field(default_factory=dict)
    data_laws: list[dict[str, Any]] = field(default_factory=list)

    @property
    def main(self) -> Frontier | None:
        """The frontier of the value with most history (law.json's "compute")."""
        return next(iter(self.frontiers.values()), None)


def _amount(years: str) -> float:
    return math.inf if years == ALL else float(years)


def fit_all(iso: Isoflop, draws: int) -> Fits:
    """The frontier per training-years value and L(N, D) per compute budget, on one joint bootstrap."""
    cells = arms(iso)
    if not cells.arms:
        return Fits(cells, None)
    d = paired_bootstrap(cells.y, cells.arms, draws=draws, auroc=False)
    fits = Fits(cells, d)
    for years in sorted(set(cells.years), key=_amount, reverse=True):
        j = [i for i, v in enumerate(cells.years) if v == years]
        fits.frontiers[years] = fit_frontier([cells.compute[i] for i in j], [cells.arms[i].params for i in j],
                                             d.loss[j], d.loss_draws[:, j])
    fits.data_laws = [data_law(c, cells, d) for c in sorted(set(cells.compute))]
    return fits


def data_law(compute: float, cells: Arms, d: Any) -> dict[str, Any]:
    """L(N, D) over one compute budget's complete cells (sizes x training years), or why it is not fitted."""
    j = [i for i, c in enumerate(cells.compute) if c == compute]
    n = np.array([cells.arms[i].params for i in j])
    tokens = np.array([cells.tokens[i] for i in j])
    points = [{"name": cells.arms[i].name, "N": float(n[k]), "D": float(tokens[k]), "train_years": cells.years[i],
               "loss": interval_record(d.loss[i], d.loss_draws[:, i])} for k, i in enumerate(j)]
    record: dict[str, Any] = {"compute": compute, "form": "L(N, D) = E + A/N^alpha + B/D^beta",
                              "D": "distinct training tokens (kept training samples x patches per window)",
                              "points": points, "fit": None}
    distinct_d, distinct_n = len(np.unique(tokens)), len(np.unique(n))
    if distinct_d < MIN_POINTS or distinct_n < 2:
        why = (f"{distinct_d} distinct values of D (< {MIN_POINTS}; --train-years gives more)"
               if distinct_d < MIN_POINTS else "one size: no N term")
        return {**record, "status": DESCRIPTIVE, "why": f"{why}: not fitted, descriptive only"}
    fit = fit_law(np.stack([n, tokens], axis=1), d.loss[j], d.loss_draws[:, j] if len(d.loss_draws) else None,
                  ("N", "D"))
    claimed = [name for k, name in enumerate(("alpha", "beta")) if fit.claimed(k)]
    if claimed:
        status, why = LAW, f"{' and '.join(claimed)} claimed: interval above 0 and the loss falls along the axis"
    elif fit.hits:
        status, why = NO_EVIDENCE, f"the fit hits a bound ({'; '.join(fit.hits)})"
    else:
        status, why = NO_EVIDENCE, "no exponent's interval lies above 0 with the loss falling along its axis"
    return {**record, "status": status, "why": why, "fit": fit.record()}


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


YEARS_STYLE = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))  # line style and marker per training-years value


def isoflop_figure(fits: Fits) -> Figure:
    """Loss against size, one curve per (compute budget, training years), each fitted minimum marked."""
    fig, ax = _figure()
    cells, loss = fits.cells, fits.draws.loss
    colours = {c: f"C{k % 10}" for k, c in enumerate(sorted(set(cells.compute)))}
    several = len(fits.frontiers) > 1
    for (ls, marker), (years, front) in zip(itertools.cycle(YEARS_STYLE), fits.frontiers.items()):
        for c in sorted(set(cells.compute)):
            idx = [j for j, (cj, yj) in enumerate(zip(cells.compute, cells.years, strict=True))
                   if cj == c and yj == years]
            if not idx:
                continue
            n = np.array([cells.arms[j].params for j in idx])
            order = np.argsort(n)
            label = f"C = {c:.2g} FLOPs" + (f", {years} years" if several else "")
            ax.plot(n[order], loss[idx][order], marker=marker, ls=ls, color=colours[c], label=label)
            b = next((b for b in front.budgets if b["compute"] == c), None)
            if b is not None:
                ax.plot([b["best_size"]], [b["loss_at_best_size"]], "x" if b["excluded"] else "*",
                        color=colours[c], markersize=11)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (exact)")
    ax.set_ylabel("pooled test loss (BCE)")
    ax.set_title("iso-FLOP profiles (*: fitted minimum, x: left out)")
    ax.legend(fontsize=7)
    return fig


def frontier_figure(fits: Fits) -> Figure:
    """N_opt against C per training-years value, with the fitted line (when fitted); left-out budgets hollow."""
    fig, ax = _figure()
    several = len(fits.frontiers) > 1
    statuses = []
    for k, (years, front) in enumerate(fits.frontiers.items()):
        colour = f"C{k % 10}"
        name = f"{years} years: " if several else ""
        statuses.append(f"{name}{front.status}")
        for b in front.budgets:
            ax.plot([b["compute"]], [b["best_size"]], "o", mfc="none" if b["excluded"] else colour, color=colour)
        a, g = front.exponent.estimate, front.coefficient.estimate
        if math.isfinite(a):
            c = np.geomspace(min(b["compute"] for b in front.budgets), max(b["compute"] for b in front.budgets), 50)
            ax.plot(c, 10 ** (g + a * np.log10(c)), "--", color=colour, label=f"{name}N_opt = G C^a, a = {a:.3f}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("N_opt (parameters)")
    ax.set_title(f"compute frontier: {'; '.join(statuses)}", fontsize=9)
    return fig


def _frontier_lines(front: Frontier, years: str | None) -> list[str]:
    name = "" if years is None else f" ({years} training years)"
    lines = ["", f"Frontier N_opt(C) = G C^a{name}: **{front.status}** ({front.why}); degenerate share "
             f"{front.degenerate_share:.2f}."]
    lines += [f"- C={b['compute']:.3g} left out: {b['reason']}" for b in front.budgets if b["excluded"]]
    if front.check is not None:
        ch = front.check
        lines.append(f"- held-out check at C={ch.held_out:.3g}: log10 N_opt predicted {ch.predicted.text(3)}, "
                     f"observed {ch.observed.text(3)}: {'passed' if ch.passed else 'FAILED'}")
    else:
        lines.append(f"- held-out check: none{f' ({front.check_note})' if front.check_note else ''}")
    return lines


def section(iso: Isoflop, fits: Fits, frame: pd.DataFrame) -> str:
    """The "Compute" section of the report (markdown)."""
    lines = ["## Compute", ""]
    failed = [y for y, f in fits.frontiers.items() if f.failed]
    if failed:
        lines += [f"**The frontier's held-out check FAILED** ({', '.join(failed)} training years): the largest "
                  "included budget's N_opt lies outside what the smaller budgets predict.", ""]
    lines.append(f"Iso-FLOP runs: {len(iso.results)} runs over {len(iso.folds)} folds x {len(iso.seeds)} seeds; "
                 "each run trains exactly C FLOPs (steps = floor(C / (FLOPs per sample x batch))), early "
                 "stopping off, the cosine schedule ending at the budget, tested with its final weights.")
    for c in iso.cells:
        if c.skipped:
            years = "" if c.years == ALL else f" {c.years} years"
            lines.append(f"- skipped C={c.compute:.3g} {c.size.budget}{years}: {c.skipped}")
    lines += [f"- failed: {f}" for f in iso.failed]
    if not frame.empty:
        means = frame.groupby(["compute", "train_years", "budget", "params"], as_index=False).agg(
            lr=("lr", "first"), lr_source=("lr_source", "first"), steps=("steps", "first"),
            epochs=("epochs", "mean"), loss=("loss", "mean"), auroc=("auroc", "mean"))
        lines += ["", "| C (FLOPs) | training years | budget | params | lr (source) | steps | epochs | loss | AUROC |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.compute:.3g} | {r.train_years} | {r.budget} | {r.params:,} | {r.lr:.3g} ({r.lr_source}) | "
                  f"{r.steps} | {r.epochs:.2f} | {r.loss:.4f} | {r.auroc:.3f} |"
                  for r in means.sort_values(["compute", "train_years", "params"]).itertuples()]
    for years, front in fits.frontiers.items():
        lines += _frontier_lines(front, years if len(fits.frontiers) > 1 else None)
    for law in fits.data_laws:
        lines.append(f"- L(N, D) at C={law['compute']:.3g}: **{law['status']}** ({law['why']})")
    return "\n".join(lines) + "\n"


def write_outputs(iso: Isoflop, out: Path, draws: int) -> Frontier | None:
    """Write isoflop.csv, law.json, isoflop.png, frontier.png and isoflop.md into `out`; the main frontier."""
    out.mkdir(parents=True, exist_ok=True)
    frame = table(iso)
    with atomic_path(out / "isoflop.csv") as tmp:
        frame.to_csv(tmp, index=False)
    fits = fit_all(iso, draws)
    front = fits.main
    record = {"compute": None if front is None else front.record(),
              "compute_by_train_years": {y: f.record() for y, f in fits.frontiers.items()},
              "data_law": fits.data_laws,
              "skipped": [{"compute": c.compute, "train_years": c.years, "budget": c.size.budget,
                           "reason": c.skipped} for c in iso.cells if c.skipped]}
    write_json_atomic(out / "law.json", {**read_law(out), **record})  # the report's "series" kept
    if front is not None:
        _save(isoflop_figure(fits), out / "isoflop.png")
        _save(frontier_figure(fits), out / "frontier.png")
    write_text_atomic(out / SECTION, section(iso, fits, frame))
    return front
