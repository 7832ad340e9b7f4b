"""Memory planner: how many samples of a micro-batch fit, and how many to accumulate.

The estimate is a sum of named tensors, not a fitted curve:

    resident      = fp32 weights + AdamW moments + bf16 weight copies (mixed) + workspace
    end of forward = resident (+ gradients when accumulating)
                     + micro_batch * (activations autograd saves + backward transients)
    end of backward = resident + gradients + micro_batch * (the first block's activations)
    optimizer step  = weights + gradients + AdamW moments + the step's temporaries + workspace
    peak            = the largest of the three

Activations are counted tensor by tensor for the layers of `forecast.model` (see
`block_bytes_per_token`), in the dtype autocast gives them. `forecast/bench/memory.py` checks
the estimate against measured CPU peaks. The planner picks the largest power-of-two micro-batch
that divides the effective batch and fits in `USABLE_FRACTION[device]` of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from forecast.core.errors import ForecastError
from forecast.model import check_arguments, num_patches
from forecast.sizing.budget import GB, count_parameters, matmul_parameters

PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")
# Lightning's other spellings of the same settings (`Trainer(precision=...)`)
PRECISION_ALIASES: dict[str | int, str] = {"32-true": "32", 32: "32", "bf16": "bf16-mixed",
                                           "16": "16-mixed", 16: "16-mixed"}
DEVICES: tuple[str, ...] = ("cuda", "cpu")
FP32 = 4  # bytes; weights, gradients, AdamW moments, LayerNorm statistics, the residual stream
HALF = 2  # bytes of bf16/fp16, what autocast gives matmul outputs in the mixed precisions
ADAM_MOMENTS = 2  # AdamW keeps exp_avg and exp_avg_sq, both fp32 like the weights
DEFAULT_CPU_MEMORY_GB = 16.0
# The share of the memory a plan may fill. CUDA: keep 10% free, since the caching allocator
# rounds blocks up and fragments (reserved runs a few to ~10% above what tensors hold). CPU:
# keep 25% free, since glibc's heap keeps freed blocks (its dynamic mmap threshold puts
# mid-size activations on the heap): forecast.bench.memory measures peak RSS 10-30% above the tensor
# peak this estimate models, ~1.7x with activation checkpointing, and within 2% of it when
# MALLOC_MMAP_THRESHOLD_=65536 fixes the threshold.
USABLE_FRACTION = {"cuda": 0.90, "cpu": 0.75}
# Memory that no formula below covers. CUDA: cuBLAS/cuBLASLt workspaces (up to 32 MiB per
# handle and stream on Hopper) plus kernels' scratch; 256 MiB covers a few of them. CPU: none,
# everything oneDNN and the allocator use beyond tensors is what the memory benchmark.s RSS column shows.
WORKSPACE_BYTES = {"cuda": 256 * 2**20, "cpu": 0}


class DoesNotFit(ForecastError):
    """Not even one sample fits in the memory (the message says by how much)."""


@dataclass(frozen=True)
class Plan:
    """A micro-batch, its accumulation, and the memory estimate behind them (bytes)."""

    micro_batch: int
    accumulate: int
    peak_bytes: int  # the largest of: end of forward, end of backward, optimizer step
    per_sample_bytes: int  # activations and backward transients of one sample
    fixed_bytes: int  # end-of-forward memory that does not grow with the micro-batch
    step_bytes: int = 0  # peak of the AdamW step: weights, gradients, moments, temporaries

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.accumulate


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_memory_bytes(device: str | None = None,
                           default_gb: float = DEFAULT_CPU_MEMORY_GB) -> int:
    """Free memory of the current CUDA device, or `default_gb` GB when planning for the CPU."""
    if (device or default_device()) == "cpu":
        return int(default_gb * GB)
    if not torch.cuda.is_available():
        raise ForecastError("no CUDA device is visible to measure: give the memory to plan for "
                            "(--memory-gb)")
    from forecast.sizing.devices import cuda_index

    free, _total = torch.cuda.mem_get_info(cuda_index())  # this rank's device, never cuda:0 by default
    return int(free)


def normalize_precision(precision: str | int) -> str:
    """One of `PRECISIONS` for any of Lightning's spellings of it."""
    precision = PRECISION_ALIASES.get(precision, precision)
    if precision not in PRECISIONS:
        raise ForecastError(f"unsupported precision {precision!r}; choose one of {PRECISIONS}")
    return str(precision)


def compute_bytes(precision: str) -> int:
    """Bytes per element of matmul outputs (and so of most saved activations)."""
    return FP32 if normalize_precision(precision) == "32" else HALF


def mask_bytes(dropout: float, input_bytes: int, device: str) -> int:
    """Bytes per element a dropout layer saves for backward.

    CUDA saves a bool mask (1 byte). The CPU kernel saves its noise tensor in the input's dtype.
    Dropout with p=0 saves nothing.
    """
    if dropout <= 0:
        return 0
    return 1 if device == "cuda" else input_bytes


