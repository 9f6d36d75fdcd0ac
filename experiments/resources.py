"""Timing and peak memory of a block of work, for CPU (process RSS, sampled) and CUDA (allocator peak)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import threading
import time

import psutil
import torch
from torch import nn


class Measure:
    """with Measure() as m: ...  ->  m.seconds, m.peak_rss_mb (process RSS high-water mark during the block),
    m.start_rss_mb (RSS when the block began), m.peak_cuda_mb (torch allocator peak, 0 without CUDA)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.seconds = 0.0
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb = 0.0
        self._stop = threading.Event()
        self._depth = 0  # excluded() blocks open now
        self._entries = 0  # excluded() blocks entered or left so far

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            before = self._entries
            rss = proc.memory_info().rss / 2**20
            if self._depth == 0 and self._entries == before:  # read wholly outside any excluded() block
                self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def excluded(self):
        """Work inside the block whose memory is not the block's (the machine canary's buffers, two of 32 MB,
        between epochs): RSS read while it runs is not counted. Its time still is."""
        self._depth += 1
        self._entries += 1
        try:
            yield
        finally:
            self._depth -= 1
            self._entries += 1

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


def _median_rate(work: float, fn, seconds: float) -> float:
    for _ in range(3):  # first calls (threads waking, kernel selection, page faults) are no part of the rate
        fn()
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(rates) < 3:
        t0 = time.perf_counter()
        fn()
        rates.append(work / (time.perf_counter() - t0))
    return statistics.median(rates)


MACHINE_SPEED_KEYS = ["machine_matmul_gflops", "machine_copy_gbps", "machine_block_tokens_per_s"]


def machine_speed(seconds: float = 0.01) -> dict[str, float]:
    """How fast this machine runs three small fixed workloads right now, each the median rate over about
    `seconds`: a 512² fp32 matmul (GFLOP/s, compute), copying 32 MB (GB/s, past the per-core caches), and the
    forward and backward pass of a random 384-wide transformer block on 128 tokens (tokens/s, under bf16
    autocast where the CPU runs bf16 fast, as precision=auto trains: the mix a fine-tuning step runs). A
    canary logged beside a run's times: on a shared 2-CPU host, the same forward and backward passes on the
    same reviews took 32% longer half an hour apart with nothing else running on the machine, so a train time
    alone cannot say whether the strategy or the machine was slow. The global random state is left as it
    was (a run's seeded draws do not depend on whether the machine was sampled)."""
    from strategies.backbone import resolve_precision

    # fork_rng restores the CPU generator the random inputs draw from; no manual_seed here, which would also
    # reseed every CUDA generator (and fork_rng(devices=[]) would not restore those)
    with torch.random.fork_rng(devices=[]):
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        src = torch.ones(2**23)  # 32 MB: past the per-core caches (a large shared L3 may still hold it)
        dst = torch.empty_like(src)
        block = nn.TransformerEncoderLayer(384, 6, 1536, dropout=0.0, batch_first=True)  # MiniLM's shape
        x = torch.randn(2, 64, 384)
        bf16 = resolve_precision("auto", torch.device("cpu")) == "bf16"

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = block(x)
            y.float().sum().backward()

        rates = (_median_rate(2 * 512**3 / 1e9, lambda: torch.mm(a, b), seconds),
                 _median_rate(2 * src.nbytes / 1e9, lambda: dst.copy_(src), seconds),
                 _median_rate(x.shape[0] * x.shape[1], step, seconds))
        return dict(zip(MACHINE_SPEED_KEYS, rates, strict=True))
