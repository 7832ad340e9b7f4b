"""Every bad input is refused in one line and changes nothing; every read is verified.

The matrix runs the real `forecast` entry point (in this process, so 50 cases stay cheap) on a
copy of the offline sample (`forecast data sample` + tier a25) and of a real tiny run, and asserts
for each case: non-zero exit, at most 2 lines on stderr, no traceback anywhere, the expected
reason in the message, and every file under the case's folder unchanged (md5 before and after).

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_reliability.py -k matrix
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch

from forecast.cli import COMMANDS
from forecast.cli import main as forecast_main
from forecast.hpo.storage import WORKER_ATTR, open_storage

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs" / "demo.yaml")
TIER = "processed/SP500_a25.parquet"
TINY = ["--model.net.init_args.d_model=16", "--model.net.init_args.n_heads=2", "--model.net.init_args.n_layers=1",
        "--model.net.init_args.d_ff=32", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--trainer.limit_predict_batches=2",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def run(argv: list[str]) -> int:
    """The console script's exit status for `forecast ARGV...` (SystemExit included)."""
    try:
        return forecast_main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1


def fit_args(logs: Path, *extra: str) -> list[str]:
    return ["--config", CFG, f"--trainer.logger.init_args.save_dir={logs}", *TINY, *extra]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The offline sample with tier a25, as `make demo` builds it."""
    data = tmp_path_factory.mktemp("sample") / "data"
    assert run(["data", "sample", "--data-dir", str(data)]) == 0
    assert run(["data", "build", "--data-dir", str(data), "--symbol", "SP500", "--tier", "a25"]) == 0
    return data


@pytest.fixture(scope="module")
def fitted(sample, tmp_path_factory) -> Path:
    """A logs folder holding one real (tiny) finished demo run: logs/demo/version_0."""
    logs = tmp_path_factory.mktemp("fitted") / "logs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORECAST_DATA_DIR", str(sample))
        assert run(["fit", *fit_args(logs)]) == 0
    assert (logs / "demo" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    return logs


def tree(root: Path) -> dict[str, str]:
    """md5 of every file under `root` ('dir' for folders): equal trees = nothing changed."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


# -- what a case does to its copy before the command runs -------------------------------------
def flip_byte(rel: str, offset: int) -> Callable[[Path], None]:
    def setup(case: Path) -> None:
        path = case / "data" / rel
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    return setup


def delete(rel: str) -> Callable[[Path], None]:
    return lambda case: (case / rel).unlink()


def write(rel: str, text: str) -> Callable[[Path], None]:
    return lambda case: (case / rel).write_text(text)


def truncate(rel: str, size: int) -> Callable[[Path], None]:
    def setup(case: Path) -> None:
        with open(case / rel, "r+b") as f:
            f.truncate(size)
    return setup


class Pickled:
    """Stands for code inside a checkpoint: weights-only loading must refuse it."""


def code_checkpoint(case: Path) -> None:
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Pickled()}}, case / "code.ckpt")


def edited_checkpoint(**fields) -> Callable[[Path], None]:
    """The run's last.ckpt with `fields` replaced (None: dropped), saved as <case>/edited.ckpt."""
    def setup(case: Path) -> None:
        ckpt = torch.load(case / "logs/demo/version_0/checkpoints/last.ckpt", weights_only=True)
        for key, value in fields.items():
            if value is None:
                ckpt.pop(key, None)
            else:
                ckpt[key] = value
        torch.save(ckpt, case / "edited.ckpt")
    return setup


CSV_HEAD = "Date,Open,High,Low,Close,Adj Close,Volume\n"
ROW = "{},10,11,9,10.5,10.5,100\n"
GOOD_ROWS = "".join(ROW.format(f"2020-01-0{d}") for d in (2, 3, 6))

