"""strategy=tapt on the tiny random BERT: MLM adaptation then fine-tuning, the adapted-encoder cache, held-out
texts never reaching MLM, resumable MLM, and the one-line errors for bad inputs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import compose, demo_split

from experiments.bundle import build_strategy
from strategies import mlm, tapt


def tapt_cfg(tiny_overrides, *extra, preset: str = "tapt"):
    return compose([f"strategy={preset}", *tiny_overrides, "strategy.epochs=1", "strategy.mlm_steps=3",
                    "strategy.mlm_log_every=1", *extra])


def build(cfg, seed: int = 0):
    torch.manual_seed(seed)  # as the runner does before it builds a strategy: the seed is part of the cache key
    return build_strategy(cfg.strategy, 2)


@pytest.fixture
def recorded(monkeypatch):
    """Every text that reaches MLM training (it tokenises its corpus once, through mlm.tokenize)."""
    texts: list[str] = []

    def spy(tokenizer, batch, max_length):
        texts.extend(batch)
        return tokenize(tokenizer, batch, max_length)

    tokenize = mlm.tokenize
    monkeypatch.setattr(mlm, "tokenize", spy)
    return texts


def test_tapt_end_to_end_through_the_runner(tiny_overrides, in_store, tmp_path, recorded, caplog):
    """A real run: MLM on training + unlabeled texts (never validation or test), its loss logged per step,
    fine-tuning from the adapted encoder, hit/miss and the adaptation time in the run."""
    from experiments.data import load_dataset
    from experiments.runner import run

    extra = ["An unlabeled review about a film I never finished.", "Another unlabeled text, quite long and odd."]
    cfg0 = tapt_cfg(tiny_overrides)
    data = load_dataset(cfg0.data)
    held_out = set(data.val.texts) | set(data.test.texts)
    unlabeled = tmp_path / "unlabeled.jsonl"  # holds every test and validation text: none may reach MLM
    unlabeled.write_text("".join(json.dumps({"review": t}) + "\n" for t in [*extra, *sorted(held_out)]))
    cfg = tapt_cfg(tiny_overrides, f"strategy.unlabeled_path={unlabeled}", "strategy.unlabeled_column=review",
                   *in_store.overrides("tapt-e2e"), "log_model=false", f"cache_dir={tmp_path / 'cache'}")
    with caplog.at_level(logging.INFO, logger="transfer_bench"):
        run(cfg)
    assert recorded and not held_out & set(recorded)
    assert set(extra) <= set(recorded) and set(data.train.texts) - held_out <= set(recorded)
    assert "MLM head initialised: 'tiny' ships none" in caplog.text and "tied to the word embeddings" in caplog.text

    (r,) = in_store.runs("tapt-e2e")
    assert r.info.status == "FINISHED"
    assert r.data.params["runtime.adapt_cache"] == "miss" and r.data.params["runtime.mlm_head_initialised"] == "True"
    history = in_store.client().get_metric_history(r.info.run_id, "mlm_loss")
    assert [m.step for m in history] == [1, 2, 3] and all(np.isfinite(m.value) for m in history)
    assert r.data.metrics["train_time_s"] >= float(r.data.params["runtime.adapt_time_s"]) > 0
    assert "test_accuracy" in r.data.metrics


def test_adapted_encoder_cache_hit_runs_no_mlm_step(tiny_overrides, tmp_path, monkeypatch):
    cache = f"cache_dir={tmp_path}"
    train, val = demo_split(32), demo_split(8, offset=32)
    first = build(tapt_cfg(tiny_overrides, cache))
    first.fit(train, val)
    assert first.info()["adapt_cache"] == "miss" and len(list((tmp_path / "adapted").iterdir())) == 1

    def no_mlm(*args, **kwargs):
        raise AssertionError("MLM ran on a cache hit")

    monkeypatch.setattr(mlm, "train_mlm", no_mlm)
    again = build(tapt_cfg(tiny_overrides, cache))
    again.fit(train, val)
    info = again.info()
    assert info["adapt_cache"] == "hit" and again.fit_report().time_saved_s >= info["adapt_time_s"] > 0
    # the same adapted encoder and the same RNG for fine-tuning: the same model as the run that adapted
    np.testing.assert_allclose(again.predict_proba(val.texts), first.predict_proba(val.texts), atol=1e-6)
    # a sweep over fine-tuning settings (here: LoRA instead of full) adapts once
    lora = build(tapt_cfg(tiny_overrides, cache, preset="tapt_lora"))
    lora.fit(train, val)
    assert lora.info()["adapt_cache"] == "hit"
    # another seed is another adaptation
    monkeypatch.undo()
    other = build(tapt_cfg(tiny_overrides, cache), seed=1)
    other.fit(train, val)
    assert other.info()["adapt_cache"] == "miss" and len(list((tmp_path / "adapted").iterdir())) == 2


def test_adaptation_changes_the_encoder_and_lora_keeps_it(tiny_overrides, tmp_path):
    from strategies.backbone import load_encoder

    strategy = build(tapt_cfg(tiny_overrides, "cache=false", preset="tapt_lora"))
    strategy.fit(demo_split(32))
    pretrained = load_encoder(strategy.spec).state_dict()
    base = strategy.net.encoder.get_base_model().state_dict()
    key = "encoder.layer.0.attention.self.key.weight"  # not a LoRA target: only MLM moved it
    assert not torch.equal(base[key].cpu(), pretrained[key])
    # saved and reloaded, the adapted weights come back (not the pretrained ones)
    strategy.save(tmp_path)
    fresh = build(tapt_cfg(tiny_overrides, "cache=false", preset="tapt_lora"), seed=5)
    fresh.load(tmp_path)
    np.testing.assert_allclose(fresh.predict_proba(demo_split(6).texts), strategy.predict_proba(demo_split(6).texts),
                               atol=1e-6)


def test_mlm_resumes_from_its_checkpoint(tiny_overrides, tmp_path):
    """Killed after step 3 of 4 (checkpoint every 2): the resumed run ends with the same weights."""
    cfg = tapt_cfg(tiny_overrides, "strategy.mlm_steps=4")
    strategy = build(cfg)
    texts, settings = demo_split(40).texts, strategy.mlm_settings

    def train(ckpt, report=lambda step, loss: None):
        torch.manual_seed(0)
        model = mlm.load_mlm_model(strategy.spec)
        mlm.train_mlm(model, strategy.tokenizer, texts, settings, max_length=32, device=torch.device("cpu"),
                      precision="fp32", micro_batch_size=None, ckpt_dir=ckpt, ckpt_every=2, report=report)
        return model.state_dict()

    reference = train(None)

    def crash(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "mlm", crash)
    assert (tmp_path / "mlm" / "trainer_state.pt").is_file()
    torch.manual_seed(123)  # the checkpoint restores the RNG, whatever state the new process starts in
    resumed = train(tmp_path / "mlm")
    for name, weights in reference.items():
        torch.testing.assert_close(resumed[name], weights, msg=name)


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_mlm_probability_outside_0_1(tiny_overrides, value):
    with pytest.raises(Exception, match=rf"strategy.mlm_probability={value}(\.0)?: must be in \(0, 1\)"):
        build(tapt_cfg(tiny_overrides, f"strategy.mlm_probability={value}"))


def test_bad_unlabeled_files_are_one_line_before_any_run(tiny_overrides, in_store, tmp_path):
    from experiments.runner import run

    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    other = tmp_path / "other.csv"
    other.write_text("review\nnice\n")
    cases = {
        str(empty): "the file is empty",
        str(other): "no column 'text' (strategy.unlabeled_column); the columns are: review",
        str(tmp_path / "absent.jsonl"): "no such file",
    }
    for i, (path, message) in enumerate(cases.items()):
        cfg = tapt_cfg(tiny_overrides, f"strategy.unlabeled_path={path}", *in_store.overrides(f"tapt-bad-{i}"))
        with pytest.raises(SystemExit) as exc:
            run(cfg)
        text = str(exc.value.code)
        assert text.startswith("error: ") and message in text and "\n" not in text, text
        assert in_store.runs(f"tapt-bad-{i}") == []  # failed before an MLflow run existed


def test_held_out_texts_are_left_out_of_the_corpus(tiny_overrides):
    strategy = build(tapt_cfg(tiny_overrides))
    train = demo_split(10)
    strategy.set_held_out(train.texts[:3])
    assert strategy.mlm_corpus(train) == train.texts[3:]


def test_unlabeled_size_takes_a_fixed_subset(tiny_overrides, tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("text\n" + "".join(f"text number {i}\n" for i in range(50)))
    a = build(tapt_cfg(tiny_overrides, f"strategy.unlabeled_path={path}", "strategy.unlabeled_size=7"))
    b = build(tapt_cfg(tiny_overrides, f"strategy.unlabeled_path={path}", "strategy.unlabeled_size=7"), seed=3)
    assert len(a.unlabeled) == 7 and a.unlabeled == b.unlabeled
    assert tapt.read_unlabeled(str(path), "text")[:2] == ["text number 0", "text number 1"]


@pytest.mark.parametrize("n", [1, 63, 64, 65, 130])
def test_mlm_head_sees_bucketed_rows_and_returns_each_rows_logits(n):
    """The head's input is padded to a multiple of HEAD_ROWS (one oneDNN primitive per bucket, not per count of
    masked positions), and the logits are the unpadded rows' own, gradients included."""
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 50))
    seen: list[int] = []
    head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    rows = torch.randn(n, 8, requires_grad=True)
    got = mlm.head_logits(head, rows)
    assert seen == [-(-n // mlm.HEAD_ROWS) * mlm.HEAD_ROWS] and got.shape == (n, 50)
    wrt = [rows, *head.parameters()]
    g_got = torch.autograd.grad(got.square().sum(), wrt)
    want = head(rows)
    g_want = torch.autograd.grad(want.square().sum(), wrt)
    torch.testing.assert_close(got, want)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b)
