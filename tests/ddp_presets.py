"""Run by tests/test_distributed.py, under torchrun or as one plain process: every strategy preset fits on a
few demo texts and predicts; rank 0 writes the probabilities to OUT/<preset>.npz.

usage: ddp_presets.py OUT MODEL_DIR PRESET...   (DDP_DEVICE=auto: CUDA and NCCL where there is a GPU; default cpu)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import compose, demo_split, tiny_model_overrides  # noqa: E402

from experiments.bundle import build_strategy  # noqa: E402
from strategies import distributed as ddp  # noqa: E402


def deterministic(name: str) -> list[str]:
    """Overrides that take randomness out of training (ranks draw other dropout masks than one process)."""
    strategy = compose([f"strategy={name}"]).strategy
    out = ["strategy.cache=false"] if "cache" in strategy else []
    # gradual unfreezing opens a block per epoch (DDP is rebuilt each time): 3 epochs open both tiny blocks
    out += [f"strategy.epochs={3 if strategy.get('gradual_unfreeze') else 1}"] if "epochs" in strategy else []
    out += ["strategy.max_pairs=64"] if "max_pairs" in strategy else []  # setfit's pairs: seconds, not minutes
    out += ["strategy.dropout=0"] if "dropout" in strategy else []
    out += ["strategy.mlm_steps=4"] if "mlm_steps" in strategy else []  # task-adaptive pre-training: a taste
    out += ["strategy.peft.lora_dropout=0"] if (strategy.get("peft") or {}).get("lora_dropout") is not None else []
    out += ["strategy.batch_size=6"] if "batch_size" in strategy else []  # a last batch of one (31 texts)
    return ["precision=fp32", f"device={os.environ.get('DDP_DEVICE', 'cpu')}", *out]


def main(out: Path, model: str, presets: list[str]) -> None:
    device = os.environ.get("DDP_DEVICE", "cpu")
    ddp.setup(device)
    train, val, test = demo_split(31), demo_split(12, offset=40), demo_split(13, split="test")
    for name in presets:
        cfg = compose([f"strategy={name}", *tiny_model_overrides(model), *deterministic(name)]).strategy
        torch.manual_seed(0)
        np.random.seed(0)
        strategy = build_strategy(cfg, 2)
        seen: dict = {}
        strategy.fit(train, val, lambda epoch, scalars, proba, seen=seen: seen.setdefault("val", proba))
        test_proba = strategy.predict_proba(test.texts)
        if ddp.is_main():
            np.savez(out / f"{name}.npz", val=seen["val"], test=test_proba, world=ddp.world_size(),
                     backend=ddp.backend())
    ddp.teardown()


if __name__ == "__main__":
    ddp.exit_without_finalizing(lambda: main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
