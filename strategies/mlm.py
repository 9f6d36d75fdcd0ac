"""Masked-language-model training of a pretrained encoder on unlabeled texts (for strategies/tapt.py).

BERT's recipe (Devlin et al. 2019): of the non-special tokens, mlm_probability are chosen; 80% of those become
[MASK], 10% a random token, 10% stay; the loss is the cross-entropy at the chosen positions only (the MLM head
runs on those positions alone: a 30k-word output for every token would cost more than the encoder).
Everything random (batch order, masking, dropout, a fresh head's initialisation) draws from generators seeded
by `seed`, so the result depends only on what the adapted-encoder cache key holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForMaskedLM
from transformers.utils import logging as hf_logging

from . import checkpoint
from .backbone import (
    ModelSpec,
    autocast,
    length_batches,
    pad_batch,
    sdpa_ready,
    to_device,
    tokenize,
    verify_weights,
)
from .encoder_base import check_loss, grad_scaler, make_optimizer

log = logging.getLogger("transfer_bench.mlm")


@dataclass(frozen=True)
class MlmSettings:
    steps: int
    probability: float = 0.15
    lr: float = 1e-4
    batch_size: int = 16
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"strategy.mlm_steps={self.steps}: must be a whole number >= 1")
        if not 0 < self.probability < 1:
            raise ValueError(f"strategy.mlm_probability={self.probability}: must be in (0, 1), e.g. 0.15")
        for key in ("lr", "batch_size", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"strategy.mlm_{key}={getattr(self, key)}: must be > 0")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"strategy.mlm_warmup_ratio={self.warmup_ratio}: must be in [0, 1]")


def load_mlm_model(spec: ModelSpec) -> nn.Module:
    """The encoder with its masked-LM head: the checkpoint's head where it ships one, else a fresh one whose
    decoder is tied to the word embeddings (as in BERT's pre-training), which is logged."""
    path = spec.resolve_path()
    verify_weights(spec, path)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its table of missing/unexpected keys: the line below says what matters
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, trust_remote_code=spec.trust_remote_code, use_safetensors=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(level)
    base_prefix = model.base_model_prefix + "."
    fresh = [k for k in info.get("missing_keys", []) if not k.startswith(base_prefix)]
    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out_emb.weight is not in_emb.weight:
        out_emb.weight = in_emb.weight  # the decoder is the word-embedding matrix, transposed
    if fresh:
        log.info("MLM head initialised: '%s' ships none (%d new tensors: %s); its decoder is tied to the word "
                 "embeddings", spec.name, len(fresh), ", ".join(sorted(fresh)[:4]) + (", …" if len(fresh) > 4 else ""))
    model.mlm_head_initialised = bool(fresh)
    return model


def lm_head(model: nn.Module) -> nn.Module:
    """The head beside the base encoder (BERT: cls, MPNet and RoBERTa: lm_head)."""
    heads = [m for m in model.children() if m is not model.base_model]
    if len(heads) != 1:
        raise ValueError(f"cannot find the MLM head of {type(model).__name__}")
    return heads[0]


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, tokenizer, probability: float,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, chosen positions); at least one position is chosen per batch."""
    probs = torch.full(input_ids.shape, probability).masked_fill(special, 0.0)
    chosen = torch.bernoulli(probs, generator=gen).bool()
    if not chosen.any():
        chosen.view(-1)[int((~special).view(-1).nonzero()[0])] = True
    ids = input_ids.clone()
    replace = torch.bernoulli(torch.full(ids.shape, 0.8), generator=gen).bool() & chosen
    ids[replace] = tokenizer.mask_token_id
    random_ = torch.bernoulli(torch.full(ids.shape, 0.5), generator=gen).bool() & chosen & ~replace
    ids[random_] = torch.randint(len(tokenizer), ids.shape, generator=gen)[random_]
    return ids, chosen


HEAD_ROWS = 64  # the MLM head's input rows are padded to a multiple of this (see head_logits)


def head_logits(head: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """head(rows), with rows padded by zeros to a multiple of HEAD_ROWS and the padding's logits cut off.
    Why: the number of masked positions changes every micro-batch, and oneDNN (CPU) keeps a primitive per
    matmul shape in its cache (up to 1,024); those of the vocabulary-wide decoder are large, so unbucketed
    shapes grew the process steadily (peak RSS 5.1 GB after 60 MiniLM MLM steps at 256 tokens, against 3.1 GB
    bucketed). The padding adds 32 rows of head work on average (about 3% of a step's FLOPs at 256 tokens);
    its logits take no part in the loss, so no gradient flows through them."""
    pad = -rows.shape[0] % HEAD_ROWS
    if not pad:
        return head(rows)
    return head(torch.cat([rows, rows.new_zeros(pad, rows.shape[1])]))[: rows.shape[0]]


def train_mlm(
    model: nn.Module, tokenizer, texts: Sequence[str], settings: MlmSettings, *, max_length: int,
    device: torch.device, precision: str, micro_batch_size: int | None, ckpt_dir: Path | None, ckpt_every: int,
    report: Callable[[int, float], None],
) -> tuple[float, int]:
    """Train model (an ...ForMaskedLM) in place for settings.steps steps; report(step, mean loss) every
    log_every steps. Resumes from ckpt_dir when it holds a checkpoint. Returns (seconds before a resume,
    the step it resumed from)."""
    model.to(device).train()
    base, head = model.base_model, lm_head(model)
    items = tokenize(tokenizer, texts, max_length)
    lengths = [len(x["input_ids"]) for x in items]
    rng = np.random.default_rng(settings.seed)
    schedule: list[np.ndarray] = []
    while len(schedule) < settings.steps:  # passes over the corpus until the steps are filled
        schedule += list(length_batches(lengths, settings.batch_size, shuffle=True, rng=rng))
    opt, sched = make_optimizer([{"params": model.parameters(), "lr": settings.lr}],
                                weight_decay=settings.weight_decay, total_steps=settings.steps,
                                warmup_ratio=settings.warmup_ratio)
    scaler = grad_scaler(device, precision)
    gen = torch.Generator().manual_seed(settings.seed)
    step, before_s = 0, 0.0
    saved = checkpoint.load(ckpt_dir)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["mask_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") and torch.cuda.is_available():  # dropout on a GPU draws from these
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        step, before_s = saved["step"], saved["seconds"]
        log.info("MLM resumes at step %d of %d", step, settings.steps)
    resumed_from = step
    t0, window = time.perf_counter(), torch.zeros((), device=device)
    while step < settings.steps:
        idx = schedule[step]
        opt.zero_grad(set_to_none=True)
        batch = pad_batch(tokenizer, [items[i] for i in idx], max_length)
        special = torch.tensor([tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                                for row in batch["input_ids"].tolist()], dtype=torch.bool)
        ids, chosen = mask_tokens(batch["input_ids"], special, tokenizer, settings.probability, gen)
        n_chosen = int(chosen.sum())
        micro = micro_batch_size or len(idx)
        for s in range(0, len(idx), micro):
            part = {k: to_device(v[s : s + micro], device) for k, v in batch.items()} | {
                "input_ids": to_device(ids[s : s + micro], device)}
            where = to_device(chosen[s : s + micro], device)
            if not bool(chosen[s : s + micro].any()):
                continue
            with autocast(device, precision):
                hidden = base(**sdpa_ready(base, part)).last_hidden_state
                logits = head_logits(head, hidden[where])
            target = to_device(batch["input_ids"][s : s + micro], device)[where]
            loss = nn.functional.cross_entropy(logits.float(), target, reduction="sum")
            window += loss.detach() / n_chosen
            scaler.scale(loss / n_chosen).backward()  # the batch's mean over all its chosen positions
        if settings.max_grad_norm:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        if step % settings.log_every == 0 or step == settings.steps:
            check_loss(window, step)
            done = step % settings.log_every or settings.log_every
            report(step, window.item() / done)
            window.zero_()
        if ckpt_dir is not None and ckpt_every and step % ckpt_every == 0 and step < settings.steps:
            check_loss(window, step)
            checkpoint.save(ckpt_dir, {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "mask_rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "step": step,
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "seconds": before_s + time.perf_counter() - t0,
            })
    model.eval()
    return before_s, resumed_from
