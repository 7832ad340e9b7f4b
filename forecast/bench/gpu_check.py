"""`make gpu-check`: the first figures from a GPU, in one JSON (planned for under 8 minutes on one H200).

    python -m forecast.bench.gpu_check [--out gpu_check.json] [--minutes 8]

Needs only the project tree: the data are a SPY-sized synthetic series (`forecast.data.synthetic`,
~8,000 trading days) built into a temporary folder, never ../shared. Sections, in order:

  models  200M and 2B in bf16-mixed through the real CLI (`--data.batch_size auto`): time to build
          the network on the GPU (meta -> device), host RSS before/after, the planner's peak vs
          `torch.cuda.max_memory_allocated`, step time, samples/s, tokens/s, MFU (steady: the last
          window of steps; whole: every step)
  search  `forecast hpo --budget 2B --trials 3` with 2 epochs per trial, end to end: outcomes
          (zero OOM is the target), wall time, each trial's throughput, MFU and memory
  small   trials per hour of a 2M search (several workers when the search offers --jobs)

A section that would start after the time budget is skipped and says so. Without CUDA the check
prints one line on stderr and exits 1. `--smoke` runs the same code on the CPU with tiny budgets
(what the CPU test runs, so the script is known to work before a GPU is lent).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from forecast import configs

DEMO = configs.path("demo.yaml")
KIB, MB, GB = 1024, 1e6, 1e9


@dataclass(frozen=True)
class Sizes:
    """What each section runs: the GPU's sizes, or the smoke test's."""

    rows: int = 8000  # trading days of the synthetic series (SPY 1993-2024 has ~7,900)
    models: tuple[tuple[str, str], ...] = (("200M", "patchtst_200m.yaml"), ("2B", "patchtst_2b.yaml"))
    steps: int = 40  # optimizer steps per model measurement (the last `window` give the steady rate)
    window: int = 20
    search_budget: str = "2B"
    search_trials: int = 3
    search_epochs: int = 2
    small_budget: str = "2M"
    small_trials: int = 8
    small_epochs: int = 3
    jobs: int = 4
    accelerator: str = "gpu"
    precision: str = "bf16-mixed"
    model_flags: tuple[str, ...] = ()


SMOKE = Sizes(rows=1200, models=(("tiny", "patchtst_2m.yaml"),), steps=6, window=2, search_budget="100K",
              search_trials=2, search_epochs=1, small_budget="100K", small_trials=2, small_epochs=1, jobs=1,
              accelerator="cpu", precision="32-true",
              model_flags=("--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2",
                           "--model.net.init_args.d_ff=32", "--model.net.init_args.n_layers=1"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MB


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_model(name: str, config: Path, data_flags: list[str], logs: Path, sizes: Sizes) -> dict[str, Any]:
    """Build one model on the device, train `steps` optimizer steps, report time, memory, speed."""
    import torch
    from lightning.pytorch.trainer.states import RunningStage

    from forecast.sizing.planner import estimate
    from forecast.sizing.throughput import Throughput
    from forecast.training.cli import cli_main

    args = ["--config", str(DEMO), "--config", str(config), *data_flags, *sizes.model_flags,
            "--data.batch_size=auto", f"--trainer.accelerator={sizes.accelerator}",
            f"--trainer.precision={sizes.precision}", f"--trainer.max_steps={sizes.steps}",
            "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false", "--early_stopping.strict=false", "--trainer.enable_model_summary=false",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",  # every step timed
            f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.logger.init_args.name={name}"]
    rss_before = _rss_mb()
    cli = cli_main(args, run=False)
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, Throughput))
    monitor.kwargs["window_size"] = sizes.window
    device = cli.trainer.strategy.root_device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with torch.device(device):  # what the Trainer does around configure_model
        cli.model.configure_model()
    _sync()
    build_s = time.perf_counter() - start
    rss_built = _rss_mb()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    _sync()
    fit_s = time.perf_counter() - start
    net = cli.model.net.init_args
    micro, accumulate = cli.datamodule.batch_size, int(cli.trainer.accumulate_grad_batches)
    planned = estimate(**net, precision=sizes.precision, device=device.type if device.type == "cuda" else "cpu",
                       micro_batch=micro, accumulate=accumulate).peak_bytes
    measured = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    steady = monitor._throughputs[RunningStage.TRAINING].compute()  # private API: no public per-stage accessor
    whole = monitor.summary()
    samples = steady.get("device/samples_per_sec")
    return {
        "name": name, "params": cli.model.num_parameters, "arch": {k: net[k] for k in ("d_model", "n_layers", "n_heads", "d_ff")},
        "precision": str(cli.trainer.precision), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "micro_batch": micro, "accumulate": accumulate, "build_s": round(build_s, 3),
        "host_rss_mb": {"before_build": round(rss_before), "after_build": round(rss_built), "after_fit": round(_rss_mb())},
        "planner_peak_gb": planned / GB, "measured_peak_gb": None if measured is None else measured / GB,
        "planner_over_measured": None if not measured else planned / measured,
        "steps": int(cli.trainer.global_step), "fit_s": round(fit_s, 3),
        "steady": {"step_s": None if not samples else micro * accumulate / samples, "samples_per_sec": samples,
                   "tokens_per_sec": steady.get("device/items_per_sec"), "mfu": steady.get("device/mfu"),
                   "window_batches": sizes.window},
        "whole": whole, "available_flops": monitor.available_flops,
    }


def run_search(budget: str, trials: int, epochs: int, data_flags: list[str], logs: Path, sizes: Sizes,
               jobs: int = 1) -> dict[str, Any]:
    """One real search (`forecast hpo`'s code) and what its trials recorded."""
    import optuna

    from forecast.hpo.study import HpoOptions, run_study

    overrides = [*data_flags, f"--trainer.max_epochs={epochs}", "--data.batch_size=auto",
                 f"--trainer.accelerator={sizes.accelerator}"]
    extra = {"jobs": jobs} if jobs > 1 and "jobs" in {f.name for f in fields(HpoOptions)} else {}
    options = HpoOptions(budget=budget, trials=trials, configs=[str(DEMO)], overrides=overrides, log_dir=logs,
                         live=False, **extra)
    start = time.perf_counter()
    outcome = run_study(options)
    wall = time.perf_counter() - start
    storage = f"sqlite:///{logs / 'optuna.db'}"
    study = optuna.load_study(study_name=outcome.study, storage=storage)
    keys = ("reason", "arch_id", "params", "micro_batch", "accumulate", "epochs_run", "wall_s", "first_step_s",
            "samples_per_sec", "tokens_per_sec", "mfu", "peak_memory_gb", "planner_peak_gb", "message")
    records = [{"number": t.number, "state": t.state.name, "value": t.value,
                **{k: t.user_attrs.get(k) for k in keys}} for t in study.trials]
    reasons = [r["reason"] for r in records]
    return {"budget": budget, "trials": trials, "epochs": epochs, "workers": extra.get("jobs", 1),
            "ending": outcome.ending, "finished": outcome.finished, "wall_s": round(wall, 1),
            "trials_per_hour": outcome.finished / wall * 3600, "oom": reasons.count("oom"),
            "reasons": {r: reasons.count(r) for r in set(reasons)}, "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget: later sections are skipped")
    parser.add_argument("--only", nargs="*", choices=("models", "search", "small"), help="run only these sections")
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU with tiny budgets")
    args = parser.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device is visible (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); run it on a GPU machine", file=sys.stderr)
        return 1
    return run(args.out, args.minutes * 60, set(args.only or ("models", "search", "small")),
               SMOKE if args.smoke else Sizes())


def run(out: Path, budget_s: float, sections: set[str], sizes: Sizes) -> int:
    import torch

    from forecast.bench.build import synthetic_tier
    from forecast.io import write_json_atomic

    started = time.perf_counter()
    result: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}

    def save() -> None:
        result["total_s"] = round(time.perf_counter() - started, 1)
        write_json_atomic(out, result)

    def section(name: str, fn) -> None:
        if name not in sections:
            return
        left = budget_s - (time.perf_counter() - started)
        if left <= 0:
            result[name] = {"skipped": f"time budget of {budget_s / 60:.0f} min spent"}
        else:
            print(f"== {name} ({left / 60:.1f} min left)", flush=True)
            try:
                result[name] = fn()
            except Exception as err:  # a figure that failed is a result too; the rest still runs
                result[name] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"}
        save()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthetic_tier(root / "data", rows=sizes.rows) + ["--data.min_windows=20"]
        result["data"] = {"rows": sizes.rows, "source": "forecast.data.synthetic"}
        section("models", lambda: [measure_model(n, configs.path(f"model/{f}"), data, root / "logs", sizes)
                                   for n, f in sizes.models])
        section("search", lambda: run_search(sizes.search_budget, sizes.search_trials, sizes.search_epochs, data,
                                             root / "search", sizes))
        section("small", lambda: run_search(sizes.small_budget, sizes.small_trials, sizes.small_epochs, data,
                                            root / "small", sizes, jobs=sizes.jobs))
    save()
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
