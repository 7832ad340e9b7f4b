"""The fuzzer: values for every option of every subcommand, drawn from the parsers' own schemas.

Each parser (`forecast data|arch|hpo|sweep|report|isoflop|baselines` and the run parser
of `forecast fit|validate|test|predict`) is walked action by action; an option's type hint decides
what is drawn for it: boundaries and just-outside values of its domain, huge numbers, NaN and
infinities, wrong types, Unicode, names and paths that climb out of their folder. One example is one
command line through the real entry point `forecast.cli.main`, in this process, in a fresh folder,
and the contract is checked:

- a refusal: non-zero exit, at most 2 lines on stderr, one of them `forecast: ...`, no traceback,
  and nothing written anywhere (every file under the fuzz root hashed before and after);
- or a valid run: exit 0, nothing written outside the case folder, the shared data untouched, and
  nothing written at all by `fit|validate|test|predict` (each ends in `--trainer.fast_dev_run`).

Runs that would train stay short: `fit|validate|test|predict` get a tiny model on a tiny synthetic
tier and `--trainer.fast_dev_run=true` last (a fuzzed value is still parsed and checked first); the
search, the report and isoflop are fuzzed at parse time: their runner is replaced by one that checks the
options it is handed lie in their domains (what a trial or retrain then does is tested elsewhere).
The only other stand-in is the network (`data download`).

    make test                               # FUZZ_EXAMPLES (default 100) examples, derandomized
    make fuzz                               # 2,000 random examples across all subcommands
    FORECAST_FUZZ_SURVEY=out.jsonl ...      # one line per example (its violation or null); never stops
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecast.cli import main as forecast_main
from forecast.data.raw import write_raw
from forecast.data.synthetic import synthetic_ohlcv

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
SYMBOL = "SYN"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))  # in all, shared out by COST
SURVEY = os.environ.get("FORECAST_FUZZ_SURVEY")  # a JSON-lines file: every example and its violation; do not stop
TINY = ["--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2", "--model.net.init_args.n_layers=1",
        "--model.net.init_args.d_ff=32", "--model.net.init_args.patch_len=8", "--model.net.init_args.stride=4",
        "--data.context_length=32", "--data.min_windows=20", "--data.batch_size=32",
        "--data.val_start=2017-07-03", "--data.test_start=2018-04-02",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
LIGHTNING = ("fit", "validate", "test", "predict")
# A command's share of the examples: one that builds the run parser and may run a batch costs
# seconds, the others milliseconds, so in `make test` they get 8 times as many; the random run
# (`make fuzz`, FUZZ_RANDOM) gives every command the same share.
EXPENSIVE = {*LIGHTNING, "baselines"}


def examples_for(command: str) -> int:
    cheap = 1 if os.environ.get("FUZZ_RANDOM") else 8
    weights = {c: 1 if c in EXPENSIVE else cheap for c in SCHEMAS}
    return max(1, round(EXAMPLES * weights[command] / sum(weights.values())))
# Options that start processes or devices: their valid values are kept small (a fuzzed
# `--data.num_workers 4000` would fork 4000 loaders on a shared CI box); invalid ones are drawn as for any option.
PROCESS_COUNTS = {"data.num_workers", "trainer.devices", "trainer.num_nodes", "jobs"}


# -- the schema: every option of every parser ----------------------------------------------------
@dataclass(frozen=True)
class Option:
    command: tuple[str, ...]  # ("data", "build")
    flag: str | None  # "--tier"; None for a positional
    dest: str
    hint: Any  # the type hint; None where the parser takes any text
    many: bool  # nargs "+" or "*"
    switch: bool  # a flag without value (store_true)


def parser_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    # argparse has no public list of a parser's actions; `_actions` is where every parser keeps them
    return list(parser._actions)


def type_hint(action: argparse.Action) -> Any:
    # jsonargparse has no public accessor for the type an ActionTypeHint checks (4.53 keeps it in
    # `_typehint`); plain argparse actions have `type` and `choices`
    hint = getattr(action, "_typehint", None)
    if hint is None and action.choices is not None and not isinstance(action.choices, dict):
        hint = Literal[tuple(action.choices)]
    return hint if hint is not None else action.type


SKIPPED = ("help", "print_config", "config")  # --config is a file of options: its contents are YAML's domain


def options_of(parser: argparse.ArgumentParser, command: tuple[str, ...]) -> list[Option]:
    """Every option a user can give `command`, subcommands walked through."""
    found: list[Option] = []
    for action in parser_actions(parser):
        if isinstance(action.choices, dict):  # subcommands: name -> parser
            for name, sub in action.choices.items():
                found += options_of(sub, (*command, name))
            continue
        if action.dest in SKIPPED or action.dest.endswith(".help") or type(action).__name__ == "_ActionConfigLoad":
            continue
        found.append(Option(command, action.option_strings[0] if action.option_strings else None, action.dest,
                            type_hint(action), action.nargs in ("+", "*"), action.nargs == 0))
    return found


def network_options() -> list[Option]:
    """`model.net` is any nn.Module given by class path; the network's own options come from the
    signature jsonargparse reads for the class the configs name (PatchTST)."""
    from jsonargparse import ArgumentParser

    from forecast.model import PatchTST

    parser = ArgumentParser()
    parser.add_class_arguments(PatchTST, "model.net.init_args")
    return [o for o in options_of(parser, ("fit",)) if o.dest not in ("model.net.init_args.n_features",
                                                                      "model.net.init_args.context_length")]


def schemas() -> dict[str, list[Option]]:
    """Options by top-level command, from the parsers themselves."""
    from forecast.configs import parser as configs_parser
    from forecast.data.cli import build_parser as data_parser
    from forecast.hpo.cli import hpo_parser, sweep_parser
    from forecast.report.cli import parser as report_parser
    from forecast.report.isoflop_cli import parser as isoflop_parser
    from forecast.sizing.arch import build_parser as arch_parser
    from forecast.training.baselines import parser as baselines_parser
    from forecast.training.cli import run_parser

    run = [o for o in options_of(run_parser(), ("fit",)) if o.dest != "model.net"] + network_options()
    ckpt = Option(("test",), "--ckpt_path", "ckpt_path", str | None, False, False)
    out = {"data": options_of(data_parser(), ("data",)), "arch": options_of(arch_parser(), ("arch",)),
           "hpo": options_of(hpo_parser(), ("hpo",)), "sweep": options_of(sweep_parser(), ("sweep",)),
           "report": options_of(report_parser(), ("report",)),
           "isoflop": options_of(isoflop_parser(), ("isoflop",)),
           "configs": options_of(configs_parser(), ("configs",)),
           "baselines": options_of(baselines_parser(), ("baselines",))
           + [Option(("baselines",), o.flag, o.dest, o.hint, o.many, o.switch) for o in run]}
    for command in LIGHTNING:
        out[command] = [Option((command,), o.flag, o.dest, o.hint, o.many, o.switch) for o in run]
        if command != "fit":
            out[command].append(Option((command,), ckpt.flag, ckpt.dest, ckpt.hint, False, False))
    return out


SCHEMAS = schemas()


# -- values drawn from a type hint ------------------------------------------------------------------
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=24)
ODD_TEXT = st.sampled_from(["", " ", ".", "..", "../escape", "a/../../escape", "sub/name", "ﬀ", "ß", "İstanbul",
                            "SPY\u0131", "x" * 300, "a\nb", "a\u2028b", "null", "~", "-x", "$HOME", "*", "é",
                            "[1, 2]", "{a: 1}", "true", "1e400", "NaN"])
INTS = st.one_of(st.integers(-3, 3), st.sampled_from([-1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, -(2**63),
                                                       10**30])).map(str)
ODD_INTS = st.sampled_from(["1.5", "1.0", "abc", "", "nan", "inf", "-inf", "1e3", "0x10", "٣", "１", "+3", " 3 ",
                            "true", "[1]"])
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["0", "1", "0.5", "1e-300", "1e300", "-1e-300", "0.999999", "1.0000001"]))
ODD_FLOATS = st.sampled_from(["nan", "inf", "-inf", "1e400", "-1e400", "1e-400", "-0.0", "abc", "", "1,5",
                              "true", "[0.1]", "0x1p-2"])
BOOLS = st.sampled_from(["true", "false", "True", "yes", "no", "1", "0", "maybe", "", "null"])
PATHS = st.sampled_from(["", ".", "..", "../escape", "sub/dir", "nope.yaml", "afile/below", "afile", "x" * 300,
                         "a\nb", "ﬀ/é"])
CLASSES = st.sampled_from(["null", "{}", "[]", "abc", "true", "1", "torch.nn.Linear", "forecast.model.PatchTST",
                           "{class_path: nope.Nope}", "this.Anything", "os.system", "{class_path: antigravity.X}"])
UNTRUSTED = ("this", "antigravity")  # modules with import-time effects: a class path must never import them
SMALL = st.sampled_from(["0", "1", "2", "auto", "null", "-1", "-5", "abc", "1.5", "[0]", "[0, 1]", "cpu", "0,1"])


def _is(hint: Any, base: type) -> bool:
    return isinstance(hint, type) and issubclass(hint, base)


def values(hint: Any) -> st.SearchStrategy[str]:
    """Text a user could type for an option of type `hint`: in, on and beyond its domain, and junk."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is Any:
        return st.one_of(TEXT, ODD_TEXT)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([values(a) for a in args])
    if hint is type(None):
        return st.just("null")
    if origin is Literal:
        return st.one_of(st.sampled_from([str(a) for a in args]), ODD_TEXT)
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        items = [values(a) for a in args if a is not Ellipsis] or [TEXT]
        if origin is tuple and Ellipsis not in args:
            return st.tuples(*items).map(lambda xs: "[" + ", ".join(xs) + "]") | ODD_TEXT
        return st.lists(items[0], max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]") | ODD_TEXT
    if _is(hint, bool):
        return BOOLS
    if _is(hint, int):
        return st.one_of(INTS, ODD_INTS)
    if _is(hint, float):
        return st.one_of(FLOATS, ODD_FLOATS, INTS)
    if _is(hint, os.PathLike) or hint is Path:
        return st.one_of(PATHS, TEXT)
    if _is(hint, str):
        return st.one_of(TEXT, ODD_TEXT)
    return st.one_of(CLASSES, ODD_TEXT)  # a class (logger, callback, accelerator...): class paths and junk


