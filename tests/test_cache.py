"""The feature cache (strategies/cache.py): hits skip the encoder, every key part forces a recompute, writes
are atomic, cache=false turns it off — and bf16 features give the same predictions as fp32 on the demo data."""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest
import torch
from conftest import compose, demo_split, tiny_model_overrides
from transformers import AutoTokenizer, PreTrainedModel

from experiments.bundle import build_strategy
from strategies.backbone import ModelSpec, _cpu_has_bf16
from strategies.cache import FeatureCache, tokenizer_identity, weights_identity

TRAIN, VAL, TEST = demo_split(48), demo_split(16, offset=48), demo_split(16, split="test")


@pytest.fixture
def tiny_copy(tiny_bert, tmp_path):
    """A private copy of the tiny BERT: one test touches its weights file."""
    return shutil.copytree(tiny_bert, tmp_path / "tiny")


@pytest.fixture
def encoder_forwards():
    """Counts forward calls of whole pretrained models (the encoder), whichever code path makes them."""
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: calls.append(1) if isinstance(module, PreTrainedModel) else None
    )
    yield calls
    handle.remove()


def make(model_path, cache_dir, *extra: str, strategy: str = "freeze"):
    epochs = ["strategy.epochs=2"] if strategy == "freeze" else []
    cfg = compose([f"strategy={strategy}", *tiny_model_overrides(model_path), f"cache_dir={cache_dir}", *epochs, *extra])
    torch.manual_seed(0)
    return build_strategy(cfg.strategy, 2)


def fit_predict(strategy) -> np.ndarray:
    strategy.fit(TRAIN, VAL)
    return strategy.predict_proba(TEST.texts)


