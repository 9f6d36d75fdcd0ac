"""Loading a labelled text dataset and splitting it fairly.

- train/test come from the dataset's own splits (hub or local files); a dataset with no test split gets one
  cut from train (`data.test_fraction`).
- validation is cut from train ONCE, stratified and seeded, disjoint from train; the test split is only ever
  used for the final evaluation.
- `data.train_size`/`val_size`/`test_size` take stratified, seeded subsets for quick runs. The split seed
  (`data.split_seed`) is separate from the training seed, so every strategy and every training seed is
  scored on exactly the same examples — which is what paired comparisons need. `data.test_seed` (default:
  the split seed) sets the test examples alone: with it fixed, split seeds vary only the training subset and
  the validation cut, scored on the same test examples.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from strategies.base import Split

from .errors import DataError
from .schema import check_size

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_CLASS_COUNT = 5  # data.min_class_count's default (conf/data/demo.yaml)
FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json"}


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    label_names: list[str]  # by class id (sorted string labels, or the integer labels' names)
    sources: dict[str, str] = field(default_factory=dict)  # split -> file or hub id, for tracking
    notes: dict[str, int] = field(default_factory=dict)  # counts worth logging (dropped texts, …)
    display_order: list[int] | None = None  # class ids in data.label_names order (display only)

    @property
    def display_names(self) -> list[str]:
        return [self.label_names[i] for i in self.display_order or range(self.num_labels)]

    def shown(self, labels: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probability columns renumbered to display_order, for reports (with display_names)."""
        order = np.asarray(self.display_order or range(self.num_labels))
        return np.argsort(order)[np.asarray(labels)], proba[:, order]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        """A hash of exactly the examples used (texts, labels, split membership)."""
        h = hashlib.sha256()
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            h.update(name.encode())
            for text, label in zip(split.texts, split.labels, strict=True):
                h.update(text.encode("utf-8", "surrogatepass"))
                h.update(b"\x00%d\x01" % int(label))
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- reading
def launch_dir() -> Path:
    """The directory the user launched from: Hydra's original cwd (a job may run elsewhere with
    hydra.job.chdir=true), else the current directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def resolve_path(path: str | Path) -> Path:
    """Relative paths are tried from the launch directory first, then from the project root (so that
    `data.path=data/demo` works wherever run.py is launched from). A path found in neither is reported
    as the user wrote it, from the launch directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (launch_dir(), PROJECT_ROOT):
        if (base / p).exists():
            return base / p
    return launch_dir() / p


def _find_split_file(folder: Path, split: str) -> Path | None:
    for ext in FORMATS:
        hits = sorted(folder.glob(f"{split}{ext}")) + sorted(folder.glob(f"{split}-*{ext}"))
        if hits:
            return hits[0]
    return None


def read_table(path: Path) -> pd.DataFrame:
    """One local file through `datasets` (parquet/csv/tsv/json/jsonl), as a DataFrame."""
    from datasets import load_dataset

    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check data.train_file / data.test_file")
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(FORMATS)}")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the split is empty (an empty file); it needs labelled examples")
    try:
        ds = load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8") from e
    except Exception as e:  # datasets wraps parser errors in several exception types
        cause = e.__cause__ or e
        if "corresponds to no data" in str(e):  # datasets' way of saying the file has no rows
            raise DataError(f"{path}: the split is empty (no rows); it needs labelled examples") from e
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(f"{path} is not valid UTF-8; re-save it as UTF-8") from e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise DataError(f"{path}: could not be read as {builder}: {first[:200]}") from e
    return ds.to_pandas()


def read_splits(cfg: Mapping) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, str]]:
    """(train, test or None, sources) from explicit files, a local folder, or the hub."""
    train_file, test_file, path = cfg.get("train_file"), cfg.get("test_file"), cfg.get("path")
    if train_file:
        train_path = resolve_path(train_file)
        test_path = resolve_path(test_file) if test_file else None
    elif path:
        folder = resolve_path(path)
        if not folder.is_dir():
            raise DataError(f"data.path={path}: no such directory (expected files like train.parquet, test.csv)")
        train_path = _find_split_file(folder, cfg.get("train_split", "train"))
        test_path = _find_split_file(folder, cfg.get("test_split", "test"))
        if train_path is None:
            raise DataError(
                f"data.path={path}: no '{cfg.get('train_split', 'train')}' file "
                f"({'/'.join(FORMATS)}) in {folder}"
            )
    elif cfg.get("hf_name"):
        return _read_hub(cfg)
    else:
        raise DataError("no data source: set data.path (a folder), data.train_file, or data.hf_name")
    train = read_table(train_path)
    test = read_table(test_path) if test_path else None
    sources = {"train": str(train_path)} | ({"test": str(test_path)} if test_path else {})
    return train, test, sources


