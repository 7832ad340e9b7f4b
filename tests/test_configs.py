"""forecast.configs: every shipped config is parsed by the parser that reads it, and `forecast configs`
lists and copies them (what a user of an installed wheel starts from)."""

from __future__ import annotations

import pytest
import yaml

from forecast import configs
from forecast.cli import main as forecast_main
from forecast.core.metric_names import MONITOR
from forecast.hpo.space import load_space
from forecast.sizing.budget import BUDGETS, architectures, load_grid
from forecast.training.cli import cli_main

RUN_CONFIGS = [n for n in configs.shipped() if not n.startswith("hpo/") and n != "arch_grid.yaml"]


def test_the_package_ships_every_kind_of_config():
    names = configs.shipped()
    assert {"demo.yaml", "spy.yaml", "trainer/default.yaml", "arch_grid.yaml", "hpo/search_space.yaml"} <= set(names)
    assert {f"model/patchtst_{b.lower()}.yaml" for b in BUDGETS} <= set(names)
    assert all(configs.path(n).is_file() for n in names)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_run_config_is_accepted_by_the_cli(name, capsys):
    """Each run config, on top of the demo, parses against the real parser (nothing is trained)."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(configs.path("demo.yaml")), "--config", str(configs.path(name)),
                  "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["class_path"] == "forecast.model.PatchTST"
    assert printed["early_stopping"]["monitor"] == MONITOR


def test_the_search_space_and_the_grid_are_parsed_by_their_readers():
    spec = load_space(configs.path("hpo/search_space.yaml"))
    assert spec.params, "the shipped search space searches nothing"
    grid = load_grid(configs.path("arch_grid.yaml"))
    for budget in BUDGETS:  # every named budget has architectures on the shipped grid (a25: 25 features)
        assert architectures(budget, 25, grid=grid)


def test_configs_lists_and_copies_without_overwriting(tmp_path, capsys):
    assert forecast_main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in configs.shipped())
    dest = tmp_path / "mine"
    assert forecast_main(["configs", "--copy", str(dest)]) == 0
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.yaml"))
    assert copied == configs.shipped()
    assert (dest / "spy.yaml").read_bytes() == configs.path("spy.yaml").read_bytes()
    (dest / "spy.yaml").write_text("# edited\n")
    assert forecast_main(["configs", "--copy", str(dest)]) == 2  # refuses: nothing overwritten
    assert "exists" in capsys.readouterr().err
    assert (dest / "spy.yaml").read_text() == "# edited\n"
