"""`make bench`: speed figures measured in one run, printed and written as JSON.

Entries:
  gather   windows/s of the DataModule's one-op batch gather vs a per-sample Dataset + DataLoader
  fit      seconds per optimizer step of `Trainer.fit` vs a plain PyTorch loop (same model,
           data, optimizer; progress bar, checkpointing and per-step logging off; throughput
           recording on)
  memory   the memory planner's estimate vs measured peak of a real CPU training step
           (`forecast.bench.memory`), when that module is present
  build    host memory (peak RSS) and time to build a 200M model through the CLI
           (`forecast.bench.build`): the network is built on `meta`, materialised where it runs
  hpo      trial overhead and the pruning saving (`forecast.bench.hpo`)
  scale    storage overhead per trial on SQLite, journal and PostgreSQL (4 workers), trials per
           hour with `--jobs 1` and `--jobs 2` and their ratio (`forecast.bench.scale`)

Benchmarks report; no test asserts a timing (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from forecast.data.datamodule import WindowDataset, batch_loader


class PerSampleWindows(Dataset):
    """The textbook way: one window per __getitem__, stacked by the default collate."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, ends: torch.Tensor, context_length: int):
        self.features, self.targets, self.ends, self.context_length = features, targets, ends, context_length

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int):
        t = int(self.ends[i])
        return self.features[t - self.context_length + 1 : t + 1], self.targets[t]


def _synthetic(rows: int = 8000, n_features: int = 25, context_length: int = 80, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, n_features, generator=g)
    targets = (torch.rand(rows, generator=g) < 0.3).float()
    ends = torch.arange(context_length - 1, rows - 1)
    return features, targets, ends


def _time_epochs(loader, epochs: int) -> float:
    start = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for x, _y in loader:
            n += len(x)
    return n / (time.perf_counter() - start)


def bench_gather(batch_size: int = 256, epochs: int = 3) -> dict:
    features, targets, ends, L = *_synthetic(), 80
    fast = batch_loader(WindowDataset(features, targets, ends.numpy(), L), batch_size, shuffle=True)
    slow = DataLoader(PerSampleWindows(features, targets, ends, L), batch_size=batch_size, shuffle=True)
    for x, _ in fast:  # the two loaders must yield the same thing
        assert x.shape == next(iter(slow))[0].shape
        break
    fast_wps, slow_wps = _time_epochs(fast, epochs), _time_epochs(slow, epochs)
    return {"batch_gather_windows_per_s": fast_wps, "per_sample_windows_per_s": slow_wps,
            "ratio": fast_wps / slow_wps, "goal": ">= 10"}


def _model(n_features: int, context_length: int):
    from forecast.model import PatchTST

    return PatchTST(n_features=n_features, context_length=context_length, d_model=64, n_layers=2,
                    n_heads=4, d_ff=128, dropout=0.0, head_dropout=0.0)


def _plain_loop(loader, steps: int, lr: float) -> float:
    """The same work written by hand: AdamW with the module's decay groups, its LR schedule, clipping."""
    from forecast.training.module import decay_groups, warmup_cosine

    torch.manual_seed(0)
    net = _model(25, 80)
    opt = torch.optim.AdamW(decay_groups(net, 0.05), lr=lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, 0.05))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    done, start = 0, None
    while done < steps:
        for x, y in loader:
            if done == 5:  # warm-up steps excluded, as for the Trainer
                start = time.perf_counter()
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            schedule.step()
            done += 1
            if done == steps:
                break
    return (time.perf_counter() - start) / (steps - 5)


def _trainer_loop(loader, steps: int, lr: float, train_metrics: bool = False) -> float:
    import lightning.pytorch as L

    from forecast.sizing.throughput import Throughput
    from forecast.training.module import Forecaster

    class StepClock(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            if trainer.global_step == 5:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *_):
            self.seconds = time.perf_counter() - self.start

    torch.manual_seed(0)
    module = Forecaster(_model(25, 80), lr=lr, weight_decay=0.05, warmup_frac=0.05, train_metrics=train_metrics)
    clock = StepClock()
    # Throughput recording on, as in every run (samples/s, tokens/s and FLOPs per step)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock, Throughput()])
    trainer.fit(module, train_dataloaders=loader)
    return clock.seconds / (steps - 5)


