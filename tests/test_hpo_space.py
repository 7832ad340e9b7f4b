"""forecast.hpo.space (and the study's plan): the search space, the pruner, budgets, stop control, and every
sampled value reaching what the Trainer and the model receive."""

from __future__ import annotations

import os
import signal
import time
import warnings

import lightning.pytorch as L
import optuna
import pytest
import yaml
from search_fixtures import ROOT, _one_thread, data, options, space_file, wait_for  # noqa: F401  (fixtures; _one_thread is autouse)

from forecast.core.errors import ForecastError
from forecast.hpo.opening import make_pruner
from forecast.hpo.plan import plan_study
from forecast.hpo.space import OutsideSpace, bind, load_space, parse_param
from forecast.hpo.stop import AbortTrial, StopControl
from forecast.sizing.budget import parse_budget
from forecast.training.cli import cli_main
from forecast.training.config import resolve
from forecast.training.module import warmup_cosine


def test_architectures_are_drawn_from_the_grid_only(space_file):
    spec = load_space(space_file)
    space = bind(spec, 20_000, 25, 32, 8, 4, "mixing", True)
    grid = set(space.tree.archs)
    assert {a.id for a in grid} == {"d32-l1-h4-f2", "d32-l1-h4-f4", "d32-l2-h4-f2", "d16-l4-h2-f4"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(60):
        trial = study.ask()
        drawn.add(space.tree.suggest(trial))
        study.tell(trial, 0.0)
    assert drawn == grid  # every grid point is reachable and nothing else ever comes out
    # extremes first: widest (= shallowest) and narrowest (= deepest), each once
    assert [a.id for a in space.tree.extremes()] == ["d32-l1-h4-f2", "d16-l4-h2-f4"]
    assert space.enqueued() == [{"d_model": 32, "ffn_ratio@d32": 2, "n_layers@d32-f2": 1}, {"d_model": 16}]


def test_shipped_search_space_binds_for_every_budget():
    spec = load_space(ROOT / "configs" / "hpo" / "search_space.yaml")
    assert {p.name for p in spec.params} >= {"lr", "weight_decay", "dropout", "warmup_frac"}
    assert {p.name: p.log for p in spec.params}["lr"]
    for budget in ("2M", "20M", "200M", "2B"):
        space = bind(spec, budget, 25, 80, 16, 8, "mixing", True)
        extremes = space.tree.extremes()
        assert max(a.d_model for a in space.tree.archs) == extremes[0].d_model
        assert max(a.n_layers for a in space.tree.archs) in {a.n_layers for a in extremes}
        for arch in extremes:  # the enqueued params select exactly that architecture
            fixed = optuna.trial.FixedTrial({**space.tree.params_of(arch)})
            assert space.tree.suggest(fixed) == arch


@pytest.mark.parametrize("spec,message", [
    ({"key": "model.net.init_args.d_model", "type": "int", "low": 8, "high": 64}, "architecture grid decides"),
    ({"key": "data.context_length", "type": "int", "low": 8, "high": 64}, "changes the budget's grid"),
    ({"key": "model.lr", "type": "loguniform", "low": 1e-4, "high": 1e-2}, "type must be one of"),
    ({"key": "model.lr", "type": "float", "low": 0.0, "high": 1e-2, "log": True}, "log scale needs low > 0"),
    ({"key": "model.lr", "type": "float", "low": 1.0, "high": 0.1}, "low <= high"),
])
def test_bad_search_space_entries_are_one_line(tmp_path, spec, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"x": spec}}))
    with pytest.raises(ForecastError, match=message):
        load_space(path)


@pytest.mark.parametrize("max_epochs,first_prunable", [(6, 2), (3, 1)])
def test_median_pruner_prunes_after_warm_up_and_never_at_the_last_epoch(max_epochs, first_prunable):
    last = max_epochs - 1
    study = optuna.create_study(pruner=make_pruner("median", max_epochs))
    for _ in range(5):  # the startup trials: 0.5 until their last epoch, then 0.1
        done = study.ask()
        for step in range(max_epochs):
            done.report(0.1 if step == last else 0.5, step)
        study.tell(done, 0.1)
    bad = study.ask()  # worse than the median from the start
    for step in range(first_prunable):
        bad.report(0.9, step)
        assert not bad.should_prune(), f"pruned in warm-up at epoch {step}"
    bad.report(0.9, first_prunable)
    assert bad.should_prune()
    late = study.ask()  # level with the median until the last epoch, worse there
    for step in range(last):
        late.report(0.5, step)
        assert not late.should_prune()
    late.report(0.5, last)
    assert not late.should_prune()  # the median pruner alone would prune here, after all the work


