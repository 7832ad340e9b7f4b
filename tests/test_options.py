"""`forecast.core.options`: a dataclass's fields become typed flags; the parser refuses what the type refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from forecast.core.domains import NonEmptyStr, PositiveInt
from forecast.core.errors import ForecastError
from forecast.core.options import add_options, flags_of, from_args, option
from forecast.core.parsers import command_parser, parse


@dataclass
class Opts:
    budget: NonEmptyStr = option(doc="the budget")
    trials: PositiveInt = option(50, "finished trials")
    log_dir: Path = option(Path("logs/hpo"), "where logs go")
    pruner: Literal["median", "none"] = option("median", "the pruner")
    years: list[PositiveInt] | None = option(None, "years", metavar="Y")
    keep: bool = option(False, "keep it")
    configs: list[str] = option(list, flag=None)


def _parser():
    p = command_parser("t", "test")
    add_options(p, Opts)
    return p


def test_fields_become_flags_with_types_defaults_and_help():
    p = _parser()
    assert flags_of(Opts) == {"budget": "--budget", "trials": "--trials", "log_dir": "--log-dir",
                              "pruner": "--pruner", "years": "--years", "keep": "--keep"}
    text = p.format_help()
    assert "finished trials (default: 50)" in text and "--log-dir" in text and "configs" not in text
    opts = from_args(parse(p, ["--budget", "2M", "--years", "2", "4", "--keep", "--log-dir", "x"]), Opts,
                     configs=["a.yaml"])
    assert opts == Opts(budget="2M", trials=50, log_dir=Path("x"), pruner="median", years=[2, 4], keep=True,
                        configs=["a.yaml"])
    assert from_args(parse(p, ["--budget", "1"]), Opts).configs == []


@pytest.mark.parametrize(("argv", "says"), [
    (["--budget", "2M", "--trials", "0"], "trials: '0' is not an integer >= 1"),
    (["--trials", "3"], "required"),
    (["--budget", "2M", "--pruner", "zz"], "'zz' is not one of 'median', 'none'"),
    (["--budget", "2M", "--years", "0"], "years (item 1)"),
    (["--budget", "2M", "--configs", "a"], "unrecognized"),
])
def test_the_parser_refuses_what_the_type_refuses(argv, says):
    with pytest.raises(ForecastError, match=None) as err:
        parse(_parser(), argv)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_list_default_is_copied_for_each_object():
    @dataclass
    class WithList:
        designs: list[str] = option(["trailing"], "designs")

    a, b = WithList(), WithList()
    a.designs.append("blocks")
    assert b.designs == ["trailing"] and "(default: trailing)" in _help_of(WithList)


def _help_of(cls) -> str:
    p = command_parser("t", "test")
    add_options(p, cls)
    return p.format_help()