@st.composite
def settings_for(draw, option: Option) -> list[str]:
    """The argv fragment that sets `option`."""
    if option.switch:
        return [option.flag]
    value = draw(SMALL if option.dest.split(".", 1)[-1] in PROCESS_COUNTS or option.dest in PROCESS_COUNTS
                 else values(option.hint))
    if option.many:
        more = draw(st.lists(values(option.hint), max_size=2))
        return [option.flag, value, *more] if option.flag else [value, *more]
    if option.flag is None:
        return [value]
    return [f"{option.flag}={value}"] if draw(st.booleans()) or value.startswith("-") else [option.flag, value]


@st.composite
def command_lines(draw, command: str) -> tuple[list[Option], list[list[str]]]:
    chosen = draw(st.lists(st.sampled_from(SCHEMAS[command]), min_size=1, max_size=3, unique=True))
    return chosen, [draw(settings_for(o)) for o in chosen]


# -- the world one example runs in --------------------------------------------------------------------
@dataclass
class World:
    root: Path  # everything the fuzzer may touch lies below
    data: Path  # the shared tiny tier (read only)
    ckpt: Path  # a real checkpoint of a tiny run on it


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "shared-data"
    write_raw(data, SYMBOL, synthetic_ohlcv(n=1300, start="2014-01-01"), source="synthetic fuzz series")
    from forecast.data.tiers import build_and_write

    build_and_write(data, SYMBOL, "a25")
    logs = root / "shared-logs"
    args = ["fit", "--config", DEMO, f"--data.data_dir={data}", f"--data.symbol={SYMBOL}", *TINY,
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]
    assert forecast_main(args) == 0
    ckpt = next((logs / "demo" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    (root / "cases").mkdir()
    return World(root, data, ckpt)


def base_argv(command: tuple[str, ...], world: World, case: Path) -> list[str]:
    """A valid, quick command line for `command`, run in `case`."""
    run = ["--config", DEMO, f"--data.data_dir={world.data}", f"--data.symbol={SYMBOL}", *TINY,
           f"--trainer.logger.init_args.save_dir={case / 'logs'}"]
    sub = command[1] if command[0] == "data" and len(command) > 1 else None
    (case / "afile").write_text("a file where a folder may be expected\n")
    if command[0] == "data":
        shutil.copytree(world.data / "raw", case / "data" / "raw")
        (case / "prices.csv").write_text(synthetic_ohlcv(n=40).to_csv(index=False))
        positional = {"download": ["SYN2"], "import": ["SYN2", "prices.csv"]}.get(sub, [])
        flags = ["--symbol", SYMBOL] if sub == "build" else []
        return ["data", sub, *positional, *flags, "--data-dir", "data"]
    return {
        "arch": ["arch", "--budget", "2M", "--format", "json"],
        "configs": ["configs"],
        "hpo": ["hpo", "--budget", "2M", "--log-dir", "logs/hpo", "--no-live", "--config", DEMO],
        "sweep": ["sweep", "--budgets", "2M", "--horizons", "1", "--log-dir", "logs/hpo", "--no-live"],
        "report": ["report", "--storage", "sqlite:///logs/none.db", "--out", "logs/report"],
        "isoflop": ["isoflop", "--flops", "1e9", "--budgets", "10K", "--storage", "sqlite:///logs/none.db",
                    "--out", "logs/isoflop", *run],
        "baselines": ["baselines", *run, "--out", "baselines.csv"],
    }.get(command[0]) or [command[0], *run, *([] if command[0] == "fit" else ["--ckpt_path", str(world.ckpt)])]


def assemble(command: str, options: list[Option], settings_: list[list[str]], world: World, case: Path) -> list[str]:
    """The base command line with the fuzzed settings in place (a positional replaces the base's)."""
    first = options[0].command
    argv = base_argv(first, world, case)
    for option, setting in zip(options, settings_, strict=True):
        if option.command != first:
            continue  # another `data` subcommand's option: a different command line
        if option.flag is None:
            position = [o.dest for o in SCHEMAS[command] if o.command == first and o.flag is None].index(option.dest)
            start = len(first)
            argv = [*argv[:start + position], *setting, *argv[start + position + 1:]]
        else:
            argv += setting
    if command in LIGHTNING or command == "baselines":
        argv += ["--trainer.fast_dev_run=true"]  # last: whatever was fuzzed, a run stays one batch
    return argv


# -- the contract -------------------------------------------------------------------------------------
def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


DOMAINS = {  # what the search and the report must be handed, whatever was typed
    "trials": lambda v: isinstance(v, int) and v >= 1,
    "seed": lambda v: isinstance(v, int) and 0 <= v < 2**32,
    "timeout": lambda v: v is None or (isinstance(v, float) and math.isfinite(v) and v > 0),
    "heartbeat": lambda v: isinstance(v, int) and v >= 0,
    "study_name": lambda v: v is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v) is not None,
    "study": lambda v: all(re.fullmatch(r"[A-Za-z0-9^_][A-Za-z0-9._+^-]{0,99}", s) for s in v),  # report's --study
    "seeds": lambda v: isinstance(v, int) and v >= 1,
    "folds": lambda v: isinstance(v, int) and v >= 1,
    "bootstrap": lambda v: isinstance(v, int) and v >= 0,
    "test_start": lambda v: v is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None,
    "test_end": lambda v: v is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) is not None,
    "flops": lambda v: all(isinstance(c, float) and math.isfinite(c) and c > 0 for c in v),
    "lr_sweep": lambda v: isinstance(v, int) and v >= 0,
    "train_years": lambda v: v is None or all(y == "all" or (isinstance(y, float) and 0 < y <= 1000) for y in v),
}


