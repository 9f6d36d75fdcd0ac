"""setfit: SetFit (Tunstall et al. 2022), built for 8-64 labels per class. The encoder is first fine-tuned
contrastively on sentence pairs generated from the labelled texts (same class: cosine similarity 1, different
classes: 0; mean squared error, sentence-transformers' CosineSimilarityLoss), then a scikit-learn classifier (the
classifier group, logistic regression by default) learns on its pooled embeddings.

Plain torch on the project's encoder loading, tokenising and length-bucketed batches: the `setfit` package
installs here, but runs its own model loading and HF Trainer, which would bypass the verified weights, the
device/precision settings and the batching every other strategy shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from . import distributed as ddp
from . import sklearn_utils
from .backbone import autocast, collate, count_parameters, forward_features, length_batches, tokenize
from .base import EpochCallback, Split, _no_callback
from .encoder_base import (
    EncoderStrategy,
    check_loss,
    check_positive,
    grad_scaler,
    loss_check_due,
    make_optimizer,
    numpy_rng,
)

ENCODER_FILE = "encoder.safetensors"


def make_pairs(labels: np.ndarray, iterations: int, rng: np.random.Generator, max_pairs: int | None) -> np.ndarray:
    """(n, 3) rows (i, j, target): per iteration, each text once with a random text of its class (1) and one of
    another class (0), as SetFit samples. Truncated to max_pairs (whole iterations first, so every text and
    both targets stay represented)."""
    labels = np.asarray(labels)
    pairs = []
    for _ in range(iterations):
        for i in rng.permutation(len(labels)):
            same = np.flatnonzero(labels == labels[i])
            same = same[same != i]
            other = np.flatnonzero(labels != labels[i])
            if len(same):
                pairs.append((i, rng.choice(same), 1))
            if len(other):
                pairs.append((i, rng.choice(other), 0))
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
    if not pairs:
        raise ValueError("setfit needs at least two texts of one class or two classes to make pairs")
    return np.asarray(pairs[:max_pairs], dtype=np.int64)


class SetFitStrategy(EncoderStrategy):
    def __init__(
        self,
        num_labels: int,
        encoder,
        classifier,
        scale: bool = True,
        num_iterations: int = 20,
        max_pairs: int | None = 2000,
        epochs: int = 1,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        batch_size: int = 16,
        max_grad_norm: float | None = 1.0,
        **encoder_kwargs,
    ):
        super().__init__(num_labels, encoder, **encoder_kwargs)
        check_positive(num_iterations=num_iterations, epochs=epochs, lr=lr, batch_size=batch_size)
        if max_pairs is not None:
            check_positive(max_pairs=max_pairs)
        if not 0 <= warmup_ratio <= 1:
            raise ValueError(f"strategy.warmup_ratio={warmup_ratio}: must be in [0, 1] (a fraction of the steps)")
        if isinstance(classifier, dict):  # built without Hydra's recursive instantiation
            from hydra.utils import instantiate

            classifier = instantiate(classifier)
        if not hasattr(classifier, "fit"):
            raise ValueError(f"strategy.classifier must be a scikit-learn estimator, got {type(classifier).__name__}")
        sklearn_utils.check_params(classifier, "classifier")
        self.pipeline = Pipeline(([("scale", StandardScaler())] if scale else []) + [("clf", clone(classifier))])
        self.num_iterations, self.max_pairs, self.epochs, self.lr = num_iterations, max_pairs, epochs, lr
        self.weight_decay, self.warmup_ratio, self.batch_size = weight_decay, warmup_ratio, batch_size
        self.max_grad_norm = max_grad_norm
        self._fitted = False

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        encoder, tok = self.encoder, self.tokenizer
        items = tokenize(tok, train.texts, self.spec.max_length)
        lengths = np.array([len(x["input_ids"]) for x in items])
        rng = numpy_rng()  # seeded by the runner: the same pairs and batches for the same seed
        pairs = make_pairs(train.labels, self.num_iterations, rng, self.max_pairs)
        targets = torch.as_tensor(pairs[:, 2], dtype=torch.float32, device=self.device)
        pair_lengths = np.maximum(lengths[pairs[:, 0]], lengths[pairs[:, 1]])  # bucket pairs by the longer text
        opt, sched = make_optimizer(
            [{"params": encoder.parameters(), "lr": self.lr}], weight_decay=self.weight_decay,
            total_steps=-(-len(pairs) // self.batch_size) * self.epochs, warmup_ratio=self.warmup_ratio,
        )
        scaler, step = grad_scaler(self.device, self.precision), 0
        params = [p for p in encoder.parameters() if p.requires_grad]
        for epoch in range(1, self.epochs + 1):
            encoder.train()
            total = torch.zeros((), device=self.device)  # read only when checked (see check_loss)
            for idx in length_batches(pair_lengths, self.batch_size, shuffle=True, rng=rng):
                texts, where = np.unique(pairs[idx, :2], return_inverse=True)  # each text encoded once a step
                where = torch.as_tensor(where.reshape(-1, 2), device=self.device)
                with autocast(self.device, self.precision):
                    batch = collate(tok, [items[t] for t in texts], self.device, self.spec.max_length)
                    emb = forward_features(encoder, batch, self.layers, self.pooling, self.combine)
                emb = emb.float()
                cos = nn.functional.cosine_similarity(emb[where[:, 0]], emb[where[:, 1]], dim=-1)
                loss = nn.functional.mse_loss(cos, targets[idx], reduction="sum")
                total += loss.detach()
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss / len(idx)).backward()
                if self.max_grad_norm:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                if loss_check_due(self.device, step):
                    check_loss(total, step)
            check_loss(total, step)
            ddp.sync_from_main(encoder)  # under torchrun every rank trained alike; one encoder extracts
            # The head on this epoch's embeddings: cheap at the few labels SetFit is for, and it gives the
            # runner a validation score per epoch like every other strategy.
            self.pipeline.fit(self._extract(train.texts), train.labels)
            self._fitted = True
            val_proba = self._proba(val.texts) if val is not None else None
            on_epoch(epoch, {"contrastive_loss": total.item() / len(pairs), "pairs": len(pairs),
                             "lr": sched.get_last_lr()[0]}, val_proba)

    def _proba(self, texts: Sequence[str]) -> np.ndarray:
        return sklearn_utils.proba(self.pipeline, self._extract(texts), self.num_labels)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("call fit() or load() before predict_proba()")
        return self._proba(texts)

    def parameter_counts(self) -> dict[str, int]:
        trainable, total = count_parameters(self.encoder)  # every encoder weight learns in the contrastive phase
        learned = sklearn_utils.learned_parameters(self.pipeline) if self._fitted else 0
        return {"trainable": trainable + learned, "total": total + learned}

    def save(self, path: Path) -> None:
        state = {n: p.detach().contiguous().cpu() for n, p in self.encoder.named_parameters()}
        save_file(state, str(Path(path) / ENCODER_FILE))
        sklearn_utils.save(self.pipeline, path)

    def load(self, path: Path) -> None:
        state = load_file(str(Path(path) / ENCODER_FILE), device=str(self.device))
        unexpected = set(state) - {n for n, _ in self.encoder.named_parameters()}
        if unexpected:
            raise ValueError(f"saved weights do not match this strategy config: unexpected {sorted(unexpected)[:5]}")
        self.encoder.load_state_dict(state, strict=False)
        self.encoder.eval()
        self.pipeline, self._fitted = sklearn_utils.load(path), True
