"""PatchTST: a patch-based transformer encoder that turns a window of features into one logit.

The whole model lives here and nothing else: no data, no Trainer, no Optuna. Windowing and
scaling belong to the data module; RevIN is the only normalisation the model does itself.

Shapes: B batch, L context length, F features, P patch length, N patches, D d_model,
H heads, E head dim (D // H), S sequences per sample (1 in mixing mode, F in independent mode).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.functional import gelu, scaled_dot_product_attention
from torch.utils.checkpoint import checkpoint

from forecast.core.domains import ClosedOpenUnitInterval, Size
from forecast.core.errors import ForecastError

PatchMode = Literal["mixing", "independent"]
PATCH_MODES: tuple[str, ...] = ("mixing", "independent")


def num_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Number of patches `unfold(patch_len, stride)` cuts from a window of `context_length`."""
    return (context_length - patch_len) // stride + 1


def num_parameters(net: nn.Module) -> int:
    """Exact number of parameters of any network (the one count a run logs and the tests check)."""
    return sum(p.numel() for p in net.parameters())


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al. 2022), forward half only.

    Each sample's features are normalised over time by their own mean and standard deviation,
    then scaled and shifted by a learnable per-feature affine. Only the forward direction is
    needed: the model outputs a logit, not a forecast in the input's units.

    Args:
        n_features: number of input features F.
        eps: added to the variance so a constant feature does not divide by zero.
    """

    def __init__(self, n_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_features))
        self.bias = nn.Parameter(torch.zeros(n_features))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, F)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)  # (B, 1, F)
        return (x - mean) / std * self.weight + self.bias  # (B, L, F)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and PyTorch's SDPA kernel."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, N, D)
        q = q.view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, E)
        k = k.view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, E)
        v = v.view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, E)
        p = self.dropout if self.training else 0.0
        y = scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, N, E)
        y = y.transpose(1, 2).contiguous().view(B, N, D)  # (B, N, D)
        return self.resid_drop(self.proj(y))  # (B, N, D)


class FeedForward(nn.Module):
    """Position-wise MLP: D -> d_ff -> D with GELU."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(gelu(self.fc1(x))))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer encoder block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))  # (B, N, D)
        return x + self.ffn(self.ln2(x))  # (B, N, D)


class PatchTST(nn.Module):
    """PatchTST encoder with a flatten head that returns one logit per window.

    Args:
        n_features: number of input features F (linked from the data module).
        context_length: window length L in time steps (linked from the data module).
        patch_len: time steps per patch.
        stride: time steps between the starts of consecutive patches.
        d_model: width of the token embeddings.
        n_layers: number of encoder blocks.
        n_heads: attention heads; must divide d_model.
        d_ff: hidden width of the feed-forward layers.
        dropout: dropout in attention, after each residual branch and after the embedding.
        head_dropout: dropout on the flattened encoder output before the final linear layer.
        patch_mode: "mixing" makes one token per patch holding all features; "independent"
            runs each feature as its own token sequence through shared weights (as in the
            PatchTST paper).
        revin: normalise each sample's features over time (RevIN) before patching.
        activation_checkpointing: recompute each block's activations in the backward pass
            instead of storing them (less memory, about one more forward of compute).
    """

    def __init__(
        self,
        n_features: Size,
        context_length: Size,
        patch_len: Size = 16,
        stride: Size = 8,
        d_model: Size = 64,
        n_layers: Size = 2,
        n_heads: Size = 4,
        d_ff: Size = 128,
        dropout: ClosedOpenUnitInterval = 0.1,
        head_dropout: ClosedOpenUnitInterval = 0.0,
        patch_mode: PatchMode = "mixing",
        revin: bool = True,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_arguments(n_features, context_length, patch_len, stride, d_model, n_layers,
                        n_heads, d_ff, patch_mode)
        # the arguments it was built with: the memory planner and the FLOP count read them
        self.init_args = dict(n_features=n_features, context_length=context_length, patch_len=patch_len,
                              stride=stride, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff,
                              dropout=dropout, head_dropout=head_dropout, patch_mode=patch_mode, revin=revin,
                              activation_checkpointing=activation_checkpointing)
        self.n_features = n_features
        self.patch_len = patch_len
        self.stride = stride
        self.patch_mode = patch_mode
        self.activation_checkpointing = activation_checkpointing
        self.n_patches = num_patches(context_length, patch_len, stride)
        # mixing: a token is one patch of every feature; independent: one patch of one feature
        token_dim = patch_len * n_features if patch_mode == "mixing" else patch_len
        head_in = self.n_patches * d_model * (n_features if patch_mode == "independent" else 1)

        self.revin = RevIN(n_features) if revin else None
        self.embed = nn.Linear(token_dim, d_model)
        self.pos = nn.Parameter(torch.empty(self.n_patches, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)  # small, like GPT-2's position table
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(head_in, 1)

    @property
    def num_parameters(self) -> int:
        """Exact number of parameters (what a run logs as its size)."""
        return num_parameters(self)

    def reset_parameters(self) -> None:
        """Initialise every weight exactly as the constructor does, in the same order (so the same
        seed gives the same weights): for a network built on `meta`, once it has real storage
        (`net.to_empty(device=...)`), so it is never materialised on the host first."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()  # Linear, LayerNorm and RevIN: their constructors' init
            if module is self.embed:  # the constructor draws the position table right after embed
                nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        B, L, F = x.shape
        N, P, S = self.n_patches, self.patch_len, self.stride
        if self.revin is not None:
            x = self.revin(x)  # (B, L, F)
        if self.patch_mode == "mixing":
            tokens = x.unfold(1, P, S).reshape(B, N, F * P)  # (B, N, F, P) -> (B, N, F*P)
        else:
            tokens = x.transpose(1, 2).unfold(2, P, S)  # (B, F, N, P)
            tokens = tokens.reshape(B * F, N, P)  # (B*F, N, P)
        h = self.drop(self.embed(tokens) + self.pos)  # (B*S, N, D)
        for block in self.blocks:
            h = self._run_block(block, h)  # (B*S, N, D)
        h = self.ln_f(h)  # (B*S, N, D)
        h = h.reshape(B, -1)  # (B, S*N*D)
        return self.head(self.head_drop(h)).squeeze(-1)  # (B,)

    def _run_block(self, block: Block, h: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, use_reentrant=False)
        return block(h)


def check_arguments(n_features: int, context_length: int, patch_len: int, stride: int,
                    d_model: int, n_layers: int, n_heads: int, d_ff: int,
                    patch_mode: str) -> None:
    """Raise `ForecastError` (one line) for a model that cannot be built from these arguments."""
    for name, value in (("n_features", n_features), ("patch_len", patch_len),
                        ("stride", stride), ("d_model", d_model), ("n_layers", n_layers),
                        ("n_heads", n_heads), ("d_ff", d_ff)):
        if value < 1:
            raise ForecastError(f"{name} must be >= 1, got {value}")
    if context_length < patch_len:
        raise ForecastError(
            f"context_length {context_length} is shorter than patch_len {patch_len}")
    if d_model % n_heads != 0:
        raise ForecastError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
    if patch_mode not in PATCH_MODES:
        raise ForecastError(f"unknown patch_mode {patch_mode!r}; choose one of {PATCH_MODES}")
