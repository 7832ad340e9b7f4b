"""`forecast arch`: a budget's architectures with exact parameter counts, the memory planner's
micro-batch and accumulation, training FLOPs per sample, and whether the budget's default fit and
default search fit the device's memory and the disk (`--disk-gb`).

A default fit is `forecast fit --config configs/spy.yaml --config configs/model/patchtst_<budget>.yaml`
with nothing else: the checkpoint settings of that model config (the 2B one keeps a weights-only
bf16 best checkpoint, and a resumable last.ckpt only where the disk allows) and `batch_size auto`.
A default search is `forecast hpo --budget B`: every architecture must fit at micro-batch 1, and
each trial keeps a weights-only best checkpoint (new before old: 2 files) plus the best trial's.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionYesNo, ArgumentParser

from forecast import configs
from forecast.core.domains import MemoryGB, NonEmptyStr, PositiveInt, Size
from forecast.core.parsers import command_parser, parse
from forecast.model import PatchMode
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
from forecast.sizing.machine import checkpoints_at_once, disk_plan
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
              device: str, revin: bool = True) -> list[dict[str, Any]]:
    """One row per architecture: shape, exact count, memory plan and training FLOPs."""
    shape = {"n_features": n_features, "context_length": context_length,
             "patch_len": patch_len, "stride": stride, "patch_mode": patch_mode, "revin": revin,
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


MODEL_CONFIGS = configs.path("model")  # patchtst_<budget>.yaml
CHECKPOINT_DEFAULTS = {"save_top_k": 1, "save_last": True, "save_weights_only": False}  # forecast fit's
TRIAL_CHECKPOINT = {"save_top_k": 1, "save_last": False, "save_weights_only": True}  # forecast.hpo.config


def shipped_settings(budget: str) -> dict[str, Any]:
    """Checkpoint settings and weights dtype of a default fit of `budget`: its shipped model
    config over forecast fit's defaults (`configs/model/patchtst_<budget>.yaml`, when there is one)."""
    import yaml

    path = MODEL_CONFIGS / f"patchtst_{budget.lower()}.yaml"
    doc = yaml.safe_load(path.read_text()) if path.is_file() else {}
    doc = doc or {}
    net = ((doc.get("model") or {}).get("net") or {}).get("init_args") or {}
    return {**CHECKPOINT_DEFAULTS, **(doc.get("checkpoint") or {}),
            "weights_dtype": (doc.get("model") or {}).get("weights_dtype", "float32"),
            "arch": {k: net.get(k) for k in ("d_model", "n_layers", "n_heads", "d_ff")},
            "batch_size": (doc.get("data") or {}).get("batch_size"),
            "config": f"configs/model/{path.name}" if path.is_file() else None}


def default_fit(params: int, memory_fits: bool, settings: dict[str, Any], disk_bytes: int) -> dict[str, Any]:
    """Whether a default fit of a model with `params` fits: memory (the planner) and disk (its
    checkpoints, the last one dropped where only the best ones fit, as `forecast fit` does)."""
    plan = disk_plan(params, settings["save_top_k"], bool(settings["save_last"]), settings["save_weights_only"],
                     settings["weights_dtype"], None)
    best = plan.best_files * plan.best_bytes
    keep_last = bool(plan.last_bytes) and plan.total <= disk_bytes
    need = best + (plan.last_bytes if keep_last else 0)
    return {"fits": memory_fits and best <= disk_bytes, "memory_fits": memory_fits, "disk_gb": need / GB,
            "best_checkpoint_gb": plan.best_bytes / GB, "best_files": plan.best_files,
            "resumable_last": keep_last, "last_checkpoint_gb": plan.last_bytes / GB,
            "weights_dtype": settings["weights_dtype"] if settings["save_weights_only"] else "float32"}


def default_search(rows: list[dict[str, Any]], disk_bytes: int, weights_dtype: str = "float32") -> dict[str, Any]:
    """Whether `forecast hpo --budget B` fits: every architecture at micro-batch 1 in memory, and the
    largest one's trial checkpoints (the running trial's 2 best files + the best trial's) on disk."""
    largest = max(r["params"] for r in rows)
    files = checkpoints_at_once(TRIAL_CHECKPOINT["save_top_k"], TRIAL_CHECKPOINT["save_last"], None) + 1
    need = files * disk_plan(largest, 1, False, True, weights_dtype, None).best_bytes
    memory = all(r["fits"] for r in rows)
    return {"fits": memory and need <= disk_bytes, "memory_fits": memory, "disk_gb": need / GB,
            "checkpoint_files": files}


def add_verdicts(rows: list[dict[str, Any]], budget: str, disk_bytes: int) -> dict[str, Any]:
    """Each row gets `default_fit` (that architecture fitted with the budget's shipped settings) and
    `default_search` (the whole budget searched, the same for every row); returns the summary."""
    settings = shipped_settings(budget)
    search = default_search(rows, disk_bytes)
    for row in rows:
        row["default_fit"] = default_fit(row["params"], row["fits"], settings, disk_bytes)
        row["default_search"] = search
        row["shipped_config"] = settings["config"] if all(row[k] == v for k, v in settings["arch"].items()) else None
    return {"settings": settings, "search": search}


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