# Liveness, not speed: one fuzzed command runs for a second or two; one still going after this is
# stuck (2**31 folds once built 2**31 empty blocks) and is reported instead of stalling the suite.
HANG_S = 300


class Hung(BaseException):
    """Raised in the example by SIGALRM (BaseException: no `except Exception` in the product eats it)."""


def _hung(signum, frame) -> None:
    raise Hung


class Handed(Exception):
    """The runner of a search or report was reached: the parse stage is over."""


def check_handed(options: Iterable[Any]) -> None:
    for option in options:
        for key, ok in DOMAINS.items():
            if hasattr(option, key) and not ok(getattr(option, key)):
                raise AssertionError(f"handed {key}={getattr(option, key)!r} outside its domain")
    raise Handed


def run_one(argv: list[str], case: Path, world: World, capfd, monkeypatch) -> str | None:
    """Run one command line; the contract violation it shows, or None."""
    before = tree(world.root)
    capfd.readouterr()
    signal.signal(signal.SIGALRM, _hung)
    signal.alarm(HANG_S)
    with monkeypatch.context() as mp:
        mp.chdir(case)
        mp.setenv("FORECAST_DATA_DIR", str(case / "data"))
        _stand_ins(mp)
        try:
            status = forecast_main(argv)
        except Handed:
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        except Hung:
            return f"no answer within {HANG_S} s (a hang, or work without bound)"
        except Exception as err:  # noqa: BLE001 - any escaping exception is the violation sought
            return f"traceback: {type(err).__name__}: {str(err)[:200]}"
        finally:
            signal.alarm(0)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    imported = [m for m in UNTRUSTED if m in sys.modules]
    if imported:  # the trust boundary: a class path is checked on the string, before any import
        return f"imported {imported} from a class path"
    after = tree(world.root)
    outside = {k for k in set(before) | set(after) if before.get(k) != after.get(k)
               and not k.startswith(case.relative_to(world.root).as_posix() + "/")}
    if "Traceback" in out + err:
        return f"traceback in output (exit {status}): {(out + err)[-300:]}"
    if status != 0:
        if len(lines) > 2 or not any(line.startswith("forecast") for line in lines):
            return f"not one line (exit {status}): {err[-400:]!r}"
        if after != before:
            return f"refused but wrote: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:5]}"
    if status == 0 and argv[0] in LIGHTNING and after != before:  # every run here ends in fast_dev_run
        return f"fast_dev_run wrote: {sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:5]}"
    if outside and not any(".." in a for a in argv):
        return f"wrote outside its folder: {sorted(outside)[:5]}"
    return None


