"""`make gpu-check`: the first figures from a GPU, in one JSON (planned for under 7 minutes on one
H100/H200, so installing the wheels and a rerun fit a short lease).

    python -m forecast.bench.gpu_check [--out gpu_check.json] [--minutes 7]
    python -m forecast.bench.gpu_check --rehearse [--out DIR/gpu_check.json]   # `make gpu-rehearsal`

Needs only the project tree: the data are a SPY-sized synthetic series (`forecast.data.synthetic`,
~8,000 trading days) built into a temporary folder, never ../shared. Sections, in order:

  models  200M and 2B through the real CLI (`--data.batch_size auto`, the CUDA defaults: bf16-mixed,
          fused AdamW, device-resident batches, no training-batch metrics): time to build the
          network on the GPU (meta -> device), host RSS before/after, the planner's peak vs
          `torch.cuda.max_memory_allocated`, step time, samples/s, tokens/s, MFU (steady: the last
          window of timed steps; whole: every step). Each model records its own failure.
  search  `forecast hpo --budget 2B --trials 3` with 2 epochs per trial, end to end: outcomes
          (zero OOM is the target), wall time, each trial's throughput, MFU and memory
  small   trials per hour of a 2M search run by `forecast hpo --jobs N` (N worker processes on
          the one GPU, sharing a journal storage)
  compile the first model again with `--model.compile` (inductor; the rehearsal traces with
          dynamo's "eager" backend): whether it ran compiled, its speed and MFU beside eager's

Every section's JSON has a `summary`: one row per model or trial with the planner's peak against the
measured one, MFU, samples/s, compile asked and compile done, OOM; the section's OOM count; and what
was skipped for time (a model that would start with less than `min_model_s` of the section left, or
the section itself). `scripts/gpu-lease.sh` runs each section as its own process under its own time
limit (`--only SECTION --minutes M`), so a hang costs one section, not the lease.

Each section (and each model) catches and records its own error, and the device's memory is
released between them (gc + empty_cache), so an error in 200M never skips 2B. A section that would
start after the time budget is recorded as skipped. The JSON is written after every model and every
section and printed at the end (a remote machine may return only stdout or one folder). Without CUDA the check
prints one line on stderr and exits 1.

`--rehearse` runs the same code on the CPU at tiny sizes with the CUDA defaults forced as far as
the CPU allows (bf16-mixed, fused AdamW, training-batch metrics off, an MFU against a given peak,
two search workers); a test in `make test` runs it, so the script cannot rot before a GPU is lent.
`--smoke` is the same as `--rehearse`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from forecast import configs
from forecast.sizing.devices import release_memory

DEMO = configs.path("demo.yaml")
KIB, MB, GB = 1024, 1e6, 1e9


@dataclass(frozen=True)
class Sizes:
    """What each section runs: the GPU's sizes, or the rehearsal's."""

    rows: int = 8000  # trading days of the synthetic series (SPY 1993-2024 has ~7,900)
    models: tuple[tuple[str, str], ...] = (("200M", "patchtst_200m.yaml"), ("2B", "patchtst_2b.yaml"))
    steps: int = 40  # optimizer steps per model measurement (the last `window` timed ones give the steady rate)
    window: int = 20
    search_budget: str = "2B"
    search_trials: int = 3
    search_epochs: int = 2
    small_budget: str = "2M"
    small_trials: int = 8
    small_epochs: int = 3
    jobs: int = 4  # search workers sharing the GPU in the small section
    compile_backend: str = "true"  # the compile section's --model.compile (inductor)
    min_model_s: float = 45.0  # a model starts only with this much of the section's time left
    accelerator: str = "gpu"
    # Flags every run gets. On a GPU none: the CUDA defaults decide (bf16-mixed, fused AdamW,
    # training-batch metrics off). The rehearsal forces the same settings on the CPU.
    run_flags: tuple[str, ...] = ()
    model_flags: tuple[str, ...] = ()
    # Search trials keep weights-only best checkpoints; in bf16 a 2B trial writes 4 GB per new best, not 8
    search_flags: tuple[str, ...] = ("--model.weights_dtype=bfloat16",)


CUDA_DEFAULTS = ("--trainer.precision=bf16-mixed", "--model.fused=true", "--model.train_metrics=false",
                 # a CPU has no peak in Lightning's table; a given one makes the MFU path run
                 "--throughput.peak_tflops=1.0")
REHEARSAL = Sizes(rows=1200, models=(("tiny", "patchtst_2m.yaml"),), steps=6, window=2, search_budget="100K",
                  search_trials=1, search_epochs=1, small_budget="100K", small_trials=2, small_epochs=1, jobs=2,
                  compile_backend="eager", min_model_s=0.0,  # inductor's C++ build on a CPU takes minutes
                  accelerator="cpu", run_flags=CUDA_DEFAULTS,
                  model_flags=("--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2",
                               "--model.net.init_args.d_ff=32", "--model.net.init_args.n_layers=1"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MB


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def error_text(err: BaseException) -> str:
    """`Type: first line` of an error (no traceback is kept: it would hold the failed run's tensors)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def measure_model(name: str, config: Path, data_flags: list[str], logs: Path, sizes: Sizes,
                  extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Build one model on the device, train `steps` optimizer steps, report time, memory, speed
    (`extra`: more flags, e.g. the compile section's `--model.compile`)."""
    import torch

    from forecast.sizing.planner import estimate
    from forecast.sizing.throughput import Throughput
    from forecast.training.cli import cli_main

    args = ["--config", str(DEMO), "--config", str(config), *data_flags, *sizes.run_flags, *sizes.model_flags,
            "--data.batch_size=auto", f"--trainer.accelerator={sizes.accelerator}", f"--trainer.max_steps={sizes.steps}",
            "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false", "--early_stopping.strict=false", "--trainer.enable_model_summary=false",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",  # every step timed
            f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.logger.init_args.name={name}", *extra]
    rss_before = _rss_mb()
    cli = cli_main(args, run=False)
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, Throughput))
    monitor.window = sizes.window
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
    precision = str(cli.trainer.precision)
    planned = estimate(**net, precision=precision, device=device.type if device.type == "cuda" else "cpu",
                       micro_batch=micro, accumulate=accumulate).peak_bytes
    measured = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    steady = monitor.steady()
    samples = steady.get("device/samples_per_sec")
    optimizer = cli.trainer.optimizers[0]
    return {
        "name": name, "params": cli.model.num_parameters, "arch": {k: net[k] for k in ("d_model", "n_layers", "n_heads", "d_ff")},
        "precision": precision, "fused_adamw": bool(optimizer.defaults.get("fused")),
        "train_metrics": cli.model.train_metrics_on, **cli.model.compile_record(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "micro_batch": micro, "accumulate": accumulate, "build_s": round(build_s, 3),
        "host_rss_mb": {"before_build": round(rss_before), "after_build": round(rss_built), "after_fit": round(_rss_mb())},
        "planner_peak_gb": planned / GB, "measured_peak_gb": None if measured is None else measured / GB,
        "planner_over_measured": None if not measured else planned / measured,
        "steps": int(cli.trainer.global_step), "fit_s": round(fit_s, 3),
        "steady": {"step_s": None if not samples else micro * accumulate / samples, "samples_per_sec": samples,
                   "tokens_per_sec": steady.get("device/items_per_sec"), "mfu": steady.get("device/mfu"),
                   "window_batches": sizes.window},
        "whole": monitor.summary(), "available_flops": monitor.available_flops,
    }


def measure_models(data_flags: list[str], logs: Path, sizes: Sizes, deadline: float,
                   saved: Callable[[list[dict[str, Any]]], None] = lambda _: None,
                   extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every model of `sizes`, each on its own: a failure is recorded and the next one still runs; a
    model that would start with less than `sizes.min_model_s` before `deadline` (perf_counter) is
    recorded as skipped. `saved` gets the list after every model (the JSON survives a kill)."""
    results: list[dict[str, Any]] = []
    for name, file in sizes.models:
        left = deadline - time.perf_counter()
        if left < sizes.min_model_s:
            results.append({"name": name, "skipped": f"time: {max(left, 0):.0f} s of the section left"})
            continue
        print(f"-- model {name}", flush=True)
        try:
            results.append(measure_model(name, configs.path(f"model/{file}"), data_flags, logs, sizes, extra))
        except Exception as err:  # an OOM in 200M is a result; 2B still runs
            results.append({"name": name, "error": error_text(err), "oom": is_oom(err)})
        release_memory()  # what a finished or failed model held, before the next one
        saved(results)
    return results


def is_oom(err: BaseException) -> bool:
    """Whether an error is the device (or the host) running out of memory."""
    import torch

    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower()


def model_row(m: dict[str, Any]) -> dict[str, Any]:
    """One model's line of a section summary."""
    steady = m.get("steady") or {}
    return {"what": m.get("name"), "planner_peak_gb": m.get("planner_peak_gb"),
            "measured_peak_gb": m.get("measured_peak_gb"), "mfu": steady.get("mfu"),
            "samples_per_sec": steady.get("samples_per_sec"), "compile": m.get("compile"),
            "compiled": m.get("compiled"), "oom": bool(m.get("oom")),
            "error": m.get("error"), "skipped": m.get("skipped")}


def trial_row(r: dict[str, Any]) -> dict[str, Any]:
    """One search trial's line of a section summary."""
    return {"what": f"trial {r['number']} {r.get('arch_id')}", "planner_peak_gb": r.get("planner_peak_gb"),
            "measured_peak_gb": r.get("peak_memory_gb"), "mfu": r.get("mfu"),
            "samples_per_sec": r.get("samples_per_sec"), "compile": r.get("compile"), "compiled": r.get("compiled"),
            "oom": r.get("reason") == "oom", "error": r.get("message") if r.get("reason") == "error" else None,
            "skipped": None}


def section_summary(value: Any) -> dict[str, Any]:
    """A section's figures side by side: per model or trial the planner's peak against the measured one,
    MFU, samples/s, compile asked and done, OOM; the section's OOM count and what time skipped."""
    if isinstance(value, dict) and ("skipped" in value or "error" in value):
        return {"rows": [], "oom": 0, "skipped": [value["skipped"]] if "skipped" in value else [],
                "error": value.get("error")}
    rows = [model_row(m) for m in value] if isinstance(value, list) else [trial_row(r) for r in value["records"]]
    skipped = [f"{r['what']}: {r['skipped']}" for r in rows if r["skipped"]]
    if isinstance(value, dict) and value["finished"] < value["trials"]:
        skipped.append(f"{value['trials'] - value['finished']} of {value['trials']} trials did not finish")
    return {"rows": rows, "oom": sum(r["oom"] for r in rows), "skipped": skipped}


def search_records(study: Any) -> list[dict[str, Any]]:
    """What each trial of a study recorded (outcome, plan, throughput, memory)."""
    keys = ("reason", "arch_id", "params", "micro_batch", "accumulate", "epochs_run", "wall_s", "first_step_s",
            "samples_per_sec", "tokens_per_sec", "mfu", "peak_memory_gb", "planner_peak_gb", "compile", "compiled",
            "message")
    return [{"number": t.number, "state": t.state.name, "value": t.value, **{k: t.user_attrs.get(k) for k in keys}}
            for t in study.trials]


def run_search(budget: str, trials: int, epochs: int, data_flags: list[str], logs: Path, sizes: Sizes,
               jobs: int = 1) -> dict[str, Any]:
    """One real search through `forecast hpo` (with `--jobs N`, N worker processes) and what its trials recorded."""
    import optuna

    from forecast.hpo.cli import main as hpo_main
    from forecast.hpo.storage import open_storage

    storage, name = str(logs / "optuna.journal"), f"check-{budget}"
    argv = ["--budget", budget, "--trials", str(trials), "--config", str(DEMO), "--log-dir", str(logs),
            "--storage", storage, "--study-name", name, "--no-live", "--jobs", str(jobs),
            *data_flags, *sizes.run_flags, *sizes.search_flags, f"--trainer.max_epochs={epochs}", "--data.batch_size=auto",
            f"--trainer.accelerator={sizes.accelerator}"]
    start = time.perf_counter()
    code = hpo_main(argv)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=open_storage(storage, 0))
    records = search_records(study)
    finished = sum(r["state"] in ("COMPLETE", "PRUNED") for r in records)
    reasons = [r["reason"] for r in records]
    return {"budget": budget, "trials": trials, "epochs": epochs, "workers": jobs, "exit_code": code,
            "finished": finished, "wall_s": round(wall, 1), "trials_per_hour": finished / wall * 3600,
            "oom": reasons.count("oom"), "reasons": {str(r): reasons.count(r) for r in set(reasons)},
            "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--minutes", type=float, default=7.0, help="time budget: later sections are skipped")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--rehearse", "--smoke", action="store_true",
                        help="the same code on the CPU at tiny sizes, with the CUDA defaults forced")
    args = parser.parse_args(argv)
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device is visible (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); run it on a GPU machine, or rehearse on this CPU with --rehearse "
              "(make gpu-rehearsal)", file=sys.stderr)
        return 1
    result = run(args.out, args.minutes * 60, set(args.only or SECTIONS), REHEARSAL if args.rehearse else Sizes())
    print(json.dumps(result, indent=1, default=str))  # the figures come back even where files do not
    print(f"written: {args.out}")
    return 0


