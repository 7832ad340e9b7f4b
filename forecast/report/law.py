"""The scaling law: one fitter for the parameter (N), data (D) and compute (C) axes.

Forms (x_j in the axis' own units, r_j = the geometric mean of axis j's values, so c_j is in units of loss):

- `fit_law`: L = E + sum_j c_j (x_j / r_j)^(-p_j) over one axis, L(N) = E + A/N^alpha or L(D) = E + B/D^beta,
  or two, L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla, arXiv 2203.15556); A = c_N r_N^alpha in the field's units.
- `fit_frontier`: the compute-optimal size N_opt(C) = G C^a from iso-FLOP points (C, N, loss).

How the law is fitted: the field's objective, SUM over points of Huber_delta(log L_hat - log L) with delta = 1e-3,
summed, never averaged (an averaged objective let the optimizer stop early: the replication, arXiv 2404.10102),
minimised in two steps:

1. Variable projection (grid of starts): on a grid over the exponents, (E, c_1, ..) >= 0 is linear, solved exactly
   by non-negative least squares of the relative residual (L_hat / L - 1 ~ log L_hat - log L), for every bootstrap
   draw at once; each draw keeps the cell whose NNLS solution has the lowest Huber objective. No start for E, A or
   B is guessed, and the non-convex search is over one or two exponents only, which is why it is stable.
2. L-BFGS-B from that cell on the Huber objective itself, with E, c_j >= 0 and every exponent inside `EXPONENTS`.

A fit "hits a bound" when E or a c_j is 0 or an exponent sits on an end of `EXPONENTS`: the form does not describe
the points (a vanished term, or an exponent on the lower end, counts as exponent 0, "no scaling", in the intervals).

Intervals: the fit is repeated on every joint bootstrap draw of the report (`stats.paired_bootstrap`: dates in
stationary blocks x seeds, the same draws as every paired claim), and each parameter's interval is the 95%
percentile interval of its refits; the share of draws whose fit hits a bound is reported beside it. An exponent is
claimed only when its interval lies above 0, the full-sample fit hits no bound and the loss's OLS slope per decade of
the axis has an interval below 0 (`LawFit.claimed`: the bootstrap misjudges a bounded exponent near 0); with fewer
than `MIN_POINTS` distinct values on an axis nothing is fitted (descriptive only).

The held-out check (Porian et al., arXiv 2406.19146): the largest size (compute budget) is held out, the law fitted
on the rest predicts it on every draw, and the check passes when the interval of observed - predicted (paired by
draw, so it holds both noises) covers 0.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

from forecast.report.stats import LEVEL, Interval

HUBER_DELTA = 1e-3  # Chinchilla's delta on log loss
MIN_POINTS = 4  # distinct values on an axis before a law is fitted (3 parameters + one degree of freedom)
# A frontier exponent is claimed only when at most this share of the bootstrap draws moved an included budget's
# minimum to its grid's edge: beyond it, the interval's tails are the grid's edges rather than the data's minima.
MAX_DEGENERATE = 0.05
EXPONENTS = (0.01, 3.0)  # the range an exponent may take; a fit on either end hits a bound
GRID = {1: 64, 2: 24}  # grid cells per exponent for one axis / two axes (24 x 24 = 576 cells)
CHUNK = 64  # bootstrap rows solved at once in the grid step (bounds its memory: cells x rows x points x terms)
LAW, NO_EVIDENCE, DESCRIPTIVE = "law", "no evidence", "descriptive"


def _huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _interval(estimate: float, drawn: np.ndarray, level: float = LEVEL) -> Interval:
    """`estimate` with the percentile interval of its finite draws (NaN bounds with fewer than 2)."""
    drawn = np.asarray(drawn, dtype=float)
    drawn = drawn[np.isfinite(drawn)]
    if len(drawn) < 2:
        return Interval(float(estimate), math.nan, math.nan, len(drawn))
    lo, hi = np.quantile(drawn, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(estimate), float(lo), float(hi), len(drawn))


# ------------------------------------------------------------------------------ L(N), L(D), L(N, D)


@dataclass(frozen=True)
class LawFit:
    """A fitted L = E + sum_j c_j (x_j / r_j)^(-p_j) and its refits on the bootstrap draws.

    Attributes:
        axes: the axes' names, ("N",), ("D",) or ("N", "D").
        refs: r_j per axis (geometric mean of the fitted values).
        theta: full-sample (E, c_1..c_k, p_1..p_k).
        draws: [B, 1 + 2k] the same, refitted on each draw (B = 0 without a bootstrap).
        bound: [B] the draw's fit hit a bound.
        hits: the bounds the full-sample fit hit ("E = 0", "A = 0", "alpha = 3", ...).
        trend: [1 + B, k] the OLS slope of loss per decade of each axis (full sample, then each draw).
    """

    axes: tuple[str, ...]
    refs: tuple[float, ...]
    theta: np.ndarray
    draws: np.ndarray
    bound: np.ndarray
    hits: tuple[str, ...]
    trend: np.ndarray

    @property
    def k(self) -> int:
        return len(self.axes)

    def predict(self, x: np.ndarray, draws: bool = False) -> np.ndarray:
        """L at points x [P, k] (full fit: [P]; `draws`: [B, P])."""
        theta = self.draws if draws else self.theta[None, :]
        out = _predict(theta, np.log(np.asarray(x, dtype=float).reshape(-1, self.k) / np.asarray(self.refs)))
        return out if draws else out[0]

    @property
    def degenerate_share(self) -> float:
        return float(self.bound.mean()) if len(self.bound) else math.nan

    def exponent(self, j: int) -> Interval:
        """Axis j's exponent; a vanished term (c_j = 0, or p_j on its lower bound) counts as 0 (no scaling)."""
        return _interval(_exponent(self.theta[None, :], j, self.k)[0], _exponent(self.draws, j, self.k))

    def coefficient(self, j: int) -> Interval:
        """A (or B) in the field's units: c_j * r_j^p_j."""
        def field_units(t: np.ndarray) -> np.ndarray:
            return t[:, 1 + j] * self.refs[j] ** t[:, 1 + self.k + j]
        return _interval(field_units(self.theta[None, :])[0], field_units(self.draws))

    @property
    def irreducible(self) -> Interval:
        return _interval(self.theta[0], self.draws[:, 0])

    def falls(self, j: int) -> Interval:
        """The OLS slope of loss per decade of axis j, with its interval over the draws."""
        return _interval(self.trend[0, j], self.trend[1:, j])

    def claimed(self, j: int) -> bool:
        """Axis j's exponent is claimed: the full fit hits no bound, the exponent's interval lies above 0 and
        the loss falls along the axis (the interval of its OLS slope per decade lies below 0).

        The last condition guards the first: a percentile interval of an exponent bounded at 0 is unreliable near
        the bound (the bootstrap fails at the edge of a parameter space), while the slope is unbounded. Measured on
        flat simulated losses (tests/test_report_law.py): with exponents on the lower bound counted as real ones,
        19 of 200 studies claimed an exponent; counted as 0 (`exponent`) and with this guard, 2 of 200.
        """
        iv, trend = self.exponent(j), self.falls(j)
        return (not self.hits and math.isfinite(iv.lo) and iv.lo > 0 and math.isfinite(trend.hi)
                and trend.hi < 0)

    def record(self) -> dict[str, Any]:
        """law.json's parameters: E, each coefficient (field units) and exponent with intervals, bounds hit."""
        names = {"N": ("A", "alpha"), "D": ("B", "beta")}
        out: dict[str, Any] = {"form": _form(self.axes), "E": _iv(self.irreducible),
                               "degenerate_share": _num(self.degenerate_share), "bounds_hit": list(self.hits),
                               "draws": len(self.draws), "reference": dict(zip(self.axes, self.refs, strict=True))}
        for j, axis in enumerate(self.axes):
            coef, power = names.get(axis, (f"c_{axis}", f"p_{axis}"))
            out[coef] = _iv(self.coefficient(j))
            out[power] = {**_iv(self.exponent(j)), "claimed": self.claimed(j)}
            out[f"loss_slope_per_decade_{axis}"] = _iv(self.falls(j))
        return out


