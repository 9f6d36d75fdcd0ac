"""Property tests of the data loader on generated files: whatever the content (unicode, empty fields, very long
lines, odd label types), it either loads correctly or fails with a clear DataError — never anything else."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.data import load_dataset
from experiments.errors import DataError

texts = st.one_of(
    st.text(min_size=0, max_size=40),  # any unicode, including empty and whitespace-only
    st.text(alphabet="ab ", min_size=2000, max_size=3000),  # very long lines
    st.sampled_from(["  ", "\t", "naïve café 😀", "ünïcödé", "a,b;c\"d'"]),
)
labels = st.one_of(st.sampled_from(["pos", "neg", "neutral"]), st.integers(0, 2), st.booleans(),
                   st.sampled_from([1.0, 0.0, None]))
rows = st.lists(st.tuples(texts, labels), min_size=0, max_size=30)


def _write(tmp_path, kind: str, data: list[tuple]) -> str:
    path = tmp_path / f"train.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in data), encoding="utf-8")
    else:
        pd.DataFrame(data, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=rows)
def test_loader_loads_or_fails_clearly(tmp_path, kind, data):
    cfg = {"name": "prop", "train_file": _write(tmp_path, kind, data), "text_column": "text",
           "label_column": "label", "val_size": 0.2, "test_fraction": 0.2, "split_seed": 0, "max_dropped_fraction": 0.5}
    try:
        ds = load_dataset(cfg)
    except DataError as e:
        assert str(e) and "\n" not in str(e)  # one clear line
        return
    # loaded: every kept example has a real text, a valid label id, and the splits are disjoint and complete
    sizes = len(ds.train) + len(ds.val) + len(ds.test)
    assert 0 < sizes <= len(data)
    assert ds.num_labels >= 2
    for split in (ds.train, ds.val, ds.test):
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
        assert all(0 <= y < ds.num_labels for y in split.labels)
