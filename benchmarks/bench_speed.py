"""Side-by-side speed benchmark: the naive Hugging Face recipe vs transfer-bench's path, in one process.

    python benchmarks/bench_speed.py --data ../shared/datasets/imdb --n 256 --max-length 512

Parts (--parts, default all):
  a  encoder feature extraction: pad every text to max_length, fp32, batch 32, input order
     vs extract_features (length-bucketed dynamic padding, precision=auto); and the expert peer,
     sentence-transformers' encode() (sorts by length itself) in fp32 and bf16 at several batch sizes
  b  freeze end to end (head epochs, then test predictions): the frozen encoder re-run every epoch, padded
     fp32 vs FreezeStrategy (features once) — plus FreezeStrategy again on a warm feature cache
  c  an embed sweep of 4 scikit-learn classifiers (logreg, svm, mlp, random_forest) through the feature
     cache vs one classifier alone; and the same sweep without the cache
  d  fine-tuning training throughput: transformers Trainer defaults (AutoModelForSequenceClassification,
     padding to max_length, fp32, batch 8) vs FineTuneStrategy's loop (length-bucketed, precision=auto); and
     the expert Trainer (bf16, group_by_length sampling, dynamic padding; batch 4 x 4 accumulation and 16).
     Accuracy parity: the expert Trainer and the loop trained on the same --parity-n reviews for one epoch at
     the same learning rate and schedule, scored on the same --parity-test reviews (McNemar)
  e  (--knobs) other knobs: encoder batch size, threads, torch.compile, int8 dynamic quantisation, the
     tokeniser's share, and training forward+backward in micro-batches
  p  (--profile) where the time of ours goes: torch.profiler over one extraction pass and one fine-tuning
     epoch, the share of each kind of op (attention, linear layers, dropout masks, …) and the GFLOP/s of the
     linear layers and of attention

Every timing is the median of --repeats runs (min and max kept) with the machine's 1-minute load average:
on a shared machine, compare ratios taken at low load. The bf16 and fp32 matmul peaks are measured in the
same run, and each path gets a roofline column: its useful GFLOP/s (flops() below) and the share of the bf16
peak.

Writes benchmarks/results/speed-<date>T<time>[-<parts>].json and .md (the start, to the minute; an existing result
is never overwritten). Timings exclude model loading (both sides have the
model in memory); everything else (tokenising, padding, head training, prediction) is timed."""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_gpu import (  # noqa: E402 — one naming rule for every result file; bench_gpu's random BERT-base
    build_model_folder,
    result_stem,
    slug,
    tokenizer_source,
    write_new,
)

from experiments.bundle import build_strategy  # noqa: E402
from experiments.config import compose  # noqa: E402
from strategies.backbone import (  # noqa: E402
    ModelSpec,
    attention_dropout_overrides,
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

GOALS = {  # part -> (result field, what, op, value). Issue 3 (vs naive defaults), on a 2-core CPU at 512 tokens
    "a": [("ratio", "extraction throughput vs naive", ">=", 4.0),
          # issue 15: vs the expert peer's best setting, and the share of the bf16 matmul peak
          ("ratio_vs_expert", "extraction vs sentence-transformers' best", ">=", 1.5),
          ("ours_of_bf16_peak", "extraction share of the bf16 matmul peak", ">=", 0.75)],
    "b": [("ratio", "freeze end to end, speed-up vs naive", ">=", 5.0)],
    "c": [("ratio", "embed sweep of 4 / one classifier (time)", "<=", 1.3)],
    "d": [("ratio", "finetune training throughput vs Trainer", ">=", 2.5),
          ("ratio_vs_expert", "finetune throughput vs the expert Trainer's best", ">=", 2.0),
          ("ours_of_bf16_peak", "finetune share of the bf16 matmul peak", ">=", 0.5)],
}
CLASSIFIERS = ("logreg", "svm", "mlp", "random_forest")


# ----------------------------------------------------------------------------- helpers
def subset(path: Path, n: int, seed: int) -> Split:
    """A balanced, seeded sample of n reviews."""
    df = pd.read_parquet(path, columns=["text", "label"])
    df = df.groupby("label", group_keys=False).sample(n // 2, random_state=seed).sample(frac=1, random_state=seed)
    return Split(df.text.tolist(), np.array(df.label, dtype=np.int64))  # a writable copy


def sync() -> None:
    """A CUDA timing must wait for the queued kernels; on CPU there is nothing to wait for."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        sync()  # GPU work queued by an untimed setup (moving a model over) is not this timing's
        self.load0, self.t0 = os.getloadavg()[0], time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        self.s = time.perf_counter() - self.t0
        self.load = round(max(self.load0, os.getloadavg()[0]), 2)  # flags timings taken on a busy machine


def repeat(fn, n: int, setup=None):
    """fn() n times (fn(setup()) with an untimed setup, e.g. a fresh model): (its last result, {median_s,
    min_s, max_s, load, repeats})."""
    times, load, out = [], 0.0, None
    for _ in range(n):
        state = setup() if setup else None
        with Timer() as t:
            out = fn(state) if setup else fn()
        times.append(t.s)
        load = max(load, t.load)
    return out, {"median_s": float(np.median(times)), "min_s": min(times), "max_s": max(times), "load": load,
                 "repeats": n}


def flops(config, lengths, training: bool = False, term: str = "all") -> float:
    """Useful FLOPs of one encoder pass over texts of these token lengths; padding is not counted, so padded
    paths score lower. Per layer, for a text of n tokens, hidden size d and feed-forward size f:
        2·n·(4·d² + 2·d·f)   the Q, K, V and output projections and the two feed-forward matmuls
                             (2 FLOPs per multiply-add)
      + 4·n²·d               attention's Q·Kᵀ and A·V over the text's n tokens
    Embeddings, LayerNorm, softmax, GELU, the pooler and the head are left out (memory-bound, < 2%).
    Training counts 3x the forward (the backward computes gradients for inputs and weights: 2x).
    term: "all", or one of the two terms ("linear", "attention"), for the profile's per-kernel GFLOP/s."""
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    linear, attention = 2 * n * (4 * d * d + 2 * d * f), 4 * n * n * d
    per_text = {"all": linear + attention, "linear": linear, "attention": attention}[term]
    total = layers * float(np.sum(per_text))
    return 3 * total if training else total


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048, 4096), repeats: int = 5, device: str = "cpu") -> dict:
    """The machine's dense matmul rate in GFLOP/s: the best median over square sizes (2·n³ FLOPs each)."""
    rates = {}
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        torch.matmul(a, b)  # warm-up: oneDNN (cuBLAS) picks its kernel
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            sync()
            times.append(time.perf_counter() - t0)
        rates[n] = 2 * n**3 / float(np.median(times)) / 1e9
    return {"gflops": max(rates.values()), "by_size": rates}


