"""embed: the encoder's pooled features (from any layers) become fixed inputs to a scikit-learn classifier
(logistic regression, SVM, MLP, random forest, or any estimator given by `_target_`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from . import distributed as ddp
from . import sklearn_utils
from .backbone import count_parameters
from .base import EpochCallback, Split, _no_callback
from .encoder_base import EncoderStrategy


class EmbedStrategy(EncoderStrategy):
    def __init__(self, num_labels: int, encoder, classifier, scale: bool = True, **encoder_kwargs):
        super().__init__(num_labels, encoder, **encoder_kwargs)
        if isinstance(classifier, dict):  # built without Hydra's recursive instantiation
            from hydra.utils import instantiate

            classifier = instantiate(classifier)
        if not hasattr(classifier, "fit"):
            raise ValueError(f"strategy.classifier must be a scikit-learn estimator, got {type(classifier).__name__}")
        sklearn_utils.check_params(classifier, "classifier")
        # Scaling puts every feature on one footing: linear models and MLPs converge faster and their
        # regularisation strength means the same thing across encoders.
        steps = ([("scale", StandardScaler())] if scale else []) + [("clf", clone(classifier))]
        self.pipeline = Pipeline(steps)
        self._fitted = False

    def prepare_encoder(self, encoder):
        encoder = super().prepare_encoder(encoder)
        encoder.requires_grad_(False)
        return encoder.eval()

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        X = self.features(train.texts)  # under torchrun: encoded by all ranks (sharded), gathered on each
        # scikit-learn learns in one process: under torchrun rank 0 alone fits (and predicts, see _proba)
        if ddp.is_main():
            self.pipeline.fit(X, train.labels)
        self._fitted = True
        val_proba = self._proba(self.features(val.texts)) if val is not None else None
        on_epoch(1, {}, val_proba)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return ddp.from_main(lambda: sklearn_utils.proba(self.pipeline, X, self.num_labels))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("call fit() or load() before predict_proba()")
        return self._proba(self.features(texts))

    def parameter_counts(self) -> dict[str, int]:
        learned = sklearn_utils.learned_parameters(self.pipeline) if self._fitted else 0
        _, encoder_total = count_parameters(self.encoder)
        return {"trainable": learned, "total": encoder_total + learned}

    def save(self, path: Path) -> None:
        sklearn_utils.save(self.pipeline, path)

    def load(self, path: Path) -> None:
        self.pipeline, self._fitted = sklearn_utils.load(path), True