def _form(axes: Sequence[str]) -> str:
    terms = {"N": "A/N^alpha", "D": "B/D^beta"}
    return f"L({', '.join(axes)}) = E + " + " + ".join(terms.get(a, f"c/{a}^p") for a in axes)


def _exponent(theta: np.ndarray, j: int, k: int) -> np.ndarray:
    """Axis j's exponent per row; 0 ("no scaling") where its term vanished (c_j = 0) or the exponent sits on the
    lower end of `EXPONENTS` (there c_j x^-p is nearly a constant, absorbed into E)."""
    p = theta[:, 1 + k + j]
    flat = (theta[:, 1 + j] <= 0) | (p <= EXPONENTS[0] + 1e-6 * (EXPONENTS[1] - EXPONENTS[0]))
    return np.where(flat, 0.0, p)


def _predict(theta: np.ndarray, lz: np.ndarray) -> np.ndarray:
    """theta [R, 1 + 2k], log(x / r) [P, k] -> L [R, P]."""
    k = lz.shape[1]
    c, p = theta[:, 1:1 + k], theta[:, 1 + k:]
    return theta[:, :1] + np.einsum("rj,rpj->rp", c, np.exp(-p[:, None, :] * lz[None, :, :]))


def fit_law(x: np.ndarray, loss: np.ndarray, draws: np.ndarray | None = None,
            axes: Sequence[str] = ("N",)) -> LawFit:
    """Fit L = E + sum_j c_j (x_j / r_j)^(-p_j) to the points and refit it on every bootstrap draw.

    Args:
        x: [P] or [P, k] positive axis values (parameters, training samples, ...).
        loss: [P] full-sample loss per point.
        draws: [B, P] the same points' loss on each joint bootstrap draw (None: no intervals).
        axes: the name of each column of x.

    Returns:
        The fit; see `LawFit`.
    """
    x = np.asarray(x, dtype=float).reshape(len(loss), -1)
    if x.shape[1] != len(axes) or not (x > 0).all():
        raise ValueError(f"x must be [points, {len(axes)}] and positive")
    refs = tuple(float(v) for v in np.exp(np.log(x).mean(axis=0)))
    lz = np.log(x / np.asarray(refs))  # [P, k]
    y = np.vstack([np.asarray(loss, dtype=float)[None, :],
                   np.empty((0, len(loss))) if draws is None else np.asarray(draws, dtype=float)])  # [1 + B, P]
    theta = np.array([_polish(t, lz, row) for t, row in zip(_grid(lz, y), y, strict=True)])
    scale = float(np.mean(np.abs(y[0])))
    hits = _hits(theta, len(axes), scale)
    names = _bound_names(axes)
    return LawFit(tuple(axes), refs, theta[0], theta[1:], hits[1:].any(axis=1),
                  tuple(n for n, h in zip(names, hits[0], strict=True) if h), _trend(np.log10(x), y))


