"""Planner vs reality on CPU: estimated vs measured peak memory of real training steps.

    python -m forecast.bench.memory [--json bench_memory.json] [--only ID ...] [--fixed-mmap]

Each configuration runs in a fresh subprocess (so no allocator state or high-water mark leaks
from one to the next). The child first warms up with a tiny model of the same kind (so lazily
loaded kernels and thread pools are not charged to the measurement), returns freed heap to the
OS (`malloc_trim`), then measures the same steady-state training step twice:

- tensors: the peak of bytes held by tensors, from the profiler's allocation events
  (`profile_memory=True`; each event carries the running total). This is the CPU counterpart of
  `torch.cuda.max_memory_allocated` and the quantity the planner models.
- RSS: the process's peak resident memory (`ru_maxrss`) minus its resident memory just before
  the model was built. This also counts the C allocator's overhead and fragmentation and any
  scratch oneDNN takes outside PyTorch's allocator: what the machine really had to provide.
  glibc's dynamic mmap threshold rises to the size of freed blocks (up to 32 MiB), so mid-size
  activations land on the heap, which keeps and fragments them; `--fixed-mmap` runs the
  children with MALLOC_MMAP_THRESHOLD_=65536 (blocks of 64 KiB and more are always mapped and
  returned on free) to show how much of the RSS column that accounts for.

A step is forward + backward + AdamW step (fp32, `zero_grad(set_to_none=True)`), repeated
`accumulate` times per optimizer step. The measured window covers building the model and
optimizer, then two optimizer steps, so the second step runs with the AdamW moments in place
(the steady state of training; the first step alone would miss them). No GPU figure is made
here: on CUDA use `torch.cuda.max_memory_allocated` instead.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

MB = 1e6
KIB = 1024  # ru_maxrss is in KiB on Linux
FIXED_MMAP_THRESHOLD = 64 * KIB  # with --fixed-mmap: every block this size or larger is mapped


@dataclass(frozen=True)
class BenchConfig:
    """One measured training setup (the model on the a25 shape: 25 features, context 80)."""

    id: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    micro_batch: int
    patch_mode: str = "mixing"
    dropout: float = 0.1
    accumulate: int = 1
    activation_checkpointing: bool = False
    n_features: int = 25
    context_length: int = 80

    def model_kwargs(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "context_length": self.context_length,
                "d_model": self.d_model, "n_layers": self.n_layers, "n_heads": self.n_heads,
                "d_ff": self.d_ff, "dropout": self.dropout, "patch_mode": self.patch_mode,
                "activation_checkpointing": self.activation_checkpointing}


# From a demo-sized model to the 20M budget, both patch modes, with and without dropout (the
# CPU attention kernel changes), with accumulation and with activation checkpointing.
CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig("demo-0.1M", 64, 2, 4, 128, 256),
    BenchConfig("2M d128-l12-h2-f4", 128, 12, 2, 512, 256),
    BenchConfig("2M d64-l32-h1-f4", 64, 32, 1, 256, 256),
    BenchConfig("2M d128-l8-h2-f4 indep", 128, 8, 2, 512, 32, patch_mode="independent"),
    BenchConfig("20M d512-l6-h8-f4", 512, 6, 8, 2048, 64),
    BenchConfig("20M d512-l6-h8-f4 p=0", 512, 6, 8, 2048, 256, dropout=0.0),
    BenchConfig("20M d1024-l2-h16-f2", 1024, 2, 16, 2048, 32),
    BenchConfig("20M d256-l24-h4-f4 acc2", 256, 24, 4, 1024, 64, accumulate=2),
    BenchConfig("20M d256-l24-h4-f4 ckpt", 256, 24, 4, 1024, 128,
                activation_checkpointing=True),
)


# ------------------------------------------------------------------------------- the child


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def release_heap() -> None:
    """Collect garbage and hand freed C heap back to the OS, so the baseline is what is in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the baseline then includes some retained heap
        pass


def train_steps(cfg: BenchConfig, steps: int, micro_batch: int, **overrides: Any) -> Any:
    """Build the model and AdamW, run `steps` optimizer steps (`planner.train_steps`)."""
    from forecast.sizing.planner import train_steps as run

    return run({**cfg.model_kwargs(), **overrides}, micro_batch, steps=steps, accumulate=cfg.accumulate)