def bench_fit(steps: int = 60, batch_size: int = 64, repeats: int = 3) -> dict:
    features, targets, ends = _synthetic()
    loader = batch_loader(WindowDataset(features, targets, ends.numpy(), 80), batch_size, shuffle=True)
    plain, trainer, with_metrics = [], [], []
    for _ in range(repeats):  # interleaved so a noisy neighbour hits all alike
        plain.append(_plain_loop(loader, steps, 1e-3))
        trainer.append(_trainer_loop(loader, steps, 1e-3))
        with_metrics.append(_trainer_loop(loader, steps, 1e-3, train_metrics=True))
    p, t, m = min(plain), min(trainer), min(with_metrics)
    return {"plain_s_per_step": p, "trainer_s_per_step": t, "ratio": t / p, "goal": "<= 1.10",
            "trainer_with_train_metrics_s_per_step": m, "ratio_with_train_metrics": m / p,
            "note": "min over interleaved repeats; same model, data, AdamW groups, LR schedule and clipping; "
                    "the goal's run has train metrics off (model.train_metrics=false), as the plain loop, "
                    "and throughput recording on (forecast.sizing.throughput.Throughput)"}


def bench_memory(only: tuple[str, ...] = ()) -> dict:
    """The memory planner against measured peaks (`forecast.bench.memory`), every config or those named."""
    from forecast.bench.memory import CONFIGS, row

    rows = [row(cfg) for cfg in CONFIGS if not only or any(s in cfg.id for s in only)]
    return {"rows": rows, "worst_est_over_tensors": min(r["est_over_tensors"] for r in rows)}


def sections() -> dict[str, tuple[Callable[..., dict], dict]]:
    """Every entry of `make bench`: its function and the arguments of its smallest size (`--smoke`)."""
    from forecast.bench.build import MODEL_2M, bench_build
    from forecast.bench.cpu import bench_efficiency, bench_threads
    from forecast.bench.hpo import bench_hpo
    from forecast.bench.report import bench_report
    from forecast.bench.scale import bench_storage, bench_throughput

    return {
        "gather": (bench_gather, {"epochs": 1}),
        "fit": (bench_fit, {"steps": 8, "repeats": 1}),
        "memory": (bench_memory, {"only": ("demo-0.1M",)}),
        "build": (bench_build, {"model": MODEL_2M}),
        "hpo": (bench_hpo, {"trials": 2, "epochs": 1}),
        "storage": (bench_storage, {"workers": 2, "trials": 4}),
        "throughput": (bench_throughput, {"trials": 1, "epochs": 1, "repeats": 1}),
        "threads": (bench_threads, {"models": ("100K",), "seconds": 0.2, "search_trials": 0, "repeats": 1}),
        "efficiency": (bench_efficiency, {"models": ("100K",), "seconds": 0.2, "probe_runs": 2,
                                          "compile_net": False}),
        "report": (bench_report, {"budgets": ("20K",), "folds": 2, "seeds": 1, "epochs": 1}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--only", nargs="*", default=None, help="run only these entries")
    parser.add_argument("--smoke", action="store_true", help="every entry at its smallest size (what the test runs)")
    args = parser.parse_args(argv)
    entries = sections()
    unknown = sorted(set(args.only or ()) - set(entries))
    if unknown:
        parser.error(f"unknown entries {unknown}; known: {', '.join(entries)}")
    results: dict = {"torch_threads": torch.get_num_threads(), "load_before": os.getloadavg()[0],
                     "smoke": args.smoke}
    failed = []
    for name, (fn, smallest) in entries.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            results[name] = fn(**smallest) if args.smoke else fn()
        except Exception as err:  # noqa: BLE001 - one entry's failure is reported, and the bench fails at the end
            failed.append(name)
            results[name] = {"failed": f"{type(err).__name__}: {str(err).strip()[:500]}"}
        results[name]["section_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(results[name], indent=2, default=str), flush=True)
    from forecast.core.files import write_json_atomic

    write_json_atomic(args.out, results)
    print(f"written: {args.out}")
    if failed:
        print(f"bench: {len(failed)} entries failed: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
