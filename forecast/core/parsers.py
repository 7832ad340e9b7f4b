"""The one parser family: every subcommand's options are declared with jsonargparse.

`forecast data|arch|hpo|sweep|report` and `python -m forecast.training.baselines` build their parsers
with `command_parser` and parse with `parse`; `forecast fit|validate|test|predict` is LightningCLI,
whose parser is a jsonargparse parser too. So an option is declared one way (a typed
`add_argument`, types from `forecast.core.domains`), abbreviations are refused everywhere, and every
parse error reaches the user through `one_line` as one line naming the option and its domain.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from forecast.core.errors import ForecastError


def command_parser(prog: str, description: str, epilog: str | None = None, **kwargs: Any) -> ArgumentParser:
    """A subcommand's parser: errors raise (never exit), no abbreviated options."""
    return ArgumentParser(prog=prog, description=description, epilog=epilog, exit_on_error=False,
                          allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def sub_parser(description: str) -> ArgumentParser:
    """The parser of a sub-subcommand (`forecast data build`), as `command_parser`."""
    return ArgumentParser(description=description, exit_on_error=False, allow_abbrev=False)


def parse(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    """`parser.parse_args(argv)`, its complaint turned into a one-line ForecastError.

    Raises:
        ForecastError: `<prog>: <option>: <what is wrong> (see --help)`.
    """
    try:
        return parser.parse_args(list(argv))
    except argparse.ArgumentError as err:
        raise ForecastError(f"{_prog(parser)}: {one_line(str(err))} (see --help)") from None


def _prog(parser: ArgumentParser) -> str:
    return parser.prog.replace(" [options]", "")


_KEY = re.compile(r'Parser key "([^"]+)"( element \d+)?:')
_REASON = re.compile(r"Not of type \w+: (.+)")
_GIVEN = re.compile(r"Given value: (.*)$", re.M)
_UNION_CHOICE = re.compile(r"- Expected a (?:typing\.)?Literal\[(.+?)\]\s*$", re.M)
_CHOICE = re.compile(r"Expected a (?:typing\.)?Literal\[(.+?)\]\. Got value: (.+)")


def _domain_reason(reasons: list[str]) -> str:
    """One reason from a union's members: the domains a value missed (`'-1' is not an integer >= 0,
    nor a number in (0, 1]`) rather than a member's failure to read it (`invalid literal for int()`)."""
    missed = list(dict.fromkeys(r for r in reasons if " is not " in r))
    if not missed:
        return reasons[0]
    value = missed[0].split(" is not ", 1)[0]
    rest = [r.split(" is not ", 1)[1] for r in missed[1:] if r.startswith(value + " is not ")]
    return missed[0] + "".join(f", nor {r}" for r in rest)


def one_line(message: str, limit: int = 300) -> str:
    """jsonargparse's message as one line: `key: reason` for a value outside its type's domain.

    jsonargparse reports a union (`PositiveInt | None`) as one block per member; the member that is
    not None says what is wrong, so that line is kept and the block dropped.
    """
    key = _KEY.search(message)
    reasons = [r.strip() for r in _REASON.findall(message)]
    reasons += [f"{value.strip()!r} is not one of {choices}" for choices, value in _CHOICE.findall(message)]
    given = _GIVEN.search(message)
    if given and not reasons:  # a union with a Literal member: jsonargparse lists the choices, not the value
        reasons += [f"{given.group(1).strip()!r} is not one of {choices}" for choices in _UNION_CHOICE.findall(message)]
    if key and reasons:
        element = f" (item {key.group(2).split()[-1]})" if key.group(2) else ""
        text = f"{key.group(1)}{element}: {_domain_reason(reasons)}"
    else:
        text = " ".join(message.split()) or "bad arguments"
    text = " ".join(text.split())  # a value holding newlines stays on one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The run's own option groups (LightningCLI's `forecast fit` parser): flags under these go to the run
# a search trial or a report retrain starts, and that parser checks them.
RUN_GROUPS = ("data.", "model.", "trainer.", "early_stopping.", "checkpoint.", "planner.", "throughput.")
RUN_KEYS = ("seed_everything",)


@dataclass
class RunArgs:
    """What `forecast hpo|sweep|report` hand to each run: `--config` files and run flags, in order."""

    configs: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def split_run_args(argv: Sequence[str]) -> tuple[list[str], RunArgs]:
    """(own options, run args): `--config FILE` and `--<group>.<key>[=value]` go to the run.

    A run flag's value is the next argument unless it is given with `=` or the next one is a flag.
    Everything else is the command's own, which its parser checks (an unknown one is refused there).
    """
    own: list[str] = []
    run = RunArgs()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        takes_next = not eq and i + 1 < len(args) and not args[i + 1].startswith("--")
        if key == "config":
            if not eq and i + 1 >= len(args):
                raise ForecastError("--config needs a FILE")
            run.configs.append(value if eq else args[i + 1])
            i += 1 if eq else 2
        elif key.startswith(RUN_GROUPS) or key in RUN_KEYS:
            run.flags += args[i:i + (1 if eq or not takes_next else 2)]
            i += 1 if eq or not takes_next else 2
        else:
            own.append(arg)
            i += 1
    return own, run
