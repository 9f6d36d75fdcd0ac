"""A run's configuration identity, in one place: which config keys make two runs the same configuration,
the hash that skip_finished and resume match on, and the params that the report groups runs by."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

# Config keys that never change what a run learns or scores: where it is logged, whether it is skipped,
# resumed or checkpointed, and whether encoder features are read from the cache (the same numbers either
# way), whether progress is shown or the machine's speed sampled, and the rare-label guard (a run it lets
# through is the same run).
# Two runs that differ only in these are the same configuration (config_hash, and the report).
BOOKKEEPING = (
    "tracking_uri", "experiment_name", "skip_finished", "sweep_report", "resume", "checkpoint_every", "report_group_by",
    "checkpoint_dir", "cache", "cache_dir", "strategy.cache", "strategy.cache_dir", "progress",
    "strategy.progress", "data.min_class_count", "machine_canary",
    "epochs",  # +epochs=N (mixed sweeps): its effect is in strategy.epochs, which stays in the identity
    "keep_best",  # experiment=few_shot's: its effect is in strategy.keep_best, which stays in the identity
)
# Params that never make two runs different configurations in the report: bookkeeping, outputs of the run,
# and the seed itself (seeds are the replicates that mean ± std is taken over).
NOT_CONFIG = {"seed", "log_model", "save_predictions", *BOOKKEEPING}
# Options added to a strategy after runs were logged without them, at the value that leaves training as it
# was ("off"): a config that leaves them there is the configuration it was before they existed, so it keeps
# its hash (skip_finished still finds earlier runs) and logs no param for them (the report pairs the runs).
NEUTRAL = {"strategy.train_only": None, "strategy.layer_lr_decay": None, "strategy.gradual_unfreeze": False,
           "strategy.attention_dropout": None, "data.test_seed": None}


def _drop(resolved: dict, key: str, only_if=None, always: bool = True) -> None:
    *parents, last = key.split(".")
    node = resolved
    for p in parents:
        node = node.get(p) or {}
    if last in node and (always or node[last] == only_if):
        node.pop(last)


def _without_neutral(resolved: dict) -> dict:
    for key, value in NEUTRAL.items():
        _drop(resolved, key, only_if=value, always=False)
    data = resolved.get("data") or {}
    if "test_seed" in data and data["test_seed"] == data.get("split_seed"):  # the same examples as null
        data.pop("test_seed")
    return resolved


def flatten(d: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested keys as dotted MLflow param names; lists and dicts as JSON."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return out


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config, flattened, without the copies the strategy holds by interpolation
    (strategy.encoder = model, strategy.classifier = classifier) and without groups it does not use."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    strategy = resolved["strategy"]
    for shared in ("encoder", "classifier"):
        if shared in strategy:
            strategy.pop(shared)
        else:
            resolved.pop({"encoder": "model"}.get(shared, shared), None)
    for volatile in ("hydra", "resume"):  # resume=true continues the same run: its params must not change
        resolved.pop(volatile, None)
    return flatten(_without_neutral(resolved))


def config_hash(cfg: DictConfig) -> str:
    """Identity of a run's configuration (what skip_finished and a resumed run match): everything but
    hydra's own settings, the BOOKKEEPING keys and the NEUTRAL options left off."""
    resolved = _without_neutral(OmegaConf.to_container(cfg, resolve=True))
    resolved.pop("hydra", None)
    for key in BOOKKEEPING:
        _drop(resolved, key)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]