# (id, setup, argv, expected text in stderr). Placeholders: {case} the case folder, {data} its
# data copy, {logs} its logs copy (one finished run), {cfg} configs/demo.yaml.
CASES = [
    # silent wrong results (defects 1-4)
    ("tier-byte-flipped", flip_byte(TIER, 400_000), ["fit", "@fit"], "does not match its md5"),
    ("raw-byte-flipped-fit", flip_byte("raw/SP500.parquet", 100_000), ["fit", "@fit"],
     "source SP500 changed since the build"),
    ("raw-byte-flipped-build", flip_byte("raw/SP500.parquet", 100_000),
     ["data", "build", "--symbol", "SP500", "--tier", "a25"], "does not match its md5"),
    ("processed-manifest-deleted", delete("data/processed/manifest.json"), ["fit", "@fit"], "does not exist"),
    ("processed-manifest-corrupt", write("data/processed/manifest.json", "{"), ["fit", "@fit"], "not a readable manifest"),
    ("processed-manifest-entry-gone", write("data/processed/manifest.json", '{"format": 1, "files": {}}'),
     ["fit", "@fit"], "has no entry"),
    # manifest entries a hand or a peer broke (issue 29): one line from the reader and from the checker
    ("raw-manifest-entry-not-object", write("data/raw/manifest.json", '{"format": 1, "files": {"raw/SP500.parquet": 3}}'),
     ["data", "info"], "entry 'raw/SP500.parquet' is not an object"),
    ("processed-manifest-entry-no-md5", write("data/processed/manifest.json",
                                               '{"format": 1, "files": {"processed/SP500_a25.parquet": {}}}'),
     ["data", "verify"], "no field 'path'"),
    ("raw-manifest-entry-rows-text", write("data/raw/manifest.json", json.dumps({"format": 1, "files": {
        "raw/SP500.parquet": {"path": "raw/SP500.parquet", "md5": "0", "rows": "many", "first": None, "last": None,
                              "columns": []}}})),
     ["data", "build", "--symbol", "SP500", "--tier", "a25"], "a malformed field 'rows'"),
    ("processed-manifest-entry-sources-list", write("data/processed/manifest.json", json.dumps({"format": 1, "files": {
        "processed/SP500_a25.parquet": {"path": "processed/SP500_a25.parquet", "md5": "0", "rows": 1, "first": None,
                                        "last": None, "columns": [], "tier": "a25", "tier_version": 1,
                                        "sources": ["SP500"]}}})),
     ["fit", "@fit"], "a malformed field 'sources'"),
    ("raw-manifest-deleted-build", delete("data/raw/manifest.json"),
     ["data", "build", "--symbol", "SP500", "--tier", "a25"], "does not exist"),
    ("raw-manifest-deleted-fit", delete("data/raw/manifest.json"), ["fit", "@fit"], "does not exist"),
    ("tier-truncated", truncate("data/" + TIER, 500_000), ["fit", "@fit"], "does not match its md5"),
    ("threshold-negative", None, ["fit", "@fit", "--data.threshold", "-0.01"], "threshold must be > 0"),
    ("threshold-zero", None, ["fit", "@fit", "--data.threshold", "0"], "threshold must be > 0"),
    ("labels-one-class", None, ["fit", "@fit", "--data.threshold", "0.5"], "every train label is negative"),
    ("import-future-date", write("future.csv", CSV_HEAD + GOOD_ROWS + ROW.format("2199-01-02")),
     ["data", "import", "SPY", "{case}/future.csv"], "date is in the future"),
    # tracebacks and noise (defects 7-15)
    ("batch-size-zero", None, ["fit", "@fit", "--data.batch_size", "0"], "data.batch_size: '0' is not an integer in 1..2147483647"),
    ("batch-size-negative", None, ["fit", "@fit", "--data.batch_size=-4"], "data.batch_size: '-4' is not an integer in 1..2147483647"),
    ("eval-batch-size-zero", None, ["fit", "@fit", "--data.eval_batch_size", "0"], "data.eval_batch_size: '0' is not an integer in 1..2147483647"),
    ("ckpt-text-file-test", write("junk.ckpt", "not a checkpoint\n"),
     ["test", "@fit", "--ckpt_path", "{case}/junk.ckpt"], "not a loadable checkpoint"),
    ("ckpt-text-file-validate", write("junk.ckpt", "junk"),
     ["validate", "@fit", "--ckpt_path", "{case}/junk.ckpt"], "not a loadable checkpoint"),
    ("ckpt-text-file-predict", write("junk.ckpt", "junk"),
     ["predict", "@fit", "--ckpt_path", "{case}/junk.ckpt"], "not a loadable checkpoint"),
    ("ckpt-text-file-fit", write("junk.ckpt", "junk"),
     ["fit", "@fit", "--ckpt_path", "{case}/junk.ckpt"], "not a loadable checkpoint"),
    ("ckpt-truncated", truncate("logs/demo/version_0/checkpoints/last.ckpt", 20_000),
     ["test", "@fit", "--ckpt_path", "{logs}/demo/version_0/checkpoints/last.ckpt"], "not a loadable checkpoint"),
    ("ckpt-holding-code", code_checkpoint, ["test", "@fit", "--ckpt_path", "{case}/code.ckpt"],
     "not a loadable checkpoint"),
    ("ckpt-missing", None, ["test", "@fit", "--ckpt_path", "{case}/nope.ckpt"], "checkpoint not found"),
    ("config-missing", None, ["fit", "--config", "{case}/nope.yaml"], "config file not found"),
    ("config-malformed", write("bad.yaml", "data: {symbol: [unclosed\n"), ["fit", "--config", "{case}/bad.yaml"],
     "not valid YAML at line 2"),
    ("config-not-a-mapping", write("list.yaml", "- 1\n- 2\n"), ["fit", "--config", "{case}/list.yaml"],
     "is not a mapping"),
    ("config-unknown-key", write("bogus.yaml", "data: {bogus_key: 1}\n"),
     ["fit", "@fit", "--config", "{case}/bogus.yaml"], "unknown option 'data.bogus_key' in"),
    ("flag-unknown-key", None, ["fit", "@fit", "--data.batchsize", "3"], "did you mean 'data.batch_size'"),
    ("flag-bad-int", None, ["fit", "@fit", "--data.horizon", "abc"], "data.horizon: 'abc' is not an integer"),
    ("flag-bad-choice", None, ["fit", "@fit", "--data.task", "nope"], "data.task: 'nope' is not one of 'threshold', 'direction'"),
    ("flag-bad-model-arg", None, ["fit", "@fit", "--model.net.init_args.d_modl", "3"], "'d_modl' is not accepted"),
    ("arch-negative-budget", None, ["arch", "--budget", "-2M"], "unknown budget '-2M'"),
    ("hpo-negative-budget", None, ["hpo", "--budget", "-2M", "--log-dir", "{logs}/hpo"], "unknown budget '-2M'"),
    ("hpo-postgres-unreachable", None,
     ["hpo", "--budget", "2M", "--trials", "1", "--config", "{cfg}", "--log-dir", "{logs}/hpo",
      "--storage", "postgresql://nobody@127.0.0.1:9/none"], "cannot open storage postgresql://"),
    # checkpoints that load weights-only but carry malformed fields, or weights only (issue 29)
    ("ckpt-weights-only-resumed", edited_checkpoint(optimizer_states=None, loops=None, lr_schedulers=None),
     ["fit", "@fit", "--ckpt_path", "{case}/edited.ckpt"], "holds weights only"),
    ("ckpt-global-step-text", edited_checkpoint(global_step="x"), ["test", "@fit", "--ckpt_path", "{case}/edited.ckpt"],
     "a damaged Lightning checkpoint (global_step is str"),
    ("ckpt-callbacks-number", edited_checkpoint(callbacks=3), ["fit", "@fit", "--ckpt_path", "{case}/edited.ckpt"],
     "a damaged Lightning checkpoint (callbacks is int"),
    ("ckpt-state-dict-list", edited_checkpoint(state_dict=[1, 2]), ["predict", "@fit", "--ckpt_path", "{case}/edited.ckpt"],
     "state_dict is not a mapping of names to tensors"),
    ("config-block-null", write("null.yaml", "trainer:\n"), ["fit", "@fit", "--config", "{case}/null.yaml"],
     "`trainer:` is empty"),
    ("config-block-number", write("num.yaml", "checkpoint: 3\n"), ["fit", "@fit", "--config", "{case}/num.yaml"],
     "`checkpoint` is 3, but it holds a block of options"),
    # a file where the log folder goes (issue 29): the real OSError in one line, not the teardown's meta error
    ("fit-log-folder-is-a-file", write("blocked", "x"),
     ["fit", "--config", "{cfg}", "--trainer.logger.init_args.save_dir={case}/blocked/logs", *TINY],
     "a file stands where a folder is expected"),
    ("fit-checkpoint-folder-is-a-file", write("blocked", "x"), ["fit", "@fit", "--checkpoint.dirpath={case}/blocked/c"],
     "a file stands where a folder is expected"),
    ("hpo-log-dir-is-a-file", write("blocked", "x"),
     ["hpo", "--budget", "2M", "--trials", "1", "--config", "{cfg}", "--log-dir", "{case}/blocked/hpo"], "Not a directory"),
    # already handled before this sweep: they must stay so
    ("import-missing-file", None, ["data", "import", "SPY", "{case}/nope.csv"], "no such file"),
    ("import-empty-file", write("empty.csv", ""), ["data", "import", "SPY", "{case}/empty.csv"], "empty file"),
    ("import-bad-date", write("d.csv", CSV_HEAD + GOOD_ROWS + ROW.format("2020-13-45")),
     ["data", "import", "SPY", "{case}/d.csv"], "unparsable date"),
    ("import-negative-price", write("n.csv", CSV_HEAD + GOOD_ROWS + "2020-01-07,10,11,9,-1,10.5,100\n"),
     ["data", "import", "SPY", "{case}/n.csv"], "prices must be finite numbers > 0"),
    ("import-duplicate-date", write("dup.csv", CSV_HEAD + GOOD_ROWS + ROW.format("2020-01-03")),
     ["data", "import", "SPY", "{case}/dup.csv"], "duplicate date"),
    ("import-missing-column", write("c.csv", "Date,Open,High\n2020-01-02,1,2\n"),
     ["data", "import", "SPY", "{case}/c.csv"], "missing column"),
    ("import-bad-symbol", write("ok.csv", CSV_HEAD + GOOD_ROWS), ["data", "import", "S/P", "{case}/ok.csv"],
     "symbol: 'S/P' is not a symbol"),
    ("build-unknown-tier", None, ["data", "build", "--symbol", "SP500", "--tier", "nope"], "nope"),
    ("build-no-raw", None, ["data", "build", "--symbol", "NOPE", "--tier", "a25"], "no raw data for NOPE"),
    ("build-vix-for-a-tier-without", None, ["data", "build", "--symbol", "SP500", "--tier", "a25", "--vix", "VIX"],
     "uses no VIX"),
    ("data-unknown-flag", None, ["data", "build", "--symbol", "SP500", "--tierr", "a25"], "unrecognized arguments"),
    ("verify-damaged-tier", flip_byte(TIER, 1000), ["data", "verify"], "mismatch: " + TIER),
    ("fit-unknown-tier", None, ["fit", "@fit", "--data.tier", "nope"], "data.tier: 'nope' is not one of 'a20', 'a25', 'c'"),
    ("fit-no-tier-built", None, ["fit", "@fit", "--data.symbol", "VIX"], "missing processed file"),
    ("fit-val-start-outside", None, ["fit", "@fit", "--data.val_start", "1990-01-01"], "outside"),
    ("fit-splits-out-of-order", None, ["fit", "@fit", "--data.val_start", "2018-01-01"], "must be before"),
    ("fit-horizon-zero", None, ["fit", "@fit", "--data.horizon", "0"], "data.horizon: '0' is not an integer in 1..2147483647"),
    ("fit-context-zero", None, ["fit", "@fit", "--data.context_length", "0"], "data.context_length: '0' is not an integer in 1..2147483647"),
    ("test-without-a-run", None, ["test", "--config", "{cfg}", "--trainer.logger.init_args.save_dir={case}/none"],
     "no finished run"),
    ("arch-unknown-budget", None, ["arch", "--budget", "3X"], "unknown budget '3X'"),
    ("arch-bad-choice", None, ["arch", "--budget", "2M", "--precision", "7"], "precision: '7' is not one of '32'"),
    ("hpo-bad-int", None, ["hpo", "--budget", "2M", "--trials", "abc"], "trials: 'abc' is not an integer"),
    ("hpo-unknown-trial-flag", None, ["hpo", "--budget", "2M", "--config", "{cfg}", "--log-dir", "{logs}/hpo",
                                      "--data.batchsize", "3"], "did you mean 'data.batch_size'"),
    ("sweep-horizon-zero", None, ["sweep", "--budgets", "2M", "--horizons", "0", "--log-dir", "{logs}/hpo"],
     "horizons (item 1): '0' is not an integer >= 1"),
    ("report-bad-int", None, ["report", "--seeds", "x"], "seeds: 'x' is not an integer"),
    ("unknown-command", None, ["frobnicate"], "unknown command"),
]


