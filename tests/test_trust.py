"""Inputs are data, never code: class paths only inside the allowlist, checked before any import; the
working folder never importable; YAML bounded (duplicate keys, alias bombs, non-finite numbers, empty).

Through the real entry point (`forecast.cli.main`, and `python -m forecast` once), with modules that
WOULD run if imported (they write a marker file) placed where Python would find them.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_trust.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecast.cli import main as forecast_main
from forecast.core.allowlist import ALLOWLIST, TRUST_ENV
from forecast.core.bounded_yaml import MAX_NODES, UnsafeYAML, expanded_size, safe_load

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs" / "demo.yaml")
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def run(argv: list[str]) -> int:
    try:
        return forecast_main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def refused(capfd, argv: list[str], expected: str) -> str:
    """Run `forecast ARGV`; assert the one-line refusal contract and return the error line."""
    capfd.readouterr()
    status = run(argv)
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("forecast: error:")]
    assert status == 2, out + err
    assert "Traceback" not in out + err
    assert len(errors) == 1 and expected in errors[0], err
    return errors[0]


@pytest.fixture(autouse=True)
def no_trust_from_outside(monkeypatch):
    """Every test starts from the allowlist alone, and what a test trusts is undone after it."""
    monkeypatch.delenv(TRUST_ENV, raising=False)


def plant(folder: Path, module: str, marker: Path) -> None:
    """A module (or package) `module` under `folder` that writes `marker` when imported."""
    parts = module.split(".")
    path = folder.joinpath(*parts[:-1])
    path.mkdir(parents=True, exist_ok=True)
    for i in range(1, len(parts)):
        folder.joinpath(*parts[:i], "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (path / f"{parts[-1]}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from forecast.model import PatchTST\n"
        "class Net(PatchTST):\n    pass\n")


# Keys that take a class (a class path, or class_path/init_args in YAML), and how each is written.
CLASS_KEYS = {
    "model.net": lambda path: [f"--model.net.class_path={path}.Net"],
    "model.optimizer": lambda path: [f"--model.optimizer={path}.Net"],
    "trainer.logger": lambda path: [f"--trainer.logger={path}.Net"],
    "trainer.callbacks": lambda path: [f"--trainer.callbacks+={path}.Net"],
    "lr_scheduler": lambda path: [f"--lr_scheduler={path}.Net"],
}
names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in {a.split(".")[0] for a in ALLOWLIST} and n not in sys.modules and n.isidentifier())


@FAST
@given(module=st.lists(names, min_size=1, max_size=3).map(".".join), key=st.sampled_from(sorted(CLASS_KEYS)),
       in_yaml=st.booleans())
def test_a_class_outside_the_allowlist_is_refused_before_its_module_is_imported(module, key, in_yaml, capfd,
                                                                                 monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        folder, marker = Path(tmp), Path(tmp) / "MARKER"
        plant(folder, module, marker)
        monkeypatch.syspath_prepend(str(folder))  # importable: only the allowlist stands in the way
        args = CLASS_KEYS[key](module)
        if in_yaml:
            flag, value = args[0][2:].replace("+=", "=").split("=", 1)
            head, _, leaf = flag.rpartition(".")
            node: object = {leaf: value} if leaf == "class_path" else {"class_path": value}
            for part in reversed((head if leaf == "class_path" else flag).split(".")):
                node = {part: node}
            (folder / "c.yaml").write_text(yaml.safe_dump(node))
            args = ["--config", str(folder / "c.yaml")]
        refused(capfd, ["fit", "--config", CFG, *args], "is outside the classes a config may name")
        assert not marker.exists()
        assert module.split(".")[0] not in sys.modules


def test_a_stdlib_module_with_import_side_effects_is_not_imported(capfd, monkeypatch):
    """The issue's case: `this.Anything` printed the Zen of Python before the refusal."""
    monkeypatch.delitem(sys.modules, "this", raising=False)
    refused(capfd, ["fit", "--config", CFG, "--model.net.class_path", "this.Anything"], "'this.Anything' is outside")
    assert "this" not in sys.modules


def test_a_path_through_an_allowed_module_to_a_denied_object_is_refused(capfd):
    """`forecast.model.torch.load` starts inside the allowlist but names torch.load."""
    refused(capfd, ["fit", "--config", CFG, "--model.optimizer=forecast.model.torch.load"], "is outside the classes")


