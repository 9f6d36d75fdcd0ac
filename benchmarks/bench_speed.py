"""Side-by-side speed benchmark: the naive Hugging Face recipe vs transfer-bench's path, in one process.

    python benchmarks/bench_speed.py --data ../shared/datasets/imdb --n 256 --max-length 512

Parts (--parts, default all):
  a  encoder feature extraction: pad every text to max_length, fp32, batch 32, input order
     vs extract_features (length-bucketed dynamic padding, precision=auto)
  b  freeze end to end (head epochs, then test predictions): the frozen encoder re-run every epoch, padded
     fp32 vs FreezeStrategy (features once) — plus FreezeStrategy again on a warm feature cache
  c  an embed sweep of 4 scikit-learn classifiers (logreg, svm, mlp, random_forest) through the feature
     cache vs one classifier alone; and the same sweep without the cache
  d  fine-tuning training throughput: transformers Trainer defaults (AutoModelForSequenceClassification,
     padding to max_length, fp32, batch 8) vs FineTuneStrategy's loop (length-bucketed, precision=auto)
  e  (--knobs) other knobs: encoder batch size, threads, torch.compile, int8 dynamic quantisation, the
     tokeniser's share, and training forward+backward in micro-batches

The machine's load average is recorded per part: on a shared machine, compare ratios taken at low load.

Writes benchmarks/results/speed-<date>T<time>[-<parts>].json and .md (the start, to the minute; an existing result
is never overwritten). Timings exclude model loading (both sides have the
model in memory); everything else (tokenising, padding, head training, prediction) is timed."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_gpu import result_stem, write_new  # noqa: E402 — one naming rule for every result file

from experiments.bundle import build_strategy  # noqa: E402
from experiments.config import compose  # noqa: E402
from strategies.backbone import (  # noqa: E402
    ModelSpec,
    auto_batch_size,
    extract_features,
    load_encoder,
    load_tokenizer,
    resolve_precision,
    set_threads,
    tokenize,
)
from strategies.base import Split  # noqa: E402
from strategies.encoder_base import ClassifierHead, make_optimizer, numpy_rng  # noqa: E402

GOALS = {  # from issue 3, on a 2-core CPU at max_length 512
    "a": ("extraction throughput vs naive", ">=", 4.0),
    "b": ("freeze end to end, speed-up vs naive", ">=", 5.0),
    "c": ("embed sweep of 4 / one classifier (time)", "<=", 1.3),
    "d": ("finetune training throughput vs Trainer", ">=", 2.5),
}
CLASSIFIERS = ("logreg", "svm", "mlp", "random_forest")


# ----------------------------------------------------------------------------- helpers
def subset(path: Path, n: int, seed: int) -> Split:
    """A balanced, seeded sample of n reviews."""
    df = pd.read_parquet(path, columns=["text", "label"])
    df = df.groupby("label", group_keys=False).sample(n // 2, random_state=seed).sample(frac=1, random_state=seed)
    return Split(df.text.tolist(), np.array(df.label, dtype=np.int64))  # a writable copy


class Timer:
    def __enter__(self):
        self.load0, self.t0 = os.getloadavg()[0], time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        self.load = round(max(self.load0, os.getloadavg()[0]), 2)  # flags timings taken on a busy machine


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@torch.inference_mode()
def naive_features(model, tok, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    """The naive recipe: every text padded to max_length, fp32, fixed batches in input order."""
    out = []
    for i in range(0, len(texts), batch_size):
        b = tok(texts[i : i + batch_size], padding="max_length", truncation=True, max_length=max_length,
                return_tensors="pt")
        out.append(mean_pool(model(**b).last_hidden_state, b["attention_mask"]).float().numpy())
    return np.concatenate(out)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


# ----------------------------------------------------------------------------- parts
def part_a(ctx) -> dict:
    model, tok, texts, L = ctx["model"], ctx["tok"], ctx["train"].texts, ctx["max_length"]
    naive_features(model, tok, texts[:4], L, 4)  # warm-up (one-time allocations) for both sides
    extract_features(model, tok, texts[:4], max_length=L, pooling="mean", device=ctx["device"], precision=ctx["precision"])
    with Timer() as tn:
        ref = naive_features(model, tok, texts, L)
    with Timer() as tf:
        ours = extract_features(model, tok, texts, max_length=L, pooling="mean", batch_size=ctx["batch_size"],
                                device=ctx["device"], precision=ctx["precision"])
    ctx["naive_train_features"] = ref  # part b's naive head uses its standardiser statistics (untimed)
    n = len(texts)
    return {
        "texts": n, "naive_s": tn.s, "ours_s": tf.s, "naive_seq_s": n / tn.s, "ours_seq_s": n / tf.s,
        "ratio": tn.s / tf.s, "min_cosine_vs_naive": cosine(ref, ours), "load": max(tn.load, tf.load),
    }


def naive_freeze(ctx, epochs: int, seed: int) -> tuple[float, np.ndarray]:
    """Frozen encoder re-run on every batch of every epoch (padded, fp32), with FreezeStrategy's exact head
    recipe and RNG use, so that only the features' numerics differ from the framework's run."""
    model, tok, L, train, test = ctx["model"], ctx["tok"], ctx["max_length"], ctx["train"], ctx["test"]
    cfg = ctx["freeze_cfg"]
    if "naive_train_features" not in ctx:
        ctx["naive_train_features"] = naive_features(model, tok, train.texts, L)
    stats = torch.from_numpy(ctx["naive_train_features"])  # standardiser statistics, given for free
    torch.manual_seed(seed)
    with Timer() as t:
        head = ClassifierHead(stats.shape[1], 2, cfg.head, cfg.hidden_size, cfg.dropout)
        head.set_standardizer(stats)
        steps = -(-len(train) // cfg.batch_size)
        opt, sched = make_optimizer([{"params": head.parameters(), "lr": cfg.lr}], weight_decay=cfg.weight_decay,
                                    total_steps=steps * epochs, warmup_ratio=cfg.warmup_ratio)
        rng, y = numpy_rng(), torch.as_tensor(train.labels)
        for _ in range(epochs):
            head.train()
            for idx in np.array_split(rng.permutation(len(train)), steps):
                x = torch.from_numpy(naive_features(model, tok, [train.texts[i] for i in idx], L))
                loss = torch.nn.functional.cross_entropy(head(x), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        head.eval()
        with torch.inference_mode():
            pred = head(torch.from_numpy(naive_features(model, tok, test.texts, L))).argmax(1).numpy()
    return t, pred


def part_b(ctx) -> dict:
    epochs, seed, test = ctx["epochs"], ctx["seed"], ctx["test"]
    tn, naive_pred = naive_freeze(ctx, epochs, seed)
    rows = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for label, cache in (("ours", False), ("ours_warm_cache", True)):
            runs = 2 if cache else 1  # the first cached run fills the cache, the second is timed
            for _ in range(runs):
                cfg = compose(ctx["overrides"] + ["strategy=freeze", f"strategy.epochs={epochs}", f"cache={str(cache).lower()}",
                                                  f"cache_dir={cache_dir}", f"seed={seed}"])
                strategy = build_strategy(cfg.strategy, 2)
                strategy.prepare()  # model loading is not timed, on either side
                torch.manual_seed(seed)
                with Timer() as t:
                    strategy.fit(ctx["train"])
                    pred = strategy.predict(test.texts)
            rows[label] = (t, pred, strategy.fit_report().feature_cache)
    t, pred, _ = rows["ours"]
    tw, pred_w, state = rows["ours_warm_cache"]
    acc = lambda p: float(np.mean(p == test.labels))  # noqa: E731
    return {
        "train": len(ctx["train"]), "test": len(test), "head_epochs": epochs,
        "naive_s": tn.s, "ours_s": t.s, "ours_warm_cache_s": tw.s, "warm_cache_state": state,
        "ratio": tn.s / t.s, "ratio_warm_cache": tn.s / tw.s,
        "naive_acc": acc(naive_pred), "ours_acc": acc(pred), "ours_warm_cache_acc": acc(pred_w),
        "prediction_agreement": float(np.mean(naive_pred == pred)), "load": max(tn.load, t.load),
    }


def part_c(ctx) -> dict:
    train, test = ctx["train"], ctx["test"]

    def run(clf: str, cache_dir: str, cache: bool = True) -> tuple[float, float, str]:
        cfg = compose(ctx["overrides"] + ["strategy=embed", f"classifier={clf}", f"cache={str(cache).lower()}",
                                          f"cache_dir={cache_dir}", f"seed={ctx['seed']}"])
        strategy = build_strategy(cfg.strategy, 2)
        strategy.prepare()
        with Timer() as t:
            strategy.fit(train)
            pred = strategy.predict(test.texts)
        return t.s, float(np.mean(pred == test.labels)), strategy.fit_report().feature_cache

    out = {"train": len(train), "test": len(test), "classifiers": list(CLASSIFIERS)}
    with tempfile.TemporaryDirectory() as single_dir, tempfile.TemporaryDirectory() as sweep_dir:
        out["single_s"], out["single_acc"], _ = run("logreg", single_dir)  # cold cache: one extraction
        sweep = {clf: run(clf, sweep_dir) for clf in CLASSIFIERS}  # cold at first, then hits
    out["sweep_s"] = sum(s for s, _, _ in sweep.values())
    out["sweep"] = {c: {"s": s, "acc": a, "feature_cache": st} for c, (s, a, st) in sweep.items()}
    out["ratio"] = out["sweep_s"] / out["single_s"]
    if ctx["no_cache_sweep"]:
        nocache = {clf: run(clf, "unused", cache=False) for clf in CLASSIFIERS}
        out["sweep_no_cache_s"] = sum(s for s, _, _ in nocache.values())
        out["no_cache_acc"] = {c: a for c, (_, a, _) in nocache.items()}
        out["ratio_no_cache"] = out["sweep_no_cache_s"] / out["single_s"]
    return out


def part_d(ctx) -> dict:
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    n, L, seed = ctx["ft_n"], ctx["max_length"], ctx["seed"]
    train = Split(ctx["train"].texts[:n], ctx["train"].labels[:n])
    tok, path = ctx["tok"], ctx["spec"].resolve_path()

    enc = tok(train.texts, padding="max_length", truncation=True, max_length=L)
    rows = [{k: enc[k][i] for k in enc} | {"labels": int(train.labels[i])} for i in range(n)]
    torch.manual_seed(seed)
    hf_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, use_safetensors=True)
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, num_train_epochs=1, per_device_train_batch_size=ctx["trainer_batch_size"],
            report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=seed,
        )
        trainer = Trainer(model=hf_model, args=args, train_dataset=rows)
        with Timer() as tn:
            trainer.train()

    cfg = compose(ctx["overrides"] + ["strategy=finetune", "strategy.epochs=1", f"seed={seed}"])
    strategy = build_strategy(cfg.strategy, 2)
    strategy.prepare()
    torch.manual_seed(seed)
    with Timer() as tf:
        strategy.fit(train)
    return {
        "train_sequences": n, "trainer_batch_size": ctx["trainer_batch_size"], "ours_batch_size": cfg.strategy.batch_size,
        "ours_micro_batch_size": strategy.micro_batch_size,
        "naive_s": tn.s, "ours_s": tf.s, "naive_seq_s": n / tn.s, "ours_seq_s": n / tf.s, "ratio": tn.s / tf.s,
        "load": max(tn.load, tf.load),
    }


def part_e(ctx) -> dict:
    """Knobs beyond bucketing + bf16, each on the same texts (throughput and feature agreement vs fp32)."""
    model, tok, L, dev = ctx["model"], ctx["tok"], ctx["max_length"], ctx["device"]
    texts = ctx["train"].texts[: ctx["knob_n"]]

    def measure(m, precision="bf16", batch_size=ctx["batch_size"], threads=None) -> tuple[float, np.ndarray]:
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            f = lambda ts: extract_features(m, tok, ts, max_length=L, pooling="mean", batch_size=batch_size,  # noqa: E731
                                            device=dev, precision=precision)
            f(texts[:4])
            with Timer() as t:
                feats = f(texts)
        finally:
            torch.set_num_threads(before)
        return len(texts) / t.s, feats

    out = {"texts": len(texts)}
    with Timer() as tt:  # tokenising is a small share: caching tokens across runs would not pay
        tokenize(tok, texts, L)
    out["tokenize only (fast tokenizer)"] = {"seq_s": len(texts) / tt.s, "min_cosine": None}
    bs = ctx["batch_size"]
    base, ref = measure(model, "fp32")
    out[f"fp32 bucketed b{bs}"] = {"seq_s": base, "min_cosine": 1.0}
    variants = {f"bf16 bucketed b{b}": dict(batch_size=b) for b in (2, 4, 8, 16, 32, 64)}
    variants[f"bf16 b{bs}, 1 thread"] = dict(threads=1)
    for name, kw in variants.items():
        s, f = measure(model, **kw)
        out[name] = {"seq_s": s, "min_cosine": cosine(ref, f)}
    quant = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    s, f = measure(quant, "fp32")
    out["int8 dynamic quant (fp32 act)"] = {"seq_s": s, "min_cosine": cosine(ref, f)}
    try:  # dynamic shapes: bucketed batches differ in length; the first calls pay compilation
        compiled = torch.compile(model, dynamic=True)
        with Timer() as tc:
            measure(compiled)  # compile + first pass
        s, f = measure(compiled)
        out[f"bf16 b{bs} torch.compile (2nd pass)"] = {"seq_s": s, "min_cosine": cosine(ref, f), "first_pass_s": tc.s}
    except Exception as e:  # no compiler, unsupported op, …
        out["bf16 torch.compile"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    out |= micro_batches(ctx)
    return out


def micro_batches(ctx, batch: int = 16) -> dict:
    """Training forward+backward at full length: one batch of 16 vs the same 16 in micro-batches (gradient
    accumulation — the same optimisation step). Smaller working sets run faster on a small CPU."""
    model = load_encoder(ctx["spec"]).train()
    enc = ctx["tok"](ctx["train"].texts[:batch], padding="max_length", truncation=True, max_length=ctx["max_length"],
                     return_tensors="pt")
    out = {}
    for micro in (batch, 8, 4):
        def step(micro: int = micro):
            for i in range(0, batch, micro):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx["precision"] == "bf16"):
                    loss = model(**{k: v[i : i + micro] for k, v in enc.items()}).last_hidden_state[:, 0].float().sum()
                loss.backward()

        step()  # warm-up
        with Timer() as t:
            step()
        out[f"train fwd+bwd, batch {batch} as {batch // micro}x{micro}"] = {"seq_s": batch / t.s, "min_cosine": None}
    return out


# ----------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"# Speed benchmark, {m['date']}",
        "",
        f"`{m['command']}`",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, transformers {m['transformers']}, "
        f"precision=auto → {m['precision']}, max_length {m['max_length']}, threads {m['threads']}, "
        f"{m['attention']} attention, encoder batch {m['encode_batch_size']}; IMDb texts average "
        f"{m['mean_tokens']:.0f} tokens, {100 * m['truncated_fraction']:.0f}% truncated. "
        "Timings exclude model loading. `load` = the machine's 1-minute load average during the part "
        "(above the core count means other processes competed for the CPU).",
    ]
    p = res["parts"]
    if set(p) & set(GOALS):
        lines += ["", "| part | naive | transfer-bench | ratio | goal | accuracy (naive / ours) | load |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]

    def goal(key: str) -> str:
        met = p[key].get("goal_met")
        return res["goals"][key] + ("" if met is None else " met" if met else " **not met**")

    if "a" in p:
        a = p["a"]
        lines.append(f"| a. extraction, {a['texts']} texts | {a['naive_seq_s']:.1f} seq/s ({a['naive_s']:.1f} s) | "
                     f"{a['ours_seq_s']:.1f} seq/s ({a['ours_s']:.1f} s) | {a['ratio']:.2f}x | {goal('a')} | "
                     f"features: min cosine {a['min_cosine_vs_naive']:.4f} | {a['load']} |")
    if "b" in p:
        b = p["b"]
        lines.append(f"| b. freeze, {b['train']} train / {b['test']} test, {b['head_epochs']} head epochs | "
                     f"{b['naive_s']:.1f} s | {b['ours_s']:.1f} s (warm cache: {b['ours_warm_cache_s']:.2f} s) | "
                     f"{b['ratio']:.2f}x (warm: {b['ratio_warm_cache']:.0f}x) | {goal('b')} | "
                     f"{100 * b['naive_acc']:.1f}% / {100 * b['ours_acc']:.1f}% (agree {100 * b['prediction_agreement']:.1f}%) "
                     f"| {b['load']} |")
    if "c" in p:
        c = p["c"]
        accs = ", ".join(f"{k} {100 * v['acc']:.1f}%" for k, v in c["sweep"].items())
        nc = f"; without cache {c['sweep_no_cache_s']:.1f} s ({c['ratio_no_cache']:.2f}x)" if "sweep_no_cache_s" in c else ""
        lines.append(f"| c. embed sweep of 4 vs logreg alone | 1 classifier: {c['single_s']:.1f} s | "
                     f"4 classifiers, cached: {c['sweep_s']:.1f} s{nc} | {c['ratio']:.2f}x | {goal('c')} | "
                     f"{accs} | |")
    if "d" in p:
        d = p["d"]
        lines.append(f"| d. finetune training, {d['train_sequences']} sequences | Trainer (batch {d['trainer_batch_size']}): "
                     f"{d['naive_seq_s']:.2f} seq/s | loop (batch {d['ours_batch_size']} as micro-batches of {d.get('ours_micro_batch_size') or d['ours_batch_size']}): {d['ours_seq_s']:.2f} seq/s | "
                     f"{d['ratio']:.2f}x | {goal('d')} | (throughput only) | {d['load']} |")
    if "e" in p:
        e = p["e"]
        lines += ["", f"Knobs on the extraction path ({e['texts']} texts):", "",
                  "| variant | seq/s | min cosine vs fp32 |", "| --- | --- | --- |"]
        for k, v in e.items():
            if isinstance(v, dict):
                extra = f" (first pass incl. compile {v['first_pass_s']:.0f} s)" if "first_pass_s" in v else ""
                cos = "n/a" if v.get("min_cosine") is None else f"{v['min_cosine']:.4f}"
                lines.append(f"| {k} | {v['seq_s']:.1f}{extra} | {cos} |" if "seq_s" in v
                             else f"| {k} | {v['error']} | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "imdb"), help="folder with train/test.parquet")
    ap.add_argument("--n", type=int, default=256, help="training texts (parts a-c)")
    ap.add_argument("--n-test", type=int, default=256, help="test texts for accuracies (parts b, c)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=5, help="freeze head epochs (part b)")
    ap.add_argument("--ft-n", type=int, default=128, help="fine-tuning training sequences (part d)")
    ap.add_argument("--trainer-batch-size", type=int, default=8, help="Trainer's per-device default is 8")
    ap.add_argument("--knob-n", type=int, default=128, help="texts for the knob measurements (part e)")
    ap.add_argument("--parts", default="abcd", help="which parts to run, e.g. ab; add e for the knobs")
    ap.add_argument("--knobs", action="store_true", help="also run part e")
    ap.add_argument("--no-cache-sweep", action="store_true", help="part c: also time the sweep without the cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    parts = args.parts + ("e" if args.knobs and "e" not in args.parts else "")
    started = datetime.datetime.now()
    # named by the start (to the minute) and the parts; checked now, not after the benchmark's minutes
    stem = result_stem(Path(args.out), f"speed-{started:%Y-%m-%dT%H%M}" + ("" if parts == "abcd" else f"-{parts}"))

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_threads()
    data = Path(args.data)
    cfg = compose([f"model.max_length={args.max_length}"])
    spec = ModelSpec.from_config(cfg.model)
    device = torch.device("cpu")
    ctx = {
        "spec": spec, "max_length": args.max_length, "device": device, "precision": resolve_precision("auto", device),
        "tok": load_tokenizer(spec), "model": load_encoder(spec).eval(), "seed": args.seed, "epochs": args.epochs,
        "ft_n": args.ft_n, "trainer_batch_size": args.trainer_batch_size, "knob_n": args.knob_n,
        "no_cache_sweep": args.no_cache_sweep,
        "train": subset(data / "train.parquet", args.n, args.seed),
        "test": subset(data / "test.parquet", args.n_test, args.seed),
        "overrides": [f"model.max_length={args.max_length}", "device=cpu", "precision=auto"],
        "freeze_cfg": compose(["strategy=freeze"]).strategy,
    }
    # the framework's default encoder batch (null in conf = auto for this device)
    ctx["batch_size"] = auto_batch_size(ctx["freeze_cfg"].encode_batch_size, "encode", device)
    lengths = [len(x) for x in ctx["tok"](ctx["train"].texts, truncation=True, max_length=args.max_length)["input_ids"]]
    res = {
        "meta": {
            "date": started.date().isoformat(), "started": started.isoformat(timespec="seconds"), "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "precision": ctx["precision"], "max_length": args.max_length, "model": spec.name,
            "attention": ctx["model"].config._attn_implementation, "encode_batch_size": ctx["batch_size"],
            "mean_tokens": float(np.mean(lengths)), "truncated_fraction": float(np.mean(np.array(lengths) >= args.max_length)),
        },
        "goals": {k: f"{op} {v}x" for k, (_, op, v) in GOALS.items()},
        "parts": {},
    }
    try:
        res["meta"]["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for key, fn in (("a", part_a), ("b", part_b), ("c", part_c), ("d", part_d), ("e", part_e)):
        if key in parts:
            print(f"part {key} …", flush=True)
            res["parts"][key] = fn(ctx)
            print(json.dumps(res["parts"][key], indent=1, default=float), flush=True)
    for key, (_, op, goal) in GOALS.items():
        if key in res["parts"]:
            r = res["parts"][key]["ratio"]
            res["parts"][key]["goal_met"] = bool(r >= goal if op == ">=" else r <= goal)

    md = markdown(res)
    write_new(stem, ".json", json.dumps(res, indent=1, default=float) + "\n")
    write_new(stem, ".md", md)
    print("\n" + md)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
