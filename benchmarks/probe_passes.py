"""Exploratory: is a trained state slower to train from than a fresh one, and is it subnormal floats?
For the fresh model and each checkpoint: forward+backward (no step) over fixed length-bucketed batches of
IMDb train reviews at 256 tokens, timed with flush-to-zero off and on (alternating), plus a census of subnormal
values in leaf-module outputs and their gradients.
python benchmarks/probe_passes.py STRATEGY [CKPT ...]   (run from the repo root, IMDb at ../shared/datasets/imdb)"""
import statistics
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import numpy as np
import pandas as pd
import torch
from torch import nn

from experiments.bundle import build_strategy
from experiments.config import compose
from strategies.backbone import autocast, collate, tokenize

name, ckpts = sys.argv[1], sys.argv[2:]
df = pd.read_parquet("../shared/datasets/imdb/train.parquet", columns=["text", "label"]).sample(128, random_state=1)
cfg = compose(["experiment=imdb_full", f"strategy={name}", "seed=0"])
TINY = torch.finfo(torch.float32).tiny


def census(net, tok, items, labels, maxlen, device, precision):
    counts = {"act": [0, 0], "grad": [0, 0]}

    def add(kind, t):
        if torch.is_tensor(t) and torch.is_floating_point(t):
            f = t.detach().float()
            counts[kind][0] += int(((f.abs() < TINY) & (f != 0)).sum())
            counts[kind][1] += f.numel()

    hooks = []
    for m in net.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda m, i, o: add("act", o if torch.is_tensor(o) else o[0])))
            hooks.append(m.register_full_backward_hook(lambda m, gi, go: add("grad", go[0])))
    with autocast(device, precision):
        logits = net(collate(tok, items, device, maxlen))
    nn.functional.cross_entropy(logits.float(), labels).backward()
    for h in hooks:
        h.remove()
    net.zero_grad(set_to_none=True)
    margin = (logits[:, 1] - logits[:, 0]).abs().float()
    return counts, margin


results = []
for ck in [None, *ckpts]:
    s = build_strategy(cfg.strategy, 2)
    s.prepare()
    net, tok, maxlen = s.net, s.tokenizer, s.spec.max_length
    if ck:
        saved = torch.load(ck, weights_only=True, map_location="cpu")
        missing = net.load_state_dict(saved["trainable"], strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        step = saved["pos"]["step"]
    else:
        step = 0
    net.train()
    items = tokenize(tok, df.text.tolist(), maxlen)
    order = np.argsort([len(x["input_ids"]) for x in items])
    items = [items[i] for i in order]
    labels = torch.as_tensor(df.label.to_numpy()[order])
    torch.manual_seed(0)
    times = {False: [], True: []}
    for rep in range(4):
        for ftz in (False, True) if rep % 2 == 0 else (True, False):
            torch.set_flush_denormal(ftz)
            t0 = time.perf_counter()
            for i in range(0, len(items), 16):
                with autocast(s.device, s.precision):
                    logits = net(collate(tok, items[i:i + 16], s.device, maxlen))
                nn.functional.cross_entropy(logits.float(), labels[i:i + 16]).backward()
            times[ftz].append(time.perf_counter() - t0)
            net.zero_grad(set_to_none=True)
    torch.set_flush_denormal(False)
    counts, margin = census(net, tok, items[-16:], labels[-16:], maxlen, s.device, s.precision)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    line = (f"{name} step {step:>5}: fwd+bwd {off:.2f}s (ftz {on:.2f}s, off/on {off / on:.2f}); subnormal "
            f"act {counts['act'][0]}/{counts['act'][1]} grad {counts['grad'][0]}/{counts['grad'][1]}; "
            f"|logit margin| median {margin.median():.1f} max {margin.max():.1f}; all off {[round(t, 2) for t in times[False]]}")
    print(line, flush=True)
    results.append(line)
