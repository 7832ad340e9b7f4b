"""The house holds: no private member of Lightning, jsonargparse or Optuna is used without a comment naming the
missing public API; no private name of one of our modules is used by another; a wheel installed outside the source tree runs with its shipped configs; and checkpoints and
studies written before the move to `forecast.training` / `forecast.sizing` still load."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
from io import BytesIO
from pathlib import Path

import optuna
import pytest
from search_fixtures import TINY_SPACE, flags
from synthetic_run import SYMBOL, TEST_START, VAL_START, base_args, data_dir  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ("lightning", "jsonargparse", "optuna", "optuna_integration", "pytorch_lightning")
PRIVATE_NOTE = "private API:"  # the comment that names the public API a remaining private use lacks
BEFORE_THE_MOVE = "892ce33"  # main before forecast/train.py, module.py, budget.py, ... moved into packages
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _own_private_names() -> set[str]:
    """Every `_name` this package defines (functions, classes, attributes, module globals)."""
    names: set[str] = set()
    for path in (ROOT / "forecast").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_uses(path: Path, own: set[str]) -> list[str]:
    """`file:line: what` for each private third-party use in one source file that no comment explains:
    `x._name` where `_name` is not ours (on any object but our own), and imports of private modules of
    Lightning, jsonargparse or Optuna."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        what = None
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            overrides = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super"
            if node.attr not in own or overrides:  # super()._hook(): a private hook of a base class overridden
                what = f".{node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in THIRD_PARTY:
            if any(part.startswith("_") for part in node.module.split(".")):
                what = f"from {node.module}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # a logger or module named by string
            head = node.value.split(".")[0]
            if head in THIRD_PARTY and any(p.startswith("_") and not p.startswith("__") for p in node.value.split(".")):
                what = repr(node.value)
        if what is None:
            continue
        around = " ".join(lines[max(0, node.lineno - 3):node.lineno])
        if PRIVATE_NOTE not in around:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {what}")
    return found


def test_no_unexplained_private_use_of_lightning_jsonargparse_or_optuna():
    own = _own_private_names()
    found = [use for path in sorted((ROOT / "forecast").rglob("*.py")) for use in private_uses(path, own)]
    assert found == [], "private third-party members (add the public API, or a '# private API: ...' comment):\n" + \
        "\n".join(found)


def test_the_private_use_check_catches_a_planted_use(tmp_path):
    planted = ROOT / "forecast" / "_planted_for_test.py"
    source = "def f(trainer):\n    return trainer._logger_connector\n"
    planted.write_text(source)
    try:
        assert private_uses(planted, _own_private_names()) == ["forecast/_planted_for_test.py:2: ._logger_connector"]
        planted.write_text("def f(trainer):\n    # private API: no public 'should log now' flag\n"
                           "    return trainer._logger_connector\n")
        assert private_uses(planted, _own_private_names()) == []
    finally:
        planted.unlink()


def _our_module(name: str) -> bool:
    """Whether `forecast.a.b` names one of our modules or packages (not a function or class in one)."""
    parts = name.split(".")
    return parts[0] == "forecast" and ((ROOT.joinpath(*parts).with_suffix(".py")).is_file()
                                       or (ROOT.joinpath(*parts) / "__init__.py").is_file())