SECTIONS = ("models", "search", "small", "compile")


def run(out: Path, budget_s: float, sections: set[str], sizes: Sizes) -> dict[str, Any]:
    """Run the sections in order within `budget_s` seconds; write (and return) the JSON."""
    import torch

    from forecast.bench.build import synthetic_tier
    from forecast.core.files import write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                              "rehearsal": sizes.accelerator == "cpu", "run_flags": list(sizes.run_flags)}

    def save() -> None:
        result["total_s"] = round(time.perf_counter() - started, 1)
        write_json_atomic(out, result)

    def section(name: str, fn: Callable[[], Any]) -> None:
        if name not in sections:
            return
        left = budget_s - (time.perf_counter() - started)
        if left <= 0:
            result[name] = {"skipped": f"time budget of {budget_s / 60:.1f} min spent"}
        else:
            print(f"== {name} ({left / 60:.1f} min left)", flush=True)
            try:
                result[name] = fn()
            except Exception as err:  # a figure that failed is a result too; the rest still runs
                result[name] = {"error": error_text(err)}
        result.setdefault("summary", {})[name] = section_summary(result[name])
        release_memory()  # between sections too
        save()

    def partial(name: str) -> Callable[[list[dict[str, Any]]], None]:
        def saved(models: list[dict[str, Any]]) -> None:  # what a killed section still returns
            result[name] = models
            save()
        return saved

    deadline = started + budget_s
    first = sizes.models[:1]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthetic_tier(root / "data", rows=sizes.rows) + ["--data.min_windows=20"]
        result["data"] = {"rows": sizes.rows, "source": "forecast.data.synthetic"}
        section("models", lambda: measure_models(data, root / "logs", sizes, deadline, partial("models")))
        section("search", lambda: run_search(sizes.search_budget, sizes.search_trials, sizes.search_epochs, data,
                                             root / "search", sizes))
        section("small", lambda: run_search(sizes.small_budget, sizes.small_trials, sizes.small_epochs, data,
                                            root / "small", sizes, jobs=sizes.jobs))
        section("compile", lambda: measure_models(data, root / "compiled", replace(sizes, models=first), deadline,
                                                  partial("compile"), (f"--model.compile={sizes.compile_backend}",)))
    save()
    return result


if __name__ == "__main__":
    raise SystemExit(main())
