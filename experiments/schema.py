"""The run config's schema: types and ranges, checked when a run starts — before data or weights load.

Hydra already refuses unknown group options and unknown keys (struct mode). This catches impossible values:
each field's type (OmegaConf turns "1e-3" into a float and refuses "abc" for an int) and the ranges in the
__post_init__ methods. validate() reports the first problem as one line naming the key and what it allows.

- The model group is strategies.backbone.ModelSpec itself, so its checks live in one place.
- The strategy and classifier groups stay free-form: each strategy's constructor is its own schema.
  check_arguments() holds each strategy.* value to the constructor's type hints (epochs: int, layers:
  Sequence[int], …), the constructor checks ranges, and Strategy.check() tests the rest against the model's
  config.json (the runner does all three before the data loads).
- Keys the schema does not know pass unchecked (Hydra has vetted their names), so a new key in conf/ never
  breaks a run; tests/test_reliability.py fails instead until the schema covers it.
"""

from __future__ import annotations

import collections.abc
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from strategies.backbone import PRECISIONS, ModelSpec

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
    test_seed: int | None = None
    max_dropped_fraction: float = 0.1
    min_class_count: int = 5

    def __post_init__(self):
        for key in SIZES:
            check_size(key, getattr(self, key))
        for key in ("split_seed", "test_seed"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 2**32:
                raise ConfigError(f"data.{key}={value}: must be in [0, 2**32) (a numpy seed)" + (" or null" if key == "test_seed" else ""))
        if not 0 <= self.max_dropped_fraction <= 1:
            raise ConfigError(f"data.max_dropped_fraction={self.max_dropped_fraction}: must be in [0, 1]")
        if self.min_class_count < 1:
            raise ConfigError(f"data.min_class_count={self.min_class_count}: must be >= 1 (1 = accept any class)")
        if not (self.path or self.train_file or self.hf_name):  # e.g. data=files without data.train_file
            raise ConfigError("no data source: set data.train_file (a file), data.path (a folder) or data.hf_name")
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
    report_group_by: str | None = None
    resume: bool = False
    checkpoint_every: int = 200
    checkpoint_dir: str = "checkpoints"
    save_predictions: bool = True
    progress: bool = True
    machine_canary: bool = True

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
    if missing:  # a key whose YAML says ??? and that nothing set
        raise ConfigError(f"{missing[0]} has no value (???): set it, e.g. {missing[0]}=...")
    try:
        OmegaConf.to_object(OmegaConf.merge(_schema(), cfg))  # to_object runs the __post_init__ checks
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from e
    except ConfigError:
        raise
    except ValueError as e:  # ModelSpec's checks (strategies do not know ConfigError)
        raise ConfigError(str(e)) from e


# ----------------------------------------------------------------------------- strategy arguments
def _matches(value, hint) -> bool:
    """Whether a config value fits a constructor type hint; hints it cannot judge (Mapping, objects) pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (collections.abc.Sequence, list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    return True


def _words(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) in (collections.abc.Sequence, list, tuple):
        return f"a list of {_words(typing.get_args(hint)[0]).removeprefix('a ')}s, e.g. [-1]"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def constructor_hints(cls: type) -> dict[str, Any]:
    """Type hints of cls.__init__ and of its bases' (a subclass passes **kwargs on to them)."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            try:
                hints |= typing.get_type_hints(init)
            except (NameError, TypeError):  # a hint this Python cannot evaluate: check nothing for it
                continue
    return hints


def check_arguments(node: DictConfig, section: str = "strategy") -> None:
    """Each value of a `_target_` config against its constructor's type hints: one line naming the key."""
    from hydra.utils import get_class

    try:
        cls = get_class(node._target_)
    except Exception as e:  # ImportError, AttributeError, … from a mistyped path
        cause = (e.__cause__ or e).__class__.__name__ + ": " + str(e.__cause__ or e).splitlines()[0]
        raise ConfigError(f"{section}._target_={node._target_}: cannot import it ({cause})") from None
    hints = constructor_hints(cls)
    values = OmegaConf.to_container(node, resolve=True)
    for key, value in values.items():
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(f"{section}.{key}={show(value)}: must be {_words(hints[key])}")
