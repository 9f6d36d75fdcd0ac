"""SetFit: seeded pair generation, contrastive training that pulls classes apart (tiny BERT), its per-epoch loss
in MLflow, predict from a logged run, and one real-MiniLM few-shot check (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose, demo_split

from experiments.bundle import build_strategy
from strategies.setfit import make_pairs


def test_pairs_are_seeded_labelled_and_balanced():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    a = make_pairs(labels, 3, np.random.default_rng(1), None)
    assert np.array_equal(a, make_pairs(labels, 3, np.random.default_rng(1), None))
    assert not np.array_equal(a, make_pairs(labels, 3, np.random.default_rng(2), None))
    i, j, target = a.T
    assert len(a) == 3 * len(labels) * 2  # per round: every text once with a positive and once with a negative
    assert np.array_equal(target, (labels[i] == labels[j]).astype(int))
    assert (i != j).all() and target.sum() == len(a) // 2
    assert np.array_equal(np.bincount(i), np.full(len(labels), 6))
    capped = make_pairs(labels, 10, np.random.default_rng(1), 20)
    assert len(capped) == 20


def test_pairs_with_a_singleton_class_and_no_pairs_at_all():
    pairs = make_pairs(np.array([0, 1, 1]), 1, np.random.default_rng(0), None)
    assert set(map(tuple, pairs[:, [0, 2]])) >= {(0, 0), (1, 1), (1, 0)}  # the singleton has negatives only
    with pytest.raises(ValueError, match="at least two texts"):
        make_pairs(np.array([0]), 1, np.random.default_rng(0), None)


def _separation(strategy, split) -> float:
    """Mean cosine similarity within classes minus between classes, of the pooled embeddings."""
    x = torch.nn.functional.normalize(torch.from_numpy(strategy._extract(split.texts)), dim=1)
    sim = (x @ x.T).numpy()
    same = split.labels[:, None] == split.labels[None, :]
    off = ~np.eye(len(split), dtype=bool)
    return float(sim[same & off].mean() - sim[~same].mean())


def test_contrastive_phase_pulls_the_classes_apart(tiny_overrides):
    torch.manual_seed(0)
    cfg = compose(["strategy=setfit", *tiny_overrides, "precision=fp32", "strategy.epochs=2", "strategy.lr=1e-3",
                   "strategy.max_pairs=256"])
    s = build_strategy(cfg.strategy, 2)
    train = demo_split(32)
    before = _separation(s, train)
    losses = []
    s.fit(train, None, lambda epoch, scalars, proba: losses.append(scalars["contrastive_loss"]))
    after = _separation(s, train)
    assert after > before + 0.05, (before, after)
    assert len(losses) == 2 and losses[1] < losses[0]


def test_run_logs_the_contrastive_loss_and_predict_reads_the_logged_model(tiny_overrides, in_store, capsys,
                                                                         restore_sys_path):
    from experiments.predict import main
    from experiments.runner import run

    experiment = "setfit-run"
    run(compose(["strategy=setfit", *tiny_overrides, "strategy.epochs=2", "strategy.max_pairs=64", "data.train_size=40",
                 "data.test_size=20", *in_store.overrides(experiment)]))
    (logged,) = in_store.runs(experiment)
    client = in_store.client()
    history = client.get_metric_history(logged.info.run_id, "contrastive_loss")
    assert [m.step for m in history] == [1, 2] and all(np.isfinite(m.value) for m in history)
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_f1_macro")] == [1, 2]
    capsys.readouterr()
    texts = ["A moving, beautifully acted film.", "Two hours I want back."]
    assert main(["--run-id", logged.info.run_id, "--tracking-uri", in_store.uri, *texts]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3 and all(set(line.split()) & {"negative", "positive"} for line in lines[1:])


# Real MiniLM, 16 labelled reviews per class from the demo training set, all 160 demo test reviews. Chance is
# 0.5; 0.70 is 5 standard deviations above it (binomial, n = 160: sd 0.04), and below what frozen MiniLM
# features reach with all 400 training texts (embed 0.725, freeze 0.756; tests/test_pretrained.py), so it
# asks for clear transfer from 32 labels, not for beating the full-data strategies. Measured: 0.7375 (seed 0, CPU).
MIN_FEW_SHOT_ACCURACY = 0.70


@pytest.mark.slow
def test_setfit_with_16_labels_per_class_beats_chance_clearly(in_store):
    from experiments.runner import run

    experiment = "pretrained-setfit-16"
    run(compose(["strategy=setfit", "data.train_size=32", "log_model=false", "save_predictions=false",
                 *in_store.overrides(experiment)]))
    (logged,) = in_store.runs(experiment)
    metrics = logged.data.metrics
    assert metrics["data_train_size"] == 32 and metrics["data_test_size"] == 160
    print(f"setfit, 16 labels per class: test accuracy {metrics['test_accuracy']:.4f}")
    assert metrics["test_accuracy"] >= MIN_FEW_SHOT_ACCURACY, metrics["test_accuracy"]
