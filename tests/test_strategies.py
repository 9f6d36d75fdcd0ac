"""Unit tests of the strategies on the tiny random BERT: presets, trainable parameters, errors, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import STRATEGY_PRESETS, compose, demo_split, preset_has, quick

from experiments.bundle import build_strategy
from strategies.backbone import (
    PAD_MULTIPLE,
    _cpu_has_bf16,
    collate,
    extract_features,
    length_batches,
    pad_batch,
    tokenize,
)
from strategies.freeze import FreezeStrategy

NUM_LABELS = 2


@pytest.fixture(scope="module")
def train_split():
    return demo_split(48)


@pytest.fixture(scope="module")
def val_split():
    return demo_split(16, offset=48)


def strategy_cfg(tiny_overrides, name: str, *extra: str):
    epochs = quick(name)
    return compose([f"strategy={name}", *tiny_overrides, *epochs, *extra]).strategy


def make(tiny_overrides, name: str, *extra: str, seed: int = 0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    return build_strategy(strategy_cfg(tiny_overrides, name, *extra), NUM_LABELS)


# ----------------------------------------------------------------------------- every preset
def test_presets_found():
    assert {"freeze", "finetune", "partial", "lora", "embed", "baseline"} <= set(STRATEGY_PRESETS)


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_preset_fit_predict_save_load(name, tiny_overrides, train_split, val_split, tmp_path):
    strategy = make(tiny_overrides, name)
    epochs_seen = []

    def on_epoch(epoch, scalars, val_proba):
        epochs_seen.append(epoch)
        assert isinstance(scalars, dict)
        assert val_proba is not None and val_proba.shape == (len(val_split), NUM_LABELS)
        assert np.all(np.isfinite(list(scalars.values())))

    strategy.fit(train_split, val_split, on_epoch)
    assert epochs_seen == [1]

    proba = strategy.predict_proba(val_split.texts)
    assert proba.shape == (len(val_split), NUM_LABELS)
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(strategy.predict(val_split.texts), proba.argmax(axis=1))

    counts = strategy.parameter_counts()
    assert set(counts) >= {"trainable", "total"}
    assert 0 < counts["trainable"] <= counts["total"]

    strategy.save(tmp_path)
    assert any(tmp_path.iterdir()), "save() wrote nothing"
    fresh = make(tiny_overrides, name, seed=99)  # a different seed: nothing may depend on initialisation
    fresh.load(tmp_path)
    reloaded = fresh.predict_proba(val_split.texts)
    assert np.allclose(reloaded, proba, atol=1e-6), np.abs(reloaded - proba).max()
    assert fresh.parameter_counts() == counts


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_preset_three_classes(name, tiny_overrides, train_split):
    """More than two classes: one probability column per class, whatever the learner."""
    from strategies.base import Split

    train = Split(train_split.texts, np.arange(len(train_split)) % 3)
    torch.manual_seed(0)
    strategy = build_strategy(strategy_cfg(tiny_overrides, name), 3)
    strategy.fit(train)
    proba = strategy.predict_proba(train.texts[:10])
    assert proba.shape == (10, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in STRATEGY_PRESETS if n != "baseline"])
def test_preset_uses_the_configured_encoder(name, tiny_overrides):
    strategy = make(tiny_overrides, name)
    assert strategy.model_name == "tiny"
    assert strategy.spec.max_length == 64
    assert strategy.info()["device"] == "cpu"


def test_baseline_has_no_encoder(tiny_overrides):
    assert make(tiny_overrides, "baseline").model_name is None


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_predict_before_fit_is_an_error(name, tiny_overrides, val_split):
    """Predicting before fit/load must not silently answer from a missing or untrained head/classifier."""
    strategy = make(tiny_overrides, name)
    with pytest.raises(RuntimeError, match="fit"):
        strategy.predict_proba(val_split.texts)


# ----------------------------------------------------------------------------- which weights train
def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    assert set(after) == set(before)
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_freeze_trains_only_the_head(tiny_overrides, train_split, val_split):
    strategy = make(tiny_overrides, "freeze")
    encoder = strategy.encoder
    assert _trainable(encoder) == set()
    before = _snapshot(encoder)
    strategy.fit(train_split, val_split)
    assert _changed(before, encoder) == set(), "freeze must leave every encoder weight bit-identical"
    head_params = sum(p.numel() for p in strategy.head.parameters())
    assert head_params == 32 * NUM_LABELS + NUM_LABELS  # linear head on the 32-wide tiny encoder
    assert all(p.requires_grad for p in strategy.head.parameters())
    counts = strategy.parameter_counts()
    assert counts["trainable"] == head_params
    assert counts["total"] == head_params + sum(p.numel() for p in encoder.parameters())


def _expected_finetune_trainable(kind: str, name: str) -> bool:
    if name.startswith("head."):
        return True
    if kind == "finetune":
        return True
    if kind == "partial":
        return name.startswith("encoder.encoder.layer.1.")  # the top of the tiny model's 2 blocks
    if kind == "lora":
        return "lora_" in name
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("finetune", []),
        ("partial", ["strategy.trainable_layers=1"]),
        ("lora", []),
    ],
)
def test_finetune_family_trains_exactly_the_expected_tensors(kind, extra, tiny_overrides, train_split, val_split):
    strategy = make(tiny_overrides, kind, *extra, "strategy.precision=fp32")
    net = strategy.net
    names = {n for n, _ in net.named_parameters()}
    expected = {n for n in names if _expected_finetune_trainable(kind, n)}
    assert _trainable(net) == expected
    if kind == "lora":
        assert any("lora_A" in n for n in expected) and any("lora_B" in n for n in expected)
        assert all(("query" in n or "value" in n) for n in expected if "lora_" in n)
    if kind == "partial":
        assert any(".layer.1." in n for n in expected)
        assert not any(".layer.0." in n or "embeddings" in n for n in expected)

    counts = strategy.parameter_counts()
    assert counts["trainable"] == sum(p.numel() for n, p in net.named_parameters() if n in expected)
    assert counts["total"] == sum(p.numel() for p in net.parameters())

    before = _snapshot(net)
    strategy.fit(train_split, val_split)
    changed = _changed(before, net)
    frozen = set(before) - expected  # includes buffers
    assert not (changed & frozen), f"frozen tensors changed: {sorted(changed & frozen)[:5]}"
    # Every trainable tensor moved, except BERT's pooler: the strategies pool hidden states themselves, so
    # the pooler gets no gradient (and AdamW skips parameters without one).
    must_change = {n for n in expected if ".pooler." not in n}
    assert must_change - changed == set(), f"trainable tensors that did not change: {sorted(must_change - changed)[:5]}"


def _head_to_encoder_movement(tiny_overrides, train_split, *extra: str) -> float:
    """How far the head's weights moved in one epoch, per element, over how far the encoder's did."""
    strategy = make(tiny_overrides, "finetune", "strategy.batch_size=8", *extra)
    before = {n: p.detach().clone() for n, p in strategy.net.named_parameters()}
    strategy.fit(train_split)
    moved = {n: (p.detach() - before[n]).abs().mean().item() for n, p in strategy.net.named_parameters()}
    head = [v for n, v in moved.items() if n.startswith("head.")]
    encoder = [v for n, v in moved.items() if n.startswith("encoder.") and v > 0]
    return float(np.mean(head) / np.mean(encoder))


def test_finetune_head_learns_faster(tiny_overrides, train_split):
    """finetune.yaml gives the fresh head a 20x larger learning rate (head_lr 1e-3, lr 5e-5): in training its
    weights move far more than the encoder's; with one rate for both (head_lr=null) they move alike."""
    assert _head_to_encoder_movement(tiny_overrides, train_split) > 6
    assert _head_to_encoder_movement(tiny_overrides, train_split, "strategy.head_lr=null") < 3


