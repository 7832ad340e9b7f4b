"""The LightningModule: loss, optimizer, schedule and metrics around an injected network.

The network (`forecast.model.PatchTST`) arrives ready-made, so this file knows nothing of
architecture; gradient clipping, accumulation and precision are Trainer settings. The CLI builds
the network on `meta` (no storage); `configure_model` gives it storage and its initial weights on
the device the Trainer runs it on, so a 2B model is never materialised in fp32 on the host first.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from forecast.core.domains import (
    ClosedOpenUnitInterval,
    ClosedUnitInterval,
    CompileBackend,
    NonNegativeFiniteFloat,
    PositiveFiniteFloat,
)
from forecast.core.errors import ForecastError
from forecast.core.metric_names import COLLAPSE_STD, MONITOR, MONITOR_MODE
from forecast.data.datamodule import SPLITS
from forecast.model import num_parameters
from forecast.sizing.budget import training_flops_per_sample
from forecast.training.metrics import ProbabilitySpread, classification_metrics

BEST_KEY = "hp/best_" + MONITOR.replace("/", "_")  # TensorBoard HParams metric: best monitored value so far


class Forecaster(L.LightningModule):
    """Binary forecaster: BCE on logits, AdamW with real weight decay, warmup + cosine schedule.

    Args:
        net: The network, `[B, L, F] -> logits [B]` (e.g. `forecast.model.PatchTST`).
        lr: Peak learning rate (of any optimizer: the schedule warms up to it, then decays it).
        weight_decay: Weight decay on matrices (norms, biases and embeddings of dim < 2 get none).
        betas: AdamW betas (of the default optimizer).
        optimizer: Another optimizer than the default AdamW, the LightningCLI way:
            `--model.optimizer=torch.optim.SGD --model.optimizer.momentum=0.9`. It gets the same
            two parameter groups, and `lr` and `weight_decay` above win over its own.
        warmup_frac: Fraction of all optimizer steps spent warming the learning rate up linearly.
        min_lr_ratio: Floor of the cosine decay as a fraction of `lr`.
        pos_weight: Weight of positive samples in the loss (None = unweighted).
        train_metrics: Also compute AUROC, AP, Brier... over the training batches of each epoch
            (`train/*` in TensorBoard). Off, training tracks only its loss, which is a little faster.
            None (default): on, except on CUDA, where every step would feed the metrics' states
            (validation metrics are always computed).
        fused: The default AdamW as one fused kernel over every tensor (`torch.optim.AdamW(fused=True)`;
            torch has it on CPU too). None (default): fused on CUDA only, where the default
            `foreach` version launches a few kernels per tensor group and keeps an fp32 temporary
            of all parameters; not under 16-mixed (a GPU without bf16), whose gradient scaler
            Lightning must unscale before clipping, which a fused AdamW does not allow.
        weights_dtype: dtype of the weights in a weights-only checkpoint (the best one of a search
            trial, a report retrain or a large model's fit): "bfloat16" halves its size (a 2B
            model's is 4 GB instead of 8) and loses nothing the bf16-mixed forward pass does not
            already drop (autocast runs every matmul on bf16 copies of the weights); loading casts
            them back to fp32. Resumable checkpoints (with the optimizer state) always keep fp32.
        compile: Compile the network with `torch.compile` where it runs (slower start, faster
            steps on a GPU; the checkpoint's weights keep their names): true for the default
            backend (inductor), or a backend's name ("eager" checks the graph capture only). Each
            new network starts from dynamo's empty caches (a search's trials in one process), and
            `compile_record()` says whether it really ran compiled.
    """

    def __init__(
        self,
        net: nn.Module,
        lr: PositiveFiniteFloat = 1e-3,
        weight_decay: NonNegativeFiniteFloat = 0.05,
        betas: tuple[ClosedOpenUnitInterval, ClosedOpenUnitInterval] = (0.9, 0.95),
        optimizer: OptimizerCallable | None = None,
        warmup_frac: ClosedUnitInterval = 0.05,
        min_lr_ratio: ClosedUnitInterval = 0.0,
        pos_weight: PositiveFiniteFloat | None = None,
        train_metrics: bool | None = None,
        compile: bool | CompileBackend = False,
        fused: bool | None = None,
        weights_dtype: Literal["float32", "bfloat16"] = "float32",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.optimizer = optimizer
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=None if pos_weight is None else torch.tensor(pos_weight))
        # keyed "<split>_" because nn.Module already has an attribute named `train`
        self.metrics = nn.ModuleDict({f"{s}_": classification_metrics(s) for s in SPLITS})
        self.spread = nn.ModuleDict({f"{s}_": ProbabilitySpread() for s in SPLITS})
        self.history: list[dict[str, float]] = []  # val metrics of every finished epoch
        self.flops_per_sample = _flops_per_sample(net)  # training matmul FLOPs (None: unknown network)
        self.flops_per_batch: int | None = None  # of the last training batch, for the Throughput callback's MFU
        # More values for TensorBoard's HParams tab (a search trial adds its draw), logged at fit start
        self.shown_hparams: dict[str, Any] = {}
        self._compiled = False
        self._dynamo_start = (0, 0, 0)  # _dynamo_counts() when the network was compiled

    def best_epoch(self) -> dict[str, float] | None:
        """Val metrics of the epoch with the best monitored value (the best checkpoint's epoch)."""
        scored = [h for h in self.history if MONITOR in h]
        if not scored:
            return None
        pick = min if MONITOR_MODE == "min" else max
        return pick(scored, key=lambda h: h[MONITOR])

    @property
    def num_parameters(self) -> int:
        return num_parameters(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, L, F] -> [B] logits

    def configure_model(self) -> None:
        """Give a network built on `meta` its storage and initial weights where the Trainer runs it,
        then compile it if asked. Lightning calls this under its device context before it restores
        a checkpoint, for every fit/validate/test/predict, so it must be idempotent."""
        if any(p.is_meta for p in self.net.parameters()):
            self.net.to_empty(device=torch.get_default_device())  # the Trainer's device
            initialise(self.net)
        backend = self.hparams.compile
        if backend and not self._compiled:
            # A new network starts from dynamo's empty caches: every instance shares PatchTST.forward's
            # code object, so the graphs of earlier networks in this process (a search's trials) would
            # count toward dynamo's recompile limit (8) and later networks would run eager, silently.
            torch.compiler.reset()
            self._dynamo_start = _dynamo_counts()
            # in place: forward is compiled, state_dict keys are unchanged
            self.net.compile(**({} if backend is True else {"backend": backend}))
            self._compiled = True
            # the device it will RUN on: Lightning moves the module only after this hook
            if backend in (True, "inductor") and self.run_device().type == "cpu":
                one_thread_for_cpu_inductor()

    def run_device(self) -> torch.device:
        """The device the Trainer runs this module on. Inside `configure_model` the module has not
        been moved yet (`self.device` is still the CPU on a GPU run): a Trainer's strategy knows
        its root device; without a Trainer, the device context the hook is called under decides."""
        try:
            return self.trainer.strategy.root_device
        except RuntimeError:  # "not attached to a `Trainer`"
            return torch.get_default_device()

    def compile_record(self) -> dict[str, Any]:
        """Whether this network's forward ran compiled, as dynamo counted since it was compiled.

        Returns:
            `compile` (the backend asked for, or False), `compiled` (True when dynamo captured at
            least one graph and never fell back to eager, e.g. at its recompile limit),
            `compiled_graphs` and `eager_frames` (frames dynamo gave up on and ran eager).
        """
        backend = self.hparams.get("compile") or False
        if not backend or not self._compiled:
            return {"compile": backend, "compiled": False, "compiled_graphs": 0, "eager_frames": 0}
        graphs, frames, ok = (now - start for now, start in zip(_dynamo_counts(), self._dynamo_start, strict=True))
        return {"compile": "inductor" if backend is True else backend, "compiled": graphs > 0 and frames == ok,
                "compiled_graphs": graphs, "eager_frames": frames - ok}

    def model_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch  # [B, L, F], [B]
        if split == "train" and self.flops_per_sample is not None:
            self.flops_per_batch = self.flops_per_sample * len(y)
        logits = self(x).float()  # [B]; float so bf16 autocast never reaches the loss
        loss = self.loss_fn(logits, y)
        if split != "train" or self.train_metrics_on:
            probs = torch.sigmoid(logits.detach())
            self.metrics[f"{split}_"].update(probs, y.long())
            self.spread[f"{split}_"].update(probs)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        return torch.sigmoid(self(x).float())

    # -- epoch ends -------------------------------------------------------------------------
    @property
    def train_metrics_on(self) -> bool:
        """Whether training batches feed the metrics (`train_metrics`; None: not on CUDA)."""
        return resolve_train_metrics(self.hparams.train_metrics, self.device)

    def on_train_epoch_end(self) -> None:
        if self.train_metrics_on:
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        self.history.append({"epoch": self.current_epoch, **metrics})
        if MONITOR in metrics:
            self.log(BEST_KEY, self.best_epoch()[MONITOR], sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, split: str) -> None:
        metrics, spread_metric = self.metrics[f"{split}_"], self.spread[f"{split}_"]
        # torchmetrics gathers every rank's state in compute(); sync_dist only tells Lightning so
        # (and averages identical values), while the loss above is really averaged across ranks.
        self.log_dict(metrics.compute(), sync_dist=True)
        metrics.reset()
        spread = spread_metric.compute()
        spread_metric.reset()
        self.log_dict({f"{split}/{k}": v for k, v in spread.items()}, sync_dist=True)
        if spread["prob_std"] < COLLAPSE_STD and not self.trainer.sanity_checking:
            warnings.warn(
                f"{split}: predicted probabilities collapsed (std {float(spread['prob_std']):.2e} < {COLLAPSE_STD}); "
                "the model predicts one number for every window",
                stacklevel=1,
            )

    def on_fit_start(self) -> None:
        """Record the real parameter count and register the HParams metric with a real value to come:
        the one HParams record of the run (TensorBoard shows the first it gets)."""
        rank_zero_info(f"model: {type(self.net).__name__} with {self.num_parameters:,} parameters")
        if self.logger is not None:
            hparams = {**self.hparams, **self.shown_hparams, "num_parameters": self.num_parameters}
            self.logger.log_hyperparams(hparams, {BEST_KEY: float("nan")})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A weights-only checkpoint (no optimizer state: it can only be evaluated, never resumed)
        keeps its floating-point weights in `weights_dtype`."""
        dtype = getattr(torch, self.hparams.get("weights_dtype") or "float32")
        if dtype is torch.float32 or "optimizer_states" in checkpoint:
            return
        checkpoint["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v
                                    for k, v in checkpoint["state_dict"].items()}

    # -- optimization -----------------------------------------------------------------------
    def configure_optimizers(self):
        groups = decay_groups(self.net, self.hparams.weight_decay)
        if self.optimizer is None:
            scaler = getattr(self.trainer.precision_plugin, "scaler", None) is not None  # 16-mixed
            options = adamw_options(self.run_device(), self.hparams.get("fused"), scaler)
            if options and scaler and self.trainer.gradient_clip_val:
                raise ForecastError("--model.fused true cannot clip gradients under 16-mixed precision "
                                    "(Lightning unscales before clipping, a fused AdamW unscales inside its step); "
                                    "leave --model.fused unset, or set --trainer.gradient_clip_val 0")
            optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas), **options)
        else:
            optimizer = self.optimizer(groups, lr=self.hparams.lr)  # the groups carry the weight decay
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = warmup_cosine(total, self.hparams.warmup_frac, self.hparams.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as `trainer.gradient_clip_val` says, with any optimizer in any precision.

        Lightning's mixed-precision plugin refuses to clip for an optimizer that unscales its own
        gradients (every fused one), even under bf16-mixed, where there is no scaler and nothing to
        unscale (an open Lightning bug). Without a scaler the gradients are the true ones, so they
        are clipped here, as Lightning's plain precision does; with a scaler (16-mixed) Lightning
        keeps the job: it unscales first, and refuses a fused optimizer, whose unscaling would come
        after the clip.
        """
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip_gradients(params, gradient_clip_val, gradient_clip_algorithm)


def decay_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only (norms, biases, dim < 2 get none)."""
    params = [p for p in net.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def adamw_options(device: torch.device, fused: bool | None = None, scaler: bool = False) -> dict:
    """AdamW's implementation: fused (one kernel updates every tensor) when asked, or by default on
    CUDA, where the `foreach` one launches a few per tensor group and keeps an fp32 temporary of all
    parameters. The fused kernel exists on CPU too, so a CPU run can rehearse the CUDA default.

    Under a gradient scaler (16-mixed: a GPU without bf16, a T4 or V100) the default is not fused:
    Lightning unscales the gradients before clipping them, and refuses at the first step an
    optimizer that unscales inside its own step (every fused one), with clipping on by default."""
    fused = device.type == "cuda" and not scaler if fused is None else fused
    return {"fused": True} if fused else {}


def resolve_train_metrics(train_metrics: bool | None, device: torch.device) -> bool:
    """`Forecaster(train_metrics=...)` on `device`: None means on, except on CUDA (the metrics'
    updates would add kernels and, with argument checks, host syncs to every step)."""
    return device.type != "cuda" if train_metrics is None else train_metrics


def clip_gradients(params: list[torch.Tensor], value: float | None, algorithm: str | None) -> None:
    """Clip gradients in place by total norm ("norm", the default) or elementwise ("value");
    `value` None or 0 leaves them. The norm is computed and applied on the device (no host sync)."""
    if not value:
        return
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    else:
        torch.nn.utils.clip_grad_norm_(params, value)


def initialise(net: nn.Module) -> None:
    """Initial weights for a network that has storage but no values (after `to_empty`)."""
    if hasattr(net, "reset_parameters"):
        net.reset_parameters()  # PatchTST: the constructor's init, in the constructor's order
        return
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _flops_per_sample(net: nn.Module) -> int | None:
    """Training matmul FLOPs of one sample (`forecast.sizing.budget.training_flops_per_sample`)."""
    args = getattr(net, "init_args", None)
    if args is None:
        return None
    keys = ("n_features", "context_length", "patch_len", "stride", "d_model", "n_layers", "d_ff", "patch_mode")
    return training_flops_per_sample(**{k: args[k] for k in keys})


def _dynamo_counts() -> tuple[int, int, int]:
    """Dynamo's process-wide counts: graphs captured, frames it tried to convert, frames it converted."""
    # private API: torch has no public count of the frames dynamo gave up on (its recompile limit logs a warning)
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], counters["frames"]["total"], counters["frames"]["ok"]


def warmup_cosine(total_steps: int, warmup_frac: float, min_ratio: float = 0.0):
    """LR multiplier: linear 0 -> 1 over the warmup steps, then cosine 1 -> min_ratio at the end."""
    warmup = int(round(warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def one_thread_for_cpu_inductor() -> None:
    """Run inductor's CPU kernels on one thread. With torch 2.13's CPU build, a 2M PatchTST's compiled
    backward corrupts the heap ("free(): invalid next size", exit 134) on 2 OpenMP threads, every
    time, and trains on one (make bench, `efficiency`; forecast fit --model.compile true). A crash
    loses the run; one thread loses speed, which compile on the CPU rarely had (slower at 20M)."""
    if torch.get_num_threads() > 1:
        rank_zero_info(f"compile on the CPU: 1 thread instead of {torch.get_num_threads()} (inductor's CPU "
                       "backward crashes on more here); leave --model.compile off to use every core")
        torch.set_num_threads(1)
