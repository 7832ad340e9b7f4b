"""`forecast isoflop`: the compute axis. Runs of exactly C training FLOPs per (compute budget, size, fold, seed).

A cell is one (compute budget C, training years, parameter budget). The training years are a `--train-years`
value (trailing; `--data.train_years` of every run of the cell), or without it the config's selection. Its
architecture and learning rate come from that budget's search when the storage holds one for the same series (the
best trial's d_model, n_layers, n_heads, d_ff and `model.lr`), else from the grid (`forecast arch`: the shape whose
exact count is closest to the budget) with the config's `model.lr`, or with `--lr-sweep K` the best of K rates
around it by validation loss (`sweep_runs`, `run_sweep`: run before the cells, since the lr is in every run's key).
Its optimizer steps are

    steps = floor(C / (F * B)),  F = `training_flops_per_sample` (forward + backward, head included),
                                 B = samples per optimizer step (data.batch_size, or planner.effective_batch)

so every run of the cell trains on steps * B samples, early stopping off, with the warmup + cosine schedule
ending at `trainer.max_steps = steps` (the module's schedule spans `estimated_stepping_batches`, which is
max_steps here). A cell under one optimizer step, or over 1,000 epochs (passes over the kept training samples) on
the smallest training split of the folds, is skipped with a line. Each run is tested once, with its FINAL weights (the compute is the budget, not
a best epoch), on the report's walk-forward fold (`build.make_folds`).

Every (cell, fold, seed) run is a task of the storage's task queue (`forecast.hpo.api.TaskQueue`, as the
report's retrains), keyed by everything that decides it, so `--jobs N` workers, other machines on the same
`--storage` and a rerun share them; a finished run's record lives in the storage, so a kill -9 loses only the
runs in flight.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from forecast.core.errors import ForecastError
from forecast.core.metric_names import MONITOR
from forecast.core.workers import Pool, this_worker
from forecast.hpo.api import TaskQueue, describe, study_names
from forecast.hpo.years import ALL, check_no_selection_flags, selection_flags
from forecast.report.build import ReportOptions, make_folds
from forecast.report.collect import collect, load_storage
from forecast.report.isoflop_options import LR_STEP_DECADES, IsoflopOptions, years_label
from forecast.report.retrain import QUIET
from forecast.sizing.budget import (
    architectures,
    budget_size,
    count_parameters,
    load_grid,
    num_patches,
    parse_budget,
    training_flops_per_sample,
)
from forecast.sizing.devices import default_device, release_memory
from forecast.training.config import resolve

Say = Callable[[str], None]
MAX_EPOCHS = 1000  # a cell that would pass over its training data more often than this is skipped
SWEEP_MIN_STEPS = 100  # an lr is swept where its size trains at least this many steps (else at its longest run)
# early stopping off: the budget decides the end (never patient out; a run shorter than an epoch has no
# val/loss at all, which a strict EarlyStopping would refuse)
NO_EARLY_STOP = ("--early_stopping.patience=1000000000", "--early_stopping.strict=false")
ARCH_KEYS = ("d_model", "n_layers", "n_heads", "d_ff")


def optimizer_steps(compute: float, flops_per_sample: int, batch: int) -> int:
    """Whole optimizer steps that spend at most `compute` training FLOPs: floor(C / (F * B))."""
    return int(compute // (flops_per_sample * batch))


def skip_reason(steps: int, epochs: float) -> str | None:
    """Why a cell is not run: under one optimizer step, or over `MAX_EPOCHS` epochs; else None."""
    if steps < 1:
        return "under one optimizer step"
    if epochs > MAX_EPOCHS:
        return f"{epochs:,.0f} epochs (over {MAX_EPOCHS:,})"
    return None


CONFIG, SWEEP = "config", "sweep"  # lr sources besides "study NAME"
POLL_S = 2.0  # seconds between looks at lr-sweep runs that other processes still run


@dataclass
class Size:
    """One parameter budget's model: its architecture, exact count and learning rate, and where they came from."""

    budget: str
    arch: dict[str, int]
    params: int
    lr: float
    source: str  # "study NAME", "config" (the config's model.lr) or "sweep" (--lr-sweep's best)
    flops_per_sample: int


