"""The composed run config for in-process use (tests, benchmarks): what `python run.py <overrides>` sees."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# Config keys that never change what a run learns or scores: where it is logged, whether it is skipped,
# resumed or checkpointed, and whether encoder features are read from the cache (the same numbers either
# way), whether progress is shown, and the rare-label guard (a run it lets through is the same run).
# Two runs that differ only in these are the same configuration (runner.config_hash, compare).
BOOKKEEPING = (
    "tracking_uri", "experiment_name", "skip_finished", "sweep_report", "resume", "checkpoint_every",
    "checkpoint_dir", "cache", "cache_dir", "strategy.cache", "strategy.cache_dir", "progress",
    "strategy.progress", "data.min_class_count",
    "epochs",  # +epochs=N (mixed sweeps): its effect is in strategy.epochs, which stays in the identity
)


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))
