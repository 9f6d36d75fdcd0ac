"""Timing and peak memory of a block of work, for CPU (process RSS, sampled) and CUDA (allocator peak)."""

from __future__ import annotations

import ctypes
import gc
import threading
import time

import psutil
import torch


class Measure:
    """with Measure() as m: ...  ->  m.seconds, m.peak_rss_mb (process RSS high-water mark during the block),
    m.start_rss_mb (RSS when the block began), m.peak_cuda_mb (torch allocator peak, 0 without CUDA)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.seconds = 0.0
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> Measure:
        self.start_rss_mb = psutil.Process().memory_info().rss / 2**20
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, psutil.Process().memory_info().rss / 2**20)


try:  # glibc's, in this process; absent on macOS and musl (and a preloaded jemalloc/tcmalloc ignores it)
    _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):
    _MALLOC_TRIM = None


def release_memory() -> bool:
    """Free what the last job left: Python garbage, CUDA's cached blocks, and the C heap's free pages (glibc
    keeps them, so a sweep's process RSS grew by hundreds of MB a job and each job's peak RSS counted the
    previous jobs' garbage; malloc_trim(0) gives them back, measured 0.4-0.6 GB after a MiniLM fine-tuning
    job). Returns whether memory went back to the system (malloc_trim's 1; False without glibc)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return _MALLOC_TRIM is not None and _MALLOC_TRIM(0) == 1
