"""EncoderStrategy, the base class of the strategies that use a pretrained encoder (embed, freeze, finetune):
lazy loading, device and precision, the feature cache; and what their training shares: the classification
head, the optimiser recipe, early stopping. The backbone functions it calls are in backbone.py."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import distributed as ddp
from .backbone import (
    COMBINES,
    POOLINGS,
    ModelSpec,
    auto_batch_size,
    check_layers,
    encoder_skeleton,
    extract_features,
    load_encoder,
    load_tokenizer,
    resolve_device,
    resolve_precision,
)
from .base import FitReport, Strategy
from .cache import FeatureCache, texts_digest, tokenizer_identity, weights_identity

HEADS = ("linear", "mlp")


def check_positive(**values) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            raise ValueError(f"strategy.{key}={value}: must be > 0")


def check_head(head: str, dropout: float, warmup_ratio: float) -> None:
    """The head and schedule settings freeze and finetune share."""
    if head not in HEADS:
        raise ValueError(f"strategy.head={head} is not one of {'|'.join(HEADS)}")
    if not 0 <= dropout < 1:
        raise ValueError(f"strategy.dropout={dropout}: must be in [0, 1)")
    if not 0 <= warmup_ratio <= 1:
        raise ValueError(f"strategy.warmup_ratio={warmup_ratio}: must be in [0, 1] (a fraction of the steps)")


class ClassifierHead(nn.Module):
    """linear: dropout + linear. mlp: one hidden layer with GELU — more capacity on frozen features.

    The input is standardised with per-feature statistics (identity until set_standardizer is called):
    pooled encoder features have tiny, uneven scales, on which a head trained for a few epochs underfits."""

    def __init__(self, in_dim: int, num_labels: int, kind: str = "linear", hidden_size: int = 256, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        if kind not in HEADS:
            raise ValueError(f"strategy.head={kind} is not one of {'|'.join(HEADS)}")
        if kind == "linear":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_labels))
        else:
            self.net = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(in_dim, hidden_size), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden_size, num_labels),
            )

    @torch.no_grad()
    def set_standardizer(self, x: torch.Tensor) -> None:
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.shift) / self.scale)


class EncoderStrategy(Strategy):
    """Base for strategies built on a pretrained encoder. The encoder loads on first use, so that building
    a strategy from its config (as tests and `predict` do) stays cheap until it is needed."""

    def __init__(
        self,
        num_labels: int,
        encoder: Mapping | ModelSpec,
        pooling: str = "cls",
        layers: Sequence[int] = (-1,),
        combine: str = "concat",
        encode_batch_size: int | None = None,  # None = auto (backbone.AUTO_BATCH: 8 on CPU, 64 on GPU)
        device: str = "auto",
        precision: str = "auto",
        cache: bool = False,
        cache_dir: str | None = None,
        attention_dropout: float | None = None,  # None = the model's own; see backbone.load_encoder
    ):
        super().__init__(num_labels)
        self.spec = ModelSpec.from_config(encoder)
        if attention_dropout is not None and not 0 <= attention_dropout < 1:
            raise ValueError(f"strategy.attention_dropout={attention_dropout}: must be in [0, 1), or null for the "
                             "model's own")
        self.attention_dropout = attention_dropout
        if cache and not cache_dir:
            raise ValueError("strategy.cache=true needs strategy.cache_dir (a folder for the feature cache)")
        # Only features() reads the cache, and only the frozen-encoder strategies (freeze, embed) call it.
        self.feature_cache = FeatureCache(cache_dir) if cache else None
        self._cache_ids: dict | None = None
        if pooling not in POOLINGS:
            raise ValueError(f"strategy.pooling={pooling} is not one of {'|'.join(POOLINGS)}")
        if combine not in COMBINES:
            raise ValueError(f"strategy.combine={combine} is not one of {'|'.join(COMBINES)}")
        self.pooling, self.layers, self.combine = pooling, list(layers), combine
        self.device = resolve_device(device)
        self.encode_batch_size = auto_batch_size(encode_batch_size, "encode", self.device)
        self.precision = resolve_precision(precision, self.device)
        self.model_name = self.spec.name
        self._tokenizer = None
        self._encoder: nn.Module | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec)
        return self._tokenizer

    @property
    def encoder(self) -> nn.Module:
        if self._encoder is None:
            encoder = self.prepare_encoder(load_encoder(self.spec, self.attention_dropout)).to(self.device)
            if self.precision == "bf16" and not any(p.requires_grad for p in encoder.parameters()):
                # A frozen encoder never needs fp32 master weights: cast once, instead of autocast casting every
                # weight on every forward (1.1-1.2x in isolation on a 2-core CPU; within bench_speed's noise).
                encoder = encoder.to(torch.bfloat16)
            self._encoder = encoder
        return self._encoder

    def check(self) -> None:
        # The same prepare_encoder that runs on the loaded weights, on a weightless copy of the architecture:
        # one set of checks (layers, trainable_layers, peft targets, max_length), before anything heavy loads.
        self.prepare_encoder(encoder_skeleton(self.spec))

    def prepare(self) -> None:
        self.tokenizer, self.encoder  # noqa: B018 — load (and verify) both now; errors surface before the run

    def prepare_encoder(self, encoder: nn.Module) -> nn.Module:
        """Hook: freeze, wrap with peft, … Called once, right after loading — and by check() on a weightless
        skeleton on the meta device, so it must only change structure and flags, never read weights."""
        check_layers(self.layers, encoder.config.num_hidden_layers)
        return encoder

    @property
    def feature_dim(self) -> int:
        width = self.encoder.config.hidden_size
        return width * len(self.layers) if self.combine == "concat" else width

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled features of the frozen encoder, from the feature cache when enabled."""
        if self.feature_cache is None:
            return self._extract(texts)
        if self._cache_ids is None:  # once per strategy: hashing the tokenizer (and maybe weights) costs ms-s
            self._cache_ids = {
                "weights": weights_identity(self.spec, lambda: self.encoder),
                "tokenizer": tokenizer_identity(self.tokenizer),
            }
        parts = self._cache_ids | {
            "texts": texts_digest(texts), "max_length": self.spec.max_length, "layers": self.layers,
            "pooling": self.pooling, "combine": self.combine, "precision": self.precision,
            # the frozen encoder's weights (see encoder): bf16 weights and autocast differ in numerics. Known without
            # loading the encoder, so a cache hit still loads nothing.
            "encoder_dtype": str(torch.bfloat16 if self.precision == "bf16" else torch.float32),
            "device": self.device.type,
        }
        return self.feature_cache.get(parts, len(texts), lambda: self._extract(texts))

    def _extract(self, texts: Sequence[str]) -> np.ndarray:
        """Under torchrun each rank encodes its share of the texts (sharded by length) and all gather once."""
        return ddp.map_shards(self._extract_local, texts, [len(t) for t in texts])

    def _extract_local(self, texts: Sequence[str]) -> np.ndarray:
        return extract_features(
            self.encoder, self.tokenizer, texts, max_length=self.spec.max_length, layers=self.layers,
            pooling=self.pooling, combine=self.combine, batch_size=self.encode_batch_size,
            device=self.device, precision=self.precision,
        )

    def info(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "max_length": self.spec.max_length}

    def fit_report(self) -> FitReport:
        cache = self.feature_cache.status() if self.feature_cache else {"feature_cache": "off"}
        return FitReport(best_epoch=getattr(self, "best_epoch", 0) or None, **cache)  # 0: no epoch was kept