def math_attention(dropout: float, device: str) -> bool:
    """Whether SDPA runs PyTorch's unfused math path (the CPU kernel has no fused dropout)."""
    return device == "cpu" and dropout > 0


def qkv_bytes_per_token(d_model: int, n_heads: int, dropout: float, precision: str,
                        device: str) -> int:
    """Bytes of q, k and v that SDPA keeps for backward, per token.

    Fused kernels keep q, k, v as views of the qkv projection's output (3 D). The math path
    keeps scaled copies of q and k, and v as a copy, except with one head, where v is a plain
    view and keeps the whole qkv output (3 D) alive.
    """
    c = compute_bytes(precision)
    if not math_attention(dropout, device):
        return 3 * c * d_model
    return 2 * c * d_model + (3 if n_heads == 1 else 1) * c * d_model


def block_bytes_per_token(d_model: int, n_heads: int, d_ff: int, dropout: float,
                          precision: str, device: str) -> int:
    """Bytes one encoder block keeps for backward per token (attention scores excluded).

    Pre-norm block: x + drop(proj(attn(ln1(x)))), then x + drop(fc2(gelu(fc1(ln2(x))))). The
    residual stream x stays fp32 under autocast (the fp32 position table enters it, LayerNorm
    runs in fp32); matmul inputs and outputs are in the compute dtype c.
    """
    D, c = d_model, compute_bytes(precision)
    m = mask_bytes(dropout, c, device)
    layer_norms = 2 * (FP32 * D + 2 * FP32)  # ln1/ln2 input (residual) + mean and rstd
    attention = (
        c * D  # ln1 output, the qkv input
        + qkv_bytes_per_token(D, n_heads, dropout, precision, device)  # q, k, v
        + c * D  # attention output = proj input
        + m * D  # residual dropout mask
    )
    ffn = (
        c * D  # ln2 output, the fc1 input
        + c * d_ff  # fc1 output, the GELU input
        + c * d_ff  # GELU output, the fc2 input
        + m * D  # residual dropout mask
    )
    return layer_norms + attention + ffn


def attention_bytes_per_sequence(n_patches: int, n_heads: int, dropout: float, precision: str,
                                 device: str) -> int:
    """Bytes the SDPA kernel keeps per sequence beyond q, k, v and its output.

    A fused kernel (flash / memory-efficient; CUDA always, CPU without dropout) keeps one fp32
    log-sum-exp per head and query. PyTorch's CPU kernel has no fused dropout, so on CPU with
    dropout it runs the math path, which keeps the N x N scores three times per head: softmax
    output, dropout noise and dropped scores.
    """
    N = n_patches
    if math_attention(dropout, device):
        return 3 * n_heads * N * N * compute_bytes(precision)
    return n_heads * N * FP32


def transient_bytes_per_token(d_model: int, d_ff: int, precision: str) -> int:
    """Gradients alive at once at the start of backward, on top of the saved activations.

    The backward of the last block's FFN holds the incoming gradient (D), the gradient of the
    GELU output (d_ff) and of its input (d_ff) before the first activations are freed; the
    forward's last temporaries are of the same size.
    """
    return compute_bytes(precision) * (2 * d_ff + d_model)


@dataclass(frozen=True)
class Activations:
    """Per-sample bytes of the activations, split by when they are alive (bytes)."""

    total: int  # everything alive at the end of the forward pass, plus backward transients
    last_block: int  # alive while the first block runs its backward, the last to do so


def activations_per_sample(n_features: int, context_length: int, patch_len: int, stride: int,
                           d_model: int, n_layers: int, n_heads: int, d_ff: int,
                           dropout: float, head_dropout: float, patch_mode: str, revin: bool,
                           activation_checkpointing: bool, precision: str,
                           device: str) -> Activations:
    """Bytes one sample adds to the forward/backward peak."""
    N = num_patches(context_length, patch_len, stride)
    S = 1 if patch_mode == "mixing" else n_features  # token sequences per sample
    T = S * N  # tokens per sample
    D, c = d_model, compute_bytes(precision)
    block = (T * block_bytes_per_token(D, n_heads, d_ff, dropout, precision, device)
             + S * attention_bytes_per_sequence(N, n_heads, dropout, precision, device))
    # input window (fp32, kept by the loop) and RevIN's centred and normalised copies
    inputs = (3 if revin else 1) * context_length * n_features * FP32
    patches = c * N * n_features * patch_len  # the reshaped patches, the embedding's input
    embed_dropout = T * D * mask_bytes(dropout, FP32, device)
    final_norm = T * (FP32 * D + 2 * FP32 + c * D)  # ln_f input, statistics, output (head input)
    head_dropout_mask = T * D * mask_bytes(head_dropout, c, device)
    outside = inputs + patches + embed_dropout + final_norm + head_dropout_mask
    transient = T * transient_bytes_per_token(D, d_ff, precision)
    if activation_checkpointing:
        # each block keeps only its fp32 input; one block's activations are rebuilt at a time
        blocks = n_layers * T * FP32 * D + block
    else:
        blocks = n_layers * block
    return Activations(total=blocks + outside + transient,
                       last_block=block + outside + transient)