@dataclass
class Selection:
    """One training-years value of the cells: its label, its data flags and the folds built with them."""

    years: str  # "all", "4", "2.5" (`years_label`)
    flags: list[str]  # --data.train_years/train_design/train_draw (none without --train-years: the config's)
    folds: list[Any]  # build.Fold, tested on the same dates whatever the years

    @property
    def amount(self) -> float:
        """How much history it keeps (inf: every year), to order selections."""
        return math.inf if self.years == ALL else float(self.years)


@dataclass
class Cell:
    """One (compute budget, training years, size): its steps and epochs, or why it is skipped."""

    compute: float
    size: Size
    batch: int
    steps: int
    epochs: list[float]  # per fold: steps * batch / kept training samples
    skipped: str | None
    selection: Selection

    @property
    def years(self) -> str:
        return self.selection.years


@dataclass
class Run:
    """One task: a cell on one fold with one seed (an lr-sweep run: its cell at one candidate lr)."""

    cell: Cell
    fold: Any  # build.Fold
    seed: int
    args: list[str]
    key: str = ""

    @property
    def label(self) -> str:
        years = "" if self.cell.years == ALL else f" {self.cell.years} years"
        lr = f" lr {self.cell.size.lr:.3g}" if self.cell.size.source == SWEEP else ""
        return f"C={self.cell.compute:.3g} {self.cell.size.budget}{years} fold {self.fold.index} seed {self.seed}{lr}"


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    return config["model"]["net"]["init_args"]


def _size(budget: str, config: dict[str, Any], n_features: int, studies: dict[int, Any],
          grid: Path | None = None) -> Size:
    """The budget's architecture and lr: from its study's best config if the storage has one, else the grid."""
    net = _model_args(config)
    shape = dict(context_length=int(config["data"]["context_length"]), patch_len=int(net["patch_len"]),
                 stride=int(net["stride"]), patch_mode=str(net.get("patch_mode", "mixing")),
                 revin=bool(net.get("revin", True)))
    entry = studies.get(budget_size(budget))
    if entry is not None:
        best = resolve(entry.config_args)
        arch = {k: int(_model_args(best)[k]) for k in ARCH_KEYS}
        lr, source = float(best["model"]["lr"]), f"study {entry.name}"
    else:
        size = budget_size(budget)
        found = architectures(budget, n_features, **shape, grid=None if grid is None else load_grid(grid))
        pick = min(found, key=lambda a: (abs(a.params - size), -a.d_model))
        arch, lr, source = pick.model_kwargs(), float(config["model"]["lr"]), CONFIG
    params = count_parameters(n_features, shape["context_length"], shape["patch_len"], shape["stride"],
                              arch["d_model"], arch["n_layers"], arch["n_heads"], arch["d_ff"], shape["patch_mode"],
                              shape["revin"])
    fps = training_flops_per_sample(n_features, shape["context_length"], shape["patch_len"], shape["stride"],
                                    arch["d_model"], arch["n_layers"], arch["d_ff"], shape["patch_mode"])
    return Size(budget, arch, params, lr, source, fps)


def samples_per_step(config: dict[str, Any]) -> int:
    """B: data.batch_size, or with 'auto' the planner's effective batch (micro-batch x accumulation)."""
    batch = config["data"]["batch_size"]
    if isinstance(batch, int):
        return batch * int(config["trainer"].get("accumulate_grad_batches") or 1)
    return int(config["planner"]["effective_batch"])


# What a study must share with the runs for its best trial to stand for a size: the series and target, and the
# window the architecture's parameter count depends on. A study on a training-years selection never stands in:
# its learning rate was tuned for fewer samples.
SAME_SERIES = ("symbol", "tier", "inputs", "task", "horizon", "threshold", "context_length")


