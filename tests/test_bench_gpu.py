"""benchmarks/bench_gpu.py: the MFU arithmetic, the whole pipeline on CPU (--cpu-smoke), and briefly on a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, subprocess_env

SCRIPT = REPO / "benchmarks" / "bench_gpu.py"
_spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
bench_gpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_gpu)


def bert_block_params(h: int, i: int) -> int:
    """One BERT layer by hand: Q, K, V, O (weights + biases), the FFN's two linears, two LayerNorms."""
    return 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * (2 * h)


def test_flops_formula_bert_base():
    n = 12 * bert_block_params(768, 3072)
    assert n == 85_054_464
    # 6·N·T for the weights, 12·L·T²·d for attention (3 × forward), per sequence of 512 tokens
    expected = 6 * 85_054_464 * 512 + 12 * 12 * 512**2 * 768
    assert expected == 290_278_342_656  # ≈ 290 GFLOP per training sequence
    assert bench_gpu.train_flops_per_seq(n, 12, 768, 512) == expected


def test_result_files_are_never_overwritten(tmp_path):
    """Result files carry the start's date and time; one that exists is refused before any work, and a file
    that appears while the benchmark runs is not overwritten either."""
    stem = bench_gpu.result_stem(tmp_path / "results", "gpu-2026-12-02T0130-nvidia-h200")
    bench_gpu.write_new(stem, ".json", "{}\n")
    with pytest.raises(SystemExit, match="never overwritten"):
        bench_gpu.result_stem(tmp_path / "results", "gpu-2026-12-02T0130-nvidia-h200")
    with pytest.raises(FileExistsError):
        bench_gpu.write_new(stem, ".json", "other\n")
    assert (tmp_path / "results" / "gpu-2026-12-02T0130-nvidia-h200.json").read_text() == "{}\n"


def test_peak_table():
    assert bench_gpu.lookup_peak("NVIDIA H100 80GB HBM3")[0] == 989.0  # the SXM part's name
    assert bench_gpu.lookup_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert bench_gpu.lookup_peak("NVIDIA H100 NVL")[0] == 835.0
    assert bench_gpu.lookup_peak("NVIDIA H200")[0] == 989.0
    assert bench_gpu.lookup_peak("NVIDIA A100-SXM4-80GB")[0] == 312.0
    assert bench_gpu.lookup_peak("NVIDIA L4")[0] == 121.0
    assert bench_gpu.lookup_peak("NVIDIA L40S")[0] == 362.0
    assert bench_gpu.lookup_peak("NVIDIA H100 80GB HBM3 MIG 1g.10gb") is None
    assert bench_gpu.lookup_peak("Tesla T4") is None  # no bf16 tensor cores: --peak-tflops needed


def test_goal_is_judged_on_h100_and_h200_only():
    assert bench_gpu.goal_applies("NVIDIA H100 80GB HBM3") and bench_gpu.goal_applies("NVIDIA H200")
    assert bench_gpu.goal_applies("NVIDIA H100 PCIe")  # MFU is relative to the part's own peak
    assert not bench_gpu.goal_applies("NVIDIA A100-SXM4-80GB") and not bench_gpu.goal_applies("NVIDIA L4")
    assert not bench_gpu.goal_applies("NVIDIA H200", smoke=True)
    assert not bench_gpu.goal_applies("NVIDIA H100 80GB HBM3 MIG 1g.10gb")


