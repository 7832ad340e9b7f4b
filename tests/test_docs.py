"""The manual (README.md, docs/, mkdocs.yml): its examples cannot rot, and it builds with mkdocs --strict.

`make test` parses every command line of every shell block with the real parsers (tests/docs_check.py) and
builds the site; `make test-slow` runs every unmarked block for real on the sample data, shrunk.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docs_check import (
    ROOT,
    STDIN_SCRIPT,
    Block,
    DocError,
    blocks,
    check_command,
    commands,
    manual_pages,
)

LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[^)]*)?\)")


def all_blocks() -> list[Block]:
    return [b for page in manual_pages() for b in blocks(page)]


def check_block(block: Block) -> None:
    """Every command of the block parsed (a norun block's forecast and make lines too)."""
    for words in commands(block.text):
        try:
            check_command(words)
        except DocError as err:
            if block.norun is None or "not a program the manual's check knows" not in str(err):
                raise DocError(f"{block.where()}: {' '.join(words)}\n  {err}") from None


def test_every_shell_block_runs_in_a_test_or_says_why_not():
    found = all_blocks()
    assert len(found) >= 20 and any(b.path.name == "README.md" for b in found)
    for block in found:
        assert list(commands(block.text)), f"{block.where()}: an empty shell block"
        assert block.norun is None or len(block.norun) >= 3, f"{block.where()}: norun needs a reason"
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150 and "make demo" in readme and "make test" in readme


def test_every_command_of_the_manual_parses():
    failures = []
    for block in all_blocks():
        try:
            check_block(block)
        except DocError as err:
            failures.append(str(err))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("old", "new", "says"), [
    ("--trainer.max_epochs", "--trainer.max_epoch", "max_epoch"),  # a LightningCLI option, renamed
    ("--trials", "--trial", "--trial"),  # a search option
    ("--folds", "--fold", "--fold"),  # a report option
    ("--tier", "--tiers", "--tiers"),  # a data option
    ("make demo", "make demos", "no target 'demos'"),
])
def test_a_renamed_option_in_a_block_fails_the_check(tmp_path, old, new, says):
    """The check is not a formality: a copy of the manual with one option renamed in one block is refused."""
    page = next(p for p in manual_pages() if any(old in b.text and b.norun is None for b in blocks(p)))
    mutated = tmp_path / page.name
    text = page.read_text()
    block = next(b for b in blocks(page) if old in b.text and b.norun is None)
    mutated.write_text(text.replace(block.text, block.text.replace(old, new, 1), 1))
    changed = next(b for b in blocks(mutated) if b.line == block.line)
    assert changed.text != block.text
    with pytest.raises(DocError, match=re.escape(says)):
        check_block(changed)


def _nav_pages(nav: list) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_the_nav_lists_every_page_and_every_link_resolves():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert not pages - set(nav), f"pages missing from mkdocs.yml's nav: {sorted(pages - set(nav))}"
    assert not set(nav) - pages, f"nav entries without a page: {sorted(set(nav) - pages)}"
    for page in (ROOT / "docs").glob("*.md"):
        for target, _ in LINK.findall(page.read_text()):
            if "://" not in target:
                assert target in pages, f"{page.name}: link to {target}, no such page"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs / mkdocs-material (the dev extra) are not installed: make install")
def test_the_manual_builds_with_mkdocs_strict(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "search").is_dir()


# ------------------------------------------------------------------ make test-slow: the blocks, run


TINY_NET = ["--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2", "--model.net.init_args.n_layers=1",
            "--model.net.init_args.d_ff=32"]
SMALL_BUDGETS = ("100K", "200K")


