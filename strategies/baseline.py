"""baseline: no transfer at all — TF-IDF over word 1-2 grams and a linear classifier. The honest reference
row: on full IMDb it scores about 90%, above a frozen small encoder with logistic regression."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from . import distributed as ddp
from . import sklearn_utils
from .base import EpochCallback, Split, Strategy, _no_callback


def _instantiate(obj):
    if isinstance(obj, dict):  # built without Hydra's recursive instantiation
        from hydra.utils import instantiate

        return instantiate(obj, _convert_="all")
    return obj


class BaselineStrategy(Strategy):
    model_name = None  # nothing pretrained

    def __init__(self, num_labels: int, vectorizer, classifier):
        super().__init__(num_labels)
        vectorizer, classifier = clone(_instantiate(vectorizer)), clone(_instantiate(classifier))
        if isinstance(getattr(vectorizer, "ngram_range", None), list):  # YAML has no tuples
            vectorizer.set_params(ngram_range=tuple(vectorizer.ngram_range))
        sklearn_utils.check_params(vectorizer, "strategy.vectorizer")
        sklearn_utils.check_params(classifier, "classifier")
        self.pipeline = Pipeline([("tfidf", vectorizer), ("clf", classifier)])
        self._fitted = False

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        # TF-IDF + scikit-learn does not split across processes: under torchrun rank 0 alone fits and
        # predicts; the other ranks receive its predictions (strategies.distributed.from_main)
        if ddp.is_main():
            self.pipeline.fit(train.texts, train.labels)
        self._fitted = True
        on_epoch(1, {}, self.predict_proba(val.texts) if val is not None else None)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not self._fitted:
            raise RuntimeError("call fit() or load() before predict_proba()")
        return ddp.from_main(lambda: sklearn_utils.proba(self.pipeline, list(texts), self.num_labels))

    def parameter_counts(self) -> dict[str, int]:
        n = sklearn_utils.learned_parameters(self.pipeline) if self._fitted else 0
        return {"trainable": n, "total": n}

    def info(self) -> dict:
        vocab = getattr(self.pipeline.named_steps["tfidf"], "vocabulary_", None)
        return {"vocabulary_size": len(vocab)} if vocab is not None else {}

    def save(self, path: Path) -> None:
        sklearn_utils.save(self.pipeline, path)

    def load(self, path: Path) -> None:
        self.pipeline, self._fitted = sklearn_utils.load(path), True
