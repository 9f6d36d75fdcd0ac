"""tapt: task-adaptive pre-training (Gururangan et al. 2020; Sun et al. 2019), then fine-tuning.

1. The encoder continues masked-LM training (strategies/mlm.py) for mlm_steps on the task's unlabeled texts:
   the training texts without their labels, plus an optional unlabeled file (strategy.unlabeled_path). Texts
   the runner holds out (validation and test, Strategy.set_held_out) never reach it, even when the file
   holds them.
2. FineTuneStrategy then fine-tunes from the adapted encoder, with the same keys (full, partial, LoRA, …).

The adapted encoder is stored content-addressed (cache_dir/adapted/<key>: weights, tokenizer, texts, steps,
seed, MLM settings), so a sweep over fine-tuning settings adapts once and a rerun adapts zero times; a hit
reports the stored adaptation time as time_saved_s (the runner's uncached estimates)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file

from . import distributed as ddp
from . import mlm
from .backbone import count_parameters, load_encoder, verify_weights
from .base import EpochCallback, FitReport, Split, StepCallback, _no_callback
from .cache import texts_digest, tokenizer_identity, weights_identity
from .finetune import FineTuneStrategy

log = logging.getLogger("transfer_bench.tapt")
FORMAT_VERSION = 1  # bump when what is stored (or how it is computed) changes meaning
WEIGHTS = "encoder.safetensors"


def read_unlabeled(path: str, column: str) -> list[str]:
    """Texts from a parquet/csv/tsv/jsonl file, or `hf:<dataset>:<split>` (the hub or its cache)."""
    if path.startswith("hf:"):
        from datasets import load_dataset

        name, _, split = path[3:].rpartition(":")
        if not name or not split:
            raise ValueError(f"strategy.unlabeled_path={path}: write a hub split as hf:<dataset>:<split>")
        frame = load_dataset(name, split=split).to_pandas()
    else:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ValueError(f"strategy.unlabeled_path={path}: no such file")
        readers = {".parquet": pd_read("parquet"), ".csv": pd_read("csv"), ".tsv": pd_read("csv", sep="\t"),
                   ".jsonl": pd_read("json", lines=True), ".json": pd_read("json", lines=True)}
        if file.suffix.lower() not in readers:
            raise ValueError(f"strategy.unlabeled_path={path}: use a .parquet, .csv, .tsv or .jsonl file")
        if file.stat().st_size == 0:
            raise ValueError(f"strategy.unlabeled_path={path}: the file is empty; give it unlabeled texts or set null")
        frame = readers[file.suffix.lower()](file)
    if column not in frame.columns:
        raise ValueError(f"strategy.unlabeled_path={path}: no column '{column}' (strategy.unlabeled_column); "
                         f"the columns are: {', '.join(map(str, frame.columns))}")
    texts = [t for t in frame[column].dropna().astype(str) if t.strip()]
    if not texts:
        raise ValueError(f"strategy.unlabeled_path={path}: column '{column}' holds no texts; give it texts or set null")
    return texts


def pd_read(kind: str, **kwargs):
    import pandas as pd

    return lambda f: getattr(pd, f"read_{kind}")(f, **kwargs)


class TaptStrategy(FineTuneStrategy):
    def __init__(
        self,
        num_labels: int,
        encoder,
        mlm_steps: int = 500,
        mlm_probability: float = 0.15,
        mlm_lr: float = 1e-4,
        mlm_batch_size: int = 16,
        mlm_warmup_ratio: float = 0.06,
        mlm_log_every: int = 50,
        unlabeled_path: str | None = None,
        unlabeled_column: str = "text",
        unlabeled_size: int | None = None,
        **finetune_kwargs,
    ):
        super().__init__(num_labels, encoder, **finetune_kwargs)
        self.mlm_settings = mlm.MlmSettings(
            steps=mlm_steps, probability=mlm_probability, lr=mlm_lr, batch_size=mlm_batch_size,
            warmup_ratio=mlm_warmup_ratio, weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            # the run's seed (the runner seeds torch before building a strategy): part of the cache key
            log_every=mlm_log_every, seed=torch.initial_seed(),
        )
        if unlabeled_size is not None and unlabeled_size < 1:
            raise ValueError(f"strategy.unlabeled_size={unlabeled_size}: must be >= 1 or null (all)")
        self.unlabeled_path, self.unlabeled_column, self.unlabeled_size = unlabeled_path, unlabeled_column, unlabeled_size
        self.adapt_dir = Path(self.feature_cache.dir) / "adapted" if self.feature_cache is not None else None
        self._unlabeled: list[str] | None = None
        self._held_out: set[str] = set()
        self._adapted: dict[str, torch.Tensor] | None = None
        self._adapt_info: dict = {}
        self._adapt_before_resume_s = 0.0
        self._on_step: StepCallback | None = None

    # ------------------------------------------------------------------ the MLM corpus
    def set_held_out(self, texts: Sequence[str]) -> None:
        self._held_out = set(texts)

    def report_steps(self, on_step: StepCallback) -> None:
        self._on_step = on_step

    def _report(self, step: int, loss: float) -> None:
        log.info("MLM step %d/%d: mlm_loss=%.4f", step, self.mlm_settings.steps, loss)
        if self._on_step is not None:
            self._on_step(step, {"mlm_loss": loss})

    @property
    def unlabeled(self) -> list[str]:
        if self._unlabeled is None:
            texts = read_unlabeled(self.unlabeled_path, self.unlabeled_column) if self.unlabeled_path else []
            if self.unlabeled_size is not None and len(texts) > self.unlabeled_size:
                keep = np.sort(np.random.default_rng(0).permutation(len(texts))[: self.unlabeled_size])
                texts = [texts[i] for i in keep]  # a fixed subset: every seed and setting adapts on the same texts
            self._unlabeled = texts
        return self._unlabeled

    def mlm_corpus(self, train: Split) -> list[str]:
        """Training texts (no labels) + the unlabeled texts, each once, without any held-out text."""
        seen, corpus, dropped = set(), [], 0
        for text in [*train.texts, *self.unlabeled]:
            if text in self._held_out:
                dropped += 1
            elif text not in seen:
                seen.add(text)
                corpus.append(text)
        if dropped:
            log.info("MLM corpus: left out %d texts that are validation or test texts", dropped)
        self._adapt_info["mlm_texts"] = len(corpus)
        return corpus

    # ------------------------------------------------------------------ building
    def prepare(self) -> None:
        self.tokenizer, self.unlabeled  # noqa: B018 — a bad unlabeled file fails before the run starts
        verify_weights(self.spec, self.spec.resolve_path())  # the encoder itself loads after adaptation

    @property
    def encoder(self):
        if self._encoder is None:
            encoder = load_encoder(self.spec, self.attention_dropout)  # fine-tuning's setting, not MLM's
            if self._adapted is not None:
                missing, unexpected = encoder.load_state_dict(self._adapted, strict=False)
                if missing or unexpected:
                    raise ValueError(f"adapted encoder does not fit '{self.spec.name}': {(missing + unexpected)[:3]}")
            self._encoder = self.prepare_encoder(encoder).to(self.device)
        return self._encoder

    # ------------------------------------------------------------------ adaptation
    def cache_key(self, corpus: Sequence[str]) -> str:
        parts = {
            "format": FORMAT_VERSION, "torch": torch.__version__, "transformers": transformers.__version__,
            "weights": weights_identity(self.spec, lambda: load_encoder(self.spec)),
            "tokenizer": tokenizer_identity(self.tokenizer), "texts": texts_digest(corpus),
            "max_length": self.spec.max_length, "mlm": vars(self.mlm_settings) | {"log_every": None},
            "precision": self.precision, "device": self.device.type,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def _stored(self, folder: Path | None) -> tuple[dict, dict] | None:
        if folder is None or not (folder / WEIGHTS).is_file():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            return load_file(str(folder / WEIGHTS)), meta
        except (OSError, ValueError) as e:  # unreadable or corrupt: adapt again
            log.warning("adapted encoder: ignoring unreadable %s (%s)", folder, e)
            return None

    def _store(self, folder: Path, state: dict, meta: dict) -> None:
        """Atomic: a temporary folder renamed into place (a parallel job may win; its copy is the same)."""
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
            save_file(state, str(tmp / WEIGHTS))
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(tmp, folder)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another job stored this key first
        except OSError as e:
            log.warning("adapted encoder: cannot store %s (%s); continuing without it", folder, e)

    def adapt(self, corpus: list[str]) -> None:
        """The adapted encoder's weights into self._adapted: from the store, or by MLM training. Under torchrun
        rank 0 alone adapts (and alone reads or writes the store and the MLM checkpoints); every rank gets its
        weights, so fine-tuning starts from the same encoder everywhere."""
        self._adapted, info, self._adapt_before_resume_s = ddp.from_main(lambda: self._adapt_here(corpus))
        self._adapt_info |= info

    def _adapt_here(self, corpus: list[str]) -> tuple[dict, dict, float]:
        """(adapted weights, what to log, adaptation seconds before an interruption) on this process."""
        key = self.cache_key(corpus)
        resumed = self._ckpt_dir is not None and (self._ckpt_dir / "trainer_state.pt").is_file()
        # With the cache off, the finished adaptation still goes beside the run's checkpoints, for a resume.
        folder = self.adapt_dir / key if self.adapt_dir is not None else (
            self._ckpt_dir / "adapted" / key if self._ckpt_dir is not None and self._ckpt_every else None)
        stored = self._stored(folder)
        if stored is not None:
            adapted, meta = stored
            seconds = float(meta.get("seconds", 0.0))
            log.info("adapted encoder: cache hit (%s); adaptation took %.1f s when stored", folder, seconds)
            info = {"adapt_cache": "resumed" if resumed else "hit", "adapt_time_s": round(seconds, 3),
                    "mlm_head_initialised": meta.get("mlm_head_initialised")}
            return adapted, info, seconds if resumed else 0.0  # resumed: this run adapted before, its own time
        t0 = time.perf_counter()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # fine-tuning sees the same RNG on a hit and a miss
            torch.manual_seed(self.mlm_settings.seed)
            model = mlm.load_mlm_model(self.spec)
            before_s, from_step = mlm.train_mlm(
                model, self.tokenizer, corpus, self.mlm_settings, max_length=self.spec.max_length,
                device=self.device, precision=self.precision, micro_batch_size=self.micro_batch_size,
                ckpt_dir=self._ckpt_dir / "mlm" if self._ckpt_dir is not None else None,
                ckpt_every=self._ckpt_every,
                report=self._report,
            )
        adapted = {k: v.detach().cpu().contiguous() for k, v in model.base_model.state_dict().items()}
        head_initialised = model.mlm_head_initialised
        del model
        seconds = before_s + time.perf_counter() - t0
        if folder is not None:
            self._store(folder, adapted, {"seconds": seconds, "steps": self.mlm_settings.steps,
                                          "texts": len(corpus), "mlm_head_initialised": head_initialised})
        info = {"adapt_cache": "miss" if self.adapt_dir is not None else "off",
                "adapt_time_s": round(seconds, 3), "mlm_head_initialised": head_initialised}
        if from_step:
            info["mlm_resumed_from_step"] = from_step
        log.info("adapted encoder: %d MLM steps on %d texts in %.1f s", self.mlm_settings.steps, len(corpus), seconds)
        return adapted, info, before_s

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        self.adapt(self.mlm_corpus(train))
        self._encoder = self._net = None  # fine-tuning starts from the adapted weights
        super().fit(train, val, on_epoch)

    # ------------------------------------------------------------------ reporting and persistence
    def info(self) -> dict:
        return super().info() | self._adapt_info  # adapt_cache, adapt_time_s, mlm_texts, mlm_head_initialised

    def fit_report(self) -> FitReport:
        report = super().fit_report()
        if self._adapt_info.get("adapt_cache") == "hit":  # the stored adaptation's time: skipped by this run
            report = replace(report, time_saved_s=(report.time_saved_s or 0.0) + self._adapt_info["adapt_time_s"])
        if self._adapt_before_resume_s:  # adapted before an interruption: this run's own time
            before = (report.train_time_before_resume_s or 0.0) + self._adapt_before_resume_s
            report = replace(report, train_time_before_resume_s=round(before, 3))
        return report

    def parameter_counts(self) -> dict[str, int]:
        """Every encoder weight learned on this task (the MLM step), whatever fine-tuning trains after it."""
        _, total = count_parameters(self.net)
        return {"trainable": total, "total": total}

    def save(self, path: Path) -> None:
        """Everything: the adapted encoder differs from the pretrained one in every weight."""
        state = {n: p.detach().contiguous().cpu() for n, p in self.net.named_parameters()}
        save_file(state, str(Path(path) / "trainable.safetensors"))
