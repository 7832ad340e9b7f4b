"""`forecast hpo` / `forecast sweep` options: declared once as dataclass fields, parsed into those dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from forecast.core.errors import ForecastError
from forecast.core.options import flags_of, from_args
from forecast.core.parsers import parse
from forecast.hpo.cli import hpo_parser, sweep_parser
from forecast.hpo.options import SHARED, HpoOptions, SearchOptions, SweepOptions


def _hpo(argv: list[str]) -> HpoOptions:
    return from_args(parse(hpo_parser(), argv), HpoOptions, configs=["c.yaml"], overrides=["--data.horizon=3"])


def _sweep(argv: list[str]) -> SweepOptions:
    return from_args(parse(sweep_parser(), argv), SweepOptions, configs=["c.yaml"], overrides=["--seed_everything=1"])


def test_every_field_is_a_flag_and_the_defaults_are_the_dataclass_defaults():
    for parser, cls in ((hpo_parser(), HpoOptions), (sweep_parser(), SweepOptions)):
        flags = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
        assert flags == set(flags_of(cls).values())
    assert set(flags_of(SearchOptions)) < set(SHARED)  # configs and overrides are the trials' own, not flags
    assert _hpo(["--budget", "20K"]) == HpoOptions(budget="20K", configs=["c.yaml"], overrides=["--data.horizon=3"])
    assert _sweep(["--budgets", "2M", "--horizons", "1"]).designs == ["trailing"]
    assert SweepOptions(budgets=["2M"], horizons=[1]).designs is not SweepOptions(budgets=["2M"], horizons=[1]).designs


def test_jobs_without_a_storage_share_the_journal_in_the_log_dir():
    assert _hpo(["--budget", "2M"]).storage_url is None  # the default SQLite file
    assert _hpo(["--budget", "2M", "--jobs", "2", "--log-dir", "x"]).storage_url == str(Path("x/optuna.journal"))
    assert _hpo(["--budget", "2M", "--jobs", "2", "--storage", "s.journal"]).storage_url == "s.journal"
    assert _hpo(["--budget", "2M", "--no-live"]).live is False and _hpo(["--budget", "2M"]).live is None


def test_a_sweep_cell_is_one_study_with_the_shared_options():
    sweep = _sweep(["--budgets", "2M", "20K", "--horizons", "1", "3", "--trials", "7", "--pruner", "none",
                    "--keep-checkpoints", "--timeout", "60"])
    cell = sweep.cell("20K", ["--data.horizon=3"])
    assert cell.budget == "20K" and cell.study_name is None
    assert cell.overrides == ["--seed_everything=1", "--data.horizon=3"] and sweep.overrides == ["--seed_everything=1"]
    shared = {f.name for f in dataclasses.fields(SearchOptions)} - {"overrides"}
    assert {k: getattr(cell, k) for k in shared} == {k: getattr(sweep, k) for k in shared}


@pytest.mark.parametrize(("parser", "argv", "says"), [
    (hpo_parser, ["--budget", "2M", "--trials", "0"], "forecast hpo: trials: '0' is not an integer >= 1"),
    (hpo_parser, ["--budget", "2M", "--heartbeat", "-1"], "forecast hpo: heartbeat: '-1' is not an integer >= 0"),
    (sweep_parser, ["--budgets", "2M", "--horizons", "1", "--designs", "x"],
     "forecast sweep: designs (item 1): 'x' is not one of 'trailing', 'blocks'"),
])
def test_the_parser_refuses_what_the_field_type_refuses(parser, argv, says):
    with pytest.raises(ForecastError) as err:
        parse(parser(), argv)
    assert str(err.value).startswith(says)
