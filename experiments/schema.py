"""The run config's schema: types and ranges, checked when a run starts — before data or weights load.

Hydra already refuses unknown group options and unknown keys (struct mode). This catches impossible values:
each field's type (OmegaConf turns "1e-3" into a float and refuses "abc" for an int) and the ranges in the
__post_init__ methods. validate() reports the first problem as one line naming the key and what it allows.

- The model group is strategies.encoder.ModelSpec itself, so its checks live in one place.
- The strategy and classifier groups stay free-form: each strategy's constructor is its own schema, and
  Strategy.check() tests it against the model's config.json (the runner does both before the data loads).
- Keys the schema does not know pass unchecked (Hydra has vetted their names), so a new key in conf/ never
  breaks a run; tests/test_reliability.py fails instead until the schema covers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from strategies.encoder import PRECISIONS, ModelSpec

from .errors import ConfigError

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def show(value) -> str:
    """A value as the user would write it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


SIZES = ("train_size", "val_size", "test_size", "test_fraction")
REQUIRED_SIZES = ("val_size", "test_fraction")  # a validation split, and a test split where the data has none


def check_size(key: str, size) -> None:
    """A data size is a fraction of the split in (0, 1) or a whole count >= 1; null = all (caps only)."""
    nullable = key not in REQUIRED_SIZES
    if size is None and nullable:
        return
    number = isinstance(size, (int, float)) and not isinstance(size, bool)
    if not (number and (0 < size < 1 or (size >= 1 and float(size).is_integer()))):
        whole = ", or null for all" if nullable else ""
        raise ConfigError(f"data.{key}={show(size)}: use a fraction in (0, 1) or a whole count >= 1{whole}")


@dataclass
class DataConfig:
    """conf/data/*.yaml (the defaults are demo.yaml's; a composed config always sets every key)."""

    name: str = "demo"
    hf_name: str | None = None
    path: str | None = "data/demo"
    train_file: str | None = None
    test_file: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None
    # int or float: OmegaConf 2.3 has no Union, so these are Any and checked below
    val_size: Any = 0.2
    train_size: Any = None
    test_size: Any = None
    test_fraction: Any = 0.2
    split_seed: int = 0
    max_dropped_fraction: float = 0.1

    def __post_init__(self):
        for key in SIZES:
            check_size(key, getattr(self, key))
        if not 0 <= self.max_dropped_fraction <= 1:
            raise ConfigError(f"data.max_dropped_fraction={self.max_dropped_fraction}: must be in [0, 1]")
        if self.label_names is not None and len(set(self.label_names)) < 2:
            raise ConfigError(f"data.label_names={self.label_names}: needs at least 2 distinct names (or null)")


@dataclass
class RunConfig:
    """conf/config.yaml."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name="minilm"))
    strategy: Any = None
    classifier: Any = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    cache: bool = True
    cache_dir: str = "~/.cache/transfer-bench/features"
    experiment_name: str = "transfer-bench"
    tracking_uri: str = "sqlite:///mlflow.db"
    log_model: bool = True
    skip_finished: bool = True
    sweep_report: bool = True
    resume: bool = False
    checkpoint_every: int = 200
    checkpoint_dir: str = "checkpoints"
    save_predictions: bool = True

    def __post_init__(self):
        if not DEVICE.fullmatch(self.device):
            raise ConfigError(f"device={self.device}: must be auto, cpu, cuda or cuda:N")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision}: must be one of {'|'.join(PRECISIONS)}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every}: must be >= 0 (0 = no checkpoints)")
        if not self.experiment_name.strip():
            raise ConfigError("experiment_name is empty: name the MLflow experiment")


def _schema() -> DictConfig:
    schema = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(schema.model, False)  # ModelSpec is a frozen dataclass; the merge must fill it
    for node in (schema, schema.data, schema.model):
        OmegaConf.set_struct(node, False)  # unknown keys pass (see the module docstring)
    return schema


# OmegaConf's type errors, in the words of the allowed values
TYPE_WORDS = {
    "converted to Integer": "must be a whole number",
    "converted to Float": "must be a number",
    "is not a valid bool": "must be true or false",
    "Incompatible value 'None'": "must not be null",
}


def _one_line(e: OmegaConfBaseException) -> str:
    first = str(e).splitlines()[0]  # the rest repeats full_key, object_type, …
    if not e.full_key:
        return first
    words = next((w for k, w in TYPE_WORDS.items() if k in first), first)
    return f"{e.full_key}={show(e.value)}: {words}"


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line: the key and what it allows) if cfg cannot make a valid run."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:  # e.g. data=files without data.train_file (its YAML says ???)
        raise ConfigError(f"{missing[0]} has no value (???): set it, e.g. {missing[0]}=...")
    try:
        OmegaConf.to_object(OmegaConf.merge(_schema(), cfg))  # to_object runs the __post_init__ checks
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from e
    except ConfigError:
        raise
    except ValueError as e:  # ModelSpec's checks (strategies do not know ConfigError)
        raise ConfigError(str(e)) from e