def _studies(url: str, config: dict[str, Any]) -> dict[int, Any]:
    """The storage's studies that stand for each size (`stand_ins`; none: a storage of claims only)."""
    try:
        names = study_names(load_storage(url))
    except ForecastError:
        return {}
    return stand_ins(collect(url) if names else [], config["data"])


def stand_ins(entries: Sequence[Any], data: dict[str, Any]) -> dict[int, Any]:
    """{budget size: study entry} of the all-years studies whose data settings (`SAME_SERIES`) are `data`'s."""
    return {e.budget_size: e for e in entries
            if e.series.train_years is None and all(str(e.data.get(k)) == str(data.get(k)) for k in SAME_SERIES)}


def selections(options: IsoflopOptions, config: dict[str, Any]) -> list[Selection]:
    """The training-years values (--train-years, trailing design; without it the config's selection), each with
    the walk-forward folds built on it (the same test dates for all: only the training rows are thinned).

    Raises:
        ForecastError: --train-years beside a --data.train_years/design/draw flag, a value listed twice, or
            folds the data cannot make.
    """
    report = ReportOptions(storage=options.storage, folds=options.folds, test_start=options.test_start,
                           test_end=options.test_end)
    data = config["data"]
    if options.train_years is None:
        return [Selection(years_label(data.get("train_years")), [], make_folds(data, report))]
    check_no_selection_flags(options.run_args)
    out = []
    for years, flags in zip(options.train_years, selection_flags(options.train_years, ["trailing"], 1), strict=True):
        kept = {"train_years": None if years == ALL else float(years), "train_design": "trailing", "train_draw": 0}
        out.append(Selection(years_label(years), flags, make_folds({**data, **kept}, report)))
    return out


def plan_sizes(options: IsoflopOptions, config: dict[str, Any], n_features: int) -> list[Size]:
    """Each --budgets size: its study's architecture and lr when --storage holds one, else the grid's and the config's."""
    studies = _studies(options.storage, config)
    return [_size(b, config, n_features, studies, options.grid) for b in options.budgets]


def plan_cells(options: IsoflopOptions, config: dict[str, Any], sels: Sequence[Selection],
               sizes: Sequence[Size]) -> list[Cell]:
    """Every (compute budget, training years, size) cell with its steps, epochs per fold and skip reason."""
    batch = samples_per_step(config)
    cells = []
    for c in sorted(options.flops):
        for sel in sels:
            train = [f.module.splits["train"].size for f in sel.folds]  # kept training samples per fold
            for s in sizes:
                steps = optimizer_steps(c, s.flops_per_sample, batch)
                epochs = [steps * batch / n for n in train]
                cells.append(Cell(c, s, batch, steps, epochs, skip_reason(steps, max(epochs)), sel))
    return cells


def run_args(cell: Cell, options: IsoflopOptions, fold: Any, seed: int) -> list[str]:
    """The LightningCLI arguments of one run (without logger location)."""
    s = cell.size
    return [*options.run_args, *cell.selection.flags, *fold.args(),
            *(f"--model.net.init_args.{k}={v}" for k, v in s.arch.items()),
            f"--model.lr={s.lr!r}", f"--trainer.max_steps={cell.steps}",
            f"--trainer.max_epochs={math.ceil(max(cell.epochs)) + 1}", *NO_EARLY_STOP,
            "--trainer.enable_checkpointing=false", f"--seed_everything={seed}", *QUIET]


def run_key(args: Sequence[str], fingerprint: str, cell: Cell) -> str:
    """md5 of everything that decides a run: its arguments, config files by content, the fold's data, and the
    cell's compute budget and size name (two budgets of equal steps stay two runs, each with its own record)."""
    parts = ["isoflop", fingerprint, repr(cell.compute), cell.size.budget]
    for i, arg in enumerate(args):
        parts.append(Path(arg).read_text() if i > 0 and args[i - 1] == "--config" and Path(arg).is_file() else arg)
    return hashlib.md5("\0".join(parts).encode()).hexdigest()


