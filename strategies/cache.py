"""On-disk cache of pooled encoder features, for the strategies whose encoder never changes (freeze, embed).

A sweep runs the same frozen encoder over the same texts again and again (one job per classifier, head or
seed); the encoder pass is nearly all of such a job's time. Features are stored as .npy files named by a
SHA-256 of everything they depend on: the weights, the tokenizer, the exact texts, max_length, layers,
pooling, combine, precision and device type (plus the torch/transformers versions, whose kernels can change
the numbers). Change any of them and the key changes, so a stale entry is never read. Fine-tuning must not
use it: its encoder changes while it trains.

Files are written to a temporary file in the same folder and moved into place with os.replace (atomic on
POSIX and Windows), so parallel sweep jobs see either no file or a complete one — never half of one. Two jobs
that miss at once both compute and both write the same array; the last rename wins, harmlessly."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import transformers

from . import distributed as ddp
from .backbone import ModelSpec

log = logging.getLogger("transfer_bench.cache")

FORMAT_VERSION = 1  # bump when what is stored (or how it is computed) changes meaning


def texts_digest(texts: Sequence[str]) -> str:
    """Content hash of the exact texts in order; length prefixes keep ["ab", "c"] apart from ["a", "bc"]."""
    h = hashlib.sha256()
    for text in texts:
        b = text.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def state_dict_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_identity(spec: ModelSpec, load_encoder: Callable[[], torch.nn.Module]) -> str:
    """The pinned SHA-256 when the config has one (the weights are verified against it before use); else
    the weights file's path, size and mtime (hashing a large checkpoint per run would cost seconds); else —
    a hub id or in-memory model without a local file — a hash of the loaded state dict."""
    if spec.sha256:
        return f"sha256:{spec.sha256.lower()}"
    weights = Path(spec.resolve_path()) / "model.safetensors"
    if weights.is_file():
        st = weights.stat()
        return f"file:{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return f"state:{state_dict_digest(load_encoder())}"


def tokenizer_identity(tokenizer) -> str:
    """Hash of the tokenizer's full definition (vocabulary, normaliser, …). The truncation/padding fields are
    dropped: a fast tokenizer records there the settings of its last call, which would change the key."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, spec], sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """One folder of `<key>.npy` files, each with a `<key>.json` saying how long computing it took; counts
    hits and misses, and the computing time the hits saved, for the run's log."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory).expanduser()
        self.hits = self.misses = 0
        self.saved_s = 0.0  # what the hits' features took to compute when they were stored

    @staticmethod
    def key(parts: Mapping) -> str:
        parts = {"format": FORMAT_VERSION, "torch": torch.__version__, "transformers": transformers.__version__, **parts}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npy"

    def load(self, key: str, rows: int) -> np.ndarray | None:
        path = self.path(key)
        try:
            feats = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # unreadable or corrupt (e.g. a disk that filled up): recompute
            log.warning("feature cache: ignoring unreadable %s (%s)", path, e)
            return None
        if feats.ndim != 2 or len(feats) != rows:
            log.warning("feature cache: ignoring %s, shape %s does not fit %d texts", path, feats.shape, rows)
            return None
        return feats

    def _write(self, key: str, target: Path, write: Callable) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{key[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def store(self, key: str, feats: np.ndarray, seconds: float) -> None:
        """Atomic writes; a cache that cannot be written (read-only, full) only costs speed, never the run."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = json.dumps({"seconds": seconds, "rows": len(feats)}).encode()
            self._write(key, self.path(key), lambda f: np.save(f, feats, allow_pickle=False))
            self._write(key, self.path(key).with_suffix(".json"), lambda f: f.write(meta))  # read when hit
        except OSError as e:
            log.warning("feature cache: cannot write to %s (%s); continuing without it", self.dir, e)

    def compute_seconds(self, key: str) -> float:
        try:
            return float(json.loads(self.path(key).with_suffix(".json").read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):  # written by an older version: unknown
            return 0.0

    def get(self, parts: Mapping, rows: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored features for this key, or compute() them and store them."""
        key = self.key(parts)
        # Under torchrun, rank 0's answer holds for all: if one rank hit and another missed, only one would
        # take part in the sharded encoding.
        feats = ddp.from_main(lambda: self.load(key, rows))
        if feats is not None:
            self.hits += 1
            self.saved_s += self.compute_seconds(key)
            log.info("feature cache hit: %d texts (%s)", rows, self.path(key))
            return feats
        self.misses += 1
        t0 = time.perf_counter()
        feats = compute()
        if ddp.is_main():  # one writer
            self.store(key, feats, time.perf_counter() - t0)
        log.info("feature cache miss: %d texts encoded and stored (%s)", rows, self.path(key))
        return feats

    def status(self) -> dict:
        """The FitReport fields of the cache: hit (every lookup hit), miss (none did), partial, or unused."""
        if not self.hits + self.misses:
            state = "unused"
        else:
            state = "hit" if not self.misses else "miss" if not self.hits else "partial"
        return {"feature_cache": state, "feature_cache_hits": self.hits, "feature_cache_misses": self.misses,
                "time_saved_s": round(self.saved_s, 3)}
