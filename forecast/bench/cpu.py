"""`make bench` entries for the CPU: the thread policy against fixed choices, and training efficiency.

  threads      samples/s of short fits (100K demo, 2M, 20M) and trials/hour of a small search with
               the tool's default threads (`forecast.core.threads`: 1 thread and all cores timed on the
               fit's first steps, the faster kept; those steps' seconds are the row's `trial_s`, not
               in its rate) against 1 thread and all cores, on
               the machine as it is and beside one busy process (a CPU-bound loop); each choice 3
               times, interleaved in a rotating order; per row the default's median over the better
               fixed choice's median (goal: >= 0.90 in every row), and the runs' spread.
  efficiency   a matmul probe (the best rate of 512^3 fp32 products within 0.25 s; its spread over
               10 runs), and each model's training FLOP/s over that rate (same process, same
               threads), eager at the demo's micro-batch and at the planner's CPU micro-batch, and
               with `torch.compile` (2M, 20M).

Each measured fit runs in a fresh process (`--child`), so thread pools and allocator state never leak
from one to the next; the parent only starts, times and compares. A fit here is the training step
`forecast fit` runs (PatchTST, BCE loss, AdamW with the module's decay groups, clipping) on a
synthetic batch: no data loading, validation or logging, which the `fit` entry measures apart.
Benchmarks report; no test asserts a timing.

    python -m forecast.bench.cpu --only threads|efficiency --out bench_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forecast.bench import publish

ROOT = Path(__file__).resolve().parents[2]
N_FEATURES, CONTEXT = 25, 80  # the a25 tier's shape, as the budgets' configs are counted for
MODELS: dict[str, dict[str, Any]] = {  # demo.yaml, configs/model/patchtst_2m.yaml, patchtst_20m.yaml
    "100K": {"d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128},
    "2M": {"d_model": 128, "n_layers": 10, "n_heads": 2, "d_ff": 512},
    "20M": {"d_model": 512, "n_layers": 6, "n_heads": 8, "d_ff": 2048},
}
PATCH = {"patch_len": 16, "stride": 8, "dropout": 0.1, "head_dropout": 0.1, "patch_mode": "mixing"}
DEMO_BATCH = 64  # configs/demo.yaml's micro-batch
BUSY = "while True: pass"


# ------------------------------------------------------------------------------ the matmul probe


def probe(size: int = 512, seconds: float = 0.25) -> float:
    """fp32 matmul FLOP/s of this process's threads: the product's best rate over `seconds`
    (`forecast.sizing.machine.matmul_flops_per_sec`, at a larger size and for longer than a fit's line)."""
    from forecast.sizing.machine import matmul_flops_per_sec

    return matmul_flops_per_sec(size, seconds)


def probe_spread(runs: int = 10, seconds: float = 0.25) -> dict[str, Any]:
    """The probe `runs` times in a row: its rate and spread ((max - min) / median)."""
    rates = [probe(seconds=seconds) for _ in range(runs)]
    median = statistics.median(rates)
    return {"gflops_median": round(median / 1e9, 1), "gflops_min": round(min(rates) / 1e9, 1),
            "gflops_max": round(max(rates) / 1e9, 1), "spread": round((max(rates) - min(rates)) / median, 3),
            "runs": runs}


# ---------------------------------------------------------------------------------- the child


def train_rate(model: str, batch: int, seconds: float, compile_net: bool = False) -> dict[str, Any]:
    """Training samples/s and FLOP/s of `model` at micro-batch `batch` in THIS process (threads as
    the thread policy sets them: `FORECAST_THREADS` for a fixed choice)."""
    import torch

    from forecast.core.threads import POLICY
    from forecast.model import PatchTST
    from forecast.sizing.budget import training_flops_per_sample
    from forecast.training.module import decay_groups, one_thread_for_cpu_inductor

    arch = {**MODELS[model], **PATCH}
    torch.manual_seed(0)
    net = PatchTST(n_features=N_FEATURES, context_length=CONTEXT, **arch)
    params = sum(p.numel() for p in net.parameters())
    threads = POLICY.apply(params).threads
    opt = torch.optim.AdamW(decay_groups(net, 0.05), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    step_net = torch.compile(net) if compile_net else net
    if compile_net:  # as `forecast fit --model.compile true` on the CPU (forecast.training.module)
        one_thread_for_cpu_inductor()
        threads = torch.get_num_threads()
    x, y = torch.randn(batch, CONTEXT, N_FEATURES), (torch.rand(batch) < 0.3).float()

    def step() -> None:
        loss = loss_fn(step_net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    trial = None if compile_net else POLICY.trial(params)  # the default's measured choice, as `forecast fit`
    trial_s, started = 0.0, time.perf_counter()
    while trial is not None and not trial.done:  # a fit's first steps: timed apart, as `trial_s`
        trial.before_step()
        step()
        trial.after_step()
    threads, trial_s = (trial.choice.threads, time.perf_counter() - started) if trial is not None else (threads, 0.0)
    for _ in range(3):  # warm-up (and compilation)
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        step()
        steps += 1
    wall = time.perf_counter() - start
    flops = training_flops_per_sample(N_FEATURES, CONTEXT, arch["patch_len"], arch["stride"], arch["d_model"],
                                      arch["n_layers"], arch["d_ff"], arch["patch_mode"])
    rate = steps * batch / wall
    return {"samples_per_s": round(rate, 1), "gflops": round(rate * flops / 1e9, 2), "threads": threads,
            "params": params, "probe_gflops": round(probe() / 1e9, 1), "trial_s": round(trial_s, 2)}


def run_child(spec: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """`train_rate(**spec)` in a fresh process; `threads` fixed, or None for the tool's default."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FORECAST_THREADS")}
    if threads is not None:
        env["FORECAST_THREADS"] = str(threads)
    run = subprocess.run([sys.executable, "-m", "forecast.bench.cpu", "--child", json.dumps(spec)], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"bench child {spec} failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy_neighbour(on: bool) -> Iterator[None]:
    """One CPU-bound process beside the measurement (unpinned, as any other user's job)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY]) if on else None
    try:
        if proc is not None:
            time.sleep(0.5)  # running before the measured process samples the load
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


# -------------------------------------------------------------------------------- the sections


def _search_rate(threads: int | None, trials: int, epochs: int, root: Path) -> dict[str, Any]:
    """Trials/hour of `forecast hpo` on the hpo bench's tiny study (command wall time)."""
    from forecast.bench.hpo import SPACE, TEST_START, VAL_START, search_tier

    data = root / "data"
    if not data.exists():
        search_tier(data)
        (root / "space.yaml").write_text(SPACE)
    logs = Path(tempfile.mkdtemp(prefix="search_", dir=root))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FORECAST_THREADS")}
    if threads is not None:
        env["FORECAST_THREADS"] = str(threads)
    args = ["hpo", "--budget", "20K", "--trials", str(trials), "--no-live", "--config", str(ROOT / "configs" / "demo.yaml"),
            "--search-space", str(root / "space.yaml"), "--log-dir", str(logs), "--pruner", "none",
            f"--data.data_dir={data}", "--data.symbol=SYN", "--data.context_length=32",
            f"--data.val_start={VAL_START}", f"--data.test_start={TEST_START}", "--data.batch_size=64",
            "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
            f"--trainer.max_epochs={epochs}", f"--early_stopping.patience={epochs}"]
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "forecast", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"search failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    chosen = next((ln for ln in run.stderr.splitlines() if ln.startswith("threads: ")), "")
    return {"trials_per_hour": round(3600 * trials / wall), "threads": chosen.split(" ")[1] if chosen else "?"}


def bench_threads(models: tuple[str, ...] = ("100K", "2M", "20M"), seconds: float = 3.0, search_trials: int = 4,
                  search_epochs: int = 3, repeats: int = 3) -> dict[str, Any]:
    """The thread table: default vs the better of {1 thread, all cores}, as is and beside a busy process.

    Each choice is measured `repeats` times, interleaved in a rotating order (default, 1, all; then 1,
    all, default; ...) so that a neighbour's burst or the machine warming up falls on every choice
    alike; a row compares the choices' medians. Where the default chose the same count as a fixed
    choice, their ratio is the bench's own noise, which the row's `spread` shows.
    """
    cores = len(os.sched_getaffinity(0))
    choices = {"default": None, "1 thread": 1, f"{cores} threads": cores}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        for busy in (False, True):
            with busy_neighbour(busy):
                for model in models:
                    runs = _interleaved(choices, repeats, lambda t, m=model: run_child(
                        {"model": m, "batch": DEMO_BATCH, "seconds": seconds}, t))
                    rows.append(_row(f"{model} fit", busy, runs, "samples_per_s", "samples/s"))
                if search_trials:
                    runs = _interleaved(choices, repeats,
                                        lambda t: _search_rate(t, search_trials, search_epochs, Path(tmp)))
                    rows.append(_row("20K search", busy, runs, "trials_per_hour", "trials/hour"))
    worst = min(r["default_over_best"] for r in rows)
    return {"rows": rows, "worst_default_over_best": worst, "goal": ">= 0.90 in every row",
            "cores": cores, "repeats": repeats,
            "what": "median of `repeats` interleaved runs per choice; 'as is' = the machine with whatever "
                    "else runs on it (see load_before); 'busy' adds one CPU-bound process",
            "load_before": os.getloadavg()[0]}


def _interleaved(choices: dict[str, int | None], repeats: int, measure) -> dict[str, list[dict[str, Any]]]:
    """`measure(threads)` for every choice, `repeats` rounds, each round's order rotated by one."""
    names = list(choices)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            runs[name].append(measure(choices[name]))
    return runs


def _row(what: str, busy: bool, runs: dict[str, list[dict[str, Any]]], key: str, unit: str) -> dict[str, Any]:
    rates = {k: statistics.median(r[key] for r in v) for k, v in runs.items()}
    fixed = [v for k, v in rates.items() if k != "default"]
    spread = max((max(r[key] for r in v) - min(r[key] for r in v)) / rates[k] for k, v in runs.items())
    chosen = sorted({str(r["threads"]) for r in runs["default"]})
    row = {"what": what, "beside": "busy loop" if busy else "as is", "unit": unit,
           **{k: round(v, 1) for k, v in rates.items()}, "runs": {k: [r[key] for r in v] for k, v in runs.items()},
           "default_threads": ",".join(chosen), "spread": round(spread, 3),
           "default_over_best": round(rates["default"] / max(fixed), 3)}
    if any("trial_s" in r for r in runs["default"]):  # the default's first steps, timing 1 thread against all
        row["default_trial_s"] = statistics.median(r.get("trial_s", 0.0) for r in runs["default"])
    print(f"   {what:12s} {row['beside']:9s} " + "  ".join(f"{k}: {v:,.0f}" for k, v in rates.items())
          + f"  default ({row['default_threads']})/best {row['default_over_best']:.2f}  spread {spread:.0%}", flush=True)
    return row


def bench_efficiency(models: tuple[str, ...] = ("100K", "2M", "20M"), seconds: float = 5.0, probe_runs: int = 10,
                     compile_net: bool = True) -> dict[str, Any]:
    """Training FLOP/s over the matmul probe's rate (same threads: all cores)."""
    from forecast.sizing.planner import plan

    cores = len(os.sched_getaffinity(0))
    spread = probe_spread(probe_runs)
    rows = []
    for model in models:
        arch = {**MODELS[model], **PATCH}
        planned = plan(N_FEATURES, CONTEXT, **arch, precision="32", device="cpu", effective_batch=256).micro_batch
        variants = {f"eager b{DEMO_BATCH}": {"batch": DEMO_BATCH}, f"eager b{planned} (planner)": {"batch": planned}}
        if compile_net and model != "100K":  # compiling takes longer than the demo's whole fit
            variants[f"compiled b{planned}"] = {"batch": planned, "compile_net": True}
        for name, extra in variants.items():
            try:
                got = run_child({"model": model, "seconds": seconds, **extra}, None)  # the thread policy's choice
            except RuntimeError as err:  # one variant's crash is its row; the others still run
                rows.append({"model": model, "variant": name, "failed": str(err)})
                print(f"   {model:5s} {name:24s} failed: {err}", flush=True)
                continue
            row = {"model": model, "variant": name, "threads": got["threads"], "samples_per_s": got["samples_per_s"],
                   "gflops": got["gflops"],
                   "probe_gflops": got["probe_gflops"], "efficiency": round(got["gflops"] / got["probe_gflops"], 3)}
            print(f"   {model:5s} {name:24s} {got['gflops']:7.1f} GFLOP/s of {got['probe_gflops']:.0f}: "
                  f"{row['efficiency']:.0%}", flush=True)
            rows.append(row)
    failed = [f"{r['model']} {r['variant']}" for r in rows if "failed" in r]
    if failed:  # the bench exits non-zero naming them, after every other row was measured
        raise RuntimeError(f"efficiency rows failed: {', '.join(failed)}; measured: "
                           + json.dumps([r for r in rows if "failed" not in r]))
    return {"probe": spread, "rows": rows, "cores": cores, "goal": ">= 0.40 at 2M and 20M",
            "what": "training matmul FLOP/s (forecast.sizing.budget.training_flops_per_sample) over the probe's rate, "
                    "both in the same process with the same threads (the thread policy's choice, in each row); "
                    "probe = best 512^3 fp32 product in 0.25 s"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_cpu.json"))
    parser.add_argument("--only", choices=("threads", "efficiency"))
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS),
                        help="the models of both entries (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="threads: runs per choice and row (default: 3)")
    parser.add_argument("--search-trials", type=int, default=4,
                        help="threads: trials of the search row (0: no search row; default: 4)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(train_rate(**json.loads(args.child))))
        return 0
    models = tuple(args.models)
    sections = {"threads": lambda: bench_threads(models, repeats=args.repeats, search_trials=args.search_trials),
                "efficiency": lambda: bench_efficiency(models)}
    results = {k: fn() for k, fn in sections.items() if args.only in (None, k)}
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
