"""What a run says, and what it keeps quiet: a bad config file, key or value in one line (with the closest valid
key), and the messages of our dependencies that are not about the user's run."""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from forecast.core.allowlist import refused_import
from forecast.core.bounded_yaml import check_config_text, safe_load, unsafe_reason
from forecast.core.errors import ForecastError
from forecast.core.parsers import one_line


class _NotOurs(logging.Filter):
    """Drops Lightning's advertising tips from our commands' output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_third_party() -> None:
    """Messages of our dependencies that are not about the user's run: Lightning's tips and a
    deprecation warning Lightning raises against newer torch."""
    for handler in logging.getLogger("lightning.pytorch").handlers:
        if not any(isinstance(f, _NotOurs) for f in handler.filters):
            handler.addFilter(_NotOurs())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


_CONFIG_FLAGS = ("--config", "-c")


def check_config_files(args: list[str]) -> None:
    """Every `--config FILE` exists and holds a safe YAML mapping; else one line naming the file."""
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag not in _CONFIG_FLAGS:
            continue
        if not value:
            value = args[i + 1] if i + 1 < len(args) else ""
        path = Path(value)
        if not path.is_file():
            raise ForecastError(f"config file not found: {value}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ForecastError(f"config file {value} cannot be read: {err}") from None
        doc = check_config_text(text, value)  # duplicate keys, alias bombs, inf/NaN, empty: refused with the line
        check_blocks(doc, value)


# The top-level keys of a run config that hold a block of options (a mapping), never one value.
# (`optimizer:` and `lr_scheduler:` are null in every saved config: Lightning's "none given".)
BLOCKS = ("data", "model", "trainer", "checkpoint", "early_stopping", "planner", "throughput")


def check_blocks(doc: dict[str, Any], path: str) -> None:
    """A block left empty (`trainer:` with its options commented out) or set to one value is one line."""
    for key in BLOCKS:
        if key not in doc or isinstance(doc[key], dict):
            continue
        if doc[key] is None:
            raise ForecastError(f"config file {path}: `{key}:` is empty (its options commented out?); set "
                                "options under it or delete the line")
        raise ForecastError(f"config file {path}: `{key}` is {doc[key]!r}, but it holds a block of options; "
                            f"set them under it ({key}: {{option: value}}) or delete the line")


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A run's parse refused (the parser's exit, or the CLI's own one-line `ForecastError`) as one
    `ForecastError` line: `invalid trial config: ` and the reason."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            yield
    except SystemExit:
        raise ForecastError(f"invalid trial config: {parser_error(err.getvalue()) or 'nothing parsed'}") from None
    except ForecastError as error:  # the CLI's own one-line parse errors (forecast.training.cli)
        raise ForecastError(f"invalid trial config: {error}") from None


def parser_error(stderr: str) -> str:
    """The jsonargparse error message after its usage text, folded into one line."""
    text = stderr.split("error:", 1)[-1] if "error:" in stderr else stderr
    return re.sub(r"\s+", " ", text).strip()


def parse_error(message: str, parser: LightningArgumentParser, args: list[str], prog: str | None) -> str:
    """jsonargparse's message in one line; an unknown key gets the closest valid one and its file."""
    raw = " ".join(message.split()) or "bad arguments"  # jsonargparse nests details on more lines
    denied = refused_import(raw)
    if denied is not None:
        return f"{prog + ': ' if prog else ''}{denied}"
    unsafe = unsafe_reason(raw)  # the value may be a whole YAML document: name the key and the reason only
    if unsafe is not None:
        key = re.search(r'Parser key "([\w.]+)"', raw)
        return f"{prog + ': ' if prog else ''}{key.group(1) + ': ' if key else ''}{unsafe}"
    text = one_line(message)  # a value outside its type's domain: the option and the domain
    where, see = (f"{prog}: ", f" (see {prog} --help)") if prog else ("", "")
    key = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", text)
    if key is None:
        return f"{where}{text}{see}"
    key = key.group(1) or key.group(2)
    prefix, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2] for k in _known_keys(parser) if k.rpartition(".")[0] == prefix}
    close = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.7)
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else see
    source = next((f" in {f}" for f in _config_values(args) if key in _flat_keys(f)), "")
    return f"{where}unknown option '{key}'{source}{hint}"


def parse_failure(message: str, args: Any, parser: LightningArgumentParser,
                  parsers: Sequence[LightningArgumentParser], subcommands: Iterable[str]) -> ForecastError:
    """A failed parse of a run as one line: named by its subcommand's parser when the command line starts
    with one (whose keys give the closest-key hint), else the top parser's, unnamed (the search's parse).

    Args:
        parsers: the subcommands' parsers; subcommands: their names.
    """
    argv = args if isinstance(args, list) else []
    subcommand = argv[0] if argv and argv[0] in subcommands else None
    named = [p for p in parsers if p.prog.replace(" [options]", "").endswith(f" {subcommand}")]
    sub = named[0] if subcommand and named else parser
    prog = sub.prog.replace(" [options]", "") if subcommand else None
    return ForecastError(parse_error(message, sub, argv, prog))


def _known_keys(parser: LightningArgumentParser) -> list[str]:
    """Every dotted option key of a parser, through its public defaults (no private action list)."""
    try:
        return list(parser.get_defaults().keys())
    except Exception:  # a default config file that does not parse: no hint rather than a second error
        return []


def given_keys(args: list[str]) -> list[str]:
    """Dotted keys the user set explicitly: `--key=value` / `--key value` flags and every leaf key of
    the `--config` files (the run's defaults are not in this list; `data:` alone sets no key)."""
    keys = {a[2:].split("=", 1)[0] for a in args if a.startswith("--") and a.split("=", 1)[0] not in _CONFIG_FLAGS}
    for path in _config_values(args):
        try:
            keys |= _leaf_keys(safe_load(Path(path).read_text()), "")
        except (OSError, yaml.YAMLError):
            continue  # unreadable: the parse already refused it
    return sorted(keys)


def _leaf_keys(node: Any, prefix: str) -> set[str]:
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]} if prefix else set()
    return {k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}{key}.")}


def _config_values(args: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in _CONFIG_FLAGS:
            out.append(value or (args[i + 1] if i + 1 < len(args) else ""))
    return out


def _flat_keys(path: str) -> set[str]:
    """Dotted keys of a YAML file (`data: {batch_size: 1}` -> {'data', 'data.batch_size'})."""
    def walk(node: Any, prefix: str) -> set[str]:
        if not isinstance(node, dict):
            return set()
        keys = {f"{prefix}{k}" for k in node}
        for k, v in node.items():
            keys |= walk(v, f"{prefix}{k}.")
        return keys

    try:
        return walk(yaml.safe_load(Path(path).read_text()), "")
    except (OSError, yaml.YAMLError):
        return set()


@contextlib.contextmanager
def quiet_lightning(stdout: bool = False) -> Iterator[None]:
    """Runs inside a search or a report: Lightning's INFO lines (seed, devices, split sizes) and
    third-party warnings that are not ours stay out of the caller's own progress lines.

    Args:
        stdout: also swallow what the run prints (the module's parameter count at fit start).
    """
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), (contextlib.redirect_stdout(io.StringIO()) if stdout
                                         else contextlib.nullcontext()):
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning vs newer torch, not ours
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
