"""The manual's shell blocks, checked so that they cannot rot (tests/test_docs.py).

Every ```bash block of README.md and docs/*.md is either marked `<!-- norun: REASON -->` on the line right
before its fence (it needs a GPU, the network, a server or another machine) or it is checked:

- `make test` (fast, in this process): each command line is parsed by the real parser of its command
  (`forecast <command>` by its own jsonargparse parser; run flags and `--config` files by the LightningCLI
  parser of `forecast fit`), without running anything. An unknown or renamed option, or a value outside
  its domain, fails. `make` lines must name targets and variables of the Makefile; `python -m M` an
  importable module; other programs must be one of KNOWN_PROGRAMS.
- `make test-slow`: the blocks run for real, in order per page, in a fresh folder holding the sample
  data and the real SPY/VIX (when ../shared/data is there), each `forecast` run shrunk as the tests shrink
  runs (`shrink`: tiny models, one epoch, two trials, small budgets).

A page another engineer adds gets the same checks; a new top-level command needs an entry in CHECKS.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NORUN = re.compile(r"^<!--\s*norun:\s*(\S.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)```\s*(\w+)?")
SHELL = ("bash", "sh", "shell")
# programs a block may call besides forecast, make and python (checked to exist where they are ours)
KNOWN_PROGRAMS = {"cd", "ls", "cat", "head", "tail", "mkdir", "rm", "cp", "mv", "echo", "export", "source", "touch",
                  "tensorboard", "optuna", "pip", "git", "printf", "true", "test", "grep", "wc"}
FORECAST = ("forecast", ".venv/bin/forecast")


def manual_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every page of docs/ (sorted)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass
class Block:
    """One fenced shell block: where it is, why it may not run (None: it must run), its text."""

    path: Path
    line: int  # 1-based line of the opening fence
    norun: str | None
    text: str

    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The ```bash / ```sh / ```shell blocks of a Markdown file, each with its norun reason if marked."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
        if fence.group(2) in SHELL:
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marked = NORUN.match(before)
            found.append(Block(path, i + 1, marked.group(1) if marked else None, "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
STDIN_SCRIPT = "<stdin>"  # stands in a command's words for the here-document it reads: [..., STDIN_SCRIPT, body]


def commands(text: str) -> Iterator[list[str]]:
    """The simple commands of a block's text: continuations joined, comments dropped, split at && || ; |.
    A here-document (`python - <<'EOF' ... EOF`) ends its command's words as [STDIN_SCRIPT, body]."""
    joined = re.sub(r"\\\n", " ", text)
    lines = iter(joined.splitlines())
    for line in lines:
        heredoc = HEREDOC.search(line)
        if heredoc:
            body = []
            for more in lines:
                if more.strip() == heredoc.group(2):
                    break
                body.append(more)
            words = shlex.split(line[:heredoc.start()], comments=True)
            yield [*words, STDIN_SCRIPT, "\n".join(body)]
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                if words:
                    yield words
                words = []
            else:
                words.append(token)
        if words:
            yield words


# ------------------------------------------------------------------ checking one command, in process


class DocError(AssertionError):
    """A command of the manual that its parser (or the Makefile) refuses."""


def check_command(words: list[str], root: Path = ROOT) -> None:
    """Parse one command line as its program would, without running it.

    Raises:
        DocError: an unknown command, option, target or module; a value outside its domain.
    """
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # FORECAST_TRUST=x forecast ...: the assignments are the environment's
    if not words:
        return
    program, args = words[0], words[1:]
    if program in FORECAST:
        return check_forecast(args, root)
    if program in ("python", "python3", ".venv/bin/python") and args[:2] == ["-", STDIN_SCRIPT]:
        return check_python(args[2])
    if program in ("python", "python3", ".venv/bin/python") and args[:1] == ["-m"] and len(args) > 1:
        if args[1] == "forecast":
            return check_forecast(args[2:], root)
        if importlib.util.find_spec(args[1]) is None:
            raise DocError(f"python -m {args[1]}: no such module")
        return None
    if program == "make":
        return check_make(args, root)
    if program not in KNOWN_PROGRAMS:
        raise DocError(f"{program}: not a program the manual's check knows (a forecast, make or python -m line, or "
                       "one of docs_check.KNOWN_PROGRAMS); mark the block <!-- norun: REASON --> if it cannot run")
    return None