def build_parser() -> ArgumentParser:
    """The `forecast arch` parser (jsonargparse: every option typed, see forecast.core.domains)."""
    from forecast.data.tiers import TIERS

    p = command_parser(
        "forecast arch",
        "List a budget's architectures with exact parameter counts, an estimated "
        "training-memory plan (micro-batch x accumulation) and FLOPs per sample.")
    p.add_argument("--budget", type=NonEmptyStr, required=True,
                   help=f"a named budget ({', '.join(BUDGETS)}) or a parameter count such as 50K or 1.5M")
    p.add_argument("--tier", type=Literal[tuple(TIERS)], default="a25",  # type: ignore[valid-type]
                   help="feature tier whose columns set n_features")
    p.add_argument("--inputs", type=Literal["tier", "stationary"], default="tier",
                   help="the network's inputs, as data.inputs: the tier's columns, or the stationary inputs "
                        "built from them (returns and ratios; another feature count)")
    p.add_argument("--n-features", type=PositiveInt | None, default=None,
                   help="override the feature count of --tier and --inputs")
    p.add_argument("--context-length", type=PositiveInt, default=80, help="window length (days)")
    p.add_argument("--patch-len", type=PositiveInt, default=16, help="time steps per patch")
    p.add_argument("--stride", type=PositiveInt, default=8, help="steps between patch starts")
    p.add_argument("--patch-mode", type=PatchMode, default="mixing", help="mixing or independent")
    p.add_argument("--revin", action=ActionYesNo(no_prefix="no-"), default=True,
                   help="count RevIN's affine (2 x n_features parameters), as model.net.init_args.revin; "
                        "--no-revin for a model without it (configs/model/patchtst_control.yaml)")
    p.add_argument("--memory-gb", type=MemoryGB | None, default=None,
                   help="device memory budget in GB (1e9 bytes); default: free CUDA memory if "
                        "a GPU is present, else 16")
    p.add_argument("--device", type=Literal["cuda", "cpu"] | None, default=None,
                   help="device the plan is for; default: cuda if available, else cpu")
    p.add_argument("--precision", type=Literal[PRECISIONS] | None, default=None,  # type: ignore[valid-type]
                   help="default: what a run on the device uses (bf16-mixed on cuda, 32 on cpu)")
    p.add_argument("--disk-gb", type=MemoryGB | None, default=None,
                   help="disk for the checkpoints in GB (1e9 bytes); default: free space of the working folder")
    p.add_argument("--effective-batch", type=Size, default=256,
                   help="samples per optimizer step (micro-batch x accumulation)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="plan with each block's activations recomputed in the backward pass")
    p.add_argument("--format", type=Literal["table", "json"], default="table", help="table or json")
    p.add_argument("--grid", type=Path, default=GRID_PATH, help="architecture grid YAML")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`forecast arch`: print a budget's architectures as a table or a JSON list."""
    args = parse(build_parser(), list(argv or []))
    budget = parse_budget(args.budget)
    n_features = args.n_features if args.n_features is not None else tier_features(args.tier, args.inputs)
    archs = architectures(budget.label, n_features, args.context_length, args.patch_len,
                          args.stride, args.patch_mode, args.revin, grid=load_grid(args.grid))
    device = args.device or default_device()
    args.precision = args.precision or ("bf16-mixed" if device == "cuda" else "32")
    disk_bytes = shutil.disk_usage(".").free if args.disk_gb is None else math.floor(args.disk_gb * GB)
    memory_bytes = (available_memory_bytes(device) if args.memory_gb is None
                    else math.floor(args.memory_gb * GB))
    rows = arch_rows(archs, n_features, args.context_length, args.patch_len, args.stride,
                     args.patch_mode, args.precision, memory_bytes, args.effective_batch,
                     args.activation_checkpointing, device, args.revin)
    verdicts = add_verdicts(rows, args.budget, disk_bytes)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        title = (f"{budget.label} budget: {len(rows)} architectures · {n_features} {args.inputs} features, "
                 f"context {args.context_length}, patch {args.patch_len}/{args.stride} "
                 f"{args.patch_mode}{'' if args.revin else ', no RevIN'} · {device} {args.precision}, {memory_bytes / GB:.1f} GB, "
                 f"effective batch {args.effective_batch}")
        print_table(rows, title)
        print(verdict_lines(rows, verdicts, disk_bytes))
    return 0


def verdict_lines(rows: list[dict[str, Any]], verdicts: dict[str, Any], disk_bytes: int) -> str:
    """Two lines under the table: does a default fit (the shipped config's architecture, else the
    largest) and a default search fit, with memory and disk."""
    search = verdicts["search"]
    shipped = [r for r in rows if r["shipped_config"]]
    row = shipped[0] if shipped else max(rows, key=lambda r: r["params"])
    fit = row["default_fit"]
    last = "a resumable last.ckpt" if fit["resumable_last"] else "no last.ckpt (the disk holds only the best)"
    name = f"{row['id']}, {row['shipped_config']}" if row["shipped_config"] else f"{row['id']}, the largest"
    return (f"default fit ({name}): {'fits' if fit['fits'] else 'does NOT fit'}: memory "
            f"{'ok' if fit['memory_fits'] else 'too small'}, checkpoints {fit['disk_gb']:.1f} GB of "
            f"{disk_bytes / GB:.1f} GB disk ({fit['best_files']} x {fit['best_checkpoint_gb']:.1f} GB best, "
            f"{fit['weights_dtype']}, {last})\n"
            f"default search: {'fits' if search['fits'] else 'does NOT fit'}: every architecture "
            f"{'fits' if search['memory_fits'] else 'does not fit'} at micro-batch 1, trial checkpoints "
            f"{search['disk_gb']:.1f} GB")
