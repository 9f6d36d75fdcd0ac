"""The fine-tuning family's layer-wise options on the tiny 2-block BERT: discriminative learning rates (read
from the optimizer's parameter groups), gradual unfreezing (which tensors change in which epoch) and BitFit."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, demo_split

import strategies.finetune as finetune
from experiments.bundle import build_strategy
from strategies.encoder_base import EarlyStopping

LR, HEAD_LR, DECAY = 1e-4, 1e-3, 0.5


def build(tiny_overrides, name: str, *extra: str):
    torch.manual_seed(0)
    cfg = compose([f"strategy={name}", *tiny_overrides, "precision=fp32", *extra])
    return build_strategy(cfg.strategy, 2)


def part(name: str) -> str:
    """Which part of the tiny model a parameter of EncoderClassifier belongs to."""
    if name.startswith("head."):
        return "head"
    for block in ("layer.0.", "layer.1."):
        if f".{block}" in name:
            return block[:-1]
    return "embeddings"


def test_discriminative_learning_rates_in_the_optimizer(tiny_overrides, monkeypatch):
    made = []

    def spy(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    make = finetune.make_optimizer
    monkeypatch.setattr(finetune, "make_optimizer", spy)
    s = build(tiny_overrides, "ulmfit", f"strategy.lr={LR}", f"strategy.head_lr={HEAD_LR}",
              f"strategy.layer_lr_decay={DECAY}", "strategy.epochs=1")
    s.fit(demo_split(8))
    opt, _ = made[0]
    rate = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}  # before the schedule
    expected = {"head": HEAD_LR, "layer.1": LR, "layer.0": LR * DECAY, "embeddings": LR * DECAY**2}
    names = dict(s.net.named_parameters())
    assert {id(p) for p in names.values()} == set(rate), "every parameter is in exactly one group"
    for name, p in names.items():
        assert rate[id(p)] == pytest.approx(expected[part(name)]), name
    # weight decay still spares biases and LayerNorm weights in every group
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if any(p.ndim == 1 for p in g["params"]))


def test_without_decay_one_rate_for_the_encoder(tiny_overrides, monkeypatch):
    made = []
    make = finetune.make_optimizer
    monkeypatch.setattr(finetune, "make_optimizer", lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    s = build(tiny_overrides, "finetune", f"strategy.lr={LR}", f"strategy.head_lr={HEAD_LR}", "strategy.epochs=1")
    s.fit(demo_split(8))
    rates = {part(n): set() for n, _ in s.net.named_parameters()}
    rate = {id(p): g["initial_lr"] for g in made[0][0].param_groups for p in g["params"]}
    for n, p in s.net.named_parameters():
        rates[part(n)].add(rate[id(p)])
    assert rates == {"head": {HEAD_LR}, "layer.1": {LR}, "layer.0": {LR}, "embeddings": {LR}}


def test_gradual_unfreezing_opens_one_block_per_epoch(tiny_overrides):
    s = build(tiny_overrides, "ulmfit", "strategy.epochs=4", "strategy.warmup_ratio=0")
    net = s.net
    snaps = [{k: v.detach().clone() for k, v in net.named_parameters()}]
    s.fit(demo_split(16), None, lambda epoch, scalars, proba: snaps.append(
        {k: v.detach().clone() for k, v in net.named_parameters()}))
    changed_in = []
    for before, after in zip(snaps[:-1], snaps[1:], strict=True):
        parts = {}
        for name in before:
            parts.setdefault(part(name), []).append(not torch.equal(before[name], after[name]))
        changed_in.append({p for p, moved in parts.items() if all(moved)})
        assert not any(any(m) for p, m in parts.items() if p not in changed_in[-1]), "a part moved only in part"
    assert changed_in == [
        {"head"},
        {"head", "layer.1"},
        {"head", "layer.1", "layer.0"},
        {"head", "layer.1", "layer.0", "embeddings"},
    ]
    # everything trained now counts as trainable, is saved, and loads into a fresh strategy
    assert s.parameter_counts()["trainable"] == sum(p.numel() for p in net.parameters())


def test_gradual_unfreezing_respects_trainable_layers(tiny_overrides, tmp_path):
    s = build(tiny_overrides, "ulmfit", "strategy.epochs=3", "strategy.trainable_layers=1")
    net = s.net
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    s.fit(demo_split(16))
    moved = {part(k) for k, v in net.named_parameters() if not torch.equal(before[k], v)}
    assert moved == {"head", "layer.1"}  # trainable_layers caps what unfreezing may open
    s.save(tmp_path)
    fresh = build(tiny_overrides, "ulmfit", "strategy.epochs=3", "strategy.trainable_layers=1")
    fresh.load(tmp_path)
    assert fresh.parameter_counts() == s.parameter_counts()


def test_early_stopping_restores_blocks_unfrozen_after_the_best_epoch():
    net = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(1, keep={"weight", "bias"})
    net.weight.requires_grad_(False)  # frozen when the best epoch was recorded
    stopper.step(net, 1, torch.tensor([[0.9, 0.1]]).numpy(), [0])
    saved = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)  # unfrozen and trained later
    assert stopper.step(net, 2, torch.tensor([[0.1, 0.9]]).numpy(), [0])
    stopper.restore(net)
    assert torch.equal(net.weight, saved)


def test_bitfit_trains_only_biases(tiny_overrides):
    s = build(tiny_overrides, "bitfit", "strategy.epochs=1")
    net = s.net
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert all(n.endswith(".bias") or n.startswith("head.") for n in trainable)
    # hand count, tiny BERT (width 32, FFN 64, 2 blocks, pooler dropped): embeddings LayerNorm 32; per block
    # query/key/value/attention-output 4×32, attention LayerNorm 32, FFN in 64, FFN out 32, LayerNorm 32 = 288;
    # linear head 32×2 + 2 = 66
    assert s.parameter_counts()["trainable"] == 32 + 2 * 288 + 66
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    s.fit(demo_split(16))
    moved = {k for k, v in net.named_parameters() if not torch.equal(before[k], v)}
    assert moved == trainable


@pytest.mark.parametrize("name, extra, message", [
    ("finetune", "strategy.layer_lr_decay=0", r"layer_lr_decay=0(\.0)?: must be in \(0, 1\]"),
    ("ulmfit", "strategy.layer_lr_decay=1.5", r"layer_lr_decay=1.5: must be in \(0, 1\]"),
    ("finetune", "strategy.train_only=weights", r"train_only=weights: must be null .* or bias"),
    ("lora", "strategy.train_only=bias", "train_only and strategy.peft exclude"),
])
def test_layerwise_option_errors(name, extra, message, tiny_overrides):
    from experiments.runner import ConfigError, check_config

    with pytest.raises(ConfigError, match=message) as err:
        check_config(compose([f"strategy={name}", *tiny_overrides, extra]))
    assert "\n" not in str(err.value)
