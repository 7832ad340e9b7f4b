"""Host memory to build a model through the CLI: peak RSS of `cli_main(..., run=False)`.

    python -m forecast.bench.build [--model configs/model/patchtst_200m.yaml]

A fresh child process writes a synthetic tier, records its peak resident memory (`ru_maxrss`),
then builds the trainer, data module and model exactly as `forecast fit` does (LightningCLI,
`run=False`) and records the peak again. The difference is what building the model cost the
host before any training: with the deferred build (`Forecaster.configure_model`) the network is
made on `meta` and materialised only where the Trainer runs it. `materialized_mb` also runs the
Trainer's `configure_model` on the CPU: the weights themselves, for comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forecast import configs

MODEL_200M = configs.path("model/patchtst_200m.yaml")
MODEL_2M = configs.path("model/patchtst_2m.yaml")  # the smallest size (`python -m forecast.bench --smoke`)
SYMBOL = "SYN"
KIB = 1024  # ru_maxrss is in KiB on Linux
MB = 1e6


def synthetic_tier(data_dir: Path, rows: int = 3000, symbol: str = SYMBOL, tier: str = "a25") -> list[str]:
    """Write synthetic raw prices and a tier under `data_dir`; return the `--data.*` flags that use
    them (splits at 80% / 90% of the rows), so a check needs neither ../shared nor a download."""
    from forecast.data.raw import write_raw
    from forecast.data.synthetic import synthetic_ohlcv
    from forecast.data.tiers import build_and_write

    raw = synthetic_ohlcv(n=rows, start="1994-01-03")
    write_raw(data_dir, symbol, raw, source="synthetic (forecast.data.synthetic)")
    build_and_write(data_dir, symbol, tier)
    dates = raw["Date"]
    return [f"--data.data_dir={data_dir}", f"--data.symbol={symbol}", f"--data.tier={tier}",
            f"--data.val_start={dates.iloc[int(rows * 0.8)].date()}",
            f"--data.test_start={dates.iloc[int(rows * 0.9)].date()}"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MB


def child(model: Path) -> dict[str, Any]:
    """Runs in the child: build through the CLI and report the peaks (MB)."""
    import torch

    from forecast.training.cli import cli_main

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        flags = synthetic_tier(Path(tmp) / "data")
        before = _peak_mb()
        start = time.perf_counter()
        cli = cli_main(["--config", str(configs.path("demo.yaml")), "--config", str(model), *flags,
                        f"--trainer.logger.init_args.save_dir={tmp}", "--trainer.accelerator=cpu"], run=False)
        built_s = time.perf_counter() - start
        built = _peak_mb()
        params = cli.model.num_parameters
        on = str(next(cli.model.parameters()).device)
        cli.model.configure_model()  # what the Trainer does on its device (here: the CPU)
        materialized = _peak_mb()
    return {"model": model.name, "params": params, "built_on": on, "build_s": round(built_s, 3),
            "peak_rss_before_mb": round(before), "build_rss_mb": round(built - before),
            "materialized_rss_mb": round(materialized - before)}


def bench_build(model: Path = MODEL_200M) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "forecast.bench.build", "--child", "--model", str(model)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forecast.bench.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODEL_200M)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    result = child(args.model) if args.child else bench_build(args.model)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