# ----------------------------------------------------------------------------- hits and misses
@pytest.mark.parametrize("name", ["freeze", "embed"])
def test_second_identical_run_does_no_encoding(name, tiny_copy, tmp_path, encoder_forwards):
    first = make(tiny_copy, tmp_path / "cache", strategy=name)
    proba = fit_predict(first)
    assert encoder_forwards, "the first run must encode"
    assert first.fit_report().feature_cache == "miss" and first.fit_report().feature_cache_misses == 3  # train, val, test

    encoder_forwards.clear()
    second = make(tiny_copy, tmp_path / "cache", strategy=name)
    again = fit_predict(second)
    assert not encoder_forwards, f"{len(encoder_forwards)} encoder forward calls on a cache hit"
    assert second.fit_report().feature_cache == "hit" and second.fit_report().feature_cache_hits == 3
    # what the hits saved: the first run's encoding time, stored beside each entry
    stored = sum(json.loads(p.read_text())["seconds"] for p in (tmp_path / "cache").glob("*.json"))
    assert first.fit_report().time_saved_s == 0 and stored > 0
    assert second.fit_report().time_saved_s == pytest.approx(stored, abs=2e-3)
    np.testing.assert_allclose(again, proba, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


@pytest.mark.parametrize(
    "change",
    [
        ["model.max_length=32"],
        ["strategy.layers=[-2]"],
        ["strategy.pooling=cls"],
        ["strategy.precision=fp32"],
        "texts",
        "weights",
    ],
    ids=["max_length", "layers", "pooling", "precision", "texts", "weights"],
)
def test_changing_a_key_part_recomputes(change, tiny_copy, tmp_path, encoder_forwards):
    base = ["strategy.precision=bf16"]
    texts = TRAIN.texts
    make(tiny_copy, tmp_path, *base, strategy="embed").features(texts)

    overrides = base
    if change == "texts":
        texts = texts[:-1] + [texts[-1] + "!"]  # one character in one text
    elif change == "weights":
        os.utime(tiny_copy / "model.safetensors", ns=(1, 1))  # same path and size, another mtime
    else:
        overrides = base + change
    encoder_forwards.clear()
    changed = make(tiny_copy, tmp_path, *overrides, strategy="embed")
    changed.features(texts)
    assert encoder_forwards and changed.fit_report().feature_cache == "miss"
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_combine_is_part_of_the_key(tiny_copy, tmp_path):
    layers = "strategy.layers=[-2,-1]"
    concat = make(tiny_copy, tmp_path, layers, strategy="embed").features(TEST.texts)
    mean = make(tiny_copy, tmp_path, layers, "strategy.combine=mean", strategy="embed")
    assert mean.features(TEST.texts).shape[1] == concat.shape[1] // 2
    assert mean.fit_report().feature_cache == "miss"


def test_tokenizer_identity_ignores_call_state_but_not_the_vocabulary(tiny_bert):
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    before = tokenizer_identity(tok)
    tok(["a fine film"], truncation=True, max_length=7)  # fast tokenizers remember these settings
    assert tokenizer_identity(tok) == before
    tok.add_tokens(["zzzunseenzzz"])
    assert tokenizer_identity(tok) != before


def test_weights_identity_prefers_the_pinned_sha_and_hashes_models_without_a_file(tiny_bert):
    pinned = ModelSpec(name="m", name_or_path=str(tiny_bert), sha256="AB" * 32)
    assert weights_identity(pinned, lambda: pytest.fail("must not load")) == "sha256:" + "ab" * 32
    assert weights_identity(ModelSpec(name="m", name_or_path=str(tiny_bert)), None).startswith("file:")

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    no_file = ModelSpec(name="m", name_or_path="some-org/some-hub-model")
    first = weights_identity(no_file, lambda: model)
    assert first == weights_identity(no_file, lambda: model)
    with torch.no_grad():
        model.weight[0, 0] += 1
    assert weights_identity(no_file, lambda: model) != first


# ----------------------------------------------------------------------------- atomic writes
def test_concurrent_writes_never_expose_a_partial_file(tmp_path):
    """Two writers store different arrays under one key while a reader polls: every read is either
    nothing or one writer's complete array, and no temporary file is left behind."""
    cache, key, shape = FeatureCache(tmp_path), "k" * 64, (2000, 384)  # 3 MB: writes take a while
    done, seen, errors = threading.Event(), set(), []

    def write(fill: float):
        for _ in range(15):
            cache.store(key, np.full(shape, fill, dtype=np.float32), 1.0)

    def read():
        while not done.is_set():
            feats = cache.load(key, shape[0])
            if feats is not None:
                if feats.shape != shape or len(np.unique(feats)) != 1:
                    errors.append(feats.shape)
                seen.add(float(feats[0, 0]))

    writers = [threading.Thread(target=write, args=(v,)) for v in (1.0, 2.0)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert not errors, f"partial or mixed reads: {errors[:3]}"
    assert seen <= {1.0, 2.0} and seen
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json", f"{key}.npy"]  # no temporary files left


def test_failed_write_leaves_nothing_and_does_not_fail_the_run(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)

    def broken_save(f, arr, allow_pickle=False):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    cache.store("k" * 64, np.ones((3, 2), dtype=np.float32), 1.0)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_entry_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache.key({"x": 1})
    cache.path(key).write_bytes(b"not an npy file")
    feats = cache.get({"x": 1}, 2, lambda: np.zeros((2, 3), dtype=np.float32))
    assert cache.misses == 1 and feats.shape == (2, 3)
    assert np.array_equal(np.load(cache.path(key)), feats)  # replaced by the good array


# ----------------------------------------------------------------------------- on and off
def test_cache_false_turns_it_off(tiny_copy, tmp_path, encoder_forwards):
    for _ in range(2):
        strategy = make(tiny_copy, tmp_path / "cache", "cache=false", strategy="embed")
        strategy.features(TEST.texts)
    assert strategy.feature_cache is None and strategy.fit_report().feature_cache == "off"
    per_pass = -(-len(TEST) // strategy.encode_batch_size)  # batches of one extraction
    assert len(encoder_forwards) == 2 * per_pass and not (tmp_path / "cache").exists()  # both passes encoded


def test_finetune_never_uses_the_cache(tiny_copy, tmp_path):
    cfg = compose(["strategy=finetune", *tiny_model_overrides(tiny_copy), f"cache_dir={tmp_path}"])
    assert "cache" not in cfg.strategy  # its encoder changes while it trains
    assert build_strategy(cfg.strategy, 2).fit_report().feature_cache == "off"


def test_cache_needs_a_folder(tiny_copy):
    with pytest.raises(Exception, match="cache_dir"):  # Hydra wraps the constructor's ValueError
        make(tiny_copy, "null", strategy="embed")


def test_the_run_logs_whether_it_hit_the_cache(tiny_copy, tmp_path, in_store):
    from experiments.runner import run

    states = []
    for i in range(2):
        cfg = compose([
            "strategy=embed", *tiny_model_overrides(tiny_copy), f"cache_dir={tmp_path / 'cache'}",
            "log_model=false", "save_predictions=false", *in_store.overrides("feature-cache"),
        ])
        run(cfg)
        runs = in_store.runs("feature-cache")
        assert len(runs) == i + 1
        states.append(runs[0].data.params["runtime.feature_cache"])  # newest first
    assert states == ["miss", "hit"]
    miss, hit = runs[1].data.metrics, runs[0].data.metrics
    assert "train_time_uncached_s" not in miss  # it paid for its encoding: its times are the cost
    # the hit's estimate adds the encoding the miss measured (train + val in fit, test at inference)
    assert hit["train_time_uncached_s"] > hit["train_time_s"]
    assert hit["inference_examples_per_s_uncached"] < hit["inference_examples_per_s"]


# ----------------------------------------------------------------------------- bf16 vs fp32
@pytest.mark.slow
@pytest.mark.skipif(not _cpu_has_bf16() and not torch.cuda.is_available(), reason="no fast bf16 on this CPU")
def test_bf16_and_fp32_features_give_the_same_predictions():
    """Packaged MiniLM, demo data (400 train / 160 test), embed + logistic regression. Tolerance: at least
    97% of the test predictions identical (at most 4 of 160 differ) and accuracy within 2 points."""
    train, test = demo_split(400), demo_split(160, split="test")
    preds = {}
    for precision in ("fp32", "bf16"):
        strategy = build_strategy(compose(["strategy=embed", f"precision={precision}", "cache=false"]).strategy, 2)
        assert strategy.precision == precision
        strategy.fit(train)
        preds[precision] = strategy.predict(test.texts)
    agree = float(np.mean(preds["fp32"] == preds["bf16"]))
    acc = {p: float(np.mean(v == test.labels)) for p, v in preds.items()}
    assert agree >= 0.97, f"bf16 and fp32 predictions agree on only {agree:.1%}"
    assert abs(acc["bf16"] - acc["fp32"]) <= 0.02, acc