def crossing_privates(path: Path) -> list[str]:
    """`file:line: what` for each private name (leading underscore, not dunder) of another module of ours
    that one source file uses: `from forecast.x import _name`, or `module._name` on a module of ours it
    imported. A module's private names are its own; what others need is public."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()  # local names bound to modules of ours
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {(a.asname or a.name.split(".")[0]) for a in node.names if a.name.startswith("forecast")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("forecast") and not node.level:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
                elif _our_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module_boundary_inside_forecast():
    found = [use for path in sorted((ROOT / "forecast").rglob("*.py")) for use in crossing_privates(path)]
    assert found == [], "private names of another module (make them public, or keep the use inside):\n" + \
        "\n".join(found)


def test_the_crossing_check_catches_a_planted_use():
    planted = ROOT / "forecast" / "_planted_crossing_for_test.py"
    planted.write_text("import forecast.hpo.loop as search\nfrom forecast.hpo import stop\n"
                       "from forecast.hpo.loop import _first_line, run_queue\n\n"
                       "def f():\n    return search._running, stop._terminal_stdin, run_queue, search.__name__\n")
    try:
        assert crossing_privates(planted) == [
            "forecast/_planted_crossing_for_test.py:3: from forecast.hpo.loop import _first_line",
            "forecast/_planted_crossing_for_test.py:6: search._running",
            "forecast/_planted_crossing_for_test.py:6: stop._terminal_stdin"]
    finally:
        planted.unlink()


# -- a wheel, installed outside the source tree --------------------------------------------------------
def _fresh_venv_with_the_wheel(tmp_path: Path) -> Path:
    """A new venv (no pip) holding the built wheel; the heavy dependencies come from this test's environment
    through a .pth line (a path, not a site dir: the editable install's own .pth there is not run)."""
    source = tmp_path / "source"  # a copy: setuptools builds in the tree it is given (build/, *.egg-info)
    shutil.copytree(ROOT / "forecast", source / "forecast", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("forecast-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return env_dir


@pytest.mark.slow  # 20-50 s of subprocesses: make test-slow (make test's 5-minute budget)
def test_a_wheel_installed_elsewhere_has_its_configs(tmp_path):
    env_dir = _fresh_venv_with_the_wheel(tmp_path)
    work = tmp_path / "elsewhere"  # no configs/ here, no source tree above
    work.mkdir()
    run = {"cwd": work, "env": {**ENV, "PYTHONPATH": ""}, "capture_output": True, "text": True, "timeout": 300}
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import forecast; print(forecast.__file__)"], **run)
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout + where.stderr
    arch = subprocess.run([str(env_dir / "bin" / "forecast"), "arch", "--budget", "2M", "--format", "json"], **run)
    assert arch.returncode == 0, arch.stderr
    assert all(abs(r["params"] - 2e6) <= 0.25 * 2e6 for r in json.loads(arch.stdout))
    # every shipped run config through the installed package's own parser, as `--print_config` prints it
    check = (
        "import contextlib, io, yaml\n"
        "from forecast import configs\n"
        "from forecast.training.cli import cli_main\n"
        "names = [n for n in configs.shipped() if not n.startswith('hpo/') and n != 'arch_grid.yaml']\n"
        "for name in names:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            cli_main(['fit', '--config', str(configs.path('demo.yaml')), '--config',\n"
        "                      str(configs.path(name)), '--print_config'])\n"
        "        except SystemExit as e:\n"
        "            assert e.code in (0, None), name\n"
        "    assert yaml.safe_load(out.getvalue())['model']['net']['class_path'] == 'forecast.model.PatchTST'\n"
        "print(len(names))\n"
    )
    printed = subprocess.run([str(env_dir / "bin" / "python"), "-c", check], **run)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert int(printed.stdout.strip().splitlines()[-1]) >= 6


# -- what was written before the move still loads ------------------------------------------------------
@pytest.fixture(scope="module")
def old_tree(tmp_path_factory) -> Path:
    """The package as it was before the move (from git history), to write checkpoints and studies with."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", BEFORE_THE_MOVE, "forecast",
                              "configs"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"git history without {BEFORE_THE_MOVE} (a shallow clone?): {archive.stderr.decode()[:200]}")
    old = tmp_path_factory.mktemp("before-the-move")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(old, filter="data")
    assert (old / "forecast" / "train.py").is_file() and not (old / "forecast" / "training").exists()
    return old


def _old(old_tree: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`forecast ARGS` run by the old package (first on the path, ahead of the editable install)."""
    return subprocess.run([sys.executable, "-m", "forecast", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**ENV, "PYTHONPATH": str(old_tree)})


def _new(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forecast", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=ENV)


@pytest.mark.slow  # old package + new package in subprocesses: ~15 s each; `make test-slow`
def test_a_checkpoint_written_before_the_move_tests_the_same(old_tree, data_dir, tmp_path):
    args = [a.replace("configs/demo.yaml", str(old_tree / "configs" / "demo.yaml")) for a in base_args(data_dir, tmp_path, 2)]
    fit = _old(old_tree, "fit", *args, cwd=old_tree)
    assert fit.returncode == 0, fit.stderr[-2000:]
    ckpt = next(tmp_path.rglob("best-*.ckpt"))
    run = ckpt.parent.parent
    old_test = _old(old_tree, "test", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), cwd=old_tree)
    assert old_test.returncode == 0, old_test.stderr[-2000:]
    new_test = _new("test", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt), cwd=ROOT)
    assert new_test.returncode == 0, new_test.stderr[-2000:]
    results = sorted(run.glob("test_*.json"))
    assert len(results) == 2  # the second evaluation got its own file (-2), never overwriting the first
    old, new = (json.loads(p.read_text()) for p in results)
    assert new["test/loss"] == pytest.approx(old["test/loss"], rel=1e-6)
    assert new["test/auroc"] == pytest.approx(old["test/auroc"], rel=1e-6)


@pytest.mark.slow  # old package + new package in subprocesses: ~15 s each; `make test-slow`
def test_a_study_written_before_the_move_resumes_without_a_new_trial(old_tree, data_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    logs = tmp_path / "logs"

    def hpo(config: Path) -> list[str]:
        return ["hpo", "--budget", "20K", "--trials", "1", "--config", str(config), "--search-space", str(space),
                "--log-dir", str(logs), "--no-live", *flags(data_dir, 1)]

    first = _old(old_tree, *hpo(old_tree / "configs" / "demo.yaml"), cwd=old_tree)
    assert first.returncode == 0, first.stderr[-2000:]
    again = _new(*hpo(ROOT / "configs" / "demo.yaml"), cwd=ROOT)  # same settings: the same study fingerprint
    assert again.returncode == 0, again.stderr[-2000:]  # a changed fingerprint would be refused (exit 2)
    storage = optuna.storages.RDBStorage(f"sqlite:///{logs / 'optuna.db'}")
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]  # resumed, at N: nothing new ran