def activation_bytes_per_sample(n_features: int, context_length: int, patch_len: int = 16,
                                stride: int = 8, d_model: int = 64, n_layers: int = 2,
                                n_heads: int = 4, d_ff: int = 128, dropout: float = 0.1,
                                head_dropout: float = 0.0, patch_mode: str = "mixing",
                                revin: bool = True, activation_checkpointing: bool = False, *,
                                precision: str = "32", device: str = "cuda") -> int:
    """Bytes one sample adds to the forward/backward peak (arguments mirror `PatchTST`)."""
    return activations_per_sample(n_features, context_length, patch_len, stride, d_model,
                                  n_layers, n_heads, d_ff, dropout, head_dropout, patch_mode,
                                  revin, activation_checkpointing, precision, device).total


def resident_bytes(params: int, matmul_weights: int, precision: str) -> int:
    """Weights, AdamW moments and autocast's weight copies: alive the whole step (bytes)."""
    weights = FP32 * params  # fp32 master weights in every precision
    moments = ADAM_MOMENTS * FP32 * params
    # autocast caches a half-precision copy of every matmul weight for the forward and backward
    casts = HALF * matmul_weights if compute_bytes(precision) == HALF else 0
    return weights + moments + casts


def optimizer_step_bytes(params: int, largest_tensor: int, device: str) -> int:
    """Peak of the AdamW step: weights, gradients, moments and the step's temporaries.

    On CUDA the module uses the fused AdamW (`forecast.training.module.adamw_options`), which updates in
    place (the default foreach one would take sqrt(exp_avg_sq) for all tensors at once: one more
    fp32 copy of the parameters); the CPU's per-tensor loop needs two temporaries of the
    largest tensor at a time.
    """
    resident = (1 + 1 + ADAM_MOMENTS) * FP32 * params  # weights, gradients, moments
    temporaries = 0 if device == "cuda" else 2 * FP32 * largest_tensor
    return resident + temporaries


def largest_parameter(n_features: int, context_length: int, patch_len: int, stride: int,
                      d_model: int, d_ff: int, patch_mode: str) -> int:
    """Elements of the biggest single parameter tensor."""
    N = num_patches(context_length, patch_len, stride)
    token_dim = patch_len * n_features if patch_mode == "mixing" else patch_len
    head = N * d_model * (1 if patch_mode == "mixing" else n_features)
    return max(3 * d_model * d_model, d_model * d_ff, token_dim * d_model, head)


def estimate(n_features: int, context_length: int, patch_len: int = 16, stride: int = 8,
             d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_ff: int = 128,
             dropout: float = 0.1, head_dropout: float = 0.0, patch_mode: str = "mixing",
             revin: bool = True, activation_checkpointing: bool = False, *,
             precision: str = "32", device: str = "cuda", micro_batch: int = 1,
             accumulate: int = 1) -> Plan:
    """Estimated training memory of `PatchTST(...)` for one micro-batch size and accumulation.

    The model arguments mirror `PatchTST.__init__`, so `estimate(**init_args, ...)` describes
    the model those arguments build. See `plan` for the rest.
    """
    check_arguments(n_features, context_length, patch_len, stride, d_model, n_layers, n_heads,
                    d_ff, patch_mode)
    if device not in DEVICES:
        raise ForecastError(f"unknown device {device!r}; choose one of {DEVICES}")
    precision = normalize_precision(precision)
    params = count_parameters(n_features, context_length, patch_len, stride, d_model, n_layers,
                              n_heads, d_ff, patch_mode, revin)
    matmul_weights = sum(matmul_parameters(n_features, context_length, patch_len, stride,
                                           d_model, n_layers, d_ff, patch_mode))
    acts = activations_per_sample(
        n_features, context_length, patch_len, stride, d_model, n_layers, n_heads, d_ff,
        dropout, head_dropout, patch_mode, revin, activation_checkpointing, precision, device)
    workspace = WORKSPACE_BYTES[device]
    resident = resident_bytes(params, matmul_weights, precision) + workspace
    grads = FP32 * params  # fp32, like the weights they belong to
    # Accumulating keeps the gradients through every micro-batch's forward and backward.
    fixed = resident + (grads if accumulate > 1 else 0)
    forward_end = fixed + micro_batch * acts.total
    # While the first block runs its backward, every later layer already has its gradient.
    backward_end = resident + grads + micro_batch * acts.last_block
    largest = largest_parameter(n_features, context_length, patch_len, stride, d_model, d_ff,
                                patch_mode)
    step = optimizer_step_bytes(params, largest, device) + workspace
    peak = max(forward_end, backward_end, step)
    return Plan(micro_batch, accumulate, peak, acts.total, fixed, step)


