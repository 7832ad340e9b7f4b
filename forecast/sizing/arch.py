"""`forecast arch`: a budget's architectures with exact parameter counts, the memory planner's
micro-batch and accumulation, and training FLOPs per sample."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from forecast.errors import OneLineParser
from forecast.model import PATCH_MODES
from forecast.sizing.budget import (
    BUDGETS,
    GB,
    GRID_PATH,
    Arch,
    architectures,
    load_grid,
    parse_budget,
    tier_features,
    training_flops_per_sample,
)
from forecast.sizing.planner import (
    PRECISIONS,
    DoesNotFit,
    available_memory_bytes,
    default_device,
    estimate,
    plan,
)


def arch_rows(archs: Sequence[Arch], n_features: int, context_length: int, patch_len: int,
              stride: int, patch_mode: str, precision: str, memory_bytes: int,
              effective_batch: int, activation_checkpointing: bool,
              device: str) -> list[dict[str, Any]]:
    """One row per architecture: shape, exact count, memory plan and training FLOPs."""
    shape = {"n_features": n_features, "context_length": context_length,
             "patch_len": patch_len, "stride": stride, "patch_mode": patch_mode,
             "activation_checkpointing": activation_checkpointing}
    rows = []
    for arch in archs:
        row: dict[str, Any] = {"id": arch.id, **asdict(arch)}
        try:
            p = plan(**arch.model_kwargs(), **shape, precision=precision,
                     memory_bytes=memory_bytes, effective_batch=effective_batch, device=device)
            fit = {"peak_gb": p.peak_bytes / GB, "micro_batch": p.micro_batch,
                   "accumulate": p.accumulate, "fits": True}
        except DoesNotFit:  # not even one sample fits: show what one sample would need
            one = estimate(**arch.model_kwargs(), **shape, precision=precision, device=device,
                           micro_batch=1, accumulate=effective_batch)
            fit = {"peak_gb": one.peak_bytes / GB, "micro_batch": None, "accumulate": None,
                   "fits": False}
        flops = training_flops_per_sample(n_features, context_length, patch_len, stride,
                                          arch.d_model, arch.n_layers, arch.d_ff, patch_mode)
        rows.append({**row, **fit, "train_flops_per_sample": flops})
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """Render the rows with Rich."""
    from rich.console import Console
    from rich.table import Table

    fitting = sum(r["fits"] for r in rows)
    caption = (f"{fitting} of {len(rows)} fit; est. peak GB of a row that does not fit is for "
               "one sample" if fitting < len(rows) else None)
    table = Table(title=title, caption=caption)
    for name in ("id", "d_model", "n_layers", "n_heads", "d_ff", "params", "est. peak GB",
                 "micro-batch", "accumulate", "train GFLOP/sample"):
        table.add_column(name, justify="left" if name == "id" else "right")
    for r in rows:
        table.add_row(
            r["id"], str(r["d_model"]), str(r["n_layers"]), str(r["n_heads"]), str(r["d_ff"]),
            f"{r['params']:,}", f"{r['peak_gb']:.2f}",
            str(r["micro_batch"]) if r["fits"] else "does not fit",
            str(r["accumulate"]) if r["fits"] else "-",
            f"{r['train_flops_per_sample'] / 1e9:,.2f}",
        )
    # a pipe gets the full table rather than Rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="forecast arch",
        description="List a budget's architectures with exact parameter counts, an estimated "
                    "training-memory plan (micro-batch x accumulation) and FLOPs per sample.")
    p.add_argument("--budget", required=True,
                   help=f"a named budget ({', '.join(BUDGETS)}) or a parameter count such as 50K or 1.5M")
    p.add_argument("--tier", default="a25", help="feature tier whose columns set n_features")
    p.add_argument("--n-features", type=int, help="override the tier's feature count")
    p.add_argument("--context-length", type=int, default=80, help="window length (days)")
    p.add_argument("--patch-len", type=int, default=16, help="time steps per patch")
    p.add_argument("--stride", type=int, default=8, help="steps between patch starts")
    p.add_argument("--patch-mode", choices=PATCH_MODES, default="mixing")
    p.add_argument("--memory-gb", type=float,
                   help="device memory budget in GB (1e9 bytes); default: free CUDA memory if "
                        "a GPU is present, else 16")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   help="device the plan is for; default: cuda if available, else cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="32")
    p.add_argument("--effective-batch", type=int, default=256,
                   help="samples per optimizer step (micro-batch x accumulation)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="plan with each block's activations recomputed in the backward pass")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--grid", type=Path, default=GRID_PATH, help="architecture grid YAML")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast arch`: print a budget's architectures as a table or a JSON list."""
    args = build_parser().parse_args(argv)
    budget = parse_budget(args.budget)
    n_features = args.n_features if args.n_features is not None else tier_features(args.tier)
    archs = architectures(budget.label, n_features, args.context_length, args.patch_len,
                          args.stride, args.patch_mode, grid=load_grid(args.grid))
    device = args.device or default_device()
    memory_bytes = (available_memory_bytes(device) if args.memory_gb is None
                    else math.floor(args.memory_gb * GB))
    rows = arch_rows(archs, n_features, args.context_length, args.patch_len, args.stride,
                     args.patch_mode, args.precision, memory_bytes, args.effective_batch,
                     args.activation_checkpointing, device)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        title = (f"{budget.label} budget: {len(rows)} architectures · {n_features} features, "
                 f"context {args.context_length}, patch {args.patch_len}/{args.stride} "
                 f"{args.patch_mode} · {device} {args.precision}, {memory_bytes / GB:.1f} GB, "
                 f"effective batch {args.effective_batch}")
        print_table(rows, title)
    return 0