def test_budgets_by_name_or_count():
    assert parse_budget("2M") == ("2M", 2_000_000)
    assert parse_budget("50k") == ("50K", 50_000)
    assert parse_budget("1.5M") == ("1.5M", 1_500_000)
    with pytest.raises(ForecastError, match="unknown budget"):
        parse_budget("3X")
    with pytest.raises(ForecastError, match="type must be"):
        parse_param("x", {"key": "model.lr", "type": None}, "s.yaml")


def test_stop_control_ignores_old_stop_files_and_aborts_only_on_a_second_signal(tmp_path):
    stop_file = tmp_path / "STOP"
    stop_file.touch()
    os.utime(stop_file, (time.time() - 60, time.time() - 60))  # left by the run being resumed
    said: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with StopControl(stop_file, notify=said.append, keyboard=False) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(lambda: stop.requested, timeout=5)  # the handler runs in this (main) thread
        assert stop.reason == "SIGINT"
        stop.in_trial = True
        with pytest.raises(AbortTrial):
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(lambda: False, timeout=5)  # ended by the handler's AbortTrial, else times out
    assert signal.getsignal(signal.SIGINT) is before
    assert said and said[0].startswith("stop requested (SIGINT)")
    fresh = StopControl(tmp_path / "other" / "STOP", keyboard=False)
    fresh.watch(stop_file)
    assert not fresh.requested
    stop_file.touch()  # touched after this control started: a request
    assert fresh.requested and "STOP found" in fresh.reason


class _Capture(L.Callback):
    """Record the optimizer and schedule the module built, then stop before any step."""

    def on_train_start(self, trainer, pl_module):
        self.groups = [dict(g, params=None) for g in trainer.optimizers[0].param_groups]
        self.total = int(trainer.estimated_stepping_batches)
        self.first_factor = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0](0)
        raise KeyError("captured")  # any exception ends the fit here


def _observe(data, space_file, tmp_path, params: dict, *flags: str) -> dict:
    opts = options(data, space_file, tmp_path / "logs")
    opts.overrides += flags
    plan = plan_study(opts)
    sample = plan.space.suggest(optuna.trial.FixedTrial(params))
    capture = _Capture()
    cli = cli_main(plan.setup.trial_args(sample, 0), run=False, trainer_defaults={"callbacks": [capture]})
    with pytest.raises(KeyError, match="captured"):
        cli.trainer.fit(cli.model, cli.datamodule)
    net, block = cli.model.net, cli.model.net.blocks[0]
    return {
        "d_model": net.embed.out_features, "n_layers": len(net.blocks), "n_heads": block.attn.n_heads,
        "d_ff": block.ffn.fc1.out_features, "params": sum(p.numel() for p in net.parameters()),
        "arch_params": sample.arch.params,
        "lr": capture.groups[0]["initial_lr"], "weight_decay": capture.groups[0]["weight_decay"],
        "dropout": (block.attn.resid_drop.p, block.ffn.drop.p, net.drop.p),
        "warmup_factor": capture.first_factor, "total": capture.total,
        "head_dropout": net.head_drop.p, "clip": cli.trainer.gradient_clip_val, "revin": net.revin is not None,
    }


