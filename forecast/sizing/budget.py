"""Honest parameter budgets: the one budget parser, exact counts and each budget's architecture grid.

A budget (a named one, 2M, 20M, 200M, 2B, or any count such as 10K) is never a label: its architectures are every grid point of
configs/arch_grid.yaml whose EXACT parameter count, for the data shape at hand (features,
context, patching), lies within +-25% of the budget. `count_parameters` is a closed formula that
tests check against `sum(p.numel())` of a real (or meta-device) `PatchTST`.

    forecast arch --budget 2B --tier a25 --precision bf16-mixed --memory-gb 80 --device cuda
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from forecast import configs
from forecast.core.bounded_yaml import read_yaml
from forecast.core.errors import ForecastError, os_error_line
from forecast.model import check_arguments, num_patches

BUDGETS: dict[str, int] = {
    "2M": 2_000_000,
    "20M": 20_000_000,
    "200M": 200_000_000,
    "2B": 2_000_000_000,
}
TOLERANCE = 0.25  # a budget keeps exact counts within +-25% of its size
GRID_PATH = configs.path("arch_grid.yaml")
GRID_KEYS = ("d_model", "n_layers", "head_dim", "ffn_ratio")
NARROW_KEY = "narrow_heads"  # optional: head counts of the widths that no head_dim divides
GB = 1e9  # decimal gigabytes, as in --memory-gb and every "GB" column

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}


class Budget(NamedTuple):
    """A parameter budget: its label (`2M`, `50K`, `1.5M`) and its size in parameters."""

    label: str
    size: int


def parse_budget(text: str | int) -> Budget:
    """The one budget parser of every command: a named budget (2M, 20M, 200M, 2B) or a count such
    as 50K, 1.5M or 2000000 (case-insensitive).

    Raises:
        ForecastError: not a count, or less than one parameter.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ForecastError(f"unknown budget {text!r}; choose one of {', '.join(BUDGETS)} "
                            "or a parameter count such as 50K")
    label = text.strip().upper()
    if label in BUDGETS:
        return Budget(label, BUDGETS[label])
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMB]?)", label)
    if not match:
        raise ForecastError(f"unknown budget {text!r}; choose one of {', '.join(BUDGETS)} "
                            "or a parameter count such as 50K")
    size = float(match.group(1)) * _SUFFIX[match.group(2)]
    if size < 1:
        raise ForecastError(f"budget {text!r} must be at least 1 parameter")
    return Budget(label, int(size))


# ---------------------------------------------------------------------------- exact counts


def count_parameters(n_features: int, context_length: int, patch_len: int, stride: int,
                     d_model: int, n_layers: int, n_heads: int, d_ff: int,
                     patch_mode: str = "mixing", revin: bool = True) -> int:
    """Exact number of parameters of `PatchTST` with these arguments (no model is built).

    Args:
        n_features: input features F.
        context_length: window length L.
        patch_len: time steps per patch P.
        stride: steps between patch starts.
        d_model: token width D.
        n_layers: encoder blocks.
        n_heads: attention heads (they change no count, but must divide d_model).
        d_ff: feed-forward hidden width.
        patch_mode: "mixing" or "independent".
        revin: whether the model has RevIN's per-feature affine.
    """
    check_arguments(n_features, context_length, patch_len, stride, d_model, n_layers, n_heads,
                    d_ff, patch_mode)
    D, N = d_model, num_patches(context_length, patch_len, stride)
    mixing = patch_mode == "mixing"
    token_dim = patch_len * n_features if mixing else patch_len  # embed input width
    head_in = N * D if mixing else n_features * N * D  # flattened encoder output
    revin_params = 2 * n_features if revin else 0  # affine weight + bias per feature
    embed = token_dim * D + D  # Linear(token_dim, D)
    position = N * D  # learnable table, one row per patch
    block = (
        2 * D  # ln1 weight + bias
        + 3 * D * D + 3 * D  # qkv
        + D * D + D  # attention output projection
        + 2 * D  # ln2
        + D * d_ff + d_ff  # fc1
        + d_ff * D + D  # fc2
    )
    final_norm = 2 * D
    head = head_in + 1  # Linear(head_in, 1)
    return revin_params + embed + position + n_layers * block + final_norm + head


