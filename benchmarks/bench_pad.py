"""Padding a batch to a multiple of K (strategies.backbone.PAD_MULTIPLE): speed and peak memory, K=1 vs K=8.

    python benchmarks/bench_pad.py --data ../shared/datasets/imdb --repeats 3

Why a fresh process per measurement: oneDNN caches a kernel per matmul shape for the whole process, and that
cache is what the rounding is about, so each run starts cold. Each run encodes --n-test IMDb test reviews
twice (cold, then warm) with the packaged encoder and fine-tunes it for one epoch on --ft-n train reviews,
at --max-length tokens and precision=auto. The variants alternate (K=1, K=8, K=1, ...) so that drift in the
machine's load hits both alike. Reported: the median, min and max of each timing, the peak RSS, the 1-minute
load average. Peak RSS is the whole child process's (data, two models, both passes). Writes benchmarks/results/pad-<date>T<time>.json and .md (never overwritten)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_gpu import cpu_name, result_stem, write_new  # noqa: E402 — one naming rule for every result file

TIMINGS = ("extract_cold_s", "extract_warm_s", "finetune_epoch_s")


def child(args) -> None:
    """One measurement at PAD_MULTIPLE = args.child; prints one JSON line."""
    import pandas as pd
    import torch

    import strategies.backbone as bb
    from experiments.bundle import build_strategy
    from experiments.config import compose
    from strategies.base import Split

    bb.PAD_MULTIPLE = args.child
    bb.set_threads()
    data = Path(args.data)
    test = pd.read_parquet(data / "test.parquet").sample(args.n_test, random_state=args.seed)["text"].tolist()
    train = pd.read_parquet(data / "train.parquet").sample(args.ft_n, random_state=args.seed)
    ml = f"model.max_length={args.max_length}"
    embed = build_strategy(compose(["strategy=embed", "cache=false", ml]).strategy, 2)
    kw = dict(max_length=args.max_length, layers=[-1], pooling="mean", device=torch.device("cpu"),
              precision=bb.resolve_precision("auto", torch.device("cpu")), batch_size=8)
    out = {}
    for name in ("extract_cold_s", "extract_warm_s"):
        t = time.perf_counter()
        bb.extract_features(embed.encoder, embed.tokenizer, test, **kw)
        out[name] = time.perf_counter() - t
    del embed
    ft = build_strategy(compose(["strategy=finetune", "strategy.epochs=1", ml]).strategy, 2)
    t = time.perf_counter()
    ft.fit(Split(train["text"].tolist(), train["label"].to_numpy()), None)
    out["finetune_epoch_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    out["load_1m"] = os.getloadavg()[0]
    print(json.dumps(out), flush=True)


def summary(runs: list[dict]) -> dict:
    def stats(key):
        v = sorted(r[key] for r in runs)
        return {"median": v[len(v) // 2], "min": v[0], "max": v[-1]}
    return {k: stats(k) for k in (*TIMINGS, "peak_rss_mb", "load_1m")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "imdb"))
    ap.add_argument("--n-test", type=int, default=256, help="reviews encoded (cold, then warm)")
    ap.add_argument("--ft-n", type=int, default=128, help="reviews in the fine-tuning epoch")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--multiples", default="1,8", help="PAD_MULTIPLE values compared; the first is the reference")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per value, alternating")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args)
        return 0
    started = datetime.datetime.now()
    stem = result_stem(Path(args.out), f"pad-{started:%Y-%m-%dT%H%M}")
    multiples = [int(k) for k in args.multiples.split(",")]
    runs: dict[int, list[dict]] = {k: [] for k in multiples}
    passed = list(argv if argv is not None else sys.argv[1:])
    for i in range(args.repeats):
        for k in multiples:
            # stdout carries the one JSON line; stderr (warnings, a child's traceback) passes through
            line = subprocess.run([sys.executable, __file__, *passed, "--child", str(k)], check=True,
                                  stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
            runs[k].append(json.loads(line))
            print(f"repeat {i + 1}/{args.repeats} K={k}: {line}", flush=True)
    res = {
        "meta": {"started": started.isoformat(timespec="seconds"),
                 "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *passed]),
                 "cpu": cpu_name(), "cores": os.cpu_count(), **vars(args)},
        "runs": {str(k): v for k, v in runs.items()},
        "summary": {str(k): summary(v) for k, v in runs.items()},
    }
    ref = res["summary"][str(multiples[0])]
    lines = [f"# PAD_MULTIPLE A/B ({res['meta']['started']})", "", f"`{res['meta']['command']}`", "",
             f"{res['meta']['cpu']}, {res['meta']['cores']} cores; {args.repeats} fresh processes per value, alternating; "
             f"{args.n_test} test reviews encoded, one fine-tuning epoch on {args.ft_n}; max_length {args.max_length}.", "",
             "| K | " + " | ".join(f"{t} median (min-max)" for t in TIMINGS) + " | peak RSS MB median | load 1m |",
             "| --- |" + " --- |" * (len(TIMINGS) + 2)]
    for k in multiples:
        s = res["summary"][str(k)]
        cells = [f"{s[t]['median']:.2f} ({s[t]['min']:.2f}-{s[t]['max']:.2f}), {ref[t]['median'] / s[t]['median']:.2f}x"
                 for t in TIMINGS]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {s['peak_rss_mb']['median']:.0f} | "
                     f"{s['load_1m']['min']:.2f}-{s['load_1m']['max']:.2f} |")
    lines += ["", f"Ratios (x) are the speed-up over K={multiples[0]}: its median time / this one's."]
    md = "\n".join(lines) + "\n"
    write_new(stem, ".json", json.dumps(res, indent=1) + "\n")
    write_new(stem, ".md", md)
    print("\n" + md + f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
