"""A trained strategy on disk: its resolved config (strategy.yaml) plus what strategy.save() wrote.
Rebuilding goes through the same `_target_` instantiation as a run, so there is one code path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONFIG_FILE = "strategy.yaml"


def build_strategy(strategy_cfg, num_labels: int):
    """The single place where a strategy object is made from its config (runs, predict, tests).
    `name` labels the preset for tags and reports; it is not a constructor argument."""
    cfg = OmegaConf.to_container(strategy_cfg, resolve=True) if OmegaConf.is_config(strategy_cfg) else dict(strategy_cfg)
    cfg.pop("name", None)
    return instantiate(cfg, num_labels=num_labels, _convert_="all")


def save_bundle(strategy, strategy_cfg, label_names: list[str], path: Path,
                display_order: list[int] | None = None) -> Path:
    """display_order: class ids in data.label_names order, for the probability columns (display only)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"strategy": OmegaConf.to_container(strategy_cfg, resolve=True), "label_names": list(label_names),
            "display_order": list(display_order or range(len(label_names)))}
    OmegaConf.save(OmegaConf.create(meta), path / CONFIG_FILE)
    strategy.save(path)
    return path


def load_bundle(path: Path):
    """(strategy, label_names) restored from a folder written by save_bundle. The pair is what models logged
    before the display order existed unpack (their pyfunc_model.py runs against this module): keep it."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a transfer-bench model folder (no {CONFIG_FILE})")
    meta = OmegaConf.load(path / CONFIG_FILE)
    names = list(meta.label_names)
    strategy = build_strategy(meta.strategy, len(names))
    strategy.load(path)
    return strategy, names


def display_order(path: Path) -> list[int] | None:
    """Class ids in data.label_names order, as save_bundle stored it (None for older bundles: id order)."""
    order = OmegaConf.load(Path(path) / CONFIG_FILE).get("display_order")
    return list(order) if order else None


def predict_frame(strategy, label_names: list[str], texts: list[str], display_order: list[int] | None = None):
    import pandas as pd

    proba = strategy.predict_proba(texts)
    out = pd.DataFrame({"label": [label_names[i] for i in proba.argmax(1)], "score": proba.max(1).astype(np.float64)})
    for i in display_order or range(len(label_names)):
        out[f"prob_{label_names[i]}"] = proba[:, i].astype(np.float64)
    return out