def roofline(flop: float, seconds: float, peak: dict) -> dict:
    achieved = flop / seconds / 1e9
    return {"gflops": achieved, "of_bf16_peak": achieved / peak["bf16"]["gflops"],
            "of_fp32_peak": achieved / peak["fp32"]["gflops"]}


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
def sentence_transformer(ctx, dtype: torch.dtype):
    """The expert peer for extraction: sentence-transformers on the same weights (its modules.json: mean
    pooling, then L2 normalisation, which cosine comparisons ignore)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(ctx["spec"].resolve_path()), device="cpu")
    st.max_seq_length = ctx["max_length"]
    return st.to(dtype).eval()


def ours_extractor(ctx):
    """texts -> features on our path: the encoder as embed/freeze hold it (under bf16: weights cast once, see
    EncoderStrategy.encoder) through extract_features at the framework's batch size and precision."""
    frozen = build_strategy(compose(ctx["overrides"] + ["strategy=embed"]).strategy, 2).encoder
    return lambda ts: extract_features(frozen, ctx["tok"], ts, max_length=ctx["max_length"], pooling="mean",
                                       batch_size=ctx["batch_size"], device=ctx["device"], precision=ctx["precision"])


def part_a(ctx) -> dict:
    model, tok, texts, L, R = ctx["model"], ctx["tok"], ctx["train"].texts, ctx["max_length"], ctx["repeats"]
    work = flops(model.config, ctx["lengths"])
    paths = {}  # name -> (features, timing)

    def path(name, fn):
        fn_small = fn(texts[:4])  # warm-up (one-time allocations) for every path
        del fn_small
        feats, timing = repeat(lambda: fn(texts), R)
        paths[name] = (feats, timing)

    path("naive", lambda ts: naive_features(model, tok, ts, L))
    path("ours", ours_extractor(ctx))
    for dtype, batches in ((torch.float32, (32,)), (torch.bfloat16, ctx["st_batch_sizes"])):
        st = sentence_transformer(ctx, dtype)
        for b in batches:
            path(f"sentence-transformers {str(dtype).split('.')[1]} b{b}",
                 lambda ts, st=st, b=b: st.encode(ts, batch_size=b, show_progress_bar=False, convert_to_numpy=True))
        del st
    ref, ours = paths["naive"][0], paths["ours"][0]
    ctx["naive_train_features"] = ref  # part b's naive head uses its standardiser statistics (untimed)
    n = len(texts)
    rows = {name: t | {"seq_s": n / t["median_s"], "min_cosine_vs_naive": cosine(ref, f)}
            | roofline(work, t["median_s"], ctx["peak"]) for name, (f, t) in paths.items()}
    experts = {k: v for k, v in rows.items() if k.startswith("sentence-transformers")}
    best = max(experts, key=lambda k: experts[k]["seq_s"])
    return {
        "texts": n, "useful_gflop": work / 1e9, "paths": rows, "expert_best": best,
        "naive_s": rows["naive"]["median_s"], "ours_s": rows["ours"]["median_s"],
        "naive_seq_s": rows["naive"]["seq_s"], "ours_seq_s": rows["ours"]["seq_s"],
        "ratio": rows["naive"]["median_s"] / rows["ours"]["median_s"],
        "ratio_vs_expert": experts[best]["median_s"] / rows["ours"]["median_s"],
        "ours_of_bf16_peak": rows["ours"]["of_bf16_peak"],
        "min_cosine_vs_naive": cosine(ref, ours), "load": max(r["load"] for r in rows.values()),
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
    epochs, seed, test, R = ctx["epochs"], ctx["seed"], ctx["test"], ctx["repeats"]
    naive = [naive_freeze(ctx, epochs, seed) for _ in range(R)]
    naive_s, naive_pred = float(np.median([t.s for t, _ in naive])), naive[-1][1]
    naive_load = max(t.load for t, _ in naive)
    with tempfile.TemporaryDirectory() as cache_dir:
        def ours(cache: bool):
            cfg = compose(ctx["overrides"] + ["strategy=freeze", f"strategy.epochs={epochs}", f"cache={str(cache).lower()}",
                                              f"cache_dir={cache_dir}", f"seed={seed}"])

            def setup():
                strategy = build_strategy(cfg.strategy, 2)
                strategy.prepare()  # model loading is not timed, on either side
                torch.manual_seed(seed)
                return strategy

            def run(strategy):
                strategy.fit(ctx["train"])
                return strategy, strategy.predict(test.texts)
            return setup, run

        setup, run = ours(False)
        (_, pred), t = repeat(run, R, setup=setup)
        setup, run = ours(True)
        run(setup())  # fills the cache (untimed); the timed runs hit it
        (warm, pred_w), tw = repeat(run, R, setup=setup)
    acc = lambda p: float(np.mean(p == test.labels))  # noqa: E731
    return {
        "train": len(ctx["train"]), "test": len(test), "head_epochs": epochs, "repeats": R,
        "naive_s": naive_s, "ours_s": t["median_s"], "ours_warm_cache_s": tw["median_s"],
        "warm_cache_state": warm.fit_report().feature_cache,
        "ratio": naive_s / t["median_s"], "ratio_warm_cache": naive_s / tw["median_s"],
        "naive_acc": acc(naive_pred), "ours_acc": acc(pred), "ours_warm_cache_acc": acc(pred_w),
        "prediction_agreement": float(np.mean(naive_pred == pred)), "load": max(naive_load, t["load"]),
    }


def part_c(ctx) -> dict:
    train, test, R = ctx["train"], ctx["test"], ctx["repeats"]

    def run(clf: str, cache_dir: str, cache: bool = True) -> tuple[float, float, str]:
        cfg = compose(ctx["overrides"] + ["strategy=embed", f"classifier={clf}", f"cache={str(cache).lower()}",
                                          f"cache_dir={cache_dir}", f"seed={ctx['seed']}"])
        strategy = build_strategy(cfg.strategy, 2)
        strategy.prepare()
        with Timer() as t:
            strategy.fit(train)
            pred = strategy.predict(test.texts)
        return t.s, float(np.mean(pred == test.labels)), strategy.fit_report().feature_cache

    def cold(fn):  # fn(cache_dir) on an empty feature cache
        with tempfile.TemporaryDirectory() as d:
            return fn(d)

    out = {"train": len(train), "test": len(test), "classifiers": list(CLASSIFIERS), "repeats": R}
    singles = [cold(lambda d: run("logreg", d)) for _ in range(R)]  # one extraction each
    sweeps = [cold(lambda d: {clf: run(clf, d) for clf in CLASSIFIERS}) for _ in range(R)]  # cold, then hits
    out["single_s"], out["single_acc"] = float(np.median([s for s, _, _ in singles])), singles[-1][1]
    out["sweep_s"] = float(np.median([sum(s for s, _, _ in sw.values()) for sw in sweeps]))
    out["sweep"] = {c: {"s": s, "acc": a, "feature_cache": st} for c, (s, a, st) in sweeps[-1].items()}
    out["ratio"] = out["sweep_s"] / out["single_s"]
    if ctx["no_cache_sweep"]:
        nocache = [{clf: run(clf, "unused", cache=False) for clf in CLASSIFIERS} for _ in range(R)]
        out["sweep_no_cache_s"] = float(np.median([sum(s for s, _, _ in nc.values()) for nc in nocache]))
        out["no_cache_acc"] = {c: a for c, (_, a, _) in nocache[-1].items()}
        out["ratio_no_cache"] = out["sweep_no_cache_s"] / out["single_s"]
    return out


def as_rows(enc, labels) -> list[dict]:
    """Tokenised texts as a list of per-example dicts: a dataset Trainer takes (its length-grouped sampler
    reads each row's input_ids), without the datasets package, which a bare GPU machine may lack."""
    return [{k: v[i] for k, v in enc.items()} | {"labels": int(y)} for i, y in enumerate(labels)]


def trainer_run(ctx, train: Split, *, expert: bool, batch: int, accumulation: int = 1, epochs: int = 1,
                lr: float = 5e-5, warmup_ratio: float = 0.0, weight_decay: float = 0.0, logging_steps: int = 0,
                attention_dropout: float | None = None):
    """(setup, run) for a transformers Trainer fine-tuning AutoModelForSequenceClassification. Naive: its
    defaults, every text padded to max_length, fp32. Expert: bf16, length-grouped sampling, dynamic padding."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tok, L, seed = ctx["tok"], ctx["max_length"], ctx["seed"]
    enc = tok(train.texts, truncation=True, max_length=L, **({} if expert else {"padding": "max_length"}))
    data = as_rows(enc, train.labels)
    out_dir = tempfile.mkdtemp(prefix="bench-trainer-")  # save_strategy="no": nothing is written there
    atexit.register(shutil.rmtree, out_dir, True)
    args = TrainingArguments(
        output_dir=out_dir, num_train_epochs=epochs, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, learning_rate=lr, warmup_steps=float(warmup_ratio),  # v5: a float is a ratio
        weight_decay=weight_decay, report_to=[], save_strategy="no",
        logging_strategy="steps" if logging_steps else "no", logging_steps=logging_steps or 500,
        disable_tqdm=True, use_cpu=ctx["device"].type == "cpu", seed=seed, per_device_eval_batch_size=32,
        **({"bf16": True, "train_sampling_strategy": "group_by_length"} if expert else {}),
    )
    collator = DataCollatorWithPadding(tok) if expert else None

    def setup():
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton: fp32 vs bf16 Trainers
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            ctx["spec"].resolve_path(), num_labels=2, use_safetensors=True,
            **attention_dropout_overrides(ctx["spec"], attention_dropout))
        return Trainer(model=model, args=args, train_dataset=data, data_collator=collator)

    def run(trainer):
        trainer.train()
        return trainer

    return setup, run


def ours_run(ctx, train: Split, epochs: int = 1, *extra: str):
    """(setup, run) for FineTuneStrategy's loop at its preset (length-bucketed batches of 16 in micro-batches,
    precision=auto), plus any extra overrides. Per-epoch training losses are collected in `losses`."""
    cfg = compose(ctx["overrides"] + ["strategy=finetune", f"strategy.epochs={epochs}", f"seed={ctx['seed']}", *extra])

    def setup():
        strategy = build_strategy(cfg.strategy, 2)
        strategy.prepare()  # model loading is not timed, on either side
        torch.manual_seed(ctx["seed"])
        strategy.losses = []
        return strategy

    def run(strategy):
        strategy.fit(train, on_epoch=lambda epoch, scalars, proba: strategy.losses.append(scalars["train_loss"]))
        return strategy

    return cfg.strategy, setup, run


def part_d(ctx) -> dict:
    n, R = ctx["ft_n"], ctx["repeats"]
    train = Split(ctx["train"].texts[:n], ctx["train"].labels[:n])
    n = len(train.texts)  # --ft-n above --n: only n texts were sampled
    work = flops(ctx["model"].config, ctx["lengths"][:n], training=True)
    cfg, setup, run = ours_run(ctx, train)
    ours_name = f"ours (batch {cfg.batch_size}, attention dropout {cfg.attention_dropout})"
    paths = {
        f"Trainer defaults (batch {ctx['trainer_batch_size']})": trainer_run(ctx, train, expert=False,
                                                                             batch=ctx["trainer_batch_size"]),
        "Trainer expert (batch 4 x 4 accumulation)": trainer_run(ctx, train, expert=True, batch=4, accumulation=4),
        "Trainer expert (batch 16)": trainer_run(ctx, train, expert=True, batch=16),
        # the expert Trainer with the loop's attention-dropout recipe: how much of the gap is that recipe alone
        "Trainer expert (batch 4 x 4, attention dropout 0)": trainer_run(ctx, train, expert=True, batch=4, accumulation=4,
                                                                          attention_dropout=0.0),
        "Trainer expert (batch 16, attention dropout 0)": trainer_run(ctx, train, expert=True, batch=16,
                                                                      attention_dropout=0.0),
        ours_name: (setup, run),
    }
    if cfg.attention_dropout is not None:  # the preset's recipe vs the model's own attention dropout
        own_cfg, *own = ours_run(ctx, train, 1, "strategy.attention_dropout=null")
        paths[f"ours (batch {own_cfg.batch_size}, the model's attention dropout)"] = tuple(own)
    rows = {}
    for name, (setup_fn, run_fn) in paths.items():
        print(f"  {name} …", flush=True)
        _, t = repeat(run_fn, R, setup=setup_fn)
        rows[name] = t | {"seq_s": n / t["median_s"]} | roofline(work, t["median_s"], ctx["peak"])
    naive, ours = rows[next(iter(rows))], rows[ours_name]
    experts = {k: v for k, v in rows.items() if "expert" in k and "attention dropout 0" not in k}  # the settings
    best = max(experts, key=lambda k: experts[k]["seq_s"])
    same = [v for k, v in rows.items() if "attention dropout 0" in k and k.startswith("Trainer")]
    same_recipe = min(same, key=lambda r: r["median_s"]) if same else None  # the faster of the two batchings
    out = {
        "ratio_vs_expert_same_recipe": same_recipe["median_s"] / ours["median_s"] if same_recipe else None,
        "train_sequences": n, "useful_gflop": work / 1e9, "paths": rows, "expert_best": best,
        "trainer_batch_size": ctx["trainer_batch_size"], "ours_batch_size": cfg.batch_size,
        "ours_micro_batch_size": setup().micro_batch_size, "ours_attention_dropout": cfg.attention_dropout,
        "naive_s": naive["median_s"], "ours_s": ours["median_s"], "naive_seq_s": naive["seq_s"],
        "ours_seq_s": ours["seq_s"], "ratio": naive["median_s"] / ours["median_s"],
        "ratio_vs_expert": experts[best]["median_s"] / ours["median_s"], "ours_of_bf16_peak": ours["of_bf16_peak"],
        "load": max(r["load"] for r in rows.values()),
    }
    if ctx["parity_n"]:
        out["parity"] = parity(ctx, cfg)
    return out


def parity(ctx, cfg) -> dict:
    """Same accuracy, not only speed: the expert Trainer (batch 16, the model's own dropout) and the loop at its
    preset fine-tune on the same reviews for --parity-epochs at the preset's learning rate, warm-up and weight
    decay, and predict the same test reviews. Parity holds when McNemar's test finds no difference at 5% or the
    loop is the more accurate."""
    from experiments.compare import mcnemar

    train = subset(ctx["data"] / "train.parquet", ctx["parity_n"], ctx["seed"] + 1)  # not the timed texts
    test = subset(ctx["data"] / "test.parquet", ctx["parity_test"], ctx["seed"] + 1)
    # batch 16 without accumulation: the loop's batch, and Trainer logs the plain per-step loss
    epochs = ctx["parity_epochs"]
    setup, run = trainer_run(ctx, train, expert=True, batch=cfg.batch_size, epochs=epochs, lr=cfg.lr,
                             warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, logging_steps=1)
    trainer = run(setup())
    enc = ctx["tok"](test.texts, truncation=True, max_length=ctx["max_length"])
    # transformers 5 applies group_by_length to evaluation too and returns predictions in that order: predict
    # in input order, and check it by the labels that come back.
    trainer.args.train_sampling_strategy = "random"
    out = trainer.predict(as_rows(enc, test.labels))
    if not np.array_equal(out.label_ids, test.labels):
        raise RuntimeError("Trainer.predict returned the test reviews out of order")
    trainer_pred = out.predictions.argmax(-1)
    trainer_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    _, setup, run = ours_run(ctx, train, epochs)
    strategy = run(setup())
    ours_pred = strategy.predict(test.texts)
    ok_t, ok_o = trainer_pred == test.labels, ours_pred == test.labels
    p, _ = mcnemar(int(np.sum(ok_o & ~ok_t)), int(np.sum(ok_t & ~ok_o)))
    acc_t, acc_o = float(ok_t.mean()), float(ok_o.mean())
    return {
        "train": len(train), "test": len(test), "epochs": epochs, "lr": cfg.lr, "ours_head_lr": cfg.head_lr,
        "ours_attention_dropout": cfg.attention_dropout,
        "trainer_acc": acc_t, "ours_acc": acc_o, "mcnemar_p": p,
        # the last epoch's mean training loss on each side
        "trainer_last_epoch_loss": float(np.mean(trainer_losses[-len(trainer_losses) // epochs:])),
        "ours_last_epoch_loss": strategy.losses[-1],
        "parity_met": bool(p >= 0.05 or acc_o >= acc_t),
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


# Where the time goes: profiler ops by kind (the first group whose substring is in the op's name wins). SDPA's
# fused CPU kernel and its backward carry "flash_attention"; math attention falls back to bmm and softmax.
OP_GROUPS = (
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "aten::_softmax", "aten::softmax",
                   "aten::bmm", "aten::baddbmm")),  # not the loss's log_softmax
    ("linear layers", ("addmm", "aten::mm", "aten::matmul", "aten::linear")),
    ("dropout masks", ("bernoulli", "dropout")),
    ("layer norm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("optimizer", ("adam", "_foreach")),
    ("casts and copies", ("aten::to", "_to_copy", "copy_", "contiguous", "clone")),
    ("elementwise (add, mul, …)", ("aten::add", "aten::mul", "aten::div", "aten::sub", "aten::where")),
)


def op_group(name: str) -> str:
    return next((group for group, keys in OP_GROUPS if any(k in name for k in keys)), "other")


def profiled(fn, config, lengths, training: bool) -> dict:
    """fn() once under torch.profiler: each op group's share of the ops' self CPU time (tokenising and Python
    between ops are outside it), and the GFLOP/s of the linear layers and of attention (useful FLOPs of
    flops()'s two terms over the group's time). The profiler adds overhead: read the shares and the rates."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, Timer() as t:
        fn()
    seconds: dict[str, float] = {}
    for e in prof.key_averages():
        g = op_group(e.key)
        seconds[g] = seconds.get(g, 0.0) + e.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    out = {"wall_s": t.s, "self_cpu_s": total, "load": t.load,
           "groups": {g: {"s": v, "share": v / total} for g, v in sorted(seconds.items(), key=lambda kv: -kv[1])}}
    for term, group in (("linear", "linear layers"), ("attention", "attention")):
        if seconds.get(group):
            out[f"{term}_gflops"] = flops(config, lengths, training, term) / seconds[group] / 1e9
    return out


def part_p(ctx) -> dict:
    """(--profile) Where the time of ours goes: one extraction pass over the --n texts and one fine-tuning
    epoch over --ft-n sequences, each under the profiler after a warm-up."""
    texts, config = ctx["train"].texts, ctx["model"].config
    extract = ours_extractor(ctx)
    extract(texts)  # warm-up: oneDNN builds a kernel per (batch, length) shape on first sight
    out = {"extraction": profiled(lambda: extract(texts), config, ctx["lengths"], training=False) | {"texts": len(texts)}}
    n = ctx["ft_n"]
    train = Split(texts[:n], ctx["train"].labels[:n])
    _, setup, run = ours_run(ctx, train)
    run(setup())  # warm-up epoch: first-step allocations, oneDNN kernel choices
    strategy = setup()
    out["training"] = profiled(lambda: run(strategy), config, ctx["lengths"][:n], training=True) | {"sequences": n}
    return out


# ----------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"# Speed benchmark, {m['date']}",
        "",
        f"`{m['command']}`",
        "",
        (f"{m['device']} (CUDA {m['cuda']}; host: {m['cpu']}, {m['cores']} cores), " if m.get("device", "cpu") != "cpu"
         else f"{m['cpu']}, {m['cores']} cores, ")
        + f"model {m['model']}"
        + (" ({num_hidden_layers} layers, {hidden_size} wide, {num_attention_heads} heads, FFN {intermediate_size})"
           .format(**m["model_config"]) if "model_config" in m else "")
        + f", torch {m['torch']}, transformers {m['transformers']}, "
        f"precision=auto → {m['precision']}, max_length {m['max_length']}, threads {m['threads']}, "
        f"{m['attention']} attention, encoder batch {m['encode_batch_size']}; IMDb texts average "
        f"{m['mean_tokens']:.0f} tokens, {100 * m['truncated_fraction']:.0f}% truncated. "
        "Timings exclude model loading. `load` = the machine's 1-minute load average during the part "
        "(above the core count means other processes competed for the CPU).",
    ]
    if "matmul_peak" in m:
        pk = m["matmul_peak"]
        lines += ["", f"Matmul peak measured in this run (best median over square sizes): bf16 "
                  f"{pk['bf16']['gflops']:.0f} GFLOP/s, fp32 {pk['fp32']['gflops']:.0f} GFLOP/s. Every timing of parts "
                  f"a-d is the median of {m['repeats']} runs. GFLOP/s count useful work only (`flops()` in the "
                  "script: no padding, 3x the forward for training)."]
    p = res["parts"]
    if set(p) & set(GOALS):
        lines += ["", "| part | naive | transfer-bench | ratio | goal | accuracy (naive / ours) | load |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]

    def goal(key: str, field: str = "ratio") -> str:
        met = p[key].get("goals_met", {}).get(field)
        text = res["goals"][key][field] + ("x" if field.startswith("ratio") else "")
        return text + ("" if met is None else " met" if met else " **not met**")

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
    for key, title in (("a", "Extraction"), ("d", "Fine-tuning training")):
        if key in p and "paths" in p[key]:
            x = p[key]
            lines += ["", f"{title}: every path, against the expert peer and the machine ({x['useful_gflop']:.0f} "
                      "useful GFLOP per pass).", "",
                      "| path | seq/s (median) | min / max s | GFLOP/s | of bf16 peak | of fp32 peak | load |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for name, r in x["paths"].items():
                lines.append(f"| {name} | {r['seq_s']:.2f} | {r['min_s']:.1f} / {r['max_s']:.1f} | {r['gflops']:.0f} | "
                             f"{100 * r['of_bf16_peak']:.0f}% | {100 * r['of_fp32_peak']:.0f}% | {r['load']} |")
            lines += ["", f"- vs the expert's best ({x['expert_best']}): **{x['ratio_vs_expert']:.2f}x**, goal "
                      f"{goal(key, 'ratio_vs_expert')}",
                      f"- share of the bf16 peak: **{100 * x['ours_of_bf16_peak']:.0f}%**, goal "
                      f"{goal(key, 'ours_of_bf16_peak')}"]
            if x.get("ratio_vs_expert_same_recipe"):
                lines.append(f"- vs the expert Trainer given the loop's attention dropout 0 (same recipe, loop vs loop; its faster batching): "
                             f"{x['ratio_vs_expert_same_recipe']:.2f}x")
            if "parity" in x:
                q = x["parity"]
                lines.append(f"- accuracy parity ({q['train']} train / {q['test']} test reviews, {q['epochs']} epochs, "
                             f"lr {q['lr']}): expert Trainer {100 * q['trainer_acc']:.1f}%, ours "
                             f"{100 * q['ours_acc']:.1f}% (McNemar p = {q['mcnemar_p']:.3f}); last epoch's mean "
                             f"training loss {q['trainer_last_epoch_loss']:.3f} vs {q['ours_last_epoch_loss']:.3f}; parity "
                             + ("holds" if q["parity_met"] else "**fails**")
                             + " (tolerance: no significant difference at 5%, or ours more accurate)")
    if "p" in p:
        x = p["p"]
        ex, tr = x["extraction"], x["training"]
        lines += ["", f"Profile of ours (`--profile`, one profiled pass each after a warm-up): share of the ops' self CPU "
                  f"time by kind of op (tokenising and Python between ops are outside it), one extraction pass over "
                  f"{ex['texts']} texts and one fine-tuning epoch over {tr['sequences']} sequences (load "
                  f"{ex['load']} / {tr['load']}).", "", "| ops | extraction | training |", "| --- | --- | --- |"]
        for g in dict.fromkeys([*ex["groups"], *tr["groups"]]):
            cells = [f"{100 * r['groups'][g]['share']:.0f}%" if g in r["groups"] else "-" for r in (ex, tr)]
            lines.append(f"| {g} | {' | '.join(cells)} |")
        rate = lambda r, k: f"{r[k]:.0f}" if k in r else "-"  # noqa: E731
        lines += [f"| GFLOP/s of the linear layers | {rate(ex, 'linear_gflops')} | {rate(tr, 'linear_gflops')} |",
                  f"| GFLOP/s of attention | {rate(ex, 'attention_gflops')} | {rate(tr, 'attention_gflops')} |"]
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
    ap.add_argument("--ft-n", type=int, help="fine-tuning training sequences (part d; default 128, on cuda 1024)")
    ap.add_argument("--trainer-batch-size", type=int, default=8, help="Trainer's per-device default is 8")
    ap.add_argument("--knob-n", type=int, default=128, help="texts for the knob measurements (part e)")
    ap.add_argument("--parts", default="abcd", help="which parts to run, e.g. ab; add e for the knobs")
    ap.add_argument("--knobs", action="store_true", help="also run part e")
    ap.add_argument("--profile", action="store_true", help="also run part p: where the time of ours goes, by kind of op")
    ap.add_argument("--no-cache-sweep", action="store_true", help="part c: also time the sweep without the cache")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per path; the median is reported")
    ap.add_argument("--st-batch-sizes", default="8,16,32,64", help="sentence-transformers bf16 batch sizes (part a)")
    ap.add_argument("--parity-n", type=int, default=512, help="part d's accuracy parity: training reviews (0 = skip)")
    ap.add_argument("--parity-test", type=int, default=500, help="part d's accuracy parity: test reviews")
    ap.add_argument("--parity-epochs", type=int, default=3, help="part d's accuracy parity: epochs (the preset's 3)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: part d (the Trainer vs the loop) on the GPU, against the GPU's own matmul peak")
    ap.add_argument("--model-dir", help="a local model folder instead of the packaged MiniLM (its hash is not checked)")
    ap.add_argument("--random-bert-base", action="store_true",
                    help="a random-weight BERT-base (12 layers, 768 wide) with MiniLM's tokenizer: speed only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU here")
    if args.device == "cuda" and set(args.parts) - {"d"}:
        ap.error("--device cuda runs part d only (the others measure CPU paths): add --parts d")
    if args.model_dir and args.random_bert_base:
        ap.error("--model-dir and --random-bert-base exclude each other")
    if args.device == "cuda" and torch.cuda.device_count() > 1:  # the Trainer would spread over all of them
        ap.error("--device cuda measures one GPU: set CUDA_VISIBLE_DEVICES to one of them")
    if args.ft_n is None:
        args.ft_n = 1024 if args.device == "cuda" else 128
    if args.device == "cuda" and args.n != args.ft_n:
        print(f"--device cuda: --n {args.n} -> {args.ft_n} (part d times the first --ft-n of --n texts)", flush=True)
        args.n = args.ft_n
    parts = args.parts + "".join(k for k, on in (("e", args.knobs), ("p", args.profile)) if on and k not in args.parts)
    started = datetime.datetime.now()
    # named by the start (to the minute) and the parts; checked now, not after the benchmark's minutes
    model_tag = "-bert-base-random" if args.random_bert_base else "-model-dir" if args.model_dir else ""
    device_tag = f"-{slug(torch.cuda.get_device_name())}" if args.device == "cuda" else ""
    stem = result_stem(Path(args.out), f"speed-{started:%Y-%m-%dT%H%M}" + ("" if parts == "abcd" else f"-{parts}")
                       + device_tag + model_tag)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()  # each Trainer's fresh head would print a load report
    set_threads()
    data = Path(args.data)
    model_overrides = [f"model.max_length={args.max_length}"]
    if args.random_bert_base:
        folder = Path(tempfile.mkdtemp(prefix="bench-bert-base-"))
        atexit.register(shutil.rmtree, folder, True)
        build_model_folder(folder, tokenizer_source(None), {}, args.seed)  # bench_gpu's: BertConfig defaults
        args.model_dir = str(folder)
    if args.model_dir:
        name = "bert-base-random" if args.random_bert_base else Path(args.model_dir).name
        model_overrides += [f"model.name={name}", f"model.name_or_path='{Path(args.model_dir).resolve()}'",
                            "model.sha256=null", "model.package=null"]
    cfg = compose(model_overrides)
    spec = ModelSpec.from_config(cfg.model)
    device = torch.device(args.device)
    ctx = {
        "spec": spec, "max_length": args.max_length, "device": device, "precision": resolve_precision("auto", device),
        "tok": load_tokenizer(spec), "model": load_encoder(spec).eval(), "seed": args.seed, "epochs": args.epochs,
        "ft_n": args.ft_n, "trainer_batch_size": args.trainer_batch_size, "knob_n": args.knob_n,
        "no_cache_sweep": args.no_cache_sweep, "repeats": args.repeats, "data": data,
        "st_batch_sizes": [int(b) for b in args.st_batch_sizes.split(",")],
        "parity_n": args.parity_n, "parity_test": args.parity_test, "parity_epochs": args.parity_epochs,
        "train": subset(data / "train.parquet", args.n, args.seed),
        "test": subset(data / "test.parquet", args.n_test, args.seed),
        "overrides": [*model_overrides, f"device={args.device}", "precision=auto"],
        "freeze_cfg": compose(["strategy=freeze"]).strategy,
    }
    # the framework's default encoder batch (null in conf = auto for this device)
    ctx["batch_size"] = auto_batch_size(ctx["freeze_cfg"].encode_batch_size, "encode", device)
    lengths = [len(x) for x in ctx["tok"](ctx["train"].texts, truncation=True, max_length=args.max_length)["input_ids"]]
    ctx["lengths"] = lengths
    print("matmul peak …", flush=True)  # measured in this run, beside the timings it judges
    sizes = (4096, 8192) if args.device == "cuda" else (1024, 2048, 4096)
    ctx["peak"] = {"bf16": matmul_peak(torch.bfloat16, sizes, device=args.device),
                   "fp32": matmul_peak(torch.float32, sizes, device=args.device)}
    res = {
        "meta": {
            "date": started.date().isoformat(), "started": started.isoformat(timespec="seconds"), "command": "python " + shlex.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "cuda": torch.version.cuda if args.device == "cuda" else None, "ft_n": args.ft_n,
            "model_config": {k: getattr(ctx["model"].config, k) for k in
                             ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")},
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "precision": ctx["precision"], "max_length": args.max_length, "model": spec.name,
            "attention": ctx["model"].config._attn_implementation, "encode_batch_size": ctx["batch_size"],
            "repeats": args.repeats, "matmul_peak": ctx["peak"],
            "mean_tokens": float(np.mean(lengths)), "truncated_fraction": float(np.mean(np.array(lengths) >= args.max_length)),
        },
        "goals": {k: {f: f"{op} {v}" for f, _, op, v in goals} for k, goals in GOALS.items()},
        "parts": {},
    }
    try:
        res["meta"]["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for key, fn in (("a", part_a), ("b", part_b), ("c", part_c), ("d", part_d), ("e", part_e), ("p", part_p)):
        if key in parts:
            print(f"part {key} …", flush=True)
            res["parts"][key] = fn(ctx)
            print(json.dumps(res["parts"][key], indent=1, default=float), flush=True)
    for key, goals in GOALS.items():
        if key in res["parts"]:
            part = res["parts"][key]
            part["goals_met"] = {f: bool(part[f] >= v if op == ">=" else part[f] <= v) for f, _, op, v in goals}
            part["goal_met"] = part["goals_met"]["ratio"]  # issue 3's goal, as before

    md = markdown(res)
    write_new(stem, ".json", json.dumps(res, indent=1, default=float) + "\n")
    write_new(stem, ".md", md)
    print("\n" + md)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