def plan(n_features: int, context_length: int, patch_len: int = 16, stride: int = 8,
         d_model: int = 64, n_layers: int = 2, n_heads: int = 4, d_ff: int = 128,
         dropout: float = 0.1, head_dropout: float = 0.0, patch_mode: str = "mixing",
         revin: bool = True, activation_checkpointing: bool = False, *,
         precision: str = "32", memory_bytes: int | None = None, effective_batch: int = 256,
         device: str | None = None) -> Plan:
    """Largest power-of-two micro-batch that fits, and the accumulation that keeps the batch.

    Args:
        n_features: input features (the model arguments that follow mirror `PatchTST`).
        context_length: window length.
        patch_len: time steps per patch.
        stride: steps between patch starts.
        d_model: token width.
        n_layers: encoder blocks.
        n_heads: attention heads.
        d_ff: feed-forward hidden width.
        dropout: dropout probability (dropout masks are saved for backward).
        head_dropout: dropout before the head.
        patch_mode: "mixing" or "independent".
        revin: whether RevIN is on.
        activation_checkpointing: blocks recompute their activations in backward.
        precision: "32", "bf16-mixed" or "16-mixed" (Lightning's names).
        memory_bytes: device memory to plan for; default: free memory of the current CUDA
            device, or 16 GB when planning for the CPU.
        effective_batch: samples per optimizer step; micro_batch * accumulate equals it.
        device: "cuda" or "cpu"; default: cuda when available.

    Returns:
        The plan with micro_batch * accumulate == effective_batch. The micro-batch is the
        largest power of two that divides the effective batch and whose estimated peak fits
        in `USABLE_FRACTION[device]` of the memory.

    Raises:
        DoesNotFit: a `ForecastError` when not even one sample fits (the message says by how
            much); any other `ForecastError` for invalid arguments.
    """
    if effective_batch < 1:
        raise ForecastError(f"effective batch must be >= 1, got {effective_batch}")
    device = device or default_device()
    if device not in DEVICES:
        raise ForecastError(f"unknown device {device!r}; choose one of {DEVICES}")
    memory_bytes = available_memory_bytes(device) if memory_bytes is None else memory_bytes
    usable = USABLE_FRACTION[device] * memory_bytes
    model = dict(n_features=n_features, context_length=context_length, patch_len=patch_len,
                 stride=stride, d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff,
                 dropout=dropout, head_dropout=head_dropout, patch_mode=patch_mode, revin=revin,
                 activation_checkpointing=activation_checkpointing)
    micro = 1 << (effective_batch.bit_length() - 1)  # largest power of two <= effective batch
    while micro >= 1:
        if effective_batch % micro == 0:
            candidate = estimate(**model, precision=precision, device=device, micro_batch=micro,
                                 accumulate=effective_batch // micro)
            if candidate.peak_bytes <= usable:
                return candidate
        micro //= 2
    one = estimate(**model, precision=precision, device=device, micro_batch=1,
                   accumulate=effective_batch)
    raise DoesNotFit(
        f"one sample needs an estimated {one.peak_bytes / GB:.2f} GB but only "
        f"{usable / GB:.2f} GB of {memory_bytes / GB:.2f} GB is usable: short by "
        f"{(one.peak_bytes - usable) / GB:.2f} GB (try bf16-mixed, activation checkpointing, "
        f"a smaller architecture or more memory)")


# ------------------------------------------------------------------- measuring the estimate


def train_steps(model_kwargs: dict[str, Any], micro_batch: int, steps: int = 2, accumulate: int = 1) -> Any:
    """Build PatchTST and AdamW on random data [micro_batch, L, F]; run `steps` optimizer steps."""
    from forecast.model import PatchTST

    x = torch.randn(micro_batch, model_kwargs["context_length"], model_kwargs["n_features"])  # (B, L, F)
    y = torch.randint(0, 2, (micro_batch,)).float()  # (B,)
    model = PatchTST(**model_kwargs).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(steps):
        for _ in range(accumulate):
            loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model


def measured_peak_bytes(model_kwargs: dict[str, Any], micro_batch: int, accumulate: int = 1) -> int:
    """Peak bytes held by tensors over a CPU model build and two training steps, read from the
    profiler's allocation events: what `estimate` predicts, measured."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_steps(model_kwargs, micro_batch, steps=2, accumulate=accumulate)
    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            peak = max(peak, event.extra_fields.total_allocated)
        stack.extend(event.children)
    return peak