def tensor_peak_bytes(cfg: BenchConfig) -> int:
    """Peak bytes held by tensors over model build + two steps (`planner.measured_peak_bytes`)."""
    from forecast.sizing.planner import measured_peak_bytes

    return measured_peak_bytes(cfg.model_kwargs(), cfg.micro_batch, accumulate=cfg.accumulate)


def measure(cfg: BenchConfig) -> dict[str, int]:
    """Run in a fresh process: warm up, then measure RSS and the tensor peak."""
    import torch

    torch.manual_seed(0)
    # warm-up with a tiny model of the same kind: loads kernels and starts thread pools
    train_steps(cfg, steps=2, micro_batch=2, d_model=16, n_layers=1, n_heads=1, d_ff=16)
    release_heap()
    baseline, high_water_before = current_rss_bytes(), peak_rss_bytes()
    train_steps(cfg, steps=2, micro_batch=cfg.micro_batch)
    rss_peak = peak_rss_bytes()
    release_heap()
    return {"rss_bytes": rss_peak - baseline,
            "rss_moved": int(rss_peak > high_water_before),
            "tensor_bytes": tensor_peak_bytes(cfg)}


# ------------------------------------------------------------------------------ the parent


def run_child(cfg: BenchConfig, fixed_mmap: bool = False) -> dict[str, int]:
    env = dict(os.environ)
    if fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(FIXED_MMAP_THRESHOLD)
    out = subprocess.run([sys.executable, "-m", "forecast.bench.memory", "--child",
                          json.dumps(asdict(cfg))], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(cfg: BenchConfig, fixed_mmap: bool = False) -> dict[str, Any]:
    from forecast.sizing.budget import count_parameters
    from forecast.sizing.planner import estimate

    kwargs = cfg.model_kwargs()
    est = estimate(**kwargs, precision="32", device="cpu", micro_batch=cfg.micro_batch,
                   accumulate=cfg.accumulate)
    got = run_child(cfg, fixed_mmap)
    params = count_parameters(cfg.n_features, cfg.context_length, 16, 8, cfg.d_model,
                              cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.patch_mode)
    return {"id": cfg.id, "params": params, "micro_batch": cfg.micro_batch,
            "accumulate": cfg.accumulate, "estimated_mb": est.peak_bytes / MB,
            "tensors_mb": got["tensor_bytes"] / MB, "rss_mb": got["rss_bytes"] / MB,
            "est_over_tensors": est.peak_bytes / got["tensor_bytes"],
            "est_over_rss": est.peak_bytes / got["rss_bytes"], "rss_moved": bool(got["rss_moved"])}


def print_rows(rows: list[dict[str, Any]], fixed_mmap: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "planner vs measured peak, CPU fp32, one steady-state AdamW step"
    if fixed_mmap:
        title += f" (MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD})"
    table = Table(title=title)
    for name in ("config", "params", "micro x acc", "estimated MB", "tensors MB", "est/tensors",
                 "RSS MB", "est/RSS"):
        table.add_column(name, justify="left" if name == "config" else "right")
    for r in rows:
        table.add_row(r["id"], f"{r['params']:,}", f"{r['micro_batch']} x {r['accumulate']}",
                      f"{r['estimated_mb']:.1f}", f"{r['tensors_mb']:.1f}",
                      f"{r['est_over_tensors']:.2f}", f"{r['rss_mb']:.1f}",
                      f"{r['est_over_rss']:.2f}" + ("" if r["rss_moved"] else " (!)"))
    if not all(r["rss_moved"] for r in rows):
        table.caption = "(!) = the peak did not rise above the warm-up's high-water mark"
    # a pipe gets the full table rather than Rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forecast.bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--only", nargs="*", help="run only configurations whose id contains these")
    p.add_argument("--fixed-mmap", action="store_true",
                   help=f"run children with MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(BenchConfig(**json.loads(args.child)))))
        return 0
    configs = [c for c in CONFIGS if not args.only or any(s in c.id for s in args.only)]
    rows = [row(cfg, args.fixed_mmap) for cfg in configs]
    print_rows(rows, args.fixed_mmap)
    if args.json:
        from forecast.core.files import write_json_atomic

        write_json_atomic(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