def check_python(script: str) -> None:
    """A Python script of the manual: it compiles, and every name it imports from forecast exists."""
    try:
        tree = ast.parse(script)
    except SyntaxError as err:
        raise DocError(f"python script: {err}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "forecast":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            if missing:
                raise DocError(f"python script: {node.module} has no {', '.join(missing)}")


def check_make(args: list[str], root: Path) -> None:
    makefile = (root / "Makefile").read_text()
    targets = {t for line in re.findall(r"^([A-Za-z0-9_ .-]+):(?!=)", makefile, re.M) for t in line.split()}
    for arg in args:
        name, eq, _ = arg.partition("=")
        if eq:
            if not re.search(rf"^{re.escape(name)}\s*[?:]?=|\$\({re.escape(name)}\)", makefile, re.M):
                raise DocError(f"make {arg}: the Makefile has no variable {name}")
        elif arg not in targets:
            raise DocError(f"make {arg}: the Makefile has no target {arg!r}")


def check_forecast(argv: list[str], root: Path) -> None:
    from forecast.cli import COMMANDS, take_trust
    from forecast.core.errors import ForecastError

    _, argv = take_trust(list(argv))
    if not argv or argv[0] in ("-h", "--help"):
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise DocError(f"forecast {command}: no such command")
    if command not in CHECKS:
        raise DocError(f"forecast {command}: no parser check for it in tests/docs_check.py CHECKS")
    if {"-h", "--help"} & set(rest):
        return
    try:
        CHECKS[command](rest, root)
    except ForecastError as err:
        raise DocError(f"forecast {command}: {err}") from None


def _own(parser: Callable, argv: list[str]) -> None:
    from forecast.core.parsers import parse

    parse(parser(), argv)


def _split(argv: list[str]):
    from forecast.core.parsers import split_run_args

    return split_run_args(argv)


def check_run(configs: list[str], flags: list[str], root: Path) -> None:
    """`--config` files and run flags, as the LightningCLI parser of `forecast fit` takes them.

    A config that a step before writes (a run's config.yaml, a study's best.yaml) is not there yet and is left
    out (the flags are then checked on configs/spy.yaml, a whole run config); one the checkout ships
    (configs/...) must exist.
    """
    from forecast.training.messages import quiet_lightning

    args: list[str] = []
    for config in configs:
        path = Path(config) if Path(config).is_absolute() else root / config
        if path.is_file():
            args += ["--config", str(path)]
        elif config.startswith("configs/"):
            raise DocError(f"--config {config}: no such file in the checkout")
    if not args:  # none given (hpo's and the report's runs start from it too), or only ones a step before writes
        args = ["--config", str(root / "configs" / "spy.yaml")]
    with quiet_lightning():
        try:
            _run_parser().parse_args(args + flags)
        except (Exception, SystemExit) as err:  # jsonargparse's ArgumentError, or its exit
            from forecast.core.parsers import one_line

            raise DocError(f"run options {' '.join(flags)}: {one_line(str(err))}") from None


@functools.lru_cache(maxsize=1)
def _run_parser():
    from forecast.training.cli import run_parser

    return run_parser()


def _lightning(argv: list[str], root: Path) -> None:
    own, run = _split(argv)
    extra = [a for a in own if not a.startswith("--ckpt_path") and a != "--print_config"]
    skipped = [own[i + 1] for i, a in enumerate(own[:-1]) if a == "--ckpt_path"]
    extra = [a for a in extra if a not in skipped]
    if extra:
        raise DocError(f"unrecognized arguments: {' '.join(extra)}")
    check_run(run.configs, run.flags, root)


def _search(parser: str) -> Callable[[list[str], Path], None]:
    def check(argv: list[str], root: Path) -> None:
        from forecast.hpo import cli

        own, run = _split(argv)
        _own(getattr(cli, parser), own)
        check_run(run.configs, run.flags, root)

    return check


def _report(argv: list[str], root: Path) -> None:
    from forecast.report.cli import parser

    own, run = _split(argv)
    if run.configs:
        raise DocError("forecast report takes no --config")
    _own(parser, own)
    check_run([], run.flags, root)


def _baselines(argv: list[str], root: Path) -> None:
    from forecast.training.baselines import parser

    own, run = _split(argv)
    _own(parser, own)
    check_run(run.configs, run.flags, root)


def _isoflop(argv: list[str], root: Path) -> None:
    from forecast.report.isoflop_cli import parser

    own, run = _split(argv)
    if not run.configs:
        raise DocError("forecast isoflop needs --config")
    _own(parser, own)
    check_run(run.configs, run.flags, root)


def _plain(module: str, name: str) -> Callable[[list[str], Path], None]:
    def check(argv: list[str], root: Path) -> None:
        _own(getattr(importlib.import_module(module), name), argv)

    return check


CHECKS: dict[str, Callable[[list[str], Path], None]] = {
    "data": _plain("forecast.data.cli", "build_parser"),
    "arch": _plain("forecast.sizing.arch", "build_parser"),
    "configs": _plain("forecast.configs", "parser"),
    "dashboard": _plain("forecast.hpo.dashboard", "parser"),
    "hpo": _search("hpo_parser"),
    "sweep": _search("sweep_parser"),
    "report": _report,
    "isoflop": _isoflop,
    "baselines": _baselines,
    **{name: _lightning for name in ("fit", "validate", "test", "predict")},
}