def matmul_parameters(n_features: int, context_length: int, patch_len: int, stride: int,
                      d_model: int, n_layers: int, d_ff: int,
                      patch_mode: str = "mixing") -> tuple[int, int]:
    """Weights of the linear layers as (applied once per token, applied once per sample).

    The first covers the patch embedding and every block's qkv/proj/fc1/fc2; the second is the
    flatten head, which sees each sample once. Biases, norms and RevIN do no matmul.
    """
    D, N = d_model, num_patches(context_length, patch_len, stride)
    mixing = patch_mode == "mixing"
    token_dim = patch_len * n_features if mixing else patch_len
    per_token = token_dim * D + n_layers * (4 * D * D + 2 * D * d_ff)
    per_sample = N * D if mixing else n_features * N * D
    return per_token, per_sample


def training_flops_per_sample(n_features: int, context_length: int, patch_len: int, stride: int,
                              d_model: int, n_layers: int, d_ff: int,
                              patch_mode: str = "mixing") -> int:
    """Matmul FLOPs of one training sample (forward + backward).

    FLOPs = 6 * (W_token * T + W_head) + 12 * n_layers * S * N^2 * D, where T = S * N tokens per
    sample (S sequences: 1 in mixing mode, F in independent mode), W_token the linear weights
    each token passes through and W_head the head's weights. A multiply-add is 2 FLOPs and the
    backward pass costs twice the forward, hence 2 * 3 = 6 per weight per token. Attention adds
    Q @ K^T and A @ V: 2 * N^2 * D FLOPs each per layer and sequence in the forward, so
    3 * 4 = 12 in training. Norms, softmax, GELU and the optimizer are left out (a few percent at
    d_model 64, far less at the widths where compute matters).
    """
    w_token, w_head = matmul_parameters(n_features, context_length, patch_len, stride, d_model,
                                        n_layers, d_ff, patch_mode)
    N = num_patches(context_length, patch_len, stride)
    S = 1 if patch_mode == "mixing" else n_features
    return 6 * (w_token * S * N + w_head) + 12 * n_layers * S * N * N * d_model


# ----------------------------------------------------------------------- the grid per budget


@dataclass(frozen=True)
class Arch:
    """One grid point with its exact parameter count for a given data shape."""

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    ffn_ratio: float
    params: int

    @property
    def id(self) -> str:
        """Short name, e.g. `d512-l8-h8-f4` (width, depth, heads, FFN ratio)."""
        return f"d{self.d_model}-l{self.n_layers}-h{self.n_heads}-f{self.ffn_ratio:g}"

    def model_kwargs(self) -> dict[str, int]:
        """The `PatchTST` arguments this architecture fixes."""
        return {"d_model": self.d_model, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "d_ff": self.d_ff}


