"""What a run prints: epoch labels, honest throughput on cached features, classes in data.label_names order."""

from __future__ import annotations

import numpy as np
from conftest import compose

from experiments.data import Dataset
from experiments.runner import epoch_label, speed_text
from strategies.base import Split


def test_epoch_label_only_for_strategies_with_epochs():
    assert epoch_label(compose(["strategy=freeze"]), 7) == "epoch 7/30"
    assert epoch_label(compose(["strategy=embed"]), 1) == "validation"
    assert epoch_label(compose(["strategy=baseline"]), 1) == "validation"


def test_cached_throughput_is_shown_as_the_estimate_with_encoding():
    measured = {"train_time_s": 0.4, "inference_examples_per_s": 183672.6}
    assert speed_text(measured) == "train 0.4s  inference 183672.6 ex/s"
    estimated = measured | {"train_time_uncached_s": 31.2, "inference_examples_per_s_uncached": 212.5}
    text = speed_text(estimated, cached=True)
    assert text.startswith("train ~31.2s  inference ~212.5 ex/s (estimated with encoding")
    assert "measured 0.4s and 183673 ex/s on cached features" in text
    assert "features read from the cache" in speed_text(measured, cached=True)  # no estimate: said so


def test_reports_follow_the_display_order():
    split = Split(["a", "b", "c"], np.array([0, 1, 2]))
    ds = Dataset("d", split, split, split, ["bad", "good", "terrible"], display_order=[2, 0, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    labels, shown = ds.shown(split.labels, proba)
    assert ds.display_names == ["terrible", "bad", "good"]
    assert [ds.display_names[i] for i in labels] == ["bad", "good", "terrible"]  # same classes, new ids
    assert [ds.display_names[i] for i in shown.argmax(1)] == ["bad", "good", "terrible"]