def fit_and_test(run: Run, root: Path) -> dict[str, Any]:
    """Train one run to its step budget and test its final weights once on its fold's test block."""
    import torch

    from forecast.training.cli import cli_main
    from forecast.training.messages import quiet_lightning

    started = time.time()
    logger = "--trainer.logger.init_args."
    years = "" if run.cell.years == ALL else f"-y{run.cell.years}"
    lr = f"-lr{run.cell.size.lr:.3g}" if run.cell.size.source == SWEEP else ""
    version = f"C{run.cell.compute:.3g}-{run.cell.size.budget}{years}-fold{run.fold.index}-seed{run.seed}{lr}"
    args = [*run.args, f"{logger}save_dir={root}", f"{logger}name=isoflop", f"{logger}version={version}"]
    with quiet_lightning(stdout=True):
        cli = cli_main(args, run=False)
        if cli.datamodule.fingerprint() != run.fold.fingerprint:
            raise ForecastError("the data changed on disk since isoflop began (rebuilt tier?); rerun it")
        cli.trainer.fit(cli.model, cli.datamodule)
        val = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]  # the final weights (lr sweep)
        test = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
        probs = cli.trainer.predict(cli.model, dataloaders=cli.datamodule.test_dataloader())
    cell, dm = run.cell, cli.datamodule
    steps = int(cli.trainer.global_step)
    samples = steps * cell.batch
    tokens = num_patches(dm.context_length, int(cli.model.net.patch_len), int(cli.model.net.stride))
    kept = int(dm.splits["train"].size)  # distinct training samples (the kept years')
    return {"compute": cell.compute, "budget": cell.size.budget, "params": int(cli.model.num_parameters),
            "lr": cell.size.lr, "lr_source": cell.size.source, "train_years": cell.years,
            "train_samples": kept, "train_tokens": kept * tokens, "fold": run.fold.index, "seed": run.seed,
            "steps": steps, "batch": cell.batch, "epochs": round(samples / kept, 4),
            "samples_seen": samples, "tokens_seen": samples * tokens,
            "flops": samples * cell.size.flops_per_sample,
            "val_loss": float(val.get(MONITOR, math.nan)), "loss": float(test.get("test/loss", math.nan)), "auroc": float(test.get("test/auroc", math.nan)),
            "wall_s": round(time.time() - started, 3),
            "probs": [round(float(p), 6) for p in torch.cat(probs).float()]}


def work(runs: Sequence[Run], queue: TaskQueue, root: Path, say: Say) -> int:
    """Claim and run tasks until none is left to claim (as `forecast.report.jobs.work`); how many ran here."""
    by_key = {r.key: r for r in runs}
    ran = 0
    while True:
        open_keys = [k for k, s in queue.states(list(by_key)).items() if s.status == "waiting"]
        if not open_keys:
            return ran
        claim = queue.claim(open_keys)
        if claim is None:
            continue
        run = by_key[claim.key]
        with queue.beating(claim):
            try:
                result = fit_and_test(run, root)
            except Exception as err:  # a failed run is a finding, recorded for all
                first = (str(err).strip().splitlines() or [""])[0]
                kind = "" if isinstance(err, ForecastError) else f"{type(err).__name__}: "
                queue.fail(claim, f"{kind}{first}")
                say(f"[-/{len(by_key)}] {run.label}: failed: {kind}{first}")
                release_memory()
                continue
        queue.finish(claim, result["loss"], result)
        ran += 1
        done = sum(st.status == "done" for st in queue.states(list(by_key)).values())
        say(f"[{done}/{len(by_key)}] {run.label}: {result['steps']} steps, {result['epochs']:.2f} epochs, "
            f"test loss {result['loss']:.4f}, AUROC {result['auroc']:.3f} ({result['wall_s']:.0f} s)")


@dataclass
class Isoflop:
    """What `forecast isoflop` found: the cells, the finished runs' records, the folds and why none is written."""

    cells: list[Cell]
    results: list[dict[str, Any]]
    folds: list[Any]
    seeds: list[int]
    failed: list[str]
    pending: str | None = None
    wall_s: float = 0.0


