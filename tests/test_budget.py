"""Parameter budgets: exact counts, the grid per budget, the memory planner, `forecast arch`."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from forecast.core.errors import ForecastError
from forecast.model import PatchTST
from forecast.sizing.budget import (
    BUDGETS,
    GRID_PATH,
    Arch,
    architectures,
    budget_size,
    count_parameters,
    head_counts,
    load_grid,
    parse_budget,
    tier_features,
    training_flops_per_sample,
)
from forecast.sizing.planner import estimate, measured_peak_bytes, plan

ROOT = Path(__file__).resolve().parent.parent
A25 = {"n_features": 25, "context_length": 80, "patch_len": 16, "stride": 8}
GB = 1e9

# ------------------------------------------------------------------------------ exact counts

SMALL_GRID = list(itertools.product(
    [1, 7],  # n_features
    [(16, 16, 8), (33, 8, 3), (12, 12, 5)],  # (context_length, patch_len, stride)
    [(8, 1, 2, 16), (24, 3, 4, 40)],  # (d_model, n_layers, n_heads, d_ff)
    ["mixing", "independent"],
    [True, False],  # revin
))


@pytest.mark.parametrize(("n_features", "patching", "arch", "patch_mode", "revin"), SMALL_GRID)
def test_count_formula_equals_numel(n_features, patching, arch, patch_mode, revin) -> None:
    context_length, patch_len, stride = patching
    d_model, n_layers, n_heads, d_ff = arch
    model = PatchTST(n_features, context_length, patch_len, stride, d_model, n_layers, n_heads,
                     d_ff, patch_mode=patch_mode, revin=revin)
    expected = sum(p.numel() for p in model.parameters())
    assert count_parameters(n_features, context_length, patch_len, stride, d_model, n_layers,
                            n_heads, d_ff, patch_mode, revin) == expected
    assert model.num_parameters == expected


@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
def test_count_formula_on_meta_for_every_200m_and_2b_architecture(patch_mode: str) -> None:
    for budget in ("200M", "2B"):
        for arch in architectures(budget, 25, patch_mode=patch_mode):
            with torch.device("meta"):  # nothing is allocated
                model = PatchTST(**A25, **arch.model_kwargs(), patch_mode=patch_mode)
            assert model.num_parameters == arch.params, arch.id
            assert next(model.parameters()).is_meta


# ------------------------------------------------------------------------------ the grid


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
def test_each_budget_has_20_exact_architectures_from_wide_to_deep(budget, patch_mode) -> None:
    archs = architectures(budget, 25, 80, 16, 8, patch_mode)
    size = BUDGETS[budget]
    assert len(archs) >= 20
    assert len({(a.d_model, a.n_layers, a.d_ff) for a in archs}) >= 20  # distinct shapes
    for a in archs:
        assert abs(a.params - size) <= 0.25 * size, a.id
        assert a.d_model % a.n_heads == 0
        assert a.params == count_parameters(**A25, **a.model_kwargs(), patch_mode=patch_mode)
    depths = [a.n_layers for a in archs]
    assert min(depths) <= 2 and max(depths) >= 32  # wide-and-shallow ... narrow-and-deep


SMALL_BUDGETS = {"10K": 10_000, "30K": 30_000, "100K": 100_000, "300K": 300_000, "1M": 1_000_000}


@pytest.mark.parametrize("budget", list(SMALL_BUDGETS))
@pytest.mark.parametrize(("n_features", "patch_mode"), [(25, "mixing"), (25, "independent"), (38, "mixing")])
def test_small_budgets_have_3_exact_shapes_with_1_or_2_heads_below_64(budget, n_features, patch_mode) -> None:
    """10K..1M (a25 and tier c's 38 features): at least 3 distinct shapes within +-25%, exact counts;
    widths below 64 split into 1 or 2 heads (narrow_heads), wider ones into heads of 64."""
    archs = architectures(budget, n_features, 80, 16, 8, patch_mode)
    size = SMALL_BUDGETS[budget]
    assert len({(a.d_model, a.n_layers, a.d_ff) for a in archs}) >= 3
    shape = {**A25, "n_features": n_features}
    for a in archs:
        assert abs(a.params - size) <= 0.25 * size, a.id
        assert a.params == count_parameters(**shape, **a.model_kwargs(), patch_mode=patch_mode)
        assert a.n_heads in ((1, 2) if a.d_model < 64 else (a.d_model // 64,)), a.id


def test_10k_reaches_one_and_two_layers_of_width_16_and_counts_match_numel() -> None:
    archs = architectures("10K", 25)
    assert {"d16-l1-h1-f2", "d16-l1-h2-f4", "d16-l2-h2-f2"} <= {a.id for a in archs}
    assert min(a.d_model for a in archs) == 8
    for a in archs:  # small enough to build every one for real
        assert PatchTST(**A25, **a.model_kwargs()).num_parameters == a.params, a.id


def test_head_counts_use_head_dim_and_narrow_heads_only_where_no_head_dim_divides() -> None:
    grid = {"d_model": [], "n_layers": [], "head_dim": [64, 32], "ffn_ratio": [], "narrow_heads": [1, 2, 3]}
    assert head_counts(128, grid) == [2, 4]
    assert head_counts(32, grid) == [1]  # head_dim 32 divides: narrow_heads unused
    assert head_counts(24, grid) == [1, 2, 3]
    assert head_counts(8, grid) == [1, 2]  # 3 does not divide 8
    assert head_counts(24, {**grid, "narrow_heads": []}) == []
    del grid["narrow_heads"]
    assert head_counts(24, grid) == []  # an old grid without the key skips narrow widths, as before


def test_arch_id_names_width_depth_heads_and_ffn_ratio() -> None:
    assert Arch(512, 8, 8, 2048, 4, 1).id == "d512-l8-h8-f4"
    assert Arch(64, 2, 1, 160, 2.5, 1).id == "d64-l2-h1-f2.5"


def test_grid_file_has_every_axis() -> None:
    grid = load_grid(GRID_PATH)
    assert set(grid) == {"d_model", "n_layers", "head_dim", "ffn_ratio", "narrow_heads"}


@pytest.mark.parametrize(("extra", "message"), [
    ("narrow_heads: [1, 0]", "narrow_heads must be a list of positive integers"),
    ("narrow_heads: 2", "narrow_heads must be a list of positive integers"),
    ("head_dims: [8]", "unknown keys head_dims"),
])
def test_grid_file_refuses_bad_narrow_heads_and_unknown_keys(tmp_path, extra, message) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(f"d_model: [16]\nn_layers: [1]\nhead_dim: [64]\nffn_ratio: [2]\n{extra}\n")
    with pytest.raises(ForecastError, match=message):
        load_grid(path)


def test_unknown_budget_and_impossible_shape_raise() -> None:
    with pytest.raises(ForecastError, match="unknown budget '3X'"):
        architectures("3X", 25)
    with pytest.raises(ForecastError, match="no grid architecture lies within"):
        architectures("2M", 20_000)  # the patch embedding of d_model 8 alone is over 2.5M


@pytest.mark.parametrize("mode", ["mixing", "independent"])
def test_training_flops_match_torchs_flop_counter(mode) -> None:
    """An independent count: torch's FlopCounterMode over a real forward + backward. The formula
    is an upper bound by a few percent (autograd skips the input gradient of the first matmul)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = dict(n_features=5, context_length=32, patch_len=8, stride=4, d_model=32, n_layers=2, d_ff=64)
    net = PatchTST(**shape, n_heads=4, patch_mode=mode, dropout=0.0)
    with FlopCounterMode(display=False) as counter:
        net(torch.randn(3, 32, 5)).sum().backward()
    per_sample = counter.get_total_flops() / 3
    assert 0.93 <= per_sample / training_flops_per_sample(**shape, patch_mode=mode) <= 1.0


def test_tier_a25_has_25_features() -> None:
    assert tier_features("a25") == 25
    with pytest.raises(ForecastError, match="unknown tier"):
        tier_features("nope")


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", ["10k", "30k", "100k", "300k", "1m", "2m", "20m", "200m", "2b"])
def test_model_configs_are_within_their_budget(name: str) -> None:
    config = yaml.safe_load((ROOT / "configs" / "model" / f"patchtst_{name}.yaml").read_text())
    net = config["model"]["net"]
    assert net["class_path"] == "forecast.model.PatchTST"
    with torch.device("meta"):
        model = PatchTST(n_features=25, context_length=80, **net["init_args"])
    size = parse_budget(name).size
    assert abs(model.num_parameters - size) <= 0.25 * size
    assert f"{model.num_parameters:,} parameters" in (ROOT / "configs" / "model" / f"patchtst_{name}.yaml").read_text()
    assert model.num_parameters == count_parameters(
        25, 80, **{k: net["init_args"][k] for k in ("patch_len", "stride", "d_model",
                                                    "n_layers", "n_heads", "d_ff",
                                                    "patch_mode")})


# ------------------------------------------------------------------------------ planner

MODEL_20M = {**A25, "d_model": 512, "n_layers": 6, "n_heads": 8, "d_ff": 2048}


@pytest.mark.parametrize("effective_batch", [256, 96, 100, 7, 1])
def test_plan_keeps_the_effective_batch(effective_batch: int) -> None:
    for memory_gb in (0.42, 0.5, 1, 4, 64):
        p = plan(**MODEL_20M, memory_bytes=int(memory_gb * GB), effective_batch=effective_batch,
                 device="cpu")
        assert p.micro_batch * p.accumulate == effective_batch
        assert p.micro_batch & (p.micro_batch - 1) == 0  # a power of two


def test_less_memory_gives_smaller_micro_batches() -> None:
    micro = [plan(**MODEL_20M, memory_bytes=int(gb * GB), device="cpu").micro_batch
             for gb in (16, 1, 0.6, 0.45, 0.42)]
    assert micro == sorted(micro, reverse=True)
    assert micro[0] == 256 and micro[-1] < 16


def test_plan_fits_its_estimate_into_the_memory() -> None:
    memory = int(0.8 * GB)
    p = plan(**MODEL_20M, memory_bytes=memory, device="cuda", precision="bf16-mixed")
    assert 1 < p.micro_batch < 256
    bigger = estimate(**MODEL_20M, device="cuda", precision="bf16-mixed",
                      micro_batch=2 * p.micro_batch, accumulate=p.accumulate // 2)
    assert p.peak_bytes <= 0.9 * memory < bigger.peak_bytes  # 90% of CUDA memory is usable


def test_one_sample_that_does_not_fit_says_by_how_much() -> None:
    with pytest.raises(ForecastError) as err:
        plan(**MODEL_20M, memory_bytes=int(0.1 * GB), device="cpu")
    message = str(err.value)
    assert "one sample needs" in message and "short by" in message and "GB" in message
    assert "\n" not in message


def test_savings_show_in_the_estimate() -> None:
    base = estimate(**MODEL_20M, device="cuda", micro_batch=64)
    bf16 = estimate(**MODEL_20M, device="cuda", micro_batch=64, precision="bf16-mixed")
    ckpt = estimate(**MODEL_20M, device="cuda", micro_batch=64, activation_checkpointing=True)
    accum = estimate(**MODEL_20M, device="cuda", micro_batch=64, accumulate=4)
    assert bf16.per_sample_bytes < base.per_sample_bytes
    assert ckpt.per_sample_bytes < base.per_sample_bytes / 3
    params = count_parameters(**{k: v for k, v in MODEL_20M.items() if k != "dropout"})
    assert accum.fixed_bytes == base.fixed_bytes + 4 * params  # fp32 gradients kept


def test_estimate_is_within_20_percent_of_measured_tensor_peak() -> None:
    net = dict(n_features=25, context_length=80, d_model=64, n_layers=2, n_heads=2, d_ff=128, dropout=0.1)
    measured = measured_peak_bytes(net, micro_batch=64)
    estimated = estimate(**net, device="cpu", micro_batch=64).peak_bytes
    assert 0.8 <= estimated / measured <= 1.2


# ------------------------------------------------------------------------------ CLI


def run_forecast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forecast", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_arch_json_lists_rows_with_exact_counts() -> None:
    out = run_forecast("arch", "--budget", "20M", "--n-features", "25", "--memory-gb", "16",
                       "--device", "cpu", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list) and len(rows) >= 20
    fields = {"id", "d_model", "n_layers", "n_heads", "d_ff", "params", "peak_gb",
              "micro_batch", "accumulate", "train_flops_per_sample"}
    for row in rows:
        assert fields <= set(row)
        assert abs(row["params"] - 20_000_000) <= 5_000_000
        assert row["micro_batch"] * row["accumulate"] == 256


def test_arch_unknown_budget_exits_2_with_one_line() -> None:
    out = run_forecast("arch", "--budget", "3X")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown budget '3X'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(("text", "label", "size"), [
    ("2M", "2M", 2_000_000), ("2m", "2M", 2_000_000), (" 2B ", "2B", 2_000_000_000), ("50k", "50K", 50_000),
    ("1.5M", "1.5M", 1_500_000), ("300000", "300000", 300_000), (120_000, "120000", 120_000),
])
def test_one_budget_parser_takes_names_and_counts(text, label, size) -> None:
    assert parse_budget(text) == (label, size)
    assert budget_size(text) == size


@pytest.mark.parametrize("text", ["3X", "", "-2M", "M", "0", "0.4", "1e6", "2MB", True, 2.5])
def test_one_budget_parser_refuses_what_is_not_a_count(text) -> None:
    with pytest.raises(ForecastError, match="budget"):
        parse_budget(text)


def test_arch_takes_any_count_as_hpo_does() -> None:
    """`forecast arch --budget 50K` lists the grid architectures within +-25% of 50,000 parameters."""
    out = run_forecast("arch", "--budget", "50k", "--n-features", "25", "--format", "json")
    assert out.returncode == 0, out.stderr
    counts = [row["params"] for row in json.loads(out.stdout)]
    assert counts and all(abs(c - 50_000) <= 0.25 * 50_000 for c in counts)


CONTROL = ROOT / "configs" / "model" / "patchtst_control.yaml"


def test_a_revin_free_config_lists_the_exact_counts_of_its_built_models() -> None:
    """configs/model/patchtst_control.yaml (`revin: false`) on tier c's 40 stationary inputs: every listed
    architecture counts what `PatchTST` builds, not its RevIN-on count (2 x 40 more: 7,809 for 7,729)."""
    doc = yaml.safe_load(CONTROL.read_text())
    net, n_features = doc["model"]["net"]["init_args"], tier_features("c", "stationary")
    shape = (n_features, doc["data"]["context_length"], net["patch_len"], net["stride"], net["patch_mode"])
    archs = architectures("10K", *shape, net["revin"])
    assert net["revin"] is False and n_features == 40
    for a in archs:
        assert PatchTST(*shape[:4], **a.model_kwargs(), patch_mode=net["patch_mode"],
                        revin=False).num_parameters == a.params, a.id
    with_revin = {a.id: a.params for a in architectures("10K", *shape)}
    assert all(with_revin[a.id] == a.params + 2 * n_features for a in archs if a.id in with_revin)
    assert ({a.id: a.params for a in archs}["d16-l2-h2-f2"], with_revin["d16-l2-h2-f2"]) == (7_729, 7_809)


def test_arch_no_revin_shows_the_exact_counts(capsys) -> None:
    from forecast.sizing.arch import main as arch_main

    shape = ["--budget", "10K", "--tier", "c", "--inputs", "stationary", "--context-length", "5",
             "--patch-len", "5", "--stride", "5", "--memory-gb", "16", "--disk-gb", "100", "--device", "cpu"]
    assert arch_main([*shape, "--no-revin", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) >= 3
    for row in rows:
        model = PatchTST(40, 5, 5, 5, row["d_model"], row["n_layers"], row["n_heads"], row["d_ff"], revin=False)
        assert row["params"] == model.num_parameters, row["id"]
    assert arch_main(shape) == 0  # the default: RevIN on, as the model's
    table = capsys.readouterr().out
    assert "7,809" in table and "no RevIN" not in table
    assert arch_main([*shape, "--no-revin"]) == 0
    table = capsys.readouterr().out
    assert "7,729" in table and "7,809" not in table and "mixing, no RevIN" in table