def test_the_user_names_their_own_package_to_use_it(capfd, monkeypatch, tmp_path):
    package = f"nets_{uuid.uuid4().hex[:8]}"
    plant(tmp_path, f"{package}.mine", tmp_path / "MARKER")
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["fit", "--config", CFG, f"--model.net.class_path={package}.mine.Net", "--print_config"]
    refused(capfd, argv, f"to use your own package, name it: {TRUST_ENV}=")
    assert not (tmp_path / "MARKER").exists()
    assert run(["--trust", package, *argv]) == 0  # the option...
    assert f"class_path: {package}.mine.Net" in capfd.readouterr().out
    assert os.environ[TRUST_ENV] == package  # ...is handed on to worker processes through the environment
    monkeypatch.delenv(TRUST_ENV)
    refused(capfd, argv, "is outside the classes")  # no longer named: refused again in the same process
    monkeypatch.setenv(TRUST_ENV, f"{package}.mine")  # ...and the variable, for a module of it
    assert run(argv) == 0


@pytest.mark.parametrize("value", ["bad name", "jsonargparse", "a..b", "*"])
def test_a_trust_entry_that_is_not_a_package_name_is_refused(value, capfd, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, value)
    refused(capfd, ["fit", "--config", CFG], f"{TRUST_ENV}: {value!r} is not a package")
    monkeypatch.delenv(TRUST_ENV)
    refused(capfd, ["--trust", value, "fit", "--config", CFG], "is not a package")


def test_python_m_forecast_never_imports_the_working_folder(tmp_path):
    """Even a package the user trusts is not imported from the working folder (python -m puts it on sys.path)."""
    marker = tmp_path / "MARKER"
    plant(tmp_path, "evil", marker)
    proc = subprocess.run([sys.executable, "-m", "forecast", "--trust", "evil", "fit", "--config", CFG,
                           "--model.net.class_path=evil.Net", "--print_config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not marker.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("forecast: error: forecast fit:") and "evil" in last and "Traceback" not in proc.stderr


# -- YAML ---------------------------------------------------------------------------------------
keys = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.booleans(), st.text("abcxyz -_", max_size=8))
documents = st.recursive(st.dictionaries(keys, scalars, min_size=1, max_size=4),
                         lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=3), max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(doc=documents)
def test_safe_load_reads_what_safe_dump_wrote(doc):
    assert safe_load(yaml.safe_dump(doc)) == doc


@settings(max_examples=60, deadline=None)
@given(doc=documents, data=st.data())
def test_a_duplicate_key_is_refused_with_its_line(doc, data):
    text = yaml.safe_dump(doc, default_flow_style=False)
    lines = text.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    indent = len(lines[i]) - len(lines[i].lstrip())
    key = lines[i].strip().split(":")[0]
    lines.insert(i + 1, " " * indent + f"{key}: 0")  # the same key again, right after its block starts
    # the inserted line may land inside the key's own nested block: put it after that block instead
    j = i + 1
    while j + 1 < len(lines) and len(lines[j + 1]) - len(lines[j + 1].lstrip()) > indent:
        lines[j], lines[j + 1] = lines[j + 1], lines[j]
        j += 1
    with pytest.raises(UnsafeYAML, match=rf"duplicate key '{key}' at line {j + 1} \(first at line {i + 1}\)"):
        safe_load("\n".join(lines) + "\n")


@settings(max_examples=40, deadline=None)
@given(width=st.integers(2, 12), depth=st.integers(1, 9))
def test_alias_expansion_is_bounded_before_anything_is_built(width, depth):
    """A billion-laughs document of width**depth leaves is measured on its graph; past the limit it is
    refused, below it reads as PyYAML reads it."""
    text = "l0: &l0 [" + ", ".join(["x"] * width) + "]\n" + "".join(
        f"l{d}: &l{d} [" + ", ".join([f"*l{d - 1}"] * width) + "]\n" for d in range(1, depth))
    leaves = sum(width ** d for d in range(1, depth + 1))
    nodes = 1 + sum(2 + sum(width ** e for e in range(1, d + 2)) for d in range(depth))  # lower bound
    if leaves > MAX_NODES:
        with pytest.raises(UnsafeYAML, match="expands to more than"):
            safe_load(text)
    elif nodes < MAX_NODES // 2:
        assert safe_load(text) == yaml.safe_load(text)


def test_a_recursive_alias_is_refused():
    with pytest.raises(UnsafeYAML, match="recursive alias"):
        expanded_size(yaml.compose("a: &x [1, *x]\n"))


@settings(max_examples=30, deadline=None)
@given(doc=documents, spelling=st.sampled_from([".inf", "-.Inf", ".NaN", "1.0e+400", "-2e999", ".nan", "+.INF"]),
       nested=st.booleans())
def test_a_non_finite_number_is_refused_with_its_line(doc, spelling, nested):
    lines = yaml.safe_dump(doc, default_flow_style=False).splitlines()
    lines += ["zz9:", f"  value: {spelling}"] if nested else [f"zz9: {spelling}"]  # zz9: no generated key
    with pytest.raises(UnsafeYAML, match=re.escape(f"{spelling} at line {len(lines)} is not a finite number")):
        safe_load("\n".join(lines) + "\n")


# -- YAML through the entry point: one line, nothing written --------------------------------------
BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]\n" for i in range(8)))


