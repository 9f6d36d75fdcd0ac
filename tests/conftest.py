"""Shared fixtures: a tiny random BERT built offline, Hydra composition, and one MLflow store per session.

Nothing here writes into the repository: the model, the MLflow store (sqlite + ./mlruns artifacts), Hydra's
outputs/ and the `datasets` cache all live in pytest's temporary directories."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN_PY = REPO / "run.py"
DEMO = REPO / "data" / "demo"
IMDB = REPO.parent / "shared" / "datasets" / "imdb"

if str(REPO) not in sys.path:  # `import experiments`, `import strategies` without installing the project
    sys.path.insert(0, str(REPO))

from experiments.config import CONF_DIR, compose  # noqa: E402, F401 — compose is re-exported to the tests

STRATEGY_PRESETS = sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))

_CACHE_ROOT: str | None = None


def pytest_configure(config):
    """Before any test module imports `datasets`: keep caches out of ~/.cache and never try the hub."""
    global _CACHE_ROOT
    _CACHE_ROOT = tempfile.mkdtemp(prefix="transfer-bench-test-caches-")
    os.environ["HF_DATASETS_CACHE"] = str(Path(_CACHE_ROOT) / "hf-datasets")
    os.environ["TRANSFER_BENCH_CACHE"] = str(Path(_CACHE_ROOT) / "features")  # the project's feature cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def pytest_unconfigure(config):
    if _CACHE_ROOT:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


# ----------------------------------------------------------------------------- demo data
def read_demo(split: str = "train") -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (DEMO / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def demo_split(n: int, split: str = "train", offset: int = 0):
    """The first n demo examples (both classes, alternating in the file) as a Split with labels 0/1."""
    import numpy as np

    from strategies.base import Split

    texts, labels = read_demo(split)
    texts, labels = texts[offset : offset + n], labels[offset : offset + n]
    names = sorted(set(read_demo("train")[1]))
    return Split(texts, np.array([names.index(x) for x in labels], dtype=np.int64))


# ----------------------------------------------------------------------------- tiny BERT
def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def build_tiny_bert(folder: Path) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT (safetensors) and a WordPiece tokenizer whose vocabulary
    is the lower-cased words and punctuation of the demo training texts — built offline in about a second."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words: set[str] = set()
    for text in read_demo("train")[0] + read_demo("test")[0]:
        words.update(re.findall(r"\w+|[^\w\s]", _strip_accents(text.lower())))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(folder))  # reads vocab.txt; works offline
    tokenizer.save_pretrained(str(folder))

    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(1234)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    assert (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def tiny_model_overrides(path: Path | str) -> list[str]:
    """Hydra overrides that point the model group at the tiny BERT."""
    return [
        f"model.name_or_path={path}",
        "model.package=null",
        "model.sha256=null",
        "model.name=tiny",
        "model.max_length=64",
    ]


@pytest.fixture(scope="session")
def tiny_overrides(tiny_bert) -> list[str]:
    return tiny_model_overrides(tiny_bert)


# ----------------------------------------------------------------------------- Hydra
def preset_has(name: str, key: str) -> bool:
    return key in compose([f"strategy={name}"]).strategy


def quick(name: str) -> list[str]:
    """Overrides that keep a preset's training short in tests: one epoch, two MLM steps, 64 contrastive pairs
    (where it has them)."""
    return [f"strategy.{key}={value}" for key, value in (("epochs", 1), ("mlm_steps", 2), ("max_pairs", 64))
            if preset_has(name, key)]


# ----------------------------------------------------------------------------- MLflow
class MlflowStore:
    """One sqlite store (and its ./mlruns artifact root) shared by the whole session: creating a store runs
    its schema migrations, which costs seconds. Tests keep apart by experiment name."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"

    def overrides(self, experiment_name: str) -> list[str]:
        return [f"tracking_uri={self.uri}", f"experiment_name={experiment_name}"]

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment_name: str):
        client = self.client()
        exp = client.get_experiment_by_name(experiment_name)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> MlflowStore:
    root = tmp_path_factory.mktemp("mlflow")
    store = MlflowStore(root)
    cwd = os.getcwd()
    os.chdir(root)  # the default artifact root of a sqlite store is ./mlruns, resolved when it is created
    try:
        store.client().search_experiments()  # creates the schema once
    finally:
        os.chdir(cwd)
    return store


@pytest.fixture
def in_store(mlflow_store, monkeypatch) -> MlflowStore:
    """For in-process runs: cwd = the store's folder (artifacts, Hydra outputs), global MLflow state restored."""
    import mlflow

    monkeypatch.chdir(mlflow_store.root)
    previous = mlflow.get_tracking_uri()
    yield mlflow_store
    while mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def restore_sys_path():
    """mlflow.pyfunc.load_model prepends the model's code folder to sys.path; undo that."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("PYTHONHASHSEED", "0")
    return env