@pytest.mark.parametrize("micro", [1, 3])
def test_micro_batches_take_the_same_step_as_one_batch(micro, tiny_overrides, train_split):
    """Gradient accumulation is an implementation detail: with dropout off, the trained weights match
    training on whole batches (up to float rounding: parts are padded to different lengths)."""
    weights = [fit_without_dropout(tiny_overrides, train_split, f"strategy.micro_batch_size={m}")
               for m in (micro, "null")]
    for name, w in weights[0].items():
        torch.testing.assert_close(w, weights[1][name], rtol=1e-4, atol=1e-5, msg=name)
    assert make(tiny_overrides, "finetune").micro_batch_size == 4  # auto on CPU (backbone.AUTO_BATCH)


def fit_without_dropout(tiny_overrides, train_split, *extra: str) -> dict[str, torch.Tensor]:
    """finetune's trained weights, deterministic (dropout off, fp32), for comparing two ways of taking a step."""
    common = ["strategy.dropout=0", "strategy.batch_size=8", "precision=fp32", "strategy.max_grad_norm=1.0"]
    strategy = make(tiny_overrides, "finetune", *common, *extra)
    strategy.encoder.config.hidden_dropout_prob = 0.0  # the tiny BERT's own dropout modules stay at p
    for mod in strategy.net.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    strategy.fit(train_split)
    return {n: p.detach().clone() for n, p in strategy.net.named_parameters()}