def _read_hub(cfg: Mapping):
    from datasets import load_dataset

    name = cfg["hf_name"]
    try:
        train = load_dataset(name, split=cfg.get("train_split", "train")).to_pandas()
        test = load_dataset(name, split=cfg.get("test_split", "test")).to_pandas()
    except Exception as e:
        raise DataError(
            f"could not load '{name}' from the Hugging Face hub ({type(e).__name__}); when offline, "
            f"point data.path at a local copy (e.g. data.path=../shared/datasets/imdb)"
        ) from e
    return train, test, {"train": f"hf://{name}", "test": f"hf://{name}"}


# ----------------------------------------------------------------------------- cleaning and labels
def _columns(df: pd.DataFrame, cfg: Mapping, where: str) -> tuple[pd.Series, pd.Series]:
    text_col, label_col = cfg.get("text_column", "text"), cfg.get("label_column", "label")
    for key, col in (("text_column", text_col), ("label_column", label_col)):
        if col not in df.columns:
            raise DataError(
                f"{where}: no column '{col}' (data.{key}); the columns are: {', '.join(map(str, df.columns))}"
            )
    return df[text_col], df[label_col]


def _clean(texts: pd.Series, labels: pd.Series, where: str, notes: dict, max_drop: float):
    """Drop empty/whitespace-only texts and missing labels (counted); too many means bad columns."""
    texts = texts.map(lambda t: t if isinstance(t, str) else ("" if t is None or t != t else str(t)))
    keep = texts.str.strip().str.len().gt(0) & labels.notna()
    dropped = int((~keep).sum())
    if len(texts) == 0:
        raise DataError(f"{where} split is empty; it needs labelled examples")
    if dropped:
        notes[f"{where}_dropped_empty"] = dropped
        log.warning("%s: dropped %d of %d rows with an empty text or a missing label", where, dropped, len(texts))
        if dropped / len(texts) > max_drop:
            raise DataError(
                f"{where}: {dropped} of {len(texts)} rows have an empty text or label "
                f"(more than data.max_dropped_fraction={max_drop}); check data.text_column/label_column"
            )
    return texts[keep].tolist(), labels[keep].tolist()


def _label_key(value):
    """Labels as read: ints stay ints (1.0 from a CSV becomes 1), anything else becomes its string."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value).strip()


def check_rare_labels(train_keys: list, min_count: int) -> None:
    """A class seen only a handful of times in train is most likely a typo ("grate" for "great"): as a
    class of its own it would be left out of stratification and score an empty row in the report."""
    counts = Counter(train_keys)
    rare = sorted(((n, k) for k, n in counts.items() if n < min_count), key=lambda r: (r[0], str(r[1])))
    if rare:
        n, k = rare[0]
        more = f" (and {len(rare) - 1} more rare label(s))" if len(rare) > 1 else ""
        raise DataError(
            f"training label {k!r} occurs in only {n} row(s) of {len(train_keys)}{more}: fix it in the data, "
            f"or keep it as a class with data.min_class_count={n}"
        )


def encode_labels(
    train_raw: list, test_raw: list, names_cfg, min_count: int = 1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    train_keys = [_label_key(v) for v in train_raw]
    check_rare_labels(train_keys, min_count)
    test_keys = [_label_key(v) for v in test_raw]
    kinds = {type(k) for k in train_keys + test_keys}
    if kinds == {int}:
        classes = sorted(set(train_keys))
        if names_cfg is not None:
            names = [str(n) for n in names_cfg]
            bad = [k for k in classes if not 0 <= k < len(names)]
            if bad:
                raise DataError(f"labels {bad[:5]} do not index data.label_names ({len(names)} names)")
            classes = list(range(len(names)))
        else:
            names = [str(c) for c in classes]
    else:  # strings (or a mix): sorted names, ids in that order. names_cfg may add classes; its order is for
        # display only (display_order): ids, splits, fingerprint and training stay those of the sorted names
        train_keys, test_keys = [str(k) for k in train_keys], [str(k) for k in test_keys]
        classes = sorted(str(n) for n in names_cfg) if names_cfg is not None else sorted(set(train_keys))
        names = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    present = sorted(set(train_keys), key=str)
    if len(present) < 2:
        raise DataError(f"the training data has a single class ({present[0]!r}); a classifier needs at least 2")
    unknown = sorted({k for k in train_keys if k not in index}, key=str)
    if unknown:
        raise DataError(f"training labels {unknown[:5]} are not in data.label_names {names}")
    unseen = sorted({k for k in test_keys if k not in set(train_keys)}, key=str)
    if unseen:
        raise DataError(f"test labels {unseen[:5]} never occur in the training data; the classes must match")
    return (
        np.array([index[k] for k in train_keys], dtype=np.int64),
        np.array([index[k] for k in test_keys], dtype=np.int64),
        names,
    )


def display_order(names: list[str], names_cfg) -> list[int]:
    """Class ids in the order data.label_names lists them (reports, plots, prediction columns); the ids'
    own order when it does not list the same names (null, or integer labels, which it names in id order)."""
    wanted = [str(n) for n in names_cfg] if names_cfg is not None else []
    if sorted(wanted) != sorted(names):
        return list(range(len(names)))
    return [names.index(n) for n in wanted]


# ----------------------------------------------------------------------------- splitting
def _count(size, total: int, key: str) -> int | None:
    """A size given as a fraction (0 < f < 1) or a count (>= 1) -> a count; None means all."""
    check_size(key, size)  # the runner's schema checked it already; direct callers get the same message
    if size is None:
        return None
    return max(1, int(round(size * total))) if size < 1 else int(size)


def stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int | None, seed: int, key: str) -> np.ndarray:
    if size is None or size == len(idx):
        return idx
    if size > len(idx):
        raise DataError(f"data.{key}={size} exceeds the {len(idx)} examples available; lower it or use null")
    counts = np.bincount(labels[idx])
    classes = np.count_nonzero(counts)
    # sklearn stratifies only when both the kept and the left-out part can hold every class
    ok = min(size, len(idx) - size) >= classes and counts[counts > 0].min() >= 2
    stratify = labels[idx] if ok else None
    kept, _ = train_test_split(idx, train_size=size, stratify=stratify, random_state=seed)
    return np.sort(kept)


def split_off(idx: np.ndarray, labels: np.ndarray, size: int, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part) with part of the given size, stratified where every class can take part."""
    if not 0 < size < len(idx):
        raise DataError(f"data.{key}: cannot cut {size} examples from {len(idx)}; adjust it")
    counts = np.bincount(labels[idx])
    ok = counts[counts > 0].min() >= 2 and min(size, len(idx) - size) >= np.count_nonzero(counts)
    rest, part = train_test_split(idx, test_size=size, stratify=labels[idx] if ok else None, random_state=seed)
    return np.sort(rest), np.sort(part)