def shrink(words: list[str]) -> list[str]:
    """A `forecast` command as the tests shrink runs: tiny models, one epoch, two trials, small budgets."""
    if not words or words[0] not in ("forecast", ".venv/bin/forecast") or len(words) < 2:
        return words
    command, out, i = words[1], list(words[:2]), 2
    while i < len(words):
        word = words[i]
        if word in ("--budget", "--budgets"):
            j = i + 1
            while j < len(words) and not words[j].startswith("--"):
                j += 1
            out += [word, *(SMALL_BUDGETS[:1] if word == "--budget" else SMALL_BUDGETS)]
            i = j
            continue
        if word in ("--trials", "--seeds", "--folds", "--horizons") and i + 1 < len(words):
            j = i + 1
            while j < len(words) and not words[j].startswith("--"):
                j += 1
            out += [word, "2" if word != "--horizons" else words[i + 1]]
            i = j
            continue
        out.append(word)
        i += 1
    if command in ("fit", "validate", "test", "predict", "baselines") and "--print_config" not in out:
        out += TINY_NET  # test/predict too: they build the network their checkpoint must fit
    if command in ("fit", "hpo", "sweep", "report"):
        out += ["--trainer.max_epochs=1"]
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The sample data (SP500, tier a25) and, where ../shared/data is there, real SPY and VIX (a25, c)."""
    root = tmp_path_factory.mktemp("manual")
    (root / "repo").mkdir()
    (root / "repo" / "configs").symlink_to(ROOT / "configs")
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared.resolve())
    steps = [["data", "sample"], ["data", "build", "--symbol", "SP500", "--tier", "a25"]]
    if (shared / "data" / "SPY.csv").is_file():
        # `data sample` wrote a VIX of its own: the real one replaces it (a refusal without --replace)
        steps += [["data", "import", "SPY", "../shared/data/SPY.csv"],
                  ["data", "import", "VIX", "../shared/data/VIX.csv", "--replace"],
                  ["data", "build", "--symbol", "SPY", "--tier", "a25"],
                  ["data", "build", "--symbol", "SPY", "--tier", "c", "--vix", "VIX"]]
    for step in steps:
        subprocess.run([sys.executable, "-m", "forecast", *step], cwd=root / "repo", env=_env(), check=True,
                       capture_output=True, timeout=600)
    return root


def _env() -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": "data"}


@pytest.mark.slow
@pytest.mark.parametrize("page", [p.name for p in manual_pages()])
def test_the_blocks_of_the_manual_run(page, workspace, tmp_path):
    """Every unmarked block of a page, in order, in a copy of the prepared folder; each command shrunk."""
    path = ROOT / page if page == "README.md" else ROOT / "docs" / page
    runs = [words for block in blocks(path) if block.norun is None for words in commands(block.text)
            if words[:1] != ["make"]]  # make targets install into .venv: checked by name in make test, run by CI
    if any("../shared/data" in word for words in runs for word in words) and not (workspace / "shared").exists():
        pytest.skip("the page reads ../shared/data, which is not beside this checkout")
    repo = tmp_path / "shared-parent" / "repo"
    repo.mkdir(parents=True)
    if (workspace / "shared").exists():
        (repo.parent / "shared").symlink_to((workspace / "shared").resolve())
    gets_data = any(words[1:3] in (["data", "sample"], ["data", "import"]) for words in runs)
    if gets_data:  # the page gets its own data: it starts from an empty folder, as a user would
        (repo / "configs").symlink_to(ROOT / "configs")
    else:
        shutil.copytree(workspace / "repo", repo, symlinks=True, dirs_exist_ok=True)
    for block in blocks(path):
        if block.norun is not None:
            continue
        for words in commands(block.text):
            if words[:1] == ["make"]:
                continue  # make targets install into .venv: checked by name in make test, run by CI itself
            script = None
            if STDIN_SCRIPT in words:  # a here-document: its body is the command's standard input
                script, words = words[words.index(STDIN_SCRIPT) + 1], words[:words.index(STDIN_SCRIPT)]
            line = " ".join(shlex_quote(w) for w in shrink(words))
            done = subprocess.run(["bash", "-c", line], cwd=repo, env=_env(), capture_output=True, text=True,
                                  timeout=900, input=script)
            assert done.returncode == 0, f"{block.where()}: {line}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"


def shlex_quote(word: str) -> str:
    import shlex

    return shlex.quote(word)
