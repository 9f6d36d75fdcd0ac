"""The small interface every strategy implements. The runner owns data, seeding, metrics, tracking and
timing; a strategy only learns from texts and labels and answers with class probabilities.

Under torchrun every rank builds the same strategy and calls fit() and predict_proba() in the same order
(the runner logs on rank 0 only); strategies split their work with strategies.distributed. One that does not
simply does the same work on every rank."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass
class Split:
    """Texts with integer labels 0..num_labels-1."""

    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class FitReport:
    """What a strategy tells the runner about its last fit(); None = does not apply to this strategy. The
    runner uses the times in its metrics and logs every field that applies as a runtime.<field> param."""

    best_epoch: int | None = None  # the epoch early stopping kept (None: the last epoch is the model)
    resumed_from_step: int | None = None  # the checkpointed step a resumed fit continued from
    train_time_before_resume_s: float | None = None  # training seconds spent before the interruption
    feature_cache: str | None = None  # off | unused | hit | miss | partial (None: no feature cache)
    feature_cache_hits: int | None = None  # lookups answered from the cache
    feature_cache_misses: int | None = None  # lookups computed (and stored)
    time_saved_s: float | None = None  # seconds of work skipped by reusing stored results (cache hits)

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# on_epoch(epoch, scalars, val_proba): scalars such as {"train_loss": 0.4}; val_proba are the
# strategy's probabilities on the validation texts (or None), from which the runner computes metrics.
EpochCallback = Callable[[int, dict, "np.ndarray | None"], None]


def _no_callback(epoch: int, scalars: dict, val_proba) -> None:
    pass


# on_step(step, scalars): metrics reported every N optimizer steps, e.g. {"mlm_loss": 2.1} (logged with the step)
StepCallback = Callable[[int, dict], None]


class Strategy(ABC):
    #: short name of the encoder the strategy transfers from (None: no transfer, e.g. the baseline)
    model_name: str | None = None

    def __init__(self, num_labels: int):
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels}: a classifier needs at least 2 classes")
        self.num_labels = num_labels

    def check(self) -> None:  # noqa: B027 — an optional hook, empty by default
        """Check the config against what it will meet (a model's config.json, not its weights) without
        loading anything heavy: the runner calls it before the data loads, so a config that cannot work
        fails in about a second. Raise ValueError with one line naming the key. Optional."""

    def prepare(self) -> None:  # noqa: B027 — an optional hook, empty by default
        """Load and check everything heavy (weights, tokenizer) before a run starts, so that a config that
        does not fit the model fails before anything is logged. Optional; fit() must work without it."""

    def set_held_out(self, texts: Sequence[str]) -> None:  # noqa: B027 — an optional hook, empty by default
        """The validation and test texts, which the strategy must never learn from, not even without their
        labels (e.g. as unlabeled pre-training text it reads itself). The runner passes them before fit."""

    def report_steps(self, on_step: StepCallback) -> None:  # noqa: B027 — an optional hook, empty by default
        """Where to send metrics a strategy reports every N steps, beside the per-epoch on_epoch of fit()
        (the runner logs them with their step). Strategies without such metrics ignore it."""

    def enable_checkpoints(self, directory: Path, every_steps: int) -> None:  # noqa: B027 — optional hook
        """Strategies whose training is long save resumable state under directory every N steps and, when
        state is already there, continue from it. The default (short trainings) saves nothing."""

    @abstractmethod
    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        """Learn from train; val may drive per-epoch reporting or early stopping, never the test split."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_labels) probabilities, rows in the input order."""

    @abstractmethod
    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": n, "total": n} — parameters learned on this task vs all the predictor uses."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write what was learned under path (safetensors for tensors; joblib only for our own sklearn objects)."""

    @abstractmethod
    def load(self, path: Path) -> None:
        """Restore what save wrote, on a strategy built from the same config."""

    def fit_report(self) -> FitReport:
        """What the last fit() did that the runner's metrics depend on (see FitReport). Read after fit() and
        again after predict_proba(), since cache hits while predicting save time too."""
        return FitReport()

    def info(self) -> dict:
        """Free-form facts worth logging that only the strategy knows (device, precision, …): the runner
        logs them as runtime.<key> params and never reads them."""
        return {}

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba(texts).argmax(axis=1)
