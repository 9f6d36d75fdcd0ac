"""experiments.resources: the memory a finished job leaves behind goes back to the OS before the next job."""

from __future__ import annotations

import gc
import os
import platform

import psutil
import pytest

from experiments.resources import Measure, release_memory


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
                    or "malloc" in os.environ.get("LD_PRELOAD", ""), reason="malloc_trim is glibc's allocator's")
def test_release_memory_returns_a_fragmented_heap():
    # 200 MB of 4 kB blocks, one in 1,000 kept alive: the free blocks between them are not at the heap's top,
    # so glibc keeps them mapped after free() (what a sweep job's tokenised batches and numpy arrays leave)
    junk = [bytes(4000) for _ in range(50_000)]
    keep = junk[::1000]
    del junk
    gc.collect()
    before = rss_mb()
    assert release_memory() is True
    assert rss_mb() < before - 100, "malloc_trim gave back less than half of the 200 MB freed"
    assert len(keep) == 50


def test_measure_reports_the_block_and_its_start():
    with Measure() as m:
        block = bytearray(64 * 2**20)  # touched: 64 MB resident
    assert m.seconds > 0 and m.peak_rss_mb >= m.start_rss_mb + 60
    del block