def _trend(log_x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slopes of each row of y [R, P] on [1, log10 x] [P, k]: [R, k] (loss per decade of each axis)."""
    design = np.concatenate([np.ones((len(log_x), 1)), log_x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y.T, rcond=None)  # [1 + k, R]
    return coef[1:].T


def _cells(k: int) -> np.ndarray:
    """The exponent grid [G, k]: log-spaced over `EXPONENTS`, both ends included."""
    one = np.geomspace(*EXPONENTS, GRID[k])
    return np.array(list(itertools.product(one, repeat=k)))


def _grid(lz: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Variable projection: per row of y [R, P], the grid cell and NNLS (E, c) of least Huber objective: [R, 1+2k]."""
    k = lz.shape[1]
    cells = _cells(k)  # [G, k]
    design = np.concatenate([np.ones((len(cells), lz.shape[0], 1)),
                             np.exp(-cells[:, None, :] * lz[None, :, :])], axis=2)  # [G, P, m], m = 1 + k
    out = np.empty((len(y), 1 + 2 * k))
    for start in range(0, len(y), CHUNK):
        rows = y[start:start + CHUNK]  # [R, P]
        coef = _nnls_relative(design, rows)  # [G, R, m]
        pred = np.einsum("gpm,grm->grp", design, coef)
        objective = _huber(np.log(np.maximum(pred, 1e-300)) - np.log(rows)[None]).sum(axis=2)  # [G, R]
        best = np.argmin(objective, axis=0)  # [R]
        r = np.arange(len(rows))
        out[start:start + len(rows)] = np.concatenate([coef[best, r], cells[best]], axis=1)
    return out


def _nnls_relative(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min ||X c / y - 1||^2 over c >= 0 for every cell and row: design [G, P, m], y [R, P] -> c [G, R, m].

    Exact NNLS by its active sets: the optimum is the least-squares solution on its own support, so it is the
    feasible (all >= 0) subset solution of least residual; with m <= 3 terms there are at most 7 subsets.
    """
    g, _, m = design.shape
    xw = design[:, None, :, :] / y[None, :, :, None]  # [G, R, P, m]
    gram = np.einsum("grpm,grpn->grmn", xw, xw)
    rhs = xw.sum(axis=2)  # X^T 1: [G, R, m]
    best = np.zeros((g, len(y), m))
    best_res = np.full((g, len(y)), float(y.shape[1]))  # c = 0: ||0 - 1||^2 = P
    for size in range(1, m + 1):
        for subset in itertools.combinations(range(m), size):
            s = list(subset)
            a = gram[:, :, s][:, :, :, s]
            a = a + 1e-12 * np.eye(size) * np.trace(a, axis1=2, axis2=3)[..., None, None]  # collinear cells
            sol = np.linalg.solve(a, rhs[:, :, s][..., None])[..., 0]  # [G, R, size]
            res = y.shape[1] - np.einsum("grs,grs->gr", sol, rhs[:, :, s])  # ||Xc - 1||^2 at the LS optimum
            better = (sol >= 0).all(axis=2) & (res < best_res)
            best_res = np.where(better, res, best_res)
            full = np.zeros_like(best)
            full[:, :, s] = sol
            best = np.where(better[..., None], full, best)
    return best


def _polish(theta: np.ndarray, lz: np.ndarray, y: np.ndarray) -> np.ndarray:
    """L-BFGS-B on the summed Huber of log residuals from the grid's best cell: (E, c, p) [1 + 2k]."""
    k = lz.shape[1]
    floor = 1e-12 * float(np.mean(y))
    log_y = np.log(y)

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        c, p = t[1:1 + k], t[1 + k:]
        terms = np.exp(-p[None, :] * lz)  # [P, k]
        pred = np.maximum(t[0] + terms @ c, floor)
        r = np.log(pred) - log_y
        slope = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / pred  # d huber / d pred
        grad = np.concatenate([[slope.sum()], slope @ terms, -(slope[:, None] * c[None, :] * lz * terms).sum(axis=0)])
        return float(_huber(r).sum()), grad

    bounds = [(0.0, None)] * (1 + k) + [EXPONENTS] * k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a flat or kinked objective warns; bounds hit are judged by `_hits`
        found = optimize.minimize(objective, theta, jac=True, method="L-BFGS-B", bounds=bounds,
                                  options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-10})
    # the grid's cell is kept when the optimizer could not improve on it
    return found.x if found.fun <= objective(theta)[0] else theta


def _hits(theta: np.ndarray, k: int, scale: float) -> np.ndarray:
    """[R, 1 + 2k] which parameter of each row sits on a bound: E, c_j at 0; p_j at an end of EXPONENTS."""
    tiny = 1e-9 * scale
    span = 1e-6 * (EXPONENTS[1] - EXPONENTS[0])
    zero = theta[:, :1 + k] <= tiny
    p = theta[:, 1 + k:]
    edge = (p <= EXPONENTS[0] + span) | (p >= EXPONENTS[1] - span)
    edge &= ~zero[:, 1:]  # a vanished term's exponent means nothing: its bound is "c = 0"
    return np.concatenate([zero, edge], axis=1)


def _bound_names(axes: Sequence[str]) -> list[str]:
    names = {"N": ("A", "alpha"), "D": ("B", "beta")}
    coef = [f"{names.get(a, ('c_' + a, ''))[0]} = 0" for a in axes]
    power = [f"{names.get(a, ('', 'p_' + a))[1]} on an end of {EXPONENTS}" for a in axes]
    return ["E = 0", *coef, *power]


# ------------------------------------------------------------------------------ the held-out check


@dataclass(frozen=True)
class HeldOut:
    """The largest point predicted by the law fitted without it.

    Attributes:
        at: the held-out point's axis value (size, compute budget, ...).
        predicted: the prediction and its interval over the draws.
        observed: the observed value and its interval over the same draws.
        difference: observed - predicted, draw by draw.
    """

    at: float
    predicted: Interval
    observed: Interval
    difference: Interval

    @property
    def passed(self) -> bool | None:
        """The difference's interval covers 0 (None: no interval)."""
        d = self.difference
        if not (math.isfinite(d.lo) and math.isfinite(d.hi)):
            return None
        return d.lo <= 0 <= d.hi

    @property
    def covers_observed(self) -> bool | None:
        """The prediction's own interval covers the observed value (None: no interval)."""
        p = self.predicted
        if not (math.isfinite(p.lo) and math.isfinite(p.hi)):
            return None
        return p.lo <= self.observed.estimate <= p.hi

    def record(self) -> dict[str, Any]:
        return {"held_out": self.at, "predicted": _iv(self.predicted), "observed": _iv(self.observed),
                "observed_minus_predicted": _iv(self.difference), "passed": self.passed,
                "prediction_interval_covers_observed": self.covers_observed}


def held_out_law(x: np.ndarray, loss: np.ndarray, draws: np.ndarray | None, axes: Sequence[str] = ("N",)) -> HeldOut:
    """Fit without the point of largest x (first axis), predict it on the full sample and every draw."""
    x = np.asarray(x, dtype=float).reshape(len(loss), -1)
    loss = np.asarray(loss, dtype=float)
    last = int(np.argmax(x[:, 0]))
    keep = np.arange(len(loss)) != last
    fit = fit_law(x[keep], loss[keep], None if draws is None else np.asarray(draws)[:, keep], axes)
    drawn_obs = np.empty(0) if draws is None else np.asarray(draws, dtype=float)[:, last]
    pred = float(fit.predict(x[last:last + 1])[0])
    drawn_pred = fit.predict(x[last:last + 1], draws=True)[:, 0] if len(fit.draws) else np.empty(0)
    return HeldOut(float(x[last, 0]), _interval(pred, drawn_pred), _interval(loss[last], drawn_obs),
                   _interval(loss[last] - pred, drawn_obs - drawn_pred))


# ------------------------------------------------------------------------------ one axis in the report


@dataclass(frozen=True)
class AxisLaw:
    """The law of one axis as the report says it.

    Attributes:
        axis: "N" (parameters), "D" (training data) or "C" (compute).
        status: `LAW` (the exponent is claimed), `NO_EVIDENCE` (fitted, but no exponent claimed) or
            `DESCRIPTIVE` (fewer than `MIN_POINTS` distinct values: not fitted).
        why: one sentence behind the status.
        points: the fitted points (name, x, loss with its interval).
        excluded: points left out, each with its reason.
        fit: the fit (None when descriptive).
        check: the held-out check (None with fewer than MIN_POINTS + 1 points); `check_note` says why not.
    """

    axis: str
    status: str
    why: str
    points: list[dict[str, Any]]
    excluded: list[dict[str, Any]] = field(default_factory=list)
    fit: LawFit | None = None
    check: HeldOut | None = None
    check_note: str = ""

    @property
    def failed(self) -> bool:
        return self.check is not None and self.check.passed is False

    def record(self) -> dict[str, Any]:
        return {"axis": self.axis, "status": self.status, "why": self.why, "points": self.points,
                "excluded": self.excluded, "fit": None if self.fit is None else self.fit.record(),
                "held_out_check": None if self.check is None else self.check.record(),
                "held_out_note": self.check_note, "huber_delta": HUBER_DELTA, "level": LEVEL}


def axis_law(axis: str, names: Sequence[str], x: Sequence[float], loss: Sequence[float],
             draws: np.ndarray | None, excluded: Sequence[dict[str, Any]] = ()) -> AxisLaw:
    """L(x) = E + A/x^p on one axis, with intervals, the held-out check of its largest value, and why.

    Args:
        axis: "N" or "D".
        names: one label per point ("2M", ...).
        x: the axis value per point.
        loss: full-sample loss per point.
        draws: [B, points] the joint bootstrap draws of the loss (None or B = 0: no intervals, nothing claimed).
        excluded: points already left out upstream, each {"name": .., "reason": ..}.
    """
    x_arr, y = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    d = None if draws is None or len(draws) == 0 else np.asarray(draws, dtype=float)
    points = [{"name": n, axis: float(v), "loss": _iv(_interval(value, [] if d is None else d[:, i]))}
              for i, (n, v, value) in enumerate(zip(names, x_arr, y, strict=True))]
    distinct = len(np.unique(x_arr))
    if distinct < MIN_POINTS:
        return AxisLaw(axis, DESCRIPTIVE, f"{distinct} distinct values of {axis} (< {MIN_POINTS}): not fitted, "
                       "descriptive only", points, list(excluded))
    fit = fit_law(x_arr, y, d, (axis,))
    iv, trend = fit.exponent(0), fit.falls(0)
    slope = f"loss per decade of {axis} {trend.text(4)}"
    if fit.claimed(0):
        status, why = LAW, f"exponent {iv.text(3)}: its {LEVEL:.0%} interval lies above 0, and the {slope} below 0"
    elif fit.hits:
        status, why = NO_EVIDENCE, f"the fit hits a bound ({'; '.join(fit.hits)}): no power law describes the points"
    elif d is None:
        status, why = NO_EVIDENCE, "no bootstrap draws: no interval, so no exponent is claimed"
    elif not iv.lo > 0:
        status, why = NO_EVIDENCE, f"exponent {iv.text(3)}: its {LEVEL:.0%} interval reaches 0 (no scaling)"
    else:
        status, why = NO_EVIDENCE, f"exponent {iv.text(3)}, but the {slope}: its interval reaches 0"
    check, note = None, f"needs {MIN_POINTS + 1} distinct values of {axis} (one held out), has {distinct}"
    if distinct > MIN_POINTS:
        check, note = held_out_law(x_arr, y, d, (axis,)), ""
    return AxisLaw(axis, status, why, points, list(excluded), fit, check, note)


# ------------------------------------------------------------------------------ the compute frontier


@dataclass(frozen=True)
class Frontier:
    """N_opt(C) = G C^a from iso-FLOP profiles.

    Attributes:
        budgets: one record per compute budget: its sizes, best size, loss, and why it was left out (or None).
        exponent: a with its interval over the draws (NaN when not fitted).
        coefficient: log10 G with its interval.
        degenerate_share: share of draws in which an included budget's minimum moved to its grid's edge.
        status, why: as `AxisLaw`.
        check: the largest included budget held out and predicted (log10 N_opt).
    """

    budgets: list[dict[str, Any]]
    exponent: Interval
    coefficient: Interval
    degenerate_share: float
    status: str
    why: str
    check: HeldOut | None = None
    check_note: str = ""

    @property
    def failed(self) -> bool:
        return self.check is not None and self.check.passed is False

    def record(self) -> dict[str, Any]:
        return {"axis": "C", "form": "N_opt(C) = G C^a", "status": self.status, "why": self.why,
                "budgets": self.budgets, "a": _iv(self.exponent), "log10_G": _iv(self.coefficient),
                "degenerate_share": _num(self.degenerate_share),
                "excluded": [b for b in self.budgets if b["excluded"]],
                "held_out_check": None if self.check is None else self.check.record(),
                "held_out_note": self.check_note, "level": LEVEL}


def profile_minimum(log_n: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum of one iso-FLOP profile on every row: log N [S] (increasing), loss [R, S] -> (log N_opt [R],
    edge [R]).

    The vertex of the parabola through the best size and its two neighbours (in log N), kept between them; a row
    whose best size is the smallest or largest of the grid is at the edge (its true minimum may lie outside).
    """
    best = np.argmin(loss, axis=1)
    edge = (best == 0) | (best == len(log_n) - 1)
    if len(log_n) < 3:
        return log_n[best], np.ones(len(loss), dtype=bool)
    c = np.clip(best, 1, len(log_n) - 2)
    x0, x1, x2 = log_n[c - 1], log_n[c], log_n[c + 1]
    r = np.arange(len(loss))
    y0, y1, y2 = loss[r, c - 1], loss[r, c], loss[r, c + 1]
    # vertex of the interpolating parabola (divided differences)
    d1, d2 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curv = (d2 - d1) / (x2 - x0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = 0.5 * (x0 + x1) - d1 / (2 * curv)
    vertex = np.where(curv > 0, np.clip(vertex, x0, x2), log_n[best])
    return np.where(edge, log_n[best], vertex), edge


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS of y [R, P] on x [P] per row: (slope [R], intercept [R])."""
    xc = x - x.mean()
    slope = ((y - y.mean(axis=1, keepdims=True)) * xc).sum(axis=1) / (xc**2).sum()
    return slope, y.mean(axis=1) - slope * x.mean()


def fit_frontier(compute: Sequence[float], size: Sequence[float], loss: Sequence[float],
                 draws: np.ndarray | None = None) -> Frontier:
    """N_opt(C) from iso-FLOP points, edge minima left out (Porian et al., arXiv 2406.19146).

    Per compute budget, N_opt is the vertex of the parabola (in log N) through the best size and its neighbours;
    a budget whose best size is the smallest or largest it ran is left out with that reason, as is one with fewer
    than 3 sizes. log10 N_opt = log10 G + a log10 C is fitted by least squares on the included budgets, on the
    full sample and on every draw (where the minima are found again).

    Args:
        compute: [P] training FLOPs of each point.
        size: [P] parameters of each point.
        loss: [P] full-sample loss.
        draws: [B, P] the same points' loss on each joint bootstrap draw.
    """
    c_all, n_all = np.asarray(compute, dtype=float), np.asarray(size, dtype=float)
    y = np.asarray(loss, dtype=float)[None, :]
    if draws is not None and len(draws):
        y = np.vstack([y, np.asarray(draws, dtype=float)])
    budgets, minima, edges = [], [], []
    for c in np.unique(c_all):
        own = np.flatnonzero(c_all == c)
        own = own[np.argsort(n_all[own])]
        log_n = np.log10(n_all[own])
        opt, edge = profile_minimum(log_n, y[:, own])
        best = int(np.argmin(y[0, own]))
        reason = None
        if len(own) < 3:
            reason = f"{len(own)} sizes: a minimum needs at least 3"
        elif edge[0]:
            which = "smallest" if best == 0 else "largest"
            reason = f"best size {n_all[own][best]:.3g} is the {which} tested: the minimum lies at the grid's edge"
        budgets.append({"compute": float(c), "sizes": n_all[own].tolist(), "best_size": float(10 ** opt[0]),
                        "loss_at_best_size": float(y[0, own][best]), "excluded": reason is not None,
                        "reason": reason})
        if reason is None:
            minima.append(opt)
            edges.append(edge)
    kept = [b["compute"] for b in budgets if not b["excluded"]]
    nan = Interval(math.nan, math.nan, math.nan)
    if len(kept) < MIN_POINTS:
        return Frontier(budgets, nan, nan, math.nan, DESCRIPTIVE,
                        f"{len(kept)} compute budgets with an interior minimum (< {MIN_POINTS}): descriptive only")
    log_c, log_opt = np.log10(kept), np.stack(minima, axis=1)  # [P'], [1 + B, P']
    slope, intercept = _line(log_c, log_opt)
    moved = np.stack(edges, axis=1)[1:].any(axis=1)
    a, g = _interval(slope[0], slope[1:]), _interval(intercept[0], intercept[1:])
    share = float(moved.mean()) if len(moved) else math.nan
    if math.isfinite(a.lo) and (a.lo > 0 or a.hi < 0) and share > MAX_DEGENERATE:
        status, why = NO_EVIDENCE, (f"exponent a = {a.text(3)}, but in {share:.0%} of the bootstrap draws (more than "
                                    f"{MAX_DEGENERATE:.0%}) an included budget's minimum moved to its grid's edge: "
                                    "the interval is the grid's, not the data's; add sizes around the minima")
    elif math.isfinite(a.lo) and (a.lo > 0 or a.hi < 0):
        status, why = LAW, f"exponent a = {a.text(3)}: its {LEVEL:.0%} interval excludes 0"
    else:
        status, why = NO_EVIDENCE, f"exponent a = {a.text(3)}: no interval excluding 0"
    check, note = None, f"needs {MIN_POINTS + 1} included budgets (one held out), has {len(kept)}"
    if len(kept) > MIN_POINTS:
        s, b0 = _line(log_c[:-1], log_opt[:, :-1])
        pred = b0 + s * log_c[-1]
        obs = log_opt[:, -1]
        check = HeldOut(float(kept[-1]), _interval(pred[0], pred[1:]), _interval(obs[0], obs[1:]),
                        _interval(obs[0] - pred[0], obs[1:] - pred[1:]))
        note = "log10 N_opt at the largest included budget"
    return Frontier(budgets, a, g, share, status, why, check, note)


# ------------------------------------------------------------------------------ json helpers


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _iv(iv: Interval) -> dict[str, float | None]:
    return {"estimate": _num(iv.estimate), "lo": _num(iv.lo), "hi": _num(iv.hi)}


def interval_record(estimate: float, drawn: np.ndarray) -> dict[str, float | None]:
    """law.json's {estimate, lo, hi}: `estimate` with the 95% percentile interval of its draws."""
    return _iv(_interval(estimate, drawn))