@pytest.mark.parametrize("name,text,expected", [
    ("duplicate-key", "model:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr' at line 3 (first at line 2)"),
    ("duplicate-section", "data:\n  horizon: 1\nmodel:\n  lr: 0.1\ndata:\n  horizon: 3\n",
     "duplicate key 'data' at line 5 (first at line 1)"),
    ("alias-bomb", BOMB, "expands to more than 10,000 nodes"),
    ("lr-overflow", "model:\n  lr: 1.0e+400\n", "1.0e+400 at line 2 is not a finite number"),
    ("dropout-nan", "model:\n  net:\n    init_args:\n      dropout: .nan\n", ".nan at line 4 is not a finite"),
    ("empty", "", "is empty (or holds only comments)"),
    ("comments-only", "# model:\n#   lr: 0.1\n\n", "is empty (or holds only comments)"),
])
def test_a_config_file_is_read_safely(name, text, expected, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(text)
    line = refused(capfd, ["fit", "--config", CFG, "--config", "c.yaml"], expected)
    assert "c.yaml" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("argv,expected", [
    (["--model.lr=1e400"], "model.lr: '1e400' is not a finite number"),
    (["--model.weight_decay=-1e999"], "model.weight_decay: '-1e999' is not a finite number"),
    (["--data", "{" + BOMB.strip().replace("\n", ", ") + "}"], "expands to more than"),
    (["--data", "{horizon: 1, horizon: 3}"], "duplicate key 'horizon'"),
])
def test_a_flag_value_is_read_safely(argv, expected, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    refused(capfd, ["fit", "--config", CFG, *argv], expected)
    assert list(tmp_path.iterdir()) == []


def test_a_nested_config_file_is_read_safely_too(tmp_path, capfd):
    (tmp_path / "data.yaml").write_text("horizon: 1\nhorizon: 3\n")
    refused(capfd, ["fit", "--config", CFG, "--data", str(tmp_path / "data.yaml")], "duplicate key 'horizon'")


def test_every_shipped_yaml_reads_the_same_as_before():
    """The safe loader changes no value of a config we ship (jsonargparse's scalar rules kept)."""
    from jsonargparse import get_loader

    from forecast.core.allowlist import install

    install()
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        text = path.read_text()
        assert safe_load(text) == yaml.load(text, Loader=_jsonargparse_default_loader()), path
    assert get_loader("yaml").__module__ == "forecast.core.bounded_yaml"


def _jsonargparse_default_loader():
    """jsonargparse's own YAML Loader class (what parsed configs before the safe loader existed)."""
    # jsonargparse has no public accessor for its default YAML Loader class (`get_loader` returns the
    # function `set_loader` installed, ours), so the reference comes from its private module, in a test only.
    from jsonargparse._loaders_dumpers import get_yaml_default_loader

    return get_yaml_default_loader()


# -- study storage is data too --------------------------------------------------------------------
def test_a_study_whose_stored_replay_names_a_class_outside_the_allowlist_imports_nothing(tmp_path, capfd,
                                                                                         monkeypatch):
    """A shared storage feeds the report each study's best config (its replay command when best.yaml is
    not on this machine): parsed by the run's parser, under the same allowlist, so a planted class never runs."""
    import optuna
    from optuna.trial import create_trial

    plant(tmp_path, "stored_planted", tmp_path / "MARKER")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(study_name="SP500-a25-threshold0.01-h1-20K", storage=url)
    data = {"symbol": "SP500", "tier": "a25", "task": "threshold", "threshold": 0.01, "horizon": 1,
            "context_length": 80, "val_start": "2015-01-01", "test_start": "2017-01-01"}
    study.set_user_attr("fingerprint", {"data": data, "budget": "20K"})
    study.add_trial(create_trial(value=0.5, user_attrs={
        "params": 20_000, "arch_id": "d16", "log_dir": str(tmp_path / "elsewhere" / "trial_0000"),
        "replay": f"forecast fit --config {CFG} --model.net.class_path=stored_planted.Net"}))
    capfd.readouterr()
    assert run(["report", "--storage", url, "--out", str(tmp_path / "out"), "--seeds", "1", "--folds", "1"]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "study SP500-a25-threshold0.01-h1-20K not reported" in err and "'stored_planted.Net' is outside" in err
    assert not (tmp_path / "MARKER").exists() and "stored_planted" not in sys.modules
