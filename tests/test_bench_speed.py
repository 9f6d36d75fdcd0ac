"""benchmarks/bench_speed.py: the FLOPs count behind its roofline column, the matmul peak, and one tiny run of
the expert-peer parts (a: sentence-transformers, d: the expert Trainer and the accuracy parity)."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import IMDB, REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # bench_speed imports bench_gpu's file-naming helpers
_spec = importlib.util.spec_from_file_location("bench_speed", REPO / "benchmarks" / "bench_speed.py")
bench_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_speed)


def test_flops_counts_useful_tokens_only():
    cfg = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2)
    # per layer, text of 3 tokens: 2·3·(4·16 + 2·4·8) linear + 4·3²·4 attention; padding is never counted
    one = 2 * (2 * 3 * (4 * 16 + 2 * 4 * 8) + 4 * 9 * 4)
    assert one == 1824
    assert bench_speed.flops(cfg, [3]) == one
    assert bench_speed.flops(cfg, [3, 3]) == 2 * one
    assert bench_speed.flops(cfg, [3], training=True) == 3 * one
    # MiniLM (384 wide, 1536 feed-forward, 6 layers) at 512 tokens: ≈ 13.3 GFLOP per text forward
    minilm = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=6)
    assert bench_speed.flops(minilm, [512]) == pytest.approx(13.29e9, rel=1e-3)


def test_matmul_peak_and_roofline():
    import torch

    peak = {"bf16": bench_speed.matmul_peak(torch.bfloat16, sizes=(64, 128), repeats=2),
            "fp32": bench_speed.matmul_peak(torch.float32, sizes=(64, 128), repeats=2)}
    for p in peak.values():
        assert set(p["by_size"]) == {64, 128} and p["gflops"] == max(p["by_size"].values()) > 0
    r = bench_speed.roofline(2e9, 1.0, {"bf16": {"gflops": 4.0}, "fp32": {"gflops": 8.0}})
    assert r == {"gflops": 2.0, "of_bf16_peak": 0.5, "of_fp32_peak": 0.25}


def test_repeat_reports_the_median_and_spread():
    calls = []
    out, t = bench_speed.repeat(lambda s: calls.append(s) or len(calls), 3, setup=lambda: "fresh")
    assert out == 3 and calls == ["fresh"] * 3
    assert t["repeats"] == 3 and t["min_s"] <= t["median_s"] <= t["max_s"]


@pytest.mark.slow
@pytest.mark.skipif(not (IMDB / "train.parquet").exists(), reason="IMDb parquet not in ../shared")
def test_expert_parts_tiny_run(tmp_path):
    """Parts a and d end to end on 8 texts at 32 tokens: every path is timed (median of 2), the goals are
    judged, the parity runs, and the report names the expert peers."""
    rc = bench_speed.main(["--data", str(IMDB), "--n", "8", "--n-test", "8", "--ft-n", "8", "--max-length", "32",
                           "--repeats", "2", "--st-batch-sizes", "8", "--parity-n", "16", "--parity-test", "16", "--parity-epochs", "1",
                           "--parts", "ad", "--out", str(tmp_path)])
    assert rc == 0
    (js,) = tmp_path.glob("speed-*-ad.json")
    res = json.loads(js.read_text())
    assert res["meta"]["matmul_peak"]["bf16"]["gflops"] > 0 and res["meta"]["repeats"] == 2
    a, d = res["parts"]["a"], res["parts"]["d"]
    assert set(a["paths"]) == {"naive", "ours", "sentence-transformers float32 b32", "sentence-transformers bfloat16 b8"}
    assert a["expert_best"].startswith("sentence-transformers") and a["min_cosine_vs_naive"] > 0.99
    assert {"ratio", "ratio_vs_expert", "ours_of_bf16_peak"} == set(a["goals_met"]) == set(d["goals_met"])
    assert sum("expert" in k for k in d["paths"]) == 4 and d["ratio_vs_expert_same_recipe"] > 0 and all(r["repeats"] == 2 for r in d["paths"].values())
    q = d["parity"]
    assert q["train"] == q["test"] == 16 and 0 <= q["trainer_acc"] <= 1 and 0 <= q["mcnemar_p"] <= 1
    md = js.with_suffix(".md").read_text()
    assert "of bf16 peak" in md and "vs the expert's best" in md and "accuracy parity" in md


@pytest.mark.parametrize("argv, says", [
    (["--device", "cuda", "--parts", "ad"], "no CUDA GPU here" if not torch.cuda.is_available() else "part d only"),
    (["--model-dir", "x", "--random-bert-base"], "exclude each other"),
])
def test_bad_arguments_say_what_to_do(argv, says, capsys, tmp_path):
    """Refused before any model loads or any file is written, with one line that names the fix."""
    with pytest.raises(SystemExit) as e:
        bench_speed.main([*argv, "--out", str(tmp_path)])
    assert e.value.code == 2 and says in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_trainer_rows_need_no_datasets_package():
    """The Trainer gets plain per-example dicts (a bare GPU machine lacks `datasets`); its length-grouped
    sampler reads each row's input_ids."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    enc = {"input_ids": [[1, 2, 3], [1, 2], [1, 2, 3, 4, 5]], "attention_mask": [[1] * 3, [1] * 2, [1] * 5]}
    rows = bench_speed.as_rows(enc, np.array([1, 0, 1]))
    assert rows[1] == {"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 0} and type(rows[0]["labels"]) is int
    assert next(iter(LengthGroupedSampler(2, dataset=rows))) == 2  # it puts the longest row first


@pytest.mark.slow
@pytest.mark.skipif(not (IMDB / "train.parquet").exists(), reason="IMDb parquet not in ../shared")
def test_part_d_on_a_model_folder(tmp_path, tiny_bert):
    """--model-dir: part d on a local model folder (hash not checked), named in the result's meta."""
    rc = bench_speed.main(["--data", str(IMDB), "--n", "4", "--ft-n", "4", "--max-length", "32", "--repeats", "1",
                           "--parity-n", "0", "--parts", "d", "--model-dir", str(tiny_bert), "--out", str(tmp_path)])
    assert rc == 0
    (js,) = tmp_path.glob("speed-*-d-model-dir.json")
    meta = json.loads(js.read_text())["meta"]
    assert meta["model"] == tiny_bert.name and meta["device"] == "cpu" and meta["ft_n"] == 4
    assert meta["model_config"]["num_hidden_layers"] == 2  # the tiny BERT's, not MiniLM's 6


def test_flops_terms_add_up_and_ops_are_grouped():
    cfg = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2)
    linear, attention = bench_speed.flops(cfg, [3], term="linear"), bench_speed.flops(cfg, [3], term="attention")
    assert (linear, attention) == (2 * 2 * 3 * (4 * 16 + 2 * 4 * 8), 2 * 4 * 9 * 4)
    assert linear + attention == bench_speed.flops(cfg, [3])
    assert bench_speed.flops(cfg, [3], training=True, term="attention") == 3 * attention
    groups = {name: bench_speed.op_group(name) for name in (
        "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "aten::addmm", "aten::mm", "aten::bernoulli_", "aten::native_layer_norm", "aten::gelu_backward",
        "aten::_fused_adamw_", "aten::_to_copy", "aten::add_", "aten::embedding")}
    assert groups == {
        "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
        "aten::addmm": "linear layers", "aten::mm": "linear layers", "aten::bernoulli_": "dropout masks",
        "aten::native_layer_norm": "layer norm", "aten::gelu_backward": "GELU", "aten::_fused_adamw_": "optimizer",
        "aten::_to_copy": "casts and copies", "aten::add_": "elementwise (add, mul, …)", "aten::embedding": "other"}