def sweep_lrs(lr: float, k: int) -> list[float]:
    """`k` learning rates `LR_STEP_DECADES` apart in log10, centred on `lr` (k = 5: lr x 0.1, 0.32, 1, 3.2, 10)."""
    return [float(lr * 10 ** (LR_STEP_DECADES * (i - (k - 1) / 2))) for i in range(k)]


def sweep_runs(cells: Sequence[Cell], options: IsoflopOptions) -> dict[str, list[Run]]:
    """--lr-sweep K: per size without a study, its K candidate runs, by budget.

    Each size runs at its smallest compute budget that is not skipped and gives it `SWEEP_MIN_STEPS` optimizer
    steps (a learning rate judged on a few steps says nothing of its warmup and decay; a size with fewer
    everywhere: at its longest run), on the selection of most history (all years when listed), fold 0, seed 0.
    A candidate run is the cell's own fold-0 seed-0 run at that lr, keyed the same way, so the winner's run is
    reused as the cell's run.
    """
    if options.lr_sweep == 0:
        return {}
    out: dict[str, list[Run]] = {}
    runnable = [c for c in cells if c.skipped is None and c.size.source == CONFIG]
    most = max((c.selection.amount for c in runnable), default=None)
    for cell in sweep_cells([c for c in runnable if c.selection.amount == most]):
        fold = cell.selection.folds[0]
        runs = []
        for lr in sweep_lrs(cell.size.lr, options.lr_sweep):
            trial = replace(cell, size=replace(cell.size, lr=lr, source=SWEEP))
            args = run_args(trial, options, fold, 0)
            runs.append(Run(trial, fold, 0, args, run_key(args, fold.fingerprint, trial)))
        out[cell.size.budget] = runs
    return out


def sweep_cells(cells: Sequence[Cell]) -> list[Cell]:
    """Per size, the cell its lr is swept at: the smallest compute with `SWEEP_MIN_STEPS` steps, else the most steps."""
    by_size: dict[str, list[Cell]] = {}
    for cell in cells:
        by_size.setdefault(cell.size.budget, []).append(cell)
    return [min((c for c in group if c.steps >= SWEEP_MIN_STEPS), key=lambda c: c.compute,
                default=max(group, key=lambda c: (c.steps, -c.compute)))
            for group in by_size.values()]


def run_sweep(sweeps: dict[str, list[Run]], sizes: Sequence[Size], queue: TaskQueue, root: Path, say: Say,
              works: bool, loud: bool) -> None:
    """Run the lr-sweep runs (with the other processes) until each is done or failed, then give each swept size
    the lr of least validation loss (final weights), `source` "sweep"; a size whose runs all failed keeps the
    config's lr."""
    runs = [r for rs in sweeps.values() for r in rs]
    if not runs:
        return
    if loud:
        say(f"isoflop: lr sweep: {len(runs)} runs ({len(sweeps)} sizes x {len(runs) // len(sweeps)} learning rates)")
    while True:
        queue.post({r.key: {"label": f"lr sweep {r.label}"} for r in runs})  # again: a killed run is redone
        if works:
            work(runs, queue, root, say)
        states = queue.states([r.key for r in runs])
        if all(st.status in ("done", "failed") for st in states.values()):
            break
        time.sleep(POLL_S)  # another process still runs one
    by_budget = {s.budget: s for s in sizes}
    for budget, rs in sweeps.items():
        found = [(states[r.key].result["val_loss"], r.cell.size.lr) for r in rs if states[r.key].status == "done"]
        found = [(v, lr) for v, lr in found if math.isfinite(v)]
        if not found:
            if loud:
                say(f"isoflop: lr sweep of {budget}: no run finished with a validation loss; the config's lr")
            continue
        loss, lr = min(found)
        by_budget[budget].lr, by_budget[budget].source = lr, SWEEP
        if loud:
            tried = ", ".join(f"{x:.3g}: {v:.4f}" for v, x in sorted(found, key=lambda f: f[1]))
            rates = [r.cell.size.lr for r in rs]
            edge = "; at the edge of the rates tried" if len(rates) > 1 and lr in (min(rates), max(rates)) else ""
            at = rs[0].cell
            say(f"isoflop: lr sweep of {budget}: lr {lr:.3g} (validation loss {tried}{edge}; at C={at.compute:.3g}, "
                f"{at.steps:,} steps)")


