"""experiments.resources: the memory a finished job leaves behind goes back to the OS before the next job, and
the machine-speed canary a run logs beside its times."""

from __future__ import annotations

import gc
import os
import platform
import time

import psutil
import pytest
import torch
from conftest import compose

from experiments.resources import Measure, machine_speed, release_memory


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


def test_measure_leaves_out_what_an_excluded_block_held():
    with Measure(interval=0.001) as m:
        with m.excluded():
            with m.excluded():
                pass  # a nested block that ends leaves the outer one excluded
            junk = bytearray(256 * 2**20)  # touched: 256 MB resident, sampled many times meanwhile
            time.sleep(0.05)
            del junk  # one mapping: back to the OS at once
        time.sleep(0.02)
    assert m.peak_rss_mb < m.start_rss_mb + 100


def test_a_continued_run_reads_each_earlier_sample_whole(in_store):
    """The samples a killed process logged, one dict per logging call in order, a call cut short included."""
    import mlflow

    from experiments import tracking

    keys = ["machine_matmul_gflops", "machine_copy_gbps"]
    with tracking.tracked_run(tracking.setup(in_store.uri, "series"), "s", {}):
        mlflow.log_metrics({"machine_matmul_gflops": 300.0, "machine_copy_gbps": 20.0}, step=0)  # first process
        mlflow.log_metrics({"machine_matmul_gflops": 250.0, "machine_copy_gbps": 21.0, "val_accuracy": 0.8}, step=1)
        mlflow.log_metrics({"machine_matmul_gflops": 200.0}, step=2)  # killed while logging
        time.sleep(0.01)
        mlflow.log_metrics({"machine_matmul_gflops": 310.0, "machine_copy_gbps": 19.0}, step=0)  # the resumed one
        assert tracking.logged_series(keys) == [
            {"machine_matmul_gflops": 300.0, "machine_copy_gbps": 20.0},
            {"machine_matmul_gflops": 250.0, "machine_copy_gbps": 21.0},
            {"machine_matmul_gflops": 200.0},
            {"machine_matmul_gflops": 310.0, "machine_copy_gbps": 19.0}]


def test_machine_speed_reads_compute_and_memory_rates():
    speed = machine_speed(seconds=0.01)
    assert set(speed) == {"machine_matmul_gflops", "machine_copy_gbps", "machine_block_tokens_per_s"}
    # any CPU that runs this suite multiplies faster than 1 GFLOP/s, copies faster than 0.5 GB/s and runs a
    # 384-wide block faster than 100 tokens/s; none reaches 100 TFLOP/s in fp32 on a 512² matmul, 10 TB/s
    # copying or 10M tokens/s (4 TFLOP/s) on a block of 128 tokens: a rate with wrong units fails here
    assert 1 < speed["machine_matmul_gflops"] < 1e5 and 0.5 < speed["machine_copy_gbps"] < 1e4
    assert 100 < speed["machine_block_tokens_per_s"] < 1e7


def test_machine_speed_leaves_the_random_state_alone(monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))  # GPU dropout's
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    machine_speed(seconds=0.001)
    assert torch.equal(torch.rand(4), expected)  # a seeded run draws the same with or without the canary
    assert reseeded == [3, 3]  # the test's own two seedings only: the canary never reseeds the CUDA generators


@pytest.mark.parametrize("canary", [True, False])
def test_a_run_logs_the_machine_speeds_span_unless_off(canary, tiny_overrides, in_store, monkeypatch):
    from experiments import runner

    readings = iter([{"machine_matmul_gflops": 300.0, "machine_copy_gbps": 20.0},  # before fitting
                     {"machine_matmul_gflops": 210.0, "machine_copy_gbps": 22.0}])  # after predicting
    monkeypatch.setattr(runner, "machine_speed", lambda: next(readings))
    name = f"canary-{canary}"
    cfg = compose(["strategy=freeze", "strategy.epochs=3", "cache=false", "log_model=false", f"machine_canary={canary}",
                   "data.train_size=40", "data.test_size=20", *tiny_overrides, *in_store.overrides(name)])
    runner.run(cfg)
    (run,) = in_store.runs(name)
    speed = {k: v for k, v in run.data.metrics.items() if k.startswith("machine_")}
    if not canary:
        assert speed == {} and next(readings)["machine_matmul_gflops"] == 300.0  # never sampled
        return
    # the 3 head epochs take well under the 30 s between samples: only the start and the end are sampled
    assert speed == {"machine_matmul_gflops": 300.0, "machine_copy_gbps": 20.0,  # the series' step 0
                     "machine_matmul_gflops_min": 210.0, "machine_matmul_gflops_max": 300.0,
                     "machine_copy_gbps_min": 20.0, "machine_copy_gbps_max": 22.0,
                     "machine_matmul_gflops_median": 255.0, "machine_copy_gbps_median": 21.0,
                     "machine_samples": 2.0}
    history = in_store.client().get_metric_history(run.info.run_id, "machine_matmul_gflops")
    assert [(m.step, m.value) for m in history] == [(0, 300.0)]


def test_the_canary_between_epochs_is_not_the_runs_memory(tiny_overrides, in_store, monkeypatch):
    """A sample between epochs holds its buffers (two of 32 MB) inside the fit's measurement; they are left out of
    the run's peak RSS (here 400 MB, held while the sample runs)."""
    from experiments import runner

    inside = []

    def heavy_sample() -> dict:
        junk = bytearray(400 * 2**20)
        inside.append(psutil.Process().memory_info().rss / 2**20)
        time.sleep(0.2)  # the fit's RSS sampler (every 50 ms) reads it meanwhile
        del junk
        return {"machine_matmul_gflops": 100.0}

    monkeypatch.setattr(runner, "machine_speed", heavy_sample)
    monkeypatch.setattr(runner, "CANARY_EVERY_S", 0.0)  # every epoch boundary samples
    cfg = compose(["strategy=freeze", "strategy.epochs=3", "cache=false", "log_model=false", "data.train_size=40",
                   "data.test_size=20", *tiny_overrides, *in_store.overrides("canary-memory")])
    runner.run(cfg)
    (run,) = in_store.runs("canary-memory")
    assert run.data.metrics["machine_samples"] == len(inside) == 5  # before, 3 epochs, after
    assert run.data.metrics["peak_rss_mb"] < min(inside) - 200
