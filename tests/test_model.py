"""PatchTST: shapes, gradients, checkpointing and argument errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from forecast.core.errors import ForecastError
from forecast.model import PatchTST, RevIN

SMALL = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64)


def make(patch_mode: str = "mixing", **overrides) -> PatchTST:
    torch.manual_seed(0)
    kwargs = {"n_features": 5, "context_length": 40, "patch_len": 8, "stride": 4, **SMALL,
              "patch_mode": patch_mode, **overrides}
    return PatchTST(**kwargs)


@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
@pytest.mark.parametrize("revin", [True, False])
def test_one_logit_per_window(patch_mode: str, revin: bool) -> None:
    model = make(patch_mode, revin=revin)
    x = torch.randn(3, 40, 5)  # (B, L, F)
    assert model(x).shape == (3,)
    assert model.n_patches == (40 - 8) // 4 + 1


@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
def test_every_parameter_gets_a_nonzero_gradient(patch_mode: str) -> None:
    model = make(patch_mode, dropout=0.0)
    model(torch.randn(4, 40, 5)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_independent_mode_shares_weights_across_features() -> None:
    # the same weights serve every feature: the count does not grow with F except in the head
    few, many = make("independent", n_features=2), make("independent", n_features=9)
    head_growth = (9 - 2) * few.n_patches * SMALL["d_model"]
    revin_growth = 2 * (9 - 2)
    assert many.num_parameters - few.num_parameters == head_growth + revin_growth


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    model = make(dropout=0.5)
    x = torch.randn(8, 40, 5)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
def test_activation_checkpointing_gives_the_same_result(patch_mode: str) -> None:
    x = torch.randn(4, 40, 5)
    plain = make(patch_mode, dropout=0.0)
    ckpt = make(patch_mode, dropout=0.0, activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    out_plain, out_ckpt = plain(x), ckpt(x)
    out_plain.sum().backward()
    out_ckpt.sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_revin_normalises_each_sample_and_feature_over_time() -> None:
    x = torch.randn(2, 50, 3) * torch.tensor([1.0, 10.0, 100.0]) + 7.0  # (B, L, F)
    y = RevIN(3)(x)  # identity affine at init
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=1, unbiased=False), torch.ones(2, 3), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"context_length": 7}, "context_length 7 is shorter than patch_len 8"),
        ({"d_model": 30}, "d_model 30 is not divisible by n_heads 4"),
        ({"stride": 0}, "stride must be >= 1, got 0"),
        ({"patch_mode": "mixed"}, "unknown patch_mode 'mixed'"),
    ],
)
def test_bad_arguments_raise_one_clear_line(overrides: dict, message: str) -> None:
    with pytest.raises(ForecastError, match=message) as err:
        make(**overrides)
    assert "\n" not in str(err.value)


def test_model_module_imports_no_lightning_data_or_optuna() -> None:
    code = ("import sys, forecast.model; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning',"
            " 'optuna') or m.startswith('forecast.data')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("patch_mode", ["mixing", "independent"])
def test_a_network_built_on_meta_then_initialised_equals_the_direct_build(patch_mode: str) -> None:
    """The deferred build (meta, then storage where it runs) gives the same weights for a seed."""
    direct = make(patch_mode)
    with torch.device("meta"):
        deferred = make(patch_mode)
    assert all(p.is_meta for p in deferred.parameters())
    deferred.to_empty(device="cpu")
    torch.manual_seed(0)
    deferred.reset_parameters()
    for (name, a), b in zip(direct.state_dict().items(), deferred.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