def run_isoflop(options: IsoflopOptions, say: Say = print, workers: Pool | None = None) -> Isoflop:
    """Plan the cells, run the lr sweep (--lr-sweep), post the cells' runs to the storage, run them with the
    other processes, gather the results.

    Raises:
        ForecastError: a mistake in the command (config, budgets, storage, folds, training years).
    """
    started = time.time()
    worker = this_worker() is not None
    if workers is None and options.jobs > 1 and not worker:
        workers = Pool(["isoflop", *options.argv], options.jobs, options.worker_devices, default_device(), say)
    if workers is not None:
        say = workers.say
    works = workers is None or workers.parent_works
    try:
        for b in options.budgets:
            parse_budget(b)
        config = resolve(options.run_args)
        sels = selections(options, config)
        sizes = plan_sizes(options, config, int(sels[0].folds[0].module.n_features))
        cells = plan_cells(options, config, sels, sizes)
        if workers is not None:
            workers.release()
        queue = TaskQueue(options.storage, options.heartbeat)
        sweeps = sweep_runs(cells, options)
        run_sweep(sweeps, sizes, queue, options.out / "runs", say, works, not worker)
        swept = {r.key for rs in sweeps.values() for r in rs}
        seeds = list(range(options.seeds))
        runs = []
        for cell in cells:
            if cell.skipped:
                if not worker:
                    years = "" if cell.years == ALL else f" {cell.years} years"
                    say(f"skipped C={cell.compute:.3g} {cell.size.budget}{years} ({cell.size.params:,} parameters): "
                        f"{cell.skipped}")
                continue
            for fold in cell.selection.folds:
                for seed in seeds:
                    args = run_args(cell, options, fold, seed)
                    runs.append(Run(cell, fold, seed, args, run_key(args, fold.fingerprint, cell)))
        folds = sels[0].folds
        if not worker:
            say(f"isoflop: {len(runs)} runs ({sum(not c.skipped for c in cells)} cells x {len(folds)} folds x "
                f"{len(seeds)} seeds) on {describe(options.storage)} -> {options.out}")
        done = [k for k, st in queue.states([r.key for r in runs]).items() if st.status == "done"]
        if done and not worker:
            by_sweep = sum(k in swept for k in done)  # a sweep's winner is its cell's fold-0 seed-0 run
            note = f"; {by_sweep} from the lr sweep" if by_sweep else ""
            say(f"isoflop: {len(done)} of the {len(runs)} runs finished before (reused{note})")
        queue.post({r.key: {"label": r.label} for r in runs})
        if works:
            ran = work(runs, queue, options.out / "runs", say)
            if worker:
                say(f"this worker ran {ran} of the {len(runs)} runs")
        if workers is not None:
            workers.wait()
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    wall = round(time.time() - started, 1)
    if worker:
        return Isoflop(cells, [], folds, seeds, [], pending="a --jobs worker", wall_s=wall)
    states = queue.states([r.key for r in runs])
    failed = [f"{r.label}: {states[r.key].reason}" for r in runs if states[r.key].status == "failed"]
    left = [r for r in runs if states[r.key].status not in ("done", "failed")]
    if left:
        return Isoflop(cells, [], folds, seeds, failed, pending=(
            f"{len(left)} runs still run in other processes; rerun this command when they are done"), wall_s=wall)
    results = [states[r.key].result for r in runs if states[r.key].status == "done"]
    return Isoflop(cells, results, folds, seeds, failed, wall_s=wall)