def run_bench(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_no_cuda_says_so():
    r = run_bench([], 120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("no CUDA GPU: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_checks_script_needs_a_gpu(tmp_path):
    """benchmarks/gpu_checks.sh (every GPU check in one go) stops at once, in one line, without a GPU."""
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_checks.sh")], capture_output=True, text=True,
                       env=subprocess_env() | {"PYTHON": sys.executable, "OUT": str(tmp_path)}, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "no CUDA GPU: gpu_checks.sh runs the GPU checks; run it on a GPU machine"
    assert not list(tmp_path.iterdir())


def test_cpu_smoke(tmp_path):
    """The whole pipeline on CPU with the tiny config (2 layers, 128 wide, 64 tokens, 4 steps): ~6 s."""
    r = run_bench(["--cpu-smoke", "--out", str(tmp_path)], 300)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = tmp_path.glob("gpu-????-??-??T????-cpu-smoke.json")  # named by date and time
    assert path.with_suffix(".md").is_file()
    res = json.loads(path.read_text())
    m = res["meta"]
    assert m["smoke"] and m["seq_len"] == 64 and m["batch_size"] == 4 and m["steps"] == 4
    assert m["model"]["num_hidden_layers"] == 2 and m["model"]["hidden_size"] == 128
    n = 2 * bert_block_params(128, 512)
    assert m["non_embedding_params"] == n == 396_544
    assert m["flops_per_seq"] == 3 * (2 * n * 64 + 4 * 2 * 64**2 * 128) == 164_855_808
    assert res["goal"] == "MFU >= 40% on H100 or H200" and res["goal_met"] is None
    for side in ("framework", "reference"):
        x = res[side]
        assert x["seq_s"] > 0 and x["tokens_s"] == pytest.approx(64 * x["seq_s"])
        assert 0 < x["mfu"] < 1
        assert x["model_tflops_s"] == pytest.approx(x["seq_s"] * m["flops_per_seq"] / 1e12)
        assert x["timed_sequences"] == 16
    assert res["framework"]["micro_batch_size"] == 4 and res["framework"]["attn_implementation"] == "sdpa"
    assert all(res["framework"][k] > 0 for k in ("host_collate_ms", "host_pad_batch_ms", "host_tokenizer_pad_ms"))


def test_cpu_smoke_profile(tmp_path):
    """--profile: a few steps of each loop under torch.profiler, summarised per step, in its own result files."""
    r = run_bench(["--cpu-smoke", "--profile", "--out", str(tmp_path)], 300)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = tmp_path.glob("gpu-*-cpu-smoke-profile.json")
    res = json.loads(path.read_text())
    fw, ref = res["framework"]["profile"], res["reference"]["profile"]
    assert "error" not in fw and "error" not in ref, (fw, ref)
    assert fw["steps"] == 8 and ref["steps"] == 4  # fit's 2 epochs of 4 steps; the plain loop's 4
    for p in (fw, ref):
        assert p["wall_ms_per_step"] > 0 and p["host_op_ms_per_step"] > 0 and p["top_host_ops"]
        assert p["device"] == "cpu" and p["gpu_kernel_ms_per_step"] == 0  # no GPU, no kernels
    assert "Profile of FineTuneStrategy.fit" in path.with_suffix(".md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_brief(tmp_path):
    """BERT-base at 512 tokens, a few small steps: the real path runs and its figures are sane, the profile too."""
    args = ["--steps", "3", "--batch-size", "8", "--profile", "--out", str(tmp_path)]
    if bench_gpu.lookup_peak(torch.cuda.get_device_name()) is None:
        args += ["--peak-tflops", "100"]
    r = run_bench(args, 600)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = tmp_path.glob("gpu-*.json")
    res = json.loads(path.read_text())
    assert res["meta"]["flops_per_seq"] == 290_278_342_656
    for side in ("framework", "reference"):
        assert res[side]["seq_s"] > 0 and 0 < res[side]["mfu"] < 1
        assert res[side]["peak_memory_gib"] > 0
    assert res["framework"]["micro_batch_size"] is None  # the whole batch at once on a GPU
    for side in ("framework", "reference"):  # the profiler sees the GPU's kernels
        p = res[side]["profile"]
        assert "error" not in p, p
        assert p["gpu_kernel_ms_per_step"] > 0 and 0 < p["gpu_busy_fraction"] <= 1.05 and p["top_kernels"]
