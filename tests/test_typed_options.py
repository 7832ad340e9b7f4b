"""Typed options (forecast.core.domains), one parser family, names and files (issue #19, items 2 and 5).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_typed_options.py
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonargparse import ArgumentParser

from forecast.cli import main as forecast_main
from forecast.core import domains
from forecast.core.errors import ForecastError
from forecast.core.parsers import split_run_args
from forecast.data.synthetic import synthetic_ohlcv

ROOT = Path(__file__).resolve().parents[1]


def parse_one(hint, text: str):
    """`--x TEXT` through a jsonargparse parser whose option has type `hint`: the value, or the error."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=hint)
    return parser.parse_args([f"--x={text}"]).x


# -- the domains: accepted exactly when inside, as plain values -------------------------------------
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))
CASES = [
    (domains.PositiveInt, lambda v: isinstance(v, int) and 1 <= v <= 2**63 - 1),
    (domains.NonNegativeInt, lambda v: isinstance(v, int) and 0 <= v <= 2**63 - 1),
    (domains.NonNegativeSize, lambda v: isinstance(v, int) and 0 <= v <= 2**31 - 1),
    (domains.Size, lambda v: isinstance(v, int) and 1 <= v <= 2**31 - 1),
    (domains.Seed, lambda v: isinstance(v, int) and 0 <= v <= 2**32 - 1),
    (domains.CountOrAll, lambda v: isinstance(v, int) and -1 <= v <= 2**63 - 1),
    (domains.PositiveFiniteFloat, lambda v: math.isfinite(v) and v > 0),
    (domains.NonNegativeFiniteFloat, lambda v: math.isfinite(v) and v >= 0),
    (domains.ClosedUnitInterval, lambda v: 0 <= v <= 1),
    (domains.ClosedOpenUnitInterval, lambda v: 0 <= v < 1),
    (domains.UnitFraction, lambda v: 0 < v <= 1),
    (domains.Threshold, lambda v: -1 < v <= 10),
]


@pytest.mark.parametrize("hint,inside", CASES, ids=[c[0].__name__ for c in CASES])
@settings(max_examples=60, deadline=None)
@given(value=NUMBERS)
def test_a_number_is_accepted_exactly_when_it_is_inside_its_domain(hint, inside, value):
    integer = issubclass(hint, int)
    expected = inside(value) and not (integer and isinstance(value, float))  # 3.0 is no integer
    try:
        parsed = parse_one(hint, repr(value))
    except Exception:  # noqa: BLE001 - jsonargparse's ArgumentError
        assert not expected, f"{value!r} refused as {hint.__name__}"
        return
    assert expected, f"{value!r} accepted as {hint.__name__}"
    assert type(parsed) is (int if integer else float)  # a plain value, not a subclass
    assert parsed == (value if integer else float(value))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=12))
def test_a_symbol_is_accepted_exactly_when_it_is_ascii_letters_digits_and_dot_underscore_dash(text):
    ascii_ok = text.isascii() and len(text) <= 32 and text[:1] != "" and (
        (text[0].isalnum() or (text[0] == "^" and text[1:2].isalnum()))
        and all(c.isalnum() or c in "._-" for c in text[1:]))
    try:
        parse_one(domains.Symbol, text)
        accepted = True
    except Exception:  # noqa: BLE001
        accepted = False
    assert accepted == ascii_ok, text
    from forecast.data.paths import storage_symbol

    if not ascii_ok:
        with pytest.raises(ForecastError):
            storage_symbol(text)


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", "-x", ".hidden", "ﬀ", "x" * 101, ""])
def test_a_name_never_leaves_its_folder(name):
    with pytest.raises(ForecastError, match="is not a name"):
        domains.check_name(name, "study name")


