"""The parameter-efficient presets on the tiny BERT (width 32, FFN 64, 2 blocks): trainable counts against a
hand count, which tensors move, prompt positions, and the one-line errors for combinations that cannot work."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import compose, demo_split

from experiments.bundle import build_strategy
from strategies.backbone import collate, forward_features, tokenize

HEAD = 32 * 2 + 2  # linear head on the 32-wide encoder, 2 classes
HAND_COUNT = {
    "lora": 2 * 2 * (8 * 32 + 32 * 8) + HEAD,  # 2 blocks × (query, value) × (A: r×32, B: 32×r), r = 8
    "ia3": 2 * (32 + 32 + 64) + HEAD,  # 2 blocks × (key out 32, value out 32, FFN activation 64)
    "prompt": 20 * 32 + HEAD,  # 20 virtual tokens × width 32
    "bitfit": 32 + 2 * 288 + HEAD,  # see test_layerwise.test_bitfit_trains_only_biases
}


def build(tiny_overrides, name: str, *extra: str):
    torch.manual_seed(0)
    return build_strategy(compose([f"strategy={name}", *tiny_overrides, "precision=fp32", *extra]).strategy, 2)


@pytest.mark.parametrize("name", sorted(HAND_COUNT))
def test_trainable_count_matches_the_hand_count(name, tiny_overrides):
    s = build(tiny_overrides, name, "strategy.epochs=1")
    counts = s.parameter_counts()
    assert counts["trainable"] == HAND_COUNT[name]
    frozen_encoder = sum(p.numel() for n, p in s.net.named_parameters() if not p.requires_grad)
    assert counts["total"] == HAND_COUNT[name] + frozen_encoder


@pytest.mark.parametrize("name", ["ia3", "prompt"])
def test_only_the_peft_tensors_and_the_head_move(name, tiny_overrides):
    s = build(tiny_overrides, name, "strategy.epochs=1")
    net = s.net
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    marker = {"ia3": "ia3_l", "prompt": "prompt_encoder"}[name]
    assert trainable == {n for n, _ in net.named_parameters() if marker in n or n.startswith("head.")}
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    s.fit(demo_split(24), demo_split(8, offset=24))  # padded batches: the mask must line up with the prompt
    moved = {k for k, v in net.named_parameters() if not torch.equal(before[k], v)}
    assert moved == trainable


def test_prompt_tuning_pools_the_texts_own_positions(tiny_overrides):
    s = build(tiny_overrides, "prompt", "strategy.peft.num_virtual_tokens=5")
    items = tokenize(s.tokenizer, ["a fine film", "dull and far too long for its own good"], 64)
    batch = collate(s.tokenizer, items, torch.device("cpu"))
    assert "attention_mask" in batch  # padded: the mask must match the text, not text + prompt
    with torch.no_grad():
        hidden = s.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        cls = forward_features(s.encoder, batch, [-1], "cls", "concat")
    assert hidden.shape[1] == batch["input_ids"].shape[1] + 5
    torch.testing.assert_close(cls, hidden[:, 5])  # [CLS], after the 5 virtual tokens


@pytest.mark.parametrize("name, extra, message", [
    ("prompt", "strategy.peft.num_virtual_tokens=100",
     "strategy.peft.num_virtual_tokens=100 + model.max_length=64 exceed the 128 positions of 'tiny'"),
    ("ia3", "strategy.peft.target_modules=[no_such_projection]", "strategy.peft does not fit model 'tiny'"),
    ("bitfit", "strategy.trainable_layers=3", "trainable_layers=3 but 'tiny' has 2 layers"),
])
def test_bad_combinations_fail_before_weights_load(name, extra, message, tiny_overrides, monkeypatch):
    from experiments.runner import ConfigError, check_config

    def refuse(*args, **kwargs):
        raise AssertionError("weights loaded before the config was checked")

    monkeypatch.setattr("strategies.encoder_base.load_encoder", refuse)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        check_config(compose([f"strategy={name}", *tiny_overrides, extra]))
    assert "\n" not in str(err.value)
