"""The search space: the budget's architecture grid as structured choices, plus training settings.

A search-space YAML (configs/hpo/search_space.yaml) has two parts:

- `architecture`: which grid to draw from (default configs/arch_grid.yaml) and the tolerance
  around the budget. Only grid points whose exact count lies within the budget are offered, and
  they are sampled as a tree of choices -- d_model, then the FFN ratios that exist for that width,
  then the depths that exist for both, then the head counts -- so a combination outside the
  grid can never be drawn. A level with a single option is not sampled at all. A level below the
  first is named after the path to it (`n_layers@d512-f4`): Optuna needs one fixed set of choices
  per parameter name, and TPE with `group=True` models each such conditional sub-space apart.
- `params`: name -> {key, type, low/high/log/step or choices}. `key` is the LightningCLI config key
  the value is written to (`--<key>=<value>`), so any argument of the model, optimizer, data or
  Trainer can be searched by adding a line.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from forecast.core.bounded_yaml import read_yaml
from forecast.core.errors import ForecastError
from forecast.sizing.budget import Arch, Budget, architectures, check_grid, load_grid

NET_PREFIX = "model.net.init_args."
# PatchTST arguments an architecture fixes; the search space may not name them itself.
ARCH_ARGS = ("d_model", "n_layers", "n_heads", "d_ff")
# Keys that change the data shape, and with it the budget's grid: searching them would
# move a trial out of its budget, so the search space may not name them.
SHAPE_KEYS = (
    "data.tier", "data.context_length", "data.inputs",
    *(NET_PREFIX + k for k in ("n_features", "context_length", "patch_len", "stride",
                               "patch_mode", "revin")),
)
# Levels of the architecture tree, outermost first, with the letter naming each in a path.
LEVELS = (("d_model", "d"), ("ffn_ratio", "f"), ("n_layers", "l"), ("n_heads", "h"))
PARAM_TYPES = ("float", "int", "categorical")


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Param:
    """One searched setting: how to sample it and the config key it is written to.

    Args:
        name: Optuna parameter name (shown in trials.csv and importances).
        key: dotted LightningCLI key, e.g. `model.lr` or `model.net.init_args.dropout`.
        type: `float`, `int` or `categorical`.
        low: lower bound (float/int).
        high: upper bound (float/int).
        log: sample on a log scale (float/int).
        step: grid step (float/int; None = continuous).
        choices: the options of a categorical.
    """

    name: str
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter is sampled from."""
        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(self.choices)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this parameter for `trial` (OutsideSpace: an enqueued trial fixed a value Optuna refuses)."""
        try:
            if self.type == "float":
                return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
            if self.type == "int":
                return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                         step=int(self.step or 1))
            return trial.suggest_categorical(self.name, list(self.choices))
        except ValueError as err:  # NaN, or a choice that is not one
            raise OutsideSpace(f"trial {trial.number} fixes {self.name} outside the search space ({err})") from None

    def holds(self, value: Any) -> bool:
        """Whether `value` lies in this parameter's range (or among its choices): what a trial
        enqueued in the storage fixes is checked by it, since Optuna only warns and uses it."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return self.low <= value <= self.high and (self.type == "float" or value == int(value))

    def ends(self) -> tuple[Any, Any]:
        """The first and last value (bounds or choices), to dry-run the overrides before any trial."""
        if self.type == "categorical":
            return self.choices[0], self.choices[-1]
        dist = self.distribution()
        return dist.low, dist.high