def test_unicode_that_case_folds_onto_another_symbol_is_refused(tmp_path):
    """`ﬀ`.upper() is `FF`: stored as given it would have replaced FF's data."""
    from forecast.data.paths import storage_symbol

    assert "ﬀ".upper() == "FF"
    for folded in ("ﬀ", "spyı", "ſpy"):
        with pytest.raises(ForecastError, match="bad symbol"):
            storage_symbol(folded)
    assert storage_symbol("^vix") == "VIX" and storage_symbol("brk-b") == "BRK-B"


def test_typed_hyper_parameters_keep_checkpoints_loadable_weights_only(tmp_path):
    """jsonargparse's own PositiveInt values pickle as its class, which a weights-only load refuses;
    the domains parse to plain values, so a checkpoint holding them loads."""
    from jsonargparse.typing import PositiveInt as TheirPositiveInt

    theirs, ours = parse_one(TheirPositiveInt, "3"), parse_one(domains.PositiveInt, "3")
    torch.save({"hyper_parameters": {"n": theirs}}, tmp_path / "theirs.ckpt")
    torch.save({"hyper_parameters": {"n": ours}}, tmp_path / "ours.ckpt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "theirs.ckpt", weights_only=True)
    assert torch.load(tmp_path / "ours.ckpt", weights_only=True)["hyper_parameters"]["n"] == 3


# -- one parser family: every command's mistakes are one line, no abbreviations ----------------------
@pytest.mark.parametrize("argv,expected", [
    (["fit", "--config", "configs/demo.yaml", "--trainer.max_epoch", "3"], "did you mean 'trainer.max_epochs'"),
    (["fit", "--config", "configs/demo.yaml", "--model.lr=-1"], "model.lr: '-1' is not a finite number > 0"),
    (["fit", "--config", "configs/demo.yaml", "--model.net.init_args.dropout=1"], "is not a number in [0, 1)"),
    (["fit", "--config", "configs/demo.yaml", "--data.num_workers=-1"], "data.num_workers: '-1' is not an integer >= 0"),
    (["fit", "--config", "configs/demo.yaml", "--seed_everything=-5"], "seed_everything: '-5' is not an integer in"),
    (["fit", "--config", "configs/demo.yaml", "--trainer.accumulate_grad_batches=0"], "is not an integer >= 1"),
    (["fit", "--config", "configs/demo.yaml", "--early_stopping.mode=up"], "early_stopping.mode: 'up' is not one of"),
    (["hpo", "--budget", "2M", "--tria", "3"], "unrecognized arguments: --tria"),
    (["hpo", "--budget", "2M", "--timeout=nan"], "timeout: 'nan' is not a finite number > 0"),
    (["hpo", "--budget", "2M", "--study-name", "../../elsewhere"], "is not a name"),
    (["report", "--storage", "x.db", "--stud", "a"], "unrecognized arguments: --stud"),
    (["report", "--storage", "x.db", "--test-start", "2020-02-30"], "is not a date YYYY-MM-DD"),
    (["arch", "--budget", "2M", "--memory-gb=inf"], "memory_gb: 'inf' is not a number of GB in (0, 1e12]"),
    (["data", "download", "SPY", "--star", "2020-01-01"], "unrecognized arguments: --star"),
    (["baselines", "--config", "configs/demo.yaml", "--ou", "x.csv"], "unrecognized arguments: --ou"),
])
def test_a_value_outside_its_domain_or_an_abbreviation_is_one_line(argv, expected, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(ROOT)
    assert forecast_main(argv) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("forecast: error: ") and expected in err[0], err


def test_lr_infinity_in_a_config_file_is_refused_before_training(tmp_path, capfd, monkeypatch):
    """`lr: 1.0e+400` is YAML for infinity; it used to train NaN and save a 'best' checkpoint."""
    (tmp_path / "lr.yaml").write_text("model:\n  lr: 1.0e+400\n")
    monkeypatch.chdir(tmp_path)
    assert forecast_main(["fit", "--config", str(ROOT / "configs/demo.yaml"), "--config", "lr.yaml"]) == 2
    assert "lr.yaml: 1.0e+400 at line 2 is not a finite number" in capfd.readouterr().err  # the safe loader
    assert forecast_main(["fit", "--config", str(ROOT / "configs/demo.yaml"), "--model.lr=1e400"]) == 2
    assert "model.lr: '1e400' is not a finite number > 0" in capfd.readouterr().err  # the option's type
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.yaml"]


def test_run_flags_and_configs_are_split_from_a_commands_own_options():
    own, run = split_run_args(["--budget", "2M", "--config", "a.yaml", "--data.horizon", "3", "--trials=4",
                               "--config=b.yaml", "--trainer.fast_dev_run", "--no-live", "--seed_everything=1"])
    assert own == ["--budget", "2M", "--trials=4", "--no-live"]
    assert run.configs == ["a.yaml", "b.yaml"]
    assert run.flags == ["--data.horizon", "3", "--trainer.fast_dev_run", "--seed_everything=1"]


# -- names and files ---------------------------------------------------------------------------------
def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("where,value,expected", [
    (15, 1e300, "prices above 1e+07 on 1 day(s) ({day})"),
    (15, 1e8, "prices above 1e+07"),
    (15, "x12", "Close moves more than 10x in one day on 2 day(s), first {day}"),  # up, then back
    (15, "/11", "Close moves more than 10x in one day"),
])
def test_implausible_prices_are_refused_at_import_with_their_dates(where, value, expected, tmp_path, capfd):
    frame = synthetic_ohlcv(n=30)
    if isinstance(value, str):  # one day's bar scaled: a tenfold jump up or down
        factor = float(value[1:]) if value[0] == "x" else 1 / float(value[1:])
        frame.loc[where, ["Open", "High", "Low", "Close", "Adj Close"]] *= factor
    else:
        frame.loc[where, ["Open", "High", "Close", "Adj Close"]] = value
    data = tmp_path / "data"
    assert forecast_main(["data", "import", "SPY", str(_csv(tmp_path, frame)), "--data-dir", str(data)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected.format(day=frame["Date"].iloc[where].date()) in err[0], err
    assert not data.exists()


def test_a_crash_like_day_within_the_bound_imports(tmp_path):
    frame = synthetic_ohlcv(n=30)
    frame.loc[15:, ["Open", "High", "Low", "Close", "Adj Close"]] *= 0.78  # 1987: -22% in a day
    assert forecast_main(["data", "import", "SPY", str(_csv(tmp_path, frame)), "--data-dir",
                          str(tmp_path / "data")]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_naming_it(tmp_path, capfd):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert forecast_main(["data", "sample", "--data-dir", str(folder / "data")]) == 1
    finally:
        folder.chmod(0o700)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "choose a folder you may write to" in err[0], err


@pytest.mark.parametrize("case", ["file-where-folder", "name-too-long", "folder-where-file"])
def test_file_system_failures_are_one_line_naming_the_path_and_the_way_out(case, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("in the way\n")
    (tmp_path / "data" / "raw" / "SPY.parquet").mkdir(parents=True)  # a folder where the raw file goes
    _csv(tmp_path, synthetic_ohlcv(n=30))
    data = {"file-where-folder": "afile/data", "name-too-long": "x" * 300}.get(case, "data")
    argv = ["data", "import", "SPY", "prices.csv", "--data-dir", data]
    before = files(tmp_path)
    assert forecast_main(argv) != 0
    err = capfd.readouterr().err.strip().splitlines()
    way_out = {"file-where-folder": "a file stands where a folder is expected",
               "name-too-long": "choose a shorter name", "folder-where-file": "name a file"}[case]
    assert len(err) == 1 and way_out in err[0], err
    assert files(tmp_path) == before  # nothing half-written


def files(root: Path) -> list[str]:
    """Every path below `root`, but the manifests' lock files (a lock is kept, as fcntl locks must be)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.name != ".manifest.lock")