def load_dataset(cfg: Mapping) -> Dataset:
    """The configured dataset, cleaned, label-encoded and split (see the module docstring)."""
    cfg = dict(cfg)
    seed, notes = int(cfg.get("split_seed", 0)), {}
    # the test examples have a seed of their own when asked: fixed, split_seed then draws other training
    # subsets (which examples one happens to label) scored on the same test examples
    test_seed = seed if cfg.get("test_seed") is None else int(cfg["test_seed"])
    max_drop = float(cfg.get("max_dropped_fraction", 0.1))
    train_df, test_df, sources = read_splits(cfg)
    train_texts, train_raw = _clean(*_columns(train_df, cfg, "train"), "train", notes, max_drop)
    if test_df is not None:
        test_texts, test_raw = _clean(*_columns(test_df, cfg, "test"), "test", notes, max_drop)
    else:
        test_texts, test_raw = [], []
    y_train, y_test, names = encode_labels(
        train_raw, test_raw, cfg.get("label_names"), int(cfg.get("min_class_count", MIN_CLASS_COUNT))
    )

    if test_df is None:  # no test split shipped: hold one out of train, once, before anything else
        n_test = _count(cfg.get("test_fraction", 0.2), len(train_texts), "test_fraction")
        rest, held = split_off(np.arange(len(train_texts)), y_train, n_test, test_seed, "test_fraction")
        test_texts, y_test = [train_texts[i] for i in held], y_train[held]
        train_texts, y_train = [train_texts[i] for i in rest], y_train[rest]
        sources["test"] = sources["train"] + f" (held out: {len(held)})"

    all_idx = np.arange(len(train_texts))
    n_train_cap = _count(cfg.get("train_size"), len(train_texts), "train_size")
    n_val = _count(cfg.get("val_size", 0.1), n_train_cap or len(train_texts), "val_size")
    if n_train_cap is not None and n_train_cap + n_val > len(train_texts):
        raise DataError(
            f"data.train_size={n_train_cap} plus {n_val} validation examples exceed the {len(train_texts)} "
            "training examples; lower data.train_size or data.val_size"
        )
    train_idx, val_idx = split_off(all_idx, y_train, n_val, seed, "val_size")
    train_idx = stratified_subset(train_idx, y_train, n_train_cap, seed, "train_size")
    test_idx = stratified_subset(
        np.arange(len(test_texts)), y_test, _count(cfg.get("test_size"), len(test_texts), "test_size"), test_seed,
        "test_size",
    )

    def take(texts, labels, idx) -> Split:
        return Split([texts[i] for i in idx], labels[idx])

    ds = Dataset(
        name=str(cfg.get("name", "data")),
        train=take(train_texts, y_train, train_idx),
        val=take(train_texts, y_train, val_idx),
        test=take(test_texts, y_test, test_idx),
        label_names=names,
        display_order=display_order(names, cfg.get("label_names")),
        sources=sources,
        notes=notes,
    )
    # IMDb itself has 123 texts in both train and test, and a few inside train that the validation cut may
    # separate: worth knowing (validation and test scores are that much optimistic), not worth refusing.
    in_train = set(ds.train.texts)
    for name, split in (("test", ds.test), ("val", ds.val)):
        overlap = len(in_train & set(split.texts))
        if overlap:
            ds.notes[f"train_{name}_duplicate_texts"] = overlap
            log.warning("%d texts occur in both train and %s (logged as data_train_%s_duplicate_texts)", overlap, name, name)
    if not math.isfinite(len(ds.train)) or len(ds.train) == 0:
        raise DataError("no training examples left after splitting; raise data.train_size")
    return ds