@pytest.mark.slow
@pytest.mark.skipif(not (IMDB / "train.parquet").exists(), reason="IMDb parquet not in ../shared")
def test_profile_part_tiny_run(tmp_path):
    """--profile alone: one profiled extraction pass and one fine-tuning epoch; the shares add up to 1, the
    linear layers and attention have rates, and the report has the table."""
    rc = bench_speed.main(["--data", str(IMDB), "--n", "8", "--ft-n", "8", "--max-length", "32", "--parts", "",
                           "--profile", "--out", str(tmp_path)])
    assert rc == 0
    (js,) = tmp_path.glob("speed-*-p.json")
    p = json.loads(js.read_text())["parts"]["p"]
    for r in (p["extraction"], p["training"]):
        assert sum(g["share"] for g in r["groups"].values()) == pytest.approx(1.0)
        assert {"attention", "linear layers"} <= set(r["groups"]) and r["linear_gflops"] > 0 and r["attention_gflops"] > 0
    assert "optimizer" in p["training"]["groups"] and "optimizer" not in p["extraction"]["groups"]
    assert "GFLOP/s of the linear layers" in js.with_suffix(".md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not (IMDB / "train.parquet").exists(), reason="IMDb parquet not in ../shared")
def test_pad_ab_tiny_run(tmp_path):
    """benchmarks/bench_pad.py: one fresh process per PAD_MULTIPLE value, each timed and its peak RSS kept;
    the report has a row per value with its speed-up over the first."""
    spec = importlib.util.spec_from_file_location("bench_pad", REPO / "benchmarks" / "bench_pad.py")
    bench_pad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_pad)
    rc = bench_pad.main(["--data", str(IMDB), "--n-test", "4", "--ft-n", "4", "--max-length", "32",
                         "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 0
    (js,) = tmp_path.glob("pad-*.json")
    res = json.loads(js.read_text())
    assert set(res["runs"]) == {"1", "8"} and all(len(v) == 1 for v in res["runs"].values())
    for s in res["summary"].values():
        assert all(s[t]["median"] > 0 for t in bench_pad.TIMINGS) and s["peak_rss_mb"]["median"] > 100
    s1, s8 = res["summary"]["1"]["finetune_epoch_s"]["median"], res["summary"]["8"]["finetune_epoch_s"]["median"]
    row = next(line for line in js.with_suffix(".md").read_text().splitlines() if line.startswith("| 8 |"))
    assert f"{s8:.2f} (" in row and f"{s1 / s8:.2f}x" in row  # the speed-up over K=1, from the medians