def _stand_ins(mp: pytest.MonkeyPatch) -> None:
    """The network, and the search's, report's and isoflop's runners (parse-time fuzzing of those)."""
    import forecast.core.workers as core_workers
    import forecast.data.sources as sources
    import forecast.hpo.cli as hpo_cli
    import forecast.report.isoflop as isoflop
    import forecast.report.outputs as report_outputs

    mp.setattr(sources, "fetch_yahoo", lambda symbol, start=None, end=None, **_: synthetic_ohlcv(n=40))
    mp.setattr(hpo_cli, "run_search", lambda pool, options, *a, **k: check_handed(options))
    mp.setattr(report_outputs, "make_report", lambda options, *a, **k: check_handed([options]))
    mp.setattr(isoflop, "run_isoflop", lambda options, *a, **k: check_handed([options]))
    # --jobs workers: every command starts them through core/workers.start_pool (after its --jobs check)
    mp.setattr(core_workers, "Pool", lambda *a, **k: None)


def test_the_schema_covers_every_subcommand_and_types_every_value_option():
    """Every subcommand is fuzzed, and the options that take a value state a type (not bare text)."""
    assert {"data", "arch", "hpo", "sweep", "report", "isoflop", "baselines", "configs", *LIGHTNING} <= set(SCHEMAS)
    assert all(o.command[0] == command for command, options in SCHEMAS.items() for o in options)  # no stray fit line
    commands = {o.command for o in SCHEMAS["data"]}
    assert {("data", c) for c in ("download", "import", "sample", "build", "verify", "info")} <= commands
    for command in ("data", "arch", "hpo", "sweep", "report", "isoflop", "configs"):
        untyped = [o.dest for o in SCHEMAS[command] if not o.switch and o.hint in (None, str)]
        assert untyped == [], f"{command}: options without a domain: {untyped}"


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_fuzzed_command_lines_keep_the_contract(command, world, capfd, monkeypatch):
    @settings(max_examples=examples_for(command), deadline=None,
              derandomize=os.environ.get("FUZZ_RANDOM") is None and not SURVEY,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(line=command_lines(command))
    def example(line):
        options, settings_ = line
        case = Path(tempfile.mkdtemp(dir=world.root / "cases"))
        try:
            argv = assemble(command, options, settings_, world, case)
            violation = run_one(argv, case, world, capfd, monkeypatch)
        finally:
            shutil.rmtree(case, ignore_errors=True)
        if SURVEY:  # every example is a line (violation null when it kept the contract): the run's own count
            with open(SURVEY, "a") as f:
                f.write(json.dumps({"command": command, "argv": [a.replace(str(world.root), "<root>") for a in argv],
                                    "violation": violation}) + "\n")
            return
        assert violation is None, f"{violation}\nargv: {argv}"

    example()


# -- files as well as flags: each file a user edits or a peer writes, made from its schema, then broken --------
HOSTILE = st.sampled_from([None, 0, -1, 1.5, 1e308, "x", "50%", "²", "A" * 5000, [], {}, True, [[1]], {"a": {"b": 1}}])
FILE_KINDS = ("config", "grid", "space", "manifest", "checkpoint", "storage")
EXPENSIVE_FILES = {"config", "checkpoint"}  # each example runs a fit/test batch


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a nested document (mapping keys and list items), the root included."""
    found = [prefix]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found += _paths(value, (*prefix, key))
    return found


@st.composite
def broken(draw, doc: Any) -> Any:
    """`doc` with one place replaced by a hostile value, or deleted, or nested 100 levels deep."""
    doc = json.loads(json.dumps(doc))
    places = [p for p in _paths(doc) if p]
    if not places:
        return draw(HOSTILE)
    place = draw(st.sampled_from(places))
    parent = doc
    for key in place[:-1]:
        parent = parent[key]
    how = draw(st.sampled_from(["replace", "replace", "delete", "deep"]))
    if how == "delete" and isinstance(parent, dict):
        del parent[place[-1]]
    elif how == "deep":
        parent[place[-1]] = json.loads("[" * 100 + "1" + "]" * 100)
    else:
        parent[place[-1]] = draw(HOSTILE)
    return doc


def valid_file(kind: str, world: World) -> Any:
    """The document a kind's schema describes, as the tool writes or ships it."""
    import yaml

    if kind == "config":
        return yaml.safe_load(Path(DEMO).read_text())
    if kind == "grid":
        return {"d_model": [64, 128], "n_layers": [1, 2, 4], "head_dim": [64], "ffn_ratio": [2, 4]}
    if kind == "space":
        return yaml.safe_load((ROOT / "configs" / "hpo" / "search_space.yaml").read_text())
    if kind == "manifest":
        return json.loads((world.data / "raw" / "manifest.json").read_text())
    if kind == "storage":
        return {"fingerprint": {"data": {"symbol": SYMBOL, "tier": "a25", "task": "threshold", "threshold": 0.01,
                                         "horizon": 1}, "budget": "2M", "data_fingerprint": "0" * 32},
                "trial": {"params": 20000, "arch_id": "d64-l1", "best_epoch": 0, "epochs_run": 1,
                          "log_dir": "logs/x/trial_0", "replay": "forecast fit --config x.yaml"}}
    return None  # a checkpoint: bytes, broken below


def _write_storage(doc: Any, path: Path) -> str:
    """A journal study holding `doc`'s records (study fingerprint, one complete trial's attributes)."""
    import optuna

    from forecast.hpo.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = str(path)
    study = optuna.create_study(study_name="s", storage=open_storage(url, 0))
    if isinstance(doc, dict):
        study.set_user_attr("fingerprint", doc.get("fingerprint"))
        attrs = doc.get("trial")
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        for key, value in (attrs.items() if isinstance(attrs, dict) else []):
            trial.set_user_attr(str(key), value)
        study.tell(trial, 0.5)
    return url


@st.composite
def damaged_files(draw, kind: str, world: World) -> tuple[str, Any]:
    """("doc", a broken document) or ("bytes", a file cut or flipped at a drawn byte)."""
    if kind in ("checkpoint", "storage") and draw(st.booleans()):
        return "bytes", (draw(st.sampled_from(["cut", "flip"])), draw(st.floats(0, 1)))
    return "doc", draw(broken(valid_file(kind, world)))


def _damage_bytes(path: Path, how: tuple[str, float]) -> None:
    data = bytearray(path.read_bytes())
    at = min(int(how[1] * len(data)), len(data) - 1)
    if how[0] == "cut":
        del data[at:]
    else:
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def file_example(kind: str, damage: tuple[str, Any], world: World, case: Path, capfd, monkeypatch) -> str | None:
    """Write the damaged file, read it with the command (or the reader) that takes it; the violation."""
    import yaml

    form, doc = damage
    text = yaml.safe_dump(doc) if form == "doc" else ""
    run = ["--config", DEMO, f"--data.data_dir={world.data}", f"--data.symbol={SYMBOL}", *TINY,
           f"--trainer.logger.init_args.save_dir={case / 'logs'}"]
    if kind == "config":
        (case / "c.yaml").write_text(text)
        return run_one(["fit", *run, "--config", str(case / "c.yaml"), "--trainer.fast_dev_run=true"],
                       case, world, capfd, monkeypatch)
    if kind == "grid":
        (case / "g.yaml").write_text(text)
        return run_one(["arch", "--budget", "2M", "--grid", str(case / "g.yaml")], case, world, capfd, monkeypatch)
    if kind == "manifest":
        shutil.copytree(world.data, case / "data")
        (case / "data" / "raw" / "manifest.json").write_text(json.dumps(doc))
        command = ["data", "info"] if len(text) % 2 else ["data", "verify"]
        violation = run_one(command, case, world, capfd, monkeypatch)
        # `data verify` reports: a table, then one `mismatch:` line per bad entry on stderr, exit 1
        return None if command[1] == "verify" and violation and violation.startswith("not one line (exit 1)") \
            and "Traceback" not in violation else violation
    if kind == "checkpoint":
        shutil.copy(world.ckpt, case / "c.ckpt")
        if form == "bytes":
            _damage_bytes(case / "c.ckpt", doc)
        else:
            import torch

            ckpt = torch.load(world.ckpt, weights_only=True)
            key = sorted(ckpt)[len(text) % len(ckpt)]
            ckpt[key] = doc if not isinstance(doc, dict) or key == "state_dict" else {"broken": doc}
            torch.save(ckpt, case / "c.ckpt")
        return run_one(["test", *run, "--ckpt_path", str(case / "c.ckpt"), "--trainer.fast_dev_run=true"],
                       case, world, capfd, monkeypatch)
    return _reader_example(kind, form, doc, text, case)


def _reader_example(kind: str, form: str, doc: Any, text: str, case: Path) -> str | None:
    """The readers the parse-time fuzzing stands in for (the search space, the report's storage): they
    return, or raise ForecastError in one line; anything else is the violation."""
    from forecast.core.errors import ForecastError

    try:
        if kind == "space":
            from forecast.hpo.space import load_space

            (case / "s.yaml").write_text(text)
            load_space(case / "s.yaml")
        else:
            from forecast.report.collect import collect

            url = _write_storage(doc if form == "doc" else valid_file("storage", None), case / "s.journal")
            if form == "bytes":
                _damage_bytes(case / "s.journal", doc)
            collect(url)
    except ForecastError as err:
        return None if len(str(err).splitlines()) <= 1 else f"not one line: {str(err)[:300]!r}"
    except Exception as err:  # noqa: BLE001 - any other exception is the violation sought
        return f"traceback: {type(err).__name__}: {str(err)[:200]}"
    return None


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_fuzzed_files_keep_the_contract(kind, world, capfd, monkeypatch):
    n = EXAMPLES // 200 if kind in EXPENSIVE_FILES else max(1, EXAMPLES // 25)
    if n == 0:
        pytest.skip("a fit or test batch per example: in `make fuzz` (FUZZ_EXAMPLES >= 200)")

    @settings(max_examples=n, deadline=None, derandomize=os.environ.get("FUZZ_RANDOM") is None and not SURVEY,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(damage=damaged_files(kind, world))
    def example(damage):
        case = Path(tempfile.mkdtemp(dir=world.root / "cases"))
        try:
            violation = file_example(kind, damage, world, case, capfd, monkeypatch)
        finally:
            shutil.rmtree(case, ignore_errors=True)
        if SURVEY:
            with open(SURVEY, "a") as f:
                f.write(json.dumps({"command": f"file:{kind}", "argv": [repr(damage)[:300]],
                                    "violation": violation}) + "\n")
            return
        assert violation is None, f"{violation}\ndamage: {damage!r}"[:2000]

    example()


def summary(log: str) -> int:
    """`make fuzz`'s last line: examples and violations per command from the log; 1 if any broke the contract."""
    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    by: dict[str, list[int]] = {}
    for row in rows:
        by.setdefault(row["command"], [0, 0])[0] += 1
        by[row["command"]][1] += row["violation"] is not None
    for command, (n, bad) in sorted(by.items()):
        print(f"  {command:10s} {n:5d} examples  {bad:3d} violations")
    bad = [row for row in rows if row["violation"] is not None]
    print(f"fuzz: {len(rows)} examples, {len(bad)} violations ({log})")
    for row in bad[:20]:
        print(f"  {row['violation']}\n    argv: {row['argv']}")
    return 1 if bad or not rows else 0


if __name__ == "__main__":
    raise SystemExit(summary(sys.argv[2]) if sys.argv[1:2] == ["--summary"] else 2)