def parse_param(name: str, spec: Any, source: str) -> Param:
    """Build a `Param` from its YAML mapping; a mistake is one `ForecastError` line."""
    where = f"{source}: params.{name}"
    if not isinstance(spec, Mapping):
        raise ForecastError(f"{where} must be a mapping with key and type")
    unknown = set(spec) - {"key", "type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ForecastError(f"{where} has unknown fields {sorted(unknown)}")
    key, kind = spec.get("key"), spec.get("type")
    if not isinstance(key, str) or "." not in key:
        raise ForecastError(f"{where}.key must be a dotted config key such as model.lr")
    if kind not in PARAM_TYPES:
        raise ForecastError(f"{where}.type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ForecastError(f"{where}.choices must be a non-empty list")
        if not all(c is None or isinstance(c, str | int | float | bool) for c in choices):
            raise ForecastError(f"{where}.choices must hold single values (numbers, words, true/false)")
        return Param(name, key, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) or low > high:
        raise ForecastError(f"{where} needs numbers low <= high, got low={low!r} high={high!r}")
    if spec.get("log") and low <= 0:
        raise ForecastError(f"{where}: a log scale needs low > 0, got {low}")
    if spec.get("log") and spec.get("step") is not None:
        raise ForecastError(f"{where}: log and step cannot be combined")
    if not isinstance(spec.get("log", False), bool):
        raise ForecastError(f"{where}.log must be true or false, got {spec.get('log')!r}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step)
                             or not 0 < step <= high - low + (high == low)):
        raise ForecastError(f"{where}.step must be a number > 0 no wider than the range, got {step!r}")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ForecastError(f"{where}: an int range needs whole numbers, got low={low!r} high={high!r} step={step!r}")
    return Param(name, key, kind, float(low), float(high), bool(spec.get("log", False)), spec.get("step"))


# ---------------------------------------------------------------------------- the YAML file


@dataclass(frozen=True)
class SpaceSpec:
    """A search-space file as written, before the data shape is known.

    Args:
        path: where it was read from.
        params: the searched training settings.
        grid: the architecture grid (d_model, n_layers, head_dim, ffn_ratio lists).
        tolerance: relative distance from the budget an architecture may have.
    """

    path: Path
    params: tuple[Param, ...]
    grid: dict[str, list[Any]]
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (stored with the study; a resumed study must match it)."""
        return {
            "grid": self.grid,
            "tolerance": self.tolerance,
            "params": {p.name: {"key": p.key, "distribution": repr(p.distribution())} for p in self.params},
        }


def load_space(path: str | Path) -> SpaceSpec:
    """Read and check a search-space YAML file.

    Args:
        path: the file (see configs/hpo/search_space.yaml for the format).
    """
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"search space {path} not found")
    raw = read_yaml(path, "search space") or {}
    if not isinstance(raw, dict):
        raise ForecastError(f"search space {path} is not a mapping (architecture, params)")
    unknown = set(raw) - {"architecture", "params"}
    if unknown:
        raise ForecastError(f"{path}: unknown top-level keys {sorted(unknown)} (expected architecture, params)")
    arch, params_raw = raw.get("architecture") or {}, raw.get("params") or {}
    if not isinstance(arch, dict) or not isinstance(params_raw, dict):
        raise ForecastError(f"{path}: architecture and params must be mappings")
    unknown = set(arch) - {"grid", "tolerance"}
    if unknown:
        raise ForecastError(f"{path}: unknown keys {sorted(unknown)} under architecture (expected grid, tolerance)")
    grid = _grid(arch.get("grid"), path)
    tolerance = arch.get("tolerance", 0.25)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 < tolerance < 1:
        raise ForecastError(f"{path}: architecture.tolerance must be a number between 0 and 1, got {tolerance!r}")
    params = tuple(parse_param(str(name), spec, str(path)) for name, spec in params_raw.items())
    _check_keys(params, path)
    return SpaceSpec(path, params, grid, tolerance)


def _grid(value: Any, path: Path) -> dict[str, list[Any]]:
    """The grid: inline mapping, a YAML file relative to the search space, or the default."""
    if value is None:
        return load_grid()
    if isinstance(value, Mapping):
        return check_grid(dict(value), f"{path}: architecture.grid")
    if not isinstance(value, str):
        raise ForecastError(f"{path}: architecture.grid must be a mapping of lists or a file name, got {value!r}")
    beside = path.parent / str(value)  # relative to the search-space file first
    with contextlib.suppress(OSError):  # a name too long: load_grid says so
        if beside.is_file():
            return load_grid(beside)
    return load_grid(Path(value))


def _check_keys(params: Sequence[Param], path: Path) -> None:
    """No key twice, and none that belongs to the architecture or to the data shape."""
    seen: dict[str, str] = {}
    for p in params:
        if p.key in seen:
            raise ForecastError(f"{path}: params {seen[p.key]} and {p.name} both set {p.key}")
        seen[p.key] = p.name
        if p.key in (NET_PREFIX + a for a in ARCH_ARGS):
            raise ForecastError(f"{path}: params.{p.name} sets {p.key}, which the architecture grid decides")
        if p.key in SHAPE_KEYS:
            raise ForecastError(f"{path}: params.{p.name} sets {p.key}, which changes the budget's grid; "
                                "set it with a flag or config instead")
        if p.name in {level for level, _ in LEVELS} or "@" in p.name:
            raise ForecastError(f"{path}: params.{p.name} clashes with an architecture parameter name")


# ------------------------------------------------------------------ architectures as a tree


@dataclass(frozen=True)
class ArchTree:
    """A budget's architectures, sampled level by level so only grid points are drawn."""

    archs: tuple[Arch, ...]

    def suggest(self, trial: optuna.Trial) -> Arch:
        """Sample one architecture of the grid (each level among what the earlier ones leave)."""
        left = list(self.archs)
        path: list[str] = []
        for level, letter in LEVELS:
            choices = sorted({getattr(a, level) for a in left})
            value = choices[0] if len(choices) == 1 else _categorical(trial, _name(level, path), choices)
            left = [a for a in left if getattr(a, level) == value]
            path.append(f"{letter}{value:g}")
        return left[0]

    def params_of(self, arch: Arch) -> dict[str, Any]:
        """The Optuna parameters that select `arch` (what an enqueued trial fixes)."""
        left, path, params = list(self.archs), [], {}
        for level, letter in LEVELS:
            value = getattr(arch, level)
            if len({getattr(a, level) for a in left}) > 1:
                params[_name(level, path)] = value
            left = [a for a in left if getattr(a, level) == value]
            path.append(f"{letter}{value:g}")
        return params

    def extremes(self) -> list[Arch]:
        """Widest, narrowest, deepest and shallowest architectures (duplicates dropped)."""
        by = self.archs
        picks = [
            min(by, key=lambda a: (-a.d_model, a.n_layers, a.params)),  # widest
            min(by, key=lambda a: (a.d_model, -a.n_layers, a.params)),  # narrowest
            min(by, key=lambda a: (-a.n_layers, a.d_model, a.params)),  # deepest
            min(by, key=lambda a: (a.n_layers, -a.d_model, a.params)),  # shallowest
        ]
        return list(dict.fromkeys(picks))


def _categorical(trial: optuna.Trial, name: str, choices: list[Any]) -> Any:
    try:
        return trial.suggest_categorical(name, choices)
    except ValueError:  # an enqueued trial fixed a value that is not among them
        raise OutsideSpace(f"trial {trial.number} fixes {name} outside its choices {choices}") from None


class OutsideSpace(ForecastError):
    """A trial enqueued in the storage fixes a value the search space does not hold."""


def _name(level: str, path: list[str]) -> str:
    return level if not path else f"{level}@{'-'.join(path)}"


# ----------------------------------------------------------------------- the whole space


@dataclass(frozen=True)
class Sample:
    """One trial's draw: its architecture, its training settings and the CLI flags for both."""

    arch: Arch
    values: dict[str, Any]
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchSpace:
    """A search-space file bound to one budget and data shape."""

    spec: SpaceSpec
    tree: ArchTree

    def suggest(self, trial: optuna.Trial) -> Sample:
        """Draw an architecture and every parameter, and the overrides that apply them."""
        arch = self.tree.suggest(trial)
        values = {p.name: p.suggest(trial) for p in self.spec.params}
        for p in self.spec.params:
            if not p.holds(values[p.name]):
                raise OutsideSpace(f"trial {trial.number} fixes {p.name} outside the search space "
                                   f"({_range(p)}); enqueued trials must lie in {self.spec.path}")
        return Sample(arch, values, self.overrides(arch, values))

    def overrides(self, arch: Arch, values: Mapping[str, Any]) -> list[str]:
        """LightningCLI flags: `--model.net.init_args.d_model=512 ... --model.lr=0.0003`."""
        flags = [f"--{NET_PREFIX}{k}={v}" for k, v in arch.model_kwargs().items()]
        by_name = {p.name: p for p in self.spec.params}
        return flags + [f"--{by_name[name].key}={format_value(v)}" for name, v in values.items()]

    def end_overrides(self) -> list[list[str]]:
        """Flags for two draws: the widest architecture with every low end (first choice), and
        the narrowest with every high end (last choice)."""
        first, last = self.tree.archs[0], self.tree.archs[-1]
        return [self.overrides(first, {p.name: p.ends()[0] for p in self.spec.params}),
                self.overrides(last, {p.name: p.ends()[1] for p in self.spec.params})]

    def enqueued(self) -> list[dict[str, Any]]:
        """Parameters of the grid's extremes, to run before the sampler takes over."""
        return [self.tree.params_of(a) for a in self.tree.extremes()]


def _range(p: Param) -> str:
    return f"choices {list(p.choices)}" if p.type == "categorical" else f"{p.type} in [{p.low:g}, {p.high:g}]"


def format_value(value: Any) -> str:
    """A value as jsonargparse reads it back unchanged (floats at full precision)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def bind(spec: SpaceSpec, budget: Budget | str | int, n_features: int, context_length: int,
         patch_len: int, stride: int, patch_mode: str, revin: bool) -> SearchSpace:
    """The search space for one budget and data shape.

    Args:
        spec: the parsed search-space file.
        budget: a parsed budget, a budget name ("2M") or a parameter count.
        n_features: features of the tier.
        context_length: window length.
        patch_len: time steps per patch.
        stride: steps between patch starts.
        patch_mode: "mixing" or "independent".
        revin: whether the network has RevIN's affine (its 2 x n_features parameters count).
    """
    archs = architectures(budget, n_features, context_length, patch_len, stride, patch_mode, revin,
                          tolerance=spec.tolerance, grid=spec.grid)
    return SearchSpace(spec, ArchTree(tuple(archs)))