def test_each_sampled_value_changes_what_the_trainer_and_model_receive(data, space_file, tmp_path):
    a = {"d_model": 32, "ffn_ratio@d32": 2, "n_layers@d32-f2": 2, "lr": 1e-3, "weight_decay": 0.01,
         "dropout": 0.1, "warmup_frac": 0.2, "head_dropout": 0.05, "clip": 0.5}
    b = {"d_model": 16, "lr": 4e-3, "weight_decay": 0.2, "dropout": 0.25, "warmup_frac": 0.0,
         "head_dropout": 0.2, "clip": 2.0}
    # b without RevIN: the budget counts the network the config builds (2 x 25 fewer parameters)
    seen_a, seen_b = (_observe(data, space_file, tmp_path / n, p, *f) for n, p, f in
                      (("a", a, ()), ("b", b, ("--model.net.init_args.revin=false",))))
    assert (seen_a["d_model"], seen_a["n_layers"], seen_a["n_heads"], seen_a["d_ff"]) == (32, 2, 4, 64)
    assert (seen_b["d_model"], seen_b["n_layers"], seen_b["n_heads"], seen_b["d_ff"]) == (16, 4, 2, 64)
    assert (seen_a["revin"], seen_b["revin"]) == (True, False)
    for seen, draw in ((seen_a, a), (seen_b, b)):
        assert seen["params"] == seen["arch_params"]  # the exact count the budget used
        assert seen["lr"] == draw["lr"] and seen["weight_decay"] == draw["weight_decay"]
        assert seen["dropout"] == (draw["dropout"],) * 3
        assert seen["warmup_factor"] == warmup_cosine(seen["total"], draw["warmup_frac"])(0)
        assert seen["head_dropout"] == draw["head_dropout"] and seen["clip"] == draw["clip"]
    differs = {k for k in seen_a if seen_a[k] != seen_b[k]}
    assert differs >= {"d_model", "n_layers", "lr", "weight_decay", "dropout", "warmup_factor",
                       "head_dropout", "clip"}


def test_a_plan_builds_one_run_parser_and_checks_the_space_ends_with_it(data, space_file, tmp_path, monkeypatch):
    """The config and both ends of the space go through one LightningCLI parser and the run's own parse
    hook (its one-line refusals): a choice no trial can run with fails the plan, not the trial that draws it."""
    from lightning.pytorch.cli import LightningCLI

    from forecast.training.cli import ForecastCLI

    calls = {"parser builds": 0, "parses": 0}

    def counted(method, key):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return method(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(LightningCLI, "setup_parser", counted(LightningCLI.setup_parser, "parser builds"))
    monkeypatch.setattr(ForecastCLI, "parse_arguments", counted(ForecastCLI.parse_arguments, "parses"))
    space = tmp_path / "space.yaml"
    space.write_text(space_file.read_text().replace("choices: [0.5, 2.0]", "choices: [0.5, -1.0]"))
    opts = options(data, space, tmp_path / "logs")
    with pytest.raises(ForecastError) as refused:
        plan_study(opts)
    assert str(refused.value) == ("invalid trial config: trainer.gradient_clip_val: '-1.0' is not a finite "
                                  "number >= 0")  # the high end, parsed after the config and the low end
    assert calls == {"parser builds": 1, "parses": 3}


def test_resolve_reports_parser_errors_in_one_line():
    with pytest.raises(ForecastError, match="Option 'nope' is not accepted"):
        resolve(["--config", str(ROOT / "configs" / "demo.yaml"), "--model.net.init_args.nope=1"])


@pytest.mark.parametrize("fixed", [{"lr": 5.0}, {"lr": float("nan")}, {"clip": 3.0}, {"dropout": -0.1},
                                   {"d_model": 64}, {"d_model": 32, "ffn_ratio@d32": 8}])
def test_a_stored_trial_that_fixes_values_outside_the_space_is_refused(space_file, fixed):
    """Study storage is data: a trial enqueued there (by anyone who can write to a shared database)
    is held to the search space's ranges; Optuna alone would only warn and train with lr=5."""
    space = bind(load_space(space_file), 20_000, 25, 32, 8, 4, "mixing", True)
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    name = list(fixed)[-1]
    with warnings.catch_warnings():  # Optuna's own "out of range" warning, where it gives one
        warnings.simplefilter("ignore")
        with pytest.raises(OutsideSpace, match=rf"trial 0 fixes {name}"):
            space.suggest(study.ask())
    study.enqueue_trial({"lr": 1e-3, "clip": 2.0, "d_model": 16})  # inside: drawn as fixed
    sample = space.suggest(study.ask())
    assert (sample.values["lr"], sample.values["clip"], sample.arch.d_model) == (1e-3, 2.0, 16)