def expand(argv: list[str], case: Path) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if arg == "@fit":
            out += fit_args(case / "logs")
        else:
            out.append(arg.format(case=case, data=case / "data", logs=case / "logs", cfg=CFG))
    return out


def test_the_matrix_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,setup,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_matrix_bad_input_is_one_line_and_changes_nothing(
    name, setup, argv, expected, sample, fitted, tmp_path, monkeypatch, capfd
):
    case = tmp_path
    shutil.copytree(sample, case / "data")
    shutil.copytree(fitted, case / "logs")
    if setup is not None:
        setup(case)
    monkeypatch.setenv("FORECAST_DATA_DIR", str(case / "data"))
    monkeypatch.chdir(case)  # anything written relative to the working folder lands in the snapshot
    before = tree(case)
    capfd.readouterr()
    status = run(expand(argv, case))
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, f"accepted: {out}\n{err}"
    assert "Traceback" not in out + err
    assert len(lines) <= 2, err
    assert expected in err, err
    assert tree(case) == before  # data, logs and the working folder exactly as they were


@pytest.mark.slow  # ~10 s of interpreter start and imports; the matrix checks the same in-process
def test_the_console_script_prints_one_line_for_a_corrupted_tier(sample, tmp_path):
    """The same contract through a real process (what a user's shell sees)."""
    data = tmp_path / "data"
    shutil.copytree(sample, data)
    flip_byte(TIER, 400_000)(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "forecast", "fit", *fit_args(tmp_path / "logs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**_env(), "FORECAST_DATA_DIR": str(data)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("forecast: error: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert not (tmp_path / "logs").exists()


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


# -- the defects whose fix is a behaviour, not a refusal ----------------------------------------
@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_fast_dev_run_works_and_writes_nothing(command, sample, fitted, tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    shutil.copytree(fitted, logs)
    monkeypatch.setenv("FORECAST_DATA_DIR", str(sample))
    monkeypatch.chdir(tmp_path)  # Lightning's fallback folder for checkpoints is the working one
    before = tree(tmp_path)
    assert run([command, *fit_args(logs), "--trainer.fast_dev_run=true"]) == 0
    assert tree(tmp_path) == before  # no run folder, checkpoint, metrics or predictions


def test_a_best_yaml_replay_runs_with_fast_dev_run(sample, fitted, tmp_path, monkeypatch):
    """best.yaml as `forecast hpo` writes it (from a real run's config.yaml) replays as a smoke test."""
    from forecast.hpo.outputs import write_best_yaml

    monkeypatch.setenv("FORECAST_DATA_DIR", str(sample))
    monkeypatch.chdir(tmp_path)
    trial = SimpleNamespace(number=0, value=0.5, user_attrs={
        "log_dir": str(fitted / "demo" / "version_0"), "arch_id": "d16", "params": 1})
    best = write_best_yaml(trial, tmp_path / "study")
    assert run(["fit", "--config", str(best), "--trainer.fast_dev_run=true"]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["study", "study/best.yaml"]


def test_threshold_defect_trained_before_and_is_refused_now(sample):
    """Defect 3 in the DataModule itself: <= 0 refused; a split of one class named."""
    from forecast.core.errors import ForecastError
    from forecast.data.datamodule import ForecastDataModule

    kwargs = dict(symbol="SP500", tier="a25", data_dir=str(sample), val_start="2015-01-01",
                  test_start="2017-01-01")
    with pytest.raises(ForecastError, match="threshold must be > 0"):
        ForecastDataModule(**kwargs, threshold=-0.01)
    ForecastDataModule(**kwargs, task="direction", threshold=-0.01)  # direction ignores the threshold
    with pytest.raises(ForecastError, match="every train label is negative"):
        ForecastDataModule(**kwargs, threshold=0.5)


def test_import_and_info_show_the_repaired_bar_count(tmp_path, capsys):
    rows = GOOD_ROWS + "2020-01-07,12,11,9,10.5,10.5,100\n"  # Open 12 above High 11
    (tmp_path / "odd.csv").write_text(CSV_HEAD + rows)
    data = tmp_path / "data"
    assert run(["data", "import", "SPY", str(tmp_path / "odd.csv"), "--data-dir", str(data)]) == 0
    assert "repaired 1 bars" in capsys.readouterr().out
    entry = json.loads((data / "raw/manifest.json").read_text())["files"]["raw/SPY.parquet"]
    assert entry["repaired_bars"] == 1
    assert run(["data", "info", "--data-dir", str(data)]) == 0
    info = capsys.readouterr().out
    assert "repaired bars" in info and re.search(r"raw/SPY\.parquet.*│ 1 ", info)


def test_a_killed_retry_is_not_said_to_be_queued_again(tmp_path):
    """Defect 13: the retry of a dead trial dies too; MAX_RETRY=1 queues nothing, and says so."""
    from forecast.hpo.loop import recover

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    worker = f"{socket.gethostname()}:{dead.pid}:0"
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", 0)
    study = optuna.create_study(study_name="r", storage=storage)
    said: list[str] = []
    display = SimpleNamespace(say=said.append)
    plan = SimpleNamespace(storage=storage)
    first = study.ask()
    first.suggest_float("x", 0, 1)
    first.set_user_attr(WORKER_ATTR, worker)
    recover(study, plan, display)
    retry = study.ask()  # the queued retry of trial 0
    assert retry.number == 1 and retry.params == first.params
    retry.set_user_attr(WORKER_ATTR, worker)
    recover(study, plan, display)
    assert said == ["trial 0: its process is gone; marked failed and queued to run again",
                    "trial 1: its process is gone; marked failed and not retried (it was the retry)"]
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]  # nothing WAITING


def test_a_missing_postgres_driver_names_psycopg(monkeypatch):
    """Defect 15, with the driver made unimportable (whether or not it is installed here)."""
    from forecast.core.errors import ForecastError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(ForecastError, match=r"psycopg.*pip install 'psycopg\[binary\]'"):
        open_storage("postgresql://user:pw@127.0.0.1:9/db", 0)


# -- the install lock ---------------------------------------------------------------------------
def _requirement_names(lines: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in lines if line.strip()}


def test_the_lock_pins_every_dependency_with_hashes_and_leaves_torch_to_torch_build():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _requirement_names(project["dependencies"] + project["optional-dependencies"]["dev"]) - {"torch"}
    text = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, flags=re.M))
    pinned = {name.lower().replace("_", "-") for name in pins}
    assert wanted <= pinned, f"not in requirements.lock (run `make lock`): {sorted(wanted - pinned)}"
    assert "torch" not in pinned and not any(n.startswith(("nvidia-", "triton")) for n in pinned)
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    for block in blocks:
        if re.match(r"^[A-Za-z0-9]", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    lightning = pins.get("lightning", "")
    assert lightning not in ("2.6.2", "2.6.3")  # the two malicious releases


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help_with_its_usage_and_exit_0(command, capsys):
    """`forecast COMMAND --help` needs nothing else on the line (isoflop once asked for --config first)."""
    try:
        code = forecast_main([command, "--help"])
    except SystemExit as stop:  # argparse's own exit after printing the help
        code = stop.code
    out, err = capsys.readouterr()
    assert code == 0 and "usage:" in out.lower() and "error" not in err, (code, out[:200], err)