def test_fp16_loss_scaling_takes_the_same_steps(tiny_overrides, train_split, monkeypatch):
    """fp16 training scales the loss (encoder_base.grad_scaler); gradients must be unscaled before clipping and the
    step. fp16 itself needs CUDA, so the scaler runs here on CPU in fp32 (scales are powers of 2: exact)."""
    import strategies.finetune as finetune

    reference = fit_without_dropout(tiny_overrides, train_split, "strategy.max_grad_norm=0.05")
    scalers = []

    def enabled(device, precision):
        scalers.append(torch.amp.GradScaler(device.type, init_scale=2.0**12, growth_interval=1))
        return scalers[-1]

    monkeypatch.setattr(finetune, "grad_scaler", enabled)
    scaled = fit_without_dropout(tiny_overrides, train_split, "strategy.max_grad_norm=0.05")
    assert scalers and scalers[0].get_scale() > 2.0**12  # it was in use: the scale grew after clean steps
    for name, w in reference.items():
        torch.testing.assert_close(scaled[name], w, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- configuration errors
def build_and_fit(tiny_overrides, name: str, *extra: str, train=None):
    """Build through the runner (which turns Hydra's wrapped constructor errors into ConfigError, a ValueError)
    and fit: a bad value may be caught when the strategy is built or when the encoder is first loaded."""
    from experiments.runner import make_strategy

    epochs = quick(name)
    torch.manual_seed(0)
    strategy = make_strategy(compose([f"strategy={name}", *tiny_overrides, *epochs, *extra]), NUM_LABELS)
    strategy.fit(train if train is not None else demo_split(16))
    return strategy


def test_trainable_layers_beyond_the_encoder(tiny_overrides):
    with pytest.raises(ValueError, match=r"trainable_layers=5 but 'tiny' has 2 layers"):
        build_and_fit(tiny_overrides, "partial", "strategy.trainable_layers=5")


def test_trainable_layers_negative(tiny_overrides):
    with pytest.raises(ValueError, match="trainable_layers=-1"):
        build_and_fit(tiny_overrides, "partial", "strategy.trainable_layers=-1")


def test_peft_with_unknown_target_modules(tiny_overrides):
    with pytest.raises(ValueError, match=r"strategy.peft does not fit model 'tiny'") as err:
        build_and_fit(tiny_overrides, "lora", "strategy.peft.target_modules=[no_such_projection]")
    assert "no_such_projection" in str(err.value)


def test_peft_and_trainable_layers_exclude_each_other(tiny_overrides):
    with pytest.raises(ValueError, match="exclude each other"):
        build_and_fit(tiny_overrides, "lora", "strategy.trainable_layers=1")


def test_bad_pooling(tiny_overrides):
    from experiments.runner import ConfigError, make_strategy

    with pytest.raises(ValueError, match=r"pooling=max is not one of cls\|mean"):
        FreezeStrategy(NUM_LABELS, compose(tiny_overrides).model, pooling="max")
    cfg = compose(["strategy=freeze", *tiny_overrides, "strategy.pooling=max"])
    with pytest.raises(ConfigError, match=r"strategy 'freeze'.*pooling=max"):  # the runner's one-line error
        make_strategy(cfg, NUM_LABELS)
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("name", ["embed", "freeze", "finetune"])
def test_bad_layers(name, tiny_overrides):
    with pytest.raises(ValueError, match=r"layers=\[-4\].*\[-3, 2\].*2-layer"):
        build_and_fit(tiny_overrides, name, "strategy.layers=[-4]")


@pytest.mark.parametrize("name", ["freeze", "finetune"])
def test_bad_head(name, tiny_overrides):
    with pytest.raises(ValueError, match="head=transformer"):
        build_and_fit(tiny_overrides, name, "strategy.head=transformer")


@pytest.mark.parametrize("name", ["baseline", "freeze"])
def test_single_class_is_rejected(name, tiny_overrides):
    from experiments.runner import ConfigError, make_strategy

    with pytest.raises(ConfigError, match="num_labels=1: a classifier needs at least 2 classes"):
        make_strategy(compose([f"strategy={name}", *tiny_overrides]), 1)


def test_fp16_on_cpu_is_rejected(tiny_overrides):
    from experiments.runner import ConfigError, make_strategy

    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        make_strategy(compose(["strategy=freeze", *tiny_overrides, "precision=fp16"]), NUM_LABELS)


# ----------------------------------------------------------------------------- features
TEXTS = [
    "A quiet, patient drama.",
    "Forty minutes in, I realized I had no idea who anyone was or why they were fighting over a briefcase.",
    "Dull.",
    "Oh wonderful, another superhero origin story where the villain wants to destroy the city because reasons.",
    "The performance is so controlled that a single glance carries more weight than most monologues.",
    "Neither did the screenwriter, apparently.",
    "I checked my watch.",
]


@pytest.mark.parametrize("combine, dim", [("concat", 64), ("mean", 32)])
def test_embed_layers_combine_changes_feature_dim(combine, dim, tiny_overrides):
    strategy = make(tiny_overrides, "embed", "strategy.layers=[-2,-1]", f"strategy.combine={combine}")
    assert strategy.feature_dim == dim
    feats = strategy.features(TEXTS)
    assert feats.shape == (len(TEXTS), dim)
    assert feats.dtype == np.float32


def test_embed_combine_mean_is_the_mean_of_the_layers(tiny_overrides):
    single = {
        i: make(tiny_overrides, "embed", f"strategy.layers=[{i}]", "strategy.precision=fp32").features(TEXTS)
        for i in (-2, -1)
    }
    concat = make(tiny_overrides, "embed", "strategy.layers=[-2,-1]", "strategy.precision=fp32").features(TEXTS)
    mean = make(
        tiny_overrides, "embed", "strategy.layers=[-2,-1]", "strategy.combine=mean", "strategy.precision=fp32"
    ).features(TEXTS)
    np.testing.assert_allclose(concat, np.concatenate([single[-2], single[-1]], axis=1), atol=1e-5)
    np.testing.assert_allclose(mean, (single[-2] + single[-1]) / 2, atol=1e-5)


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no fast bf16 (AMX/AVX512-BF16)")
def test_bf16_features_agree_with_fp32(tiny_overrides):
    feats = {
        p: make(tiny_overrides, "embed", f"strategy.precision={p}", "strategy.device=cpu").features(TEXTS)
        for p in ("fp32", "bf16")
    }
    a, b = feats["fp32"], feats["bf16"]
    assert not np.array_equal(a, b), "bf16 autocast seems to have had no effect"
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99, cos


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no fast bf16 (AMX/AVX512-BF16)")
@pytest.mark.parametrize("name", ["embed", "freeze"])
def test_frozen_encoder_holds_bf16_weights_under_bf16(name, tiny_overrides):
    """A frozen encoder is cast to bf16 once (no autocast per op); a trained one keeps fp32 master weights.
    The feature cache tells the two numerics apart."""
    frozen = make(tiny_overrides, name, "strategy.precision=bf16", "strategy.device=cpu")
    assert {p.dtype for p in frozen.encoder.parameters()} == {torch.bfloat16}
    assert make(tiny_overrides, name, "strategy.precision=fp32", "strategy.device=cpu").encoder.dtype == torch.float32
    trained = make(tiny_overrides, "finetune", "strategy.precision=bf16", "strategy.device=cpu")
    assert {p.dtype for p in trained.encoder.parameters()} == {torch.float32}


def attention_dropouts(encoder) -> dict[str, float]:
    return {n: m.dropout.p for n, m in encoder.named_modules() if n.endswith("attention.self")}


@pytest.mark.parametrize("name", [n for n in STRATEGY_PRESETS if preset_has(n, "attention_dropout")])
def test_attention_dropout_reaches_every_attention_layer(name, tiny_overrides):
    """0 sets the dropout on attention probabilities (what keeps SDPA off its fused kernel) and nothing else;
    null keeps the model's own."""
    s = make(tiny_overrides, name, "strategy.attention_dropout=0.0")
    encoder = s.encoder
    assert set(attention_dropouts(encoder).values()) == {0.0} and len(attention_dropouts(encoder)) == 2
    hidden = {m.p for n, m in encoder.named_modules() if n.endswith("output.dropout")}
    assert hidden == {encoder.config.hidden_dropout_prob} and hidden != {0.0}
    own = make(tiny_overrides, name, "strategy.attention_dropout=null").encoder
    assert set(attention_dropouts(own).values()) == {own.config.attention_probs_dropout_prob} != {0.0}


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_attention_dropout_out_of_range(value, tiny_overrides):
    from experiments.runner import ConfigError, make_strategy

    cfg = compose(["strategy=finetune", *tiny_overrides, f"strategy.attention_dropout={value}"])
    with pytest.raises(ConfigError, match=r"strategy.attention_dropout=.*\[0, 1\)"):  # the runner's one line
        make_strategy(cfg, NUM_LABELS)


def test_attention_dropout_needs_a_config_key(tiny_overrides, monkeypatch):
    from strategies import backbone

    monkeypatch.setattr(backbone, "ATTENTION_DROPOUT_KEYS", ("no_such_key",))
    with pytest.raises(ValueError, match="has no attention dropout in its config"):
        make(tiny_overrides, "finetune", "strategy.attention_dropout=0.0").encoder  # noqa: B018


def test_auto_precision_follows_the_cpu(tiny_overrides):
    strategy = make(tiny_overrides, "embed", "device=cpu", "precision=auto")
    assert strategy.precision == ("bf16" if _cpu_has_bf16() else "fp32")


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n, batch_size", [(0, 4), (1, 4), (10, 3), (101, 8), (1000, 7)])
def test_length_batches_cover_every_index_once(n, batch_size, shuffle):
    rng = np.random.default_rng(n)
    lengths = rng.integers(1, 60, size=n)
    batches = list(length_batches(lengths, batch_size, shuffle=shuffle, rng=np.random.default_rng(0)))
    flat = np.concatenate(batches) if batches else np.array([], dtype=int)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) == -(-n // batch_size)
    if not shuffle:  # inference: longest first
        assert np.all(np.diff(lengths[flat]) <= 0)


def test_length_batches_shuffle_is_seeded_and_varies():
    lengths = np.random.default_rng(0).integers(1, 60, size=200)

    def order(seed):
        return np.concatenate(list(length_batches(lengths, 8, shuffle=True, rng=np.random.default_rng(seed))))

    assert np.array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_extract_features_keeps_input_order(pooling, tiny_overrides):
    strategy = make(tiny_overrides, "embed", "strategy.precision=fp32")
    kwargs = dict(
        max_length=64, layers=[-1], pooling=pooling, device=torch.device("cpu"), precision="fp32",
    )
    model, tok = strategy.encoder, strategy.tokenizer
    batched = extract_features(model, tok, TEXTS, batch_size=3, **kwargs)  # several length-sorted batches
    alone = np.concatenate([extract_features(model, tok, [t], batch_size=1, **kwargs) for t in TEXTS])
    assert batched.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # a text alone goes without mask (see collate)
    items = tokenize(tok, TEXTS, 64)
    assert "attention_mask" not in collate(tok, items[:1], torch.device("cpu"))
    assert "attention_mask" in collate(tok, items, torch.device("cpu"))  # TEXTS differ in length
    assert len({row.tobytes() for row in batched}) == len(TEXTS)  # distinct texts, distinct rows


def test_padded_batches_round_up_to_a_multiple_of_8_but_never_past_max_length(tiny_overrides):
    """Fewer distinct shapes for oneDNN's kernel cache; max_length caps it (prompt tuning's positions)."""
    tok = make(tiny_overrides, "embed").tokenizer
    items = tokenize(tok, TEXTS, 64)
    odd = [x for x in items if len(x["input_ids"]) % PAD_MULTIPLE]
    longest = max(len(x["input_ids"]) for x in odd)
    shorter = [x for x in items if len(x["input_ids"]) < longest][:1]
    batch = collate(tok, [*odd, *shorter], torch.device("cpu"), max_length=64)
    assert batch["input_ids"].shape[1] == -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE > longest
    assert batch["attention_mask"].sum(1).tolist() == [len(x["input_ids"]) for x in [*odd, *shorter]]
    assert collate(tok, [*odd, *shorter], torch.device("cpu"), max_length=longest)["input_ids"].shape[1] == longest
    assert collate(tok, [*odd, *shorter], torch.device("cpu"))["input_ids"].shape[1] == longest  # no max_length
    same = [odd[0]] * 3  # equal lengths: exact, unpadded
    assert collate(tok, same, torch.device("cpu"), max_length=64)["input_ids"].shape[1] == len(odd[0]["input_ids"])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("max_length", [None, 64])
def test_pad_batch_matches_the_tokenizers_pad(tiny_overrides, side, max_length):
    """pad_batch fills with numpy what tokenizer.pad builds in Python: the same tensors, on either side."""
    tok = make(tiny_overrides, "embed").tokenizer
    tok.padding_side = side
    items = tokenize(tok, TEXTS, 64)
    enc = tok(TEXTS[:3], TEXTS[3:6], truncation=True, max_length=64)  # sentence pairs: token_type_ids hold 1s
    pairs = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids")} for i in range(3)]
    for pad_token in ("[PAD]", "[SEP]"):  # [SEP]: a pad id other than 0 must be the one filled in
        tok.pad_token = pad_token
        for group in (items, items[:1], [items[0]] * 3, pairs):
            ours = pad_batch(tok, group, max_length)
            target = ours["input_ids"].shape[1]
            ref = tok.pad(group, return_tensors="pt", padding="max_length", max_length=target)
            assert set(ours) == set(ref) == {"input_ids", "attention_mask", "token_type_ids"}
            for key in ours:
                assert ours[key].dtype == torch.int64 and torch.equal(ours[key], ref[key]), (pad_token, key)
    assert int(pad_batch(tok, pairs, None)["token_type_ids"].max()) == 1
    with pytest.raises(ValueError, match="special_tokens_mask"):  # tokenizer.pad fills it with 1, not 0
        pad_batch(tok, [items[0] | {"special_tokens_mask": [0] * len(items[0]["input_ids"])}])
    with pytest.raises(ValueError, match="no items"):
        pad_batch(tok, [])


def test_extract_features_rejects_no_texts(tiny_overrides):
    strategy = make(tiny_overrides, "embed")
    with pytest.raises(ValueError, match="no texts"):
        strategy.features([])


def test_max_length_beyond_the_model_is_rejected(tiny_overrides):
    with pytest.raises(ValueError, match=r"max_length=512 exceeds.*\(128\)"):
        build_and_fit(tiny_overrides, "embed", "model.max_length=512")


def test_fit_report_params_hold_only_what_applies():
    """The runner logs FitReport.params() as runtime.* params: fields that do not apply (None) stay out, so a
    strategy without a feature cache or a resumed fit logs no such params."""
    from strategies.base import FitReport

    assert FitReport().params() == {}
    report = FitReport(best_epoch=3, feature_cache="hit", feature_cache_hits=3, feature_cache_misses=0, time_saved_s=0.0)
    assert report.params() == {"best_epoch": 3, "feature_cache": "hit", "feature_cache_hits": 3,
                               "feature_cache_misses": 0, "time_saved_s": 0.0}
