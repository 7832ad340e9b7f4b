"""The report's data section on planted predictions: its claims see a planted "more data helps" and
do not see one where none was planted; the files it writes (seconds: no training).

The end-to-end control (synthetic prices with a planted or no signal -> sweep over training years ->
report) is `test_data_controls.py` (make test-slow: minutes of training).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from forecast.report.build import Fold, Report, SeriesResult, StudyResult
from forecast.report.collect import BestTrial, Series, StudyEntry
from forecast.report.data_scaling import MORE_HELPS, NO_SEARCH, judge_data
from forecast.report.equivalence import Margins
from forecast.report.markdown import render
from forecast.report.options import ReportOptions
from forecast.report.plots import data_scaling_figure, save_png
from forecast.report.retrain import SeedRun
from forecast.report.sufficiency import Sufficiency
from forecast.report.tables import TABLES
from forecast.training.baselines import BASELINES

SEEDS = [0, 1]
DAYS = 400
DRAWS = 100
# (years, design, draw, training samples, how much of the planted signal a model trained on it learns)
SELECTIONS = [(1, "trailing", 0, 250, 0.15), (2, "trailing", 0, 500, 0.35), (4, "trailing", 0, 1000, 0.6),
              (None, "trailing", 0, 2000, 0.8), (1, "blocks", 0, 250, 0.15), (1, "blocks", 1, 250, 0.15),
              (2, "blocks", 0, 500, 0.35), (2, "blocks", 1, 500, 0.35)]


def _folds(y: np.ndarray, samples: int, baseline: np.ndarray) -> list[Fold]:
    dates = pd.bdate_range("2019-01-01", periods=DAYS)
    half = DAYS // 2
    module = SimpleNamespace(splits={"train": SimpleNamespace(size=samples)})
    return [Fold(k, dates[k * half:(k + 1) * half], y[k * half:(k + 1) * half], "", ("2010-01-04", "2018-11-30"),
                 ("2018-12-03", "2018-12-31"), {}, None, module=module,
                 baselines={b: baseline[k * half:(k + 1) * half] for b in BASELINES})
            for k in range(2)]


def _series_results(planted: bool, unconverged: str = "") -> list[SeriesResult]:
    """Every selection's series: one 10K study whose predictions carry `learned` of a signal that
    drives the labels (planted) or that the labels ignore (none)."""
    rng = np.random.default_rng(0)
    signal = rng.normal(0.0, 1.5, DAYS)
    y = (rng.random(DAYS) < 1 / (1 + np.exp(-(signal if planted else 0.0)))).astype(float)
    out = []
    for years, design, draw, samples, learned in SELECTIONS:
        series = Series("SYN", "c", "threshold0.01", 1, "tier", years, design, draw)
        name = f"SYN-c-threshold0.01-h1{'' if series.train == 'all' else '-' + series.train}-10K"
        folds = _folds(y, samples, np.full(DAYS, y.mean()))
        runs = []
        for seed in SEEDS:
            noise = np.random.default_rng([seed, draw, samples]).normal(0.0, 0.3, DAYS)
            p = 1 / (1 + np.exp(-(learned * signal + noise)))
            half = DAYS // 2
            runs += [SeedRun(seed, "", {}, {}, [], 10_000, 1, 0.0, list(p[k * half:(k + 1) * half]), fold=k)
                     for k in range(len(folds))]
        best = BestTrial(0, 0.6, 10_000, "d8-l1-h1-f2", 0, 1, {}, {}, Path("."), "")
        study = StudyResult(StudyEntry(name, series, "10K", 10_000, {}, {}, best), runs)
        if unconverged and name.endswith(unconverged):
            study.search = Sufficiency(1, 0, 0, [], 0, 1, 0, 1, reasons=["1 trial"])
        out.append(SeriesResult(series, [study], folds, None, [], "no evidence", ""))
    return out


@pytest.fixture(scope="module")
def planted() -> tuple[list[SeriesResult], list]:
    series = _series_results(True)
    return series, judge_data(series, SEEDS, DRAWS, Margins())


def test_planted_more_data_is_found_and_the_null_is_not(planted):
    series, planted = planted
    null = judge_data(_series_results(False), SEEDS, DRAWS, Margins())
    for res, helps in ((planted[0], True), (null[0], False)):
        for design in ("trailing", "blocks"):
            c = next(c for c in res.comparisons if c.comparison == f"10K {design}: per doubling of training years"
                     and c.metric == "loss")
            assert (c.verdict == MORE_HELPS) is helps, (design, c)
            assert np.isfinite(c.mde) and c.mde > 0
    cells = {(c.model, c.design, c.years_text): c for c in planted[0].cells}
    assert cells[("10K", "blocks", "1")].draws == 2 and cells[("10K", "blocks", "1")].arm().seeds == 4  # pooled
    assert cells[("logistic", "trailing", "all")].samples == 2000  # the baselines have their own cells
    recency = [c for c in planted[0].comparisons if c.comparison.startswith("10K: trailing - blocks")]
    assert recency and recency[0].comparison.endswith("(1, 2)")
    assert recency[0].verdict != MORE_HELPS  # the same signal learned at equal years: no recency planted


def test_a_claim_names_the_unconverged_searches_it_rests_on():
    res = judge_data(_series_results(True, unconverged="-y2-10K"), SEEDS, 10, Margins())[0]
    trailing = next(c for c in res.comparisons if c.comparison == "10K trailing: per doubling of training years")
    blocks = next(c for c in res.comparisons if c.comparison == "10K blocks: per doubling of training years")
    assert res.search_note(trailing) == "rests on an unconverged search (SYN-c-threshold0.01-h1-y2-10K)"
    assert res.search_note(blocks) == ""
    logistic = next(c for c in res.comparisons if c.comparison == "logistic trailing: per doubling of training years")
    assert res.search_note(logistic) == NO_SEARCH


def test_one_selection_only_makes_no_data_section():
    assert judge_data(_series_results(True)[:1], SEEDS, 10, Margins()) == []


def test_the_report_writes_the_data_table_figure_and_claims(planted, tmp_path):
    series, data = planted
    report = Report(ReportOptions(storage="sqlite:///x.db", out=tmp_path), series, 1.0, SEEDS, data=data)
    # the data section's own outputs (write_outputs writes them with every other table and figure)
    for name in ("data_scaling.csv", "verdicts.csv"):
        TABLES[name](report).to_csv(tmp_path / name, index=False)
    save_png(data_scaling_figure(report), tmp_path / "data_scaling.png")
    (tmp_path / "report.md").write_text(render(report, []))
    table = pd.read_csv(tmp_path / "data_scaling.csv")
    model = table[table["model"] == "10K"].set_index(["design", "train_years"])
    assert len(model) == 6 and model.loc[("blocks", "2"), "draws"] == 2
    assert (model["test_loss_lo"] < model["test_loss"]).all() and (model["test_loss"] < model["test_loss_hi"]).all()
    assert model.loc[("trailing", "all"), "test_loss"] < model.loc[("trailing", "1"), "test_loss"]
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    data = verdicts[verdicts["kind"] == "data"]
    assert {"10K trailing: per doubling of training years", "10K: trailing - blocks at equal years (1, 2)"} <= \
        set(data["comparison"])
    assert data["mde"].notna().all() and (data["train"] == "by years").all()
    assert (tmp_path / "data_scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert "scaling in training years" in (tmp_path / "report.md").read_text()


def test_forecast_report_prints_each_data_claim_with_its_verdict(planted, tmp_path, monkeypatch, capsys):
    """`forecast report` prints one `label: verdict` line per size series, then one per data claim (as in
    verdicts.csv); the report itself is the planted one (its building is tested above and in test_report)."""
    import forecast.report.outputs as outputs
    from forecast.cli import main as forecast_main

    series, data = planted
    monkeypatch.setattr(outputs, "make_report", lambda options, *_, **__: Report(options, series, 1.0, SEEDS,
                                                                                   data=data))
    assert forecast_main(["report", "--storage", "sqlite:///x.db", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    family = "SYN c threshold0.01 h=1"
    assert f"{family}, 2 trailing years: no evidence" in printed  # a size series
    claims = [c for c in data[0].comparisons]
    assert len(claims) >= 4 and {c.metric for c in claims} == {"loss", "auroc"}
    for c in claims:
        assert f"{family}, {c.comparison} ({c.metric}): {c.verdict}" in printed
    assert f"{family}, 10K trailing: per doubling of training years (loss): {MORE_HELPS}" in printed
    assert printed[-1].startswith(f"report: {tmp_path / 'report.md'}")


def test_a_family_that_cannot_be_compared_prints_why(planted):
    from forecast.report.cli import verdict_lines

    series, _ = planted
    data = judge_data([*series[:1], replace(series[1], folds=[])], SEEDS, 10, Margins())
    lines = verdict_lines(Report(ReportOptions(storage="x"), [], 1.0, SEEDS, data=data))
    assert lines == ["SYN c threshold0.01 h=1, training years: not compared: fewer than two training selections "
                     "could be reported"]


def test_series_of_fewer_years_share_a_family_and_keep_their_own_label():
    a = Series("SPY", "c", "threshold0.01", 1, "tier", 4.0, "trailing", 0)
    b = Series("SPY", "c", "threshold0.01", 1, "tier", 4.0, "blocks", 2)
    assert a.family == b.family == Series("SPY", "c", "threshold0.01", 1)
    assert (a.train, b.train, a.family.train) == ("y4", "y4b2", "all")
    assert a.label == "SPY c threshold0.01 h=1, 4 trailing years" and a.family.train_years is None


def test_each_baseline_has_its_own_colour_marker_and_legend_entry(planted, tmp_path):
    series, data = planted
    report = Report(ReportOptions(storage="sqlite:///x.db", out=tmp_path), series, 1.0, SEEDS, data=data)
    ax = data_scaling_figure(report).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {f"{b} {d}" for b in BASELINES for d in ("trailing", "blocks")} | {"10K trailing", "10K blocks"} \
        <= set(labels)
    handles, names = ax.get_legend_handles_labels()
    look = {name: (h.lines[0].get_color(), h.lines[0].get_marker()) for h, name in zip(handles, names, strict=True)}
    baselines = {look[f"{b} trailing"] for b in BASELINES}
    assert len(baselines) == len(BASELINES)  # no two baselines look alike
    assert look["10K trailing"] not in baselines and all(look[f"{b} blocks"][0] == look[f"{b} trailing"][0]
                                                         for b in BASELINES)