def load_grid(path: str | Path = GRID_PATH) -> dict[str, list[float]]:
    """Read the architecture grid: lists of d_model, n_layers, head_dim and ffn_ratio values, and
    optionally `narrow_heads` (see `head_counts`)."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as err:  # a name too long for the file system
        raise ForecastError(f"architecture grid: {os_error_line(err)}") from None
    if not found:
        raise ForecastError(f"architecture grid {path} not found")
    grid = read_yaml(path, "architecture grid") or {}
    if not isinstance(grid, dict):
        raise ForecastError(f"architecture grid {path} is not a mapping of lists")
    return check_grid(grid, f"architecture grid {path}")


MAX_GRID_VALUE = 1 << 20  # no width, depth or ratio of a model we could build is larger


def check_grid(grid: Any, where: str) -> dict[str, list[float]]:
    """The grid's schema: each of GRID_KEYS a non-empty list of numbers in (0, MAX_GRID_VALUE],
    whole numbers but for ffn_ratio (d_ff = ffn_ratio * d_model is rounded)."""
    if not isinstance(grid, dict):
        raise ForecastError(f"{where} is not a mapping of lists")
    missing = [key for key in GRID_KEYS if not grid.get(key)]
    if missing:
        raise ForecastError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(grid) - {*GRID_KEYS, NARROW_KEY})
    if unknown:
        raise ForecastError(f"{where} has unknown keys {', '.join(map(str, unknown))}")
    for key in GRID_KEYS:
        values = grid[key]
        if not isinstance(values, list):
            raise ForecastError(f"{where}: {key} must be a list of numbers, got {values!r}")
        for v in values:
            whole = key == "ffn_ratio" or (isinstance(v, int) and not isinstance(v, bool))
            if isinstance(v, bool) or not isinstance(v, int | float) or not whole or not 0 < v <= MAX_GRID_VALUE:
                kind = "numbers > 0" if key == "ffn_ratio" else "whole numbers >= 1"
                raise ForecastError(f"{where}: {key} holds {v!r}; it takes {kind} up to {MAX_GRID_VALUE:,}")
    narrow = grid.get(NARROW_KEY)
    if narrow is not None and (not isinstance(narrow, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and 0 < h <= MAX_GRID_VALUE for h in narrow)):
        raise ForecastError(f"{where}: {NARROW_KEY} must be a list of positive integers")
    keys = GRID_KEYS + ((NARROW_KEY,) if narrow is not None else ())  # absent stays absent (study records)
    return {key: list(grid[key]) for key in keys}


def head_counts(d_model: int, grid: dict[str, list[float]]) -> list[int]:
    """The head counts a width is split into on the grid.

    Each `head_dim` that divides `d_model` gives `d_model // head_dim` heads. A width that no
    head_dim divides (one narrower than the heads, e.g. 16 with head_dim 64) takes instead every
    count of the grid's optional `narrow_heads` that divides it (e.g. 1 or 2 heads of 16 or 8);
    without that key such a width is skipped.
    """
    heads = sorted({d_model // int(h) for h in grid["head_dim"] if d_model % int(h) == 0})
    if heads:
        return heads
    return sorted({int(h) for h in grid.get(NARROW_KEY, []) if d_model % int(h) == 0})


def budget_size(budget: str | int) -> int:
    """Parameters of a budget: a name ("2M", ...), a count ("50K") or an integer size."""
    return parse_budget(budget).size


def architectures(budget: Budget | str | int, n_features: int, context_length: int = 80,
                  patch_len: int = 16, stride: int = 8, patch_mode: str = "mixing", revin: bool = True,
                  tolerance: float = TOLERANCE,
                  grid: dict[str, list[float]] | None = None) -> list[Arch]:
    """Every grid architecture whose exact count lies within +-tolerance of the budget.

    Args:
        budget: a parsed `Budget`, a name from `BUDGETS` ("2M", "20M", "200M", "2B") or a parameter
            count ("50K", 50000).
        n_features: input features of the tier.
        context_length: window length.
        patch_len: time steps per patch.
        stride: steps between patch starts.
        patch_mode: "mixing" or "independent".
        revin: whether the model has RevIN's per-feature affine (`model.net.init_args.revin`, on by default).
        tolerance: relative distance from the budget that still counts (0.25 = +-25%).
        grid: the grid (default: configs/arch_grid.yaml).

    Returns:
        Architectures sorted from wide-and-shallow to narrow-and-deep.
    """
    size = budget.size if isinstance(budget, Budget) else budget_size(budget)
    grid = load_grid() if grid is None else grid
    found = []
    for d_model in grid["d_model"]:
        for n_heads in head_counts(d_model, grid):  # d_model splits into whole heads
            for ratio in grid["ffn_ratio"]:
                d_ff = round(ratio * d_model)
                for n_layers in grid["n_layers"]:
                    params = count_parameters(n_features, context_length, patch_len, stride,
                                              d_model, n_layers, n_heads, d_ff, patch_mode, revin)
                    if abs(params - size) <= tolerance * size:
                        found.append(Arch(d_model, n_layers, n_heads, d_ff, ratio, params))
    if not found:
        raise ForecastError(
            f"no grid architecture lies within ±{tolerance:.0%} of "
            f"{budget.label if isinstance(budget, Budget) else budget} parameters for "
            f"{n_features} features, context {context_length}, patch {patch_len}/{stride} "
            f"({patch_mode}{'' if revin else ', no RevIN'})")
    return sorted(found, key=lambda a: (-a.d_model, a.n_layers, a.d_ff, a.n_heads))


# ------------------------------------------------------------------------ `forecast arch`


def tier_features(tier: str, inputs: str = "tier") -> int:
    """Number of input features of a registered tier: its columns, or the stationary inputs built
    from them (`inputs="stationary"`, `forecast.data.stationary`)."""
    from forecast.data.stationary import stationary_names
    from forecast.data.tiers import TIERS  # lazily: `forecast arch` needs TA-Lib only for this

    if tier not in TIERS:
        raise ForecastError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    columns = TIERS[tier].columns
    return len(stationary_names(columns)) if inputs == "stationary" else len(columns)
