"""freeze: the pretrained encoder stays fixed; only a new head is trained on its pooled features.

Because the encoder never changes, its features are computed once per split and every head epoch runs on
those tensors — the encoder is never re-run per epoch (the costly part of the naive recipe)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import progress
from .backbone import count_parameters, to_device
from .base import EpochCallback, Split, _no_callback
from .encoder_base import (
    ClassifierHead,
    EarlyStopping,
    EncoderStrategy,
    check_head,
    check_loss,
    check_positive,
    loss_check_due,
    make_optimizer,
    numpy_rng,
)


class FreezeStrategy(EncoderStrategy):
    def __init__(
        self,
        num_labels: int,
        encoder,
        head: str = "linear",
        hidden_size: int = 256,
        dropout: float = 0.1,
        epochs: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        batch_size: int = 32,
        early_stopping_patience: int | None = None,
        keep_best: bool = True,
        **encoder_kwargs,
    ):
        super().__init__(num_labels, encoder, **encoder_kwargs)
        check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
        check_head(head, dropout, warmup_ratio)
        self.head_kind, self.hidden_size, self.dropout = head, hidden_size, dropout
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.warmup_ratio, self.batch_size = warmup_ratio, batch_size
        self.early_stopping_patience, self.keep_best = early_stopping_patience, keep_best
        EarlyStopping(early_stopping_patience)  # validates the value now, not after encoding
        self.head: ClassifierHead | None = None

    def prepare_encoder(self, encoder: nn.Module) -> nn.Module:
        encoder = super().prepare_encoder(encoder)
        encoder.requires_grad_(False)
        return encoder.eval()

    def _build_head(self) -> ClassifierHead:
        head = ClassifierHead(self.feature_dim, self.num_labels, self.head_kind, self.hidden_size, self.dropout)
        return head.to(self.device)

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        x = torch.from_numpy(self.features(train.texts)).to(self.device)
        y = torch.as_tensor(train.labels, dtype=torch.long, device=self.device)
        x_val = torch.from_numpy(self.features(val.texts)).to(self.device) if val is not None else None
        self.head = self._build_head()
        self.head.set_standardizer(x)
        steps_per_epoch = -(-len(x) // self.batch_size)
        opt, sched = make_optimizer(
            [{"params": self.head.parameters(), "lr": self.lr}], weight_decay=self.weight_decay,
            total_steps=steps_per_epoch * self.epochs, warmup_ratio=self.warmup_ratio,
        )
        rng, step = numpy_rng(), 0
        stopper = EarlyStopping(self.early_stopping_patience, keep_best=self.keep_best)
        bar = progress.bar(self.epochs, "train head", unit="epoch")  # head epochs are short: one bar for all
        for epoch in range(1, self.epochs + 1):
            self.head.train()
            total = torch.zeros((), device=self.device)  # read only when checked (see check_loss)
            for idx in np.array_split(rng.permutation(len(x)), steps_per_epoch):
                idx = to_device(torch.from_numpy(idx), self.device)
                loss = nn.functional.cross_entropy(self.head(x[idx]), y[idx], reduction="sum")
                total += loss.detach()
                opt.zero_grad(set_to_none=True)
                (loss / len(idx)).backward()
                opt.step()
                sched.step()
                step += 1
                if loss_check_due(self.device, step):
                    check_loss(total, step)
            check_loss(total, step)
            val_proba = self._head_proba(x_val) if x_val is not None else None
            on_epoch(epoch, {"train_loss": total.item() / len(x)}, val_proba)
            bar.update(1, loss=total.item() / len(x))
            if stopper.step(self.head, epoch, val_proba, val.labels if val is not None else None):
                break
        bar.close()
        stopper.restore(self.head)
        self.best_epoch = stopper.best_epoch

    @torch.inference_mode()
    def _head_proba(self, x: torch.Tensor) -> np.ndarray:
        self.head.eval()
        return torch.softmax(self.head(x).float(), dim=-1).cpu().numpy()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("call fit() or load() before predict_proba()")
        return self._head_proba(torch.from_numpy(self.features(texts)).to(self.device))

    def parameter_counts(self) -> dict[str, int]:
        head = self.head or self._build_head()
        trainable, total = count_parameters(self.encoder, head)
        return {"trainable": trainable, "total": total}

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous().cpu() for k, v in self.head.state_dict().items()}, str(Path(path) / "head.safetensors"))

    def load(self, path: Path) -> None:
        self.head = self._build_head()
        self.head.load_state_dict(load_file(str(Path(path) / "head.safetensors"), device=str(self.device)))
        self.head.eval()