def make_optimizer(
    groups: list[dict], *, weight_decay: float, total_steps: int, warmup_ratio: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up then linear decay — the BERT fine-tuning recipe. No weight decay on biases
    and LayerNorm weights (1-d tensors), as in the original BERT code."""
    param_groups = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        param_groups += [
            {"params": decay, "lr": g["lr"], "weight_decay": weight_decay},
            {"params": no_decay, "lr": g["lr"], "weight_decay": 0.0},
        ]
    param_groups = [g for g in param_groups if g["params"]]
    # Fused (one kernel for all tensors) where every parameter is on a CUDA GPU or the CPU (5x faster than the
    # multi-tensor path there: 15 vs 80 ms a step for MiniLM on 2 cores); the multi-tensor path elsewhere.
    fused = all(p.device.type in ("cuda", "cpu") for g in param_groups for p in g["params"])
    opt = torch.optim.AdamW(param_groups, fused=fused)
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def check_loss(loss_sum: torch.Tensor, step: int) -> None:
    """loss_sum: the running sum of the training losses, kept on the device (a NaN or inf anywhere stays in it).
    Reading it makes the CPU wait for the GPU, so on a GPU it is read every LOSS_CHECK_EVERY steps only."""
    if not torch.isfinite(loss_sum):
        raise FloatingPointError(
            f"training loss became {loss_sum.item()} by step {step}; lower strategy.lr or use precision=fp32"
        )


LOSS_CHECK_EVERY = {"cpu": 1}  # other devices: every 50 steps (a wasted step is cheap next to a stall per step)


def loss_check_due(device: torch.device, step: int) -> bool:
    return step % LOSS_CHECK_EVERY.get(device.type, 50) == 0


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16, whose narrow exponent flushes small gradients to zero (auto picks fp16 on GPUs
    without bf16, e.g. T4 and V100). Disabled (every call a pass-through) for bf16 and fp32."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def numpy_rng() -> np.random.Generator:
    """A generator derived from the global seed the runner set, so shuffles are reproducible."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))


class EarlyStopping:
    """Stops after `patience` epochs without a lower validation log-loss and restores the best epoch's
    trainable weights. Only the validation split drives it — the test split is never seen in training."""

    def __init__(self, patience: int | None, keep: set[str] | None = None, keep_best: bool = False):
        if patience is not None and patience < 1:
            raise ValueError(f"strategy.early_stopping_patience={patience}: must be null or >= 1")
        self.patience, self.best, self.best_epoch, self.bad = patience, math.inf, 0, 0
        self.keep_best = keep_best  # without patience: never stop, but still end on the best epoch
        # names of the tensors training may change; None = those with requires_grad at each snapshot (a fixed
        # set matters under gradual unfreezing: a block unfrozen after the best epoch must be restored too)
        self.keep = keep
        self._state: dict[str, torch.Tensor] | None = None

    def step(self, module: nn.Module, epoch: int, val_proba: np.ndarray | None, val_labels) -> bool:
        """Record this epoch; True means stop now."""
        if (self.patience is None and not self.keep_best) or val_proba is None:
            return False
        p = np.clip(val_proba[np.arange(len(val_labels)), np.asarray(val_labels)], 1e-7, 1.0)
        loss = float(-np.log(p).mean())
        if loss < self.best - 1e-6:
            self.best, self.best_epoch, self.bad = loss, epoch, 0
            keep = self.keep or {n for n, p in module.named_parameters() if p.requires_grad}
            self._state = {k: v.detach().clone() for k, v in module.state_dict().items()
                           if k in keep or k.endswith(("shift", "scale"))}
            return False
        self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def restore(self, module: nn.Module) -> None:
        if self._state is not None:
            module.load_state_dict(self._state, strict=False)
