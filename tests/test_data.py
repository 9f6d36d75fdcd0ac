"""Loading and splitting data: disjoint, stratified, seeded splits, size caps, and clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import IMDB, REPO, compose, read_demo

from experiments.data import DataError, load_dataset
from experiments.errors import ConfigError


def data_cfg(*overrides: str):
    return compose(list(overrides)).data


def write_jsonl(path: Path, texts, labels) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(texts, labels, strict=True):
            f.write(json.dumps({"text": t, "label": y}) + "\n")
    return path


def unique_dataset(folder: Path, n_train=(150, 100, 50), n_test=(45, 30, 15)) -> dict[str, dict[str, str]]:
    """train/test jsonl with unique texts and imbalanced classes a/b/c; returns text -> label per split."""
    out = {}
    for split, counts in (("train", n_train), ("test", n_test)):
        texts, labels = [], []
        for cls, n in zip("abc", counts, strict=True):
            for i in range(n):
                texts.append(f"{split} example {i} of class {cls}, with some words {i * 7 % 13}")
                labels.append(cls)
        order = np.random.default_rng(len(texts)).permutation(len(texts))  # classes interleaved
        write_jsonl(folder / f"{split}.jsonl", [texts[i] for i in order], [labels[i] for i in order])
        out[split] = dict(zip(texts, labels, strict=True))
    return out


def unique_cfg(folder: Path, *overrides: str):
    return data_cfg("data=files", "data.train_file=null", f"data.path={folder}", *overrides)


def labels_of(split, names) -> list[str]:
    return [names[i] for i in split.labels]


def ratios(labels) -> dict:
    c = Counter(labels)
    return {k: v / len(labels) for k, v in c.items()}


# ----------------------------------------------------------------------------- demo
def test_demo_splits():
    ds = load_dataset(data_cfg("data=demo"))
    assert ds.name == "demo"
    assert ds.label_names == ["negative", "positive"] and ds.num_labels == 2
    assert (len(ds.train), len(ds.val), len(ds.test)) == (320, 80, 160)
    train_texts, _ = read_demo("train")
    assert len(set(train_texts)) == len(train_texts)  # demo texts are unique, so text checks are index checks
    assert not set(ds.val.texts) & set(ds.train.texts)
    assert not set(ds.test.texts) & (set(ds.train.texts) | set(ds.val.texts))
    assert set(ds.train.texts) | set(ds.val.texts) == set(train_texts)
    assert set(ds.test.texts) == set(read_demo("test")[0])
    for split in (ds.train, ds.val, ds.test):  # balanced data stays balanced
        assert np.bincount(split.labels).tolist() == [len(split) // 2] * 2
    assert "train_test_duplicate_texts" not in ds.notes


def test_demo_labels_match_the_file():
    ds = load_dataset(data_cfg("data=demo"))
    truth = dict(zip(*read_demo("train"), strict=True)) | dict(zip(*read_demo("test"), strict=True))
    for split in (ds.train, ds.val, ds.test):
        assert labels_of(split, ds.label_names) == [truth[t] for t in split.texts]


# ----------------------------------------------------------------------------- splitting
def test_splits_disjoint_by_index_and_stratified(tmp_path):
    truth = unique_dataset(tmp_path)
    ds = load_dataset(unique_cfg(tmp_path))
    assert ds.label_names == ["a", "b", "c"]
    index = {t: i for i, t in enumerate(truth["train"])}
    train_idx = [index[t] for t in ds.train.texts]
    val_idx = [index[t] for t in ds.val.texts]
    assert len(set(train_idx)) == len(train_idx) and len(set(val_idx)) == len(val_idx)
    assert not set(train_idx) & set(val_idx)
    assert set(train_idx) | set(val_idx) == set(range(300))  # nothing lost, nothing invented
    assert not set(ds.test.texts) & set(index)
    assert set(ds.test.texts) == set(truth["test"])
    assert len(ds.val) == 60  # val_size 0.2 of 300

    overall = {"a": 0.5, "b": 1 / 3, "c": 1 / 6}
    for split in (ds.train, ds.val):
        got = ratios(labels_of(split, ds.label_names))
        for cls, r in overall.items():
            assert abs(got[cls] - r) <= 0.02, (cls, got)
    for split, name in ((ds.train, "train"), (ds.val, "train"), (ds.test, "test")):
        assert labels_of(split, ds.label_names) == [truth[name][t] for t in split.texts]


def test_split_seed(tmp_path):
    unique_dataset(tmp_path)
    a = load_dataset(unique_cfg(tmp_path, "data.split_seed=0"))
    b = load_dataset(unique_cfg(tmp_path, "data.split_seed=0"))
    c = load_dataset(unique_cfg(tmp_path, "data.split_seed=1"))
    assert a.val.texts == b.val.texts and a.train.texts == b.train.texts
    assert np.array_equal(a.train.labels, b.train.labels)
    assert a.fingerprint() == b.fingerprint()
    assert set(a.val.texts) != set(c.val.texts)
    assert a.fingerprint() != c.fingerprint()


def test_training_seed_does_not_move_the_split(tmp_path):
    unique_dataset(tmp_path)
    a = load_dataset(compose(["data=files", "data.train_file=null", f"data.path={tmp_path}", "seed=0"]).data)
    b = load_dataset(compose(["data=files", "data.train_file=null", f"data.path={tmp_path}", "seed=7"]).data)
    assert a.fingerprint() == b.fingerprint()


def test_size_caps(tmp_path):
    unique_dataset(tmp_path)
    ds = load_dataset(unique_cfg(tmp_path, "data.train_size=60", "data.test_size=30"))
    assert len(ds.train) == 60
    assert len(ds.val) == 12  # val_size=0.2 is a fraction of the training budget
    assert len(ds.test) == 30
    assert not set(ds.train.texts) & set(ds.val.texts)
    assert Counter(labels_of(ds.train, ds.label_names)) == {"a": 30, "b": 20, "c": 10}
    assert Counter(labels_of(ds.test, ds.label_names)) == {"a": 15, "b": 10, "c": 5}

    counted = load_dataset(unique_cfg(tmp_path, "data.val_size=25", "data.train_size=100"))
    assert (len(counted.train), len(counted.val), len(counted.test)) == (100, 25, 90)


def test_test_cap_leaves_train_and_val_alone(tmp_path):
    """Capping the test split must not move the training/validation examples (comparable runs)."""
    unique_dataset(tmp_path)
    full = load_dataset(unique_cfg(tmp_path))
    capped = load_dataset(unique_cfg(tmp_path, "data.test_size=30"))
    assert capped.train.texts == full.train.texts and capped.val.texts == full.val.texts
    assert len(set(capped.test.texts)) == 30 and set(capped.test.texts) <= set(full.test.texts)


def test_train_size_bigger_than_available(tmp_path):
    unique_dataset(tmp_path)
    with pytest.raises(DataError, match=r"train_size=1000.*exceed the 300 training examples"):
        load_dataset(unique_cfg(tmp_path, "data.train_size=1000"))
    with pytest.raises(DataError, match=r"train_size=280"):  # 280 + 56 validation > 300
        load_dataset(unique_cfg(tmp_path, "data.train_size=280"))


def test_test_size_bigger_than_available(tmp_path):
    unique_dataset(tmp_path)
    with pytest.raises(DataError, match=r"test_size=500 exceeds the 90 examples"):
        load_dataset(unique_cfg(tmp_path, "data.test_size=500"))


@pytest.mark.parametrize("cap", ["data.test_size=89", "data.train_size=249"])
def test_cap_just_below_what_is_available(tmp_path, cap):
    """Keeping all but one example is a valid request: it must give a subset of that size, not crash."""
    unique_dataset(tmp_path)
    ds = load_dataset(unique_cfg(tmp_path, cap))
    key, size = cap.split("=")
    assert len(ds.test if key.endswith("test_size") else ds.train) == int(size)


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_sizes(tmp_path, size):
    unique_dataset(tmp_path)
    with pytest.raises(ConfigError, match="val_size"):  # a config value, checked by experiments.schema
        load_dataset(unique_cfg(tmp_path, f"data.val_size={size}"))


# ----------------------------------------------------------------------------- files
def test_csv_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    names = ["neutral", "angry", "happy"]
    labels = [names[i % 3] for i in range(120)]
    df = pd.DataFrame({"review": [f"review number {i}, feeling {y}" for i, y in enumerate(labels)], "mood": labels})
    df = df.iloc[rng.permutation(len(df))]
    df.to_csv(tmp_path / "train.csv", index=False)
    df.head(30).to_csv(tmp_path / "test.csv", index=False)
    ds = load_dataset(
        data_cfg(
            "data=files", f"data.train_file={tmp_path / 'train.csv'}", f"data.test_file={tmp_path / 'test.csv'}",
            "data.text_column=review", "data.label_column=mood", "data.name=moods",
        )
    )
    assert ds.name == "moods"
    assert ds.num_labels == 3
    assert ds.label_names == ["angry", "happy", "neutral"]  # sorted names, kept as strings
    truth = dict(zip(df.review, df.mood, strict=True))
    for split in (ds.train, ds.val, ds.test):
        assert labels_of(split, ds.label_names) == [truth[t] for t in split.texts]
    assert len(ds.test) == 30 and len(ds.train) + len(ds.val) == 120
    assert ds.sources["train"].endswith("train.csv") and ds.sources["test"].endswith("test.csv")


def test_label_names_fix_the_display_order_only(tmp_path):
    """data.label_names orders the classes in reports; what is trained (ids, splits, fingerprint) stays."""
    unique_dataset(tmp_path)
    ds = load_dataset(unique_cfg(tmp_path, "data.label_names=[c,a,b]"))
    plain = load_dataset(unique_cfg(tmp_path))
    assert ds.display_names == ["c", "a", "b"] and ds.display_order == [2, 0, 1]
    assert ds.label_names == plain.label_names == ["a", "b", "c"] and plain.display_names == ["a", "b", "c"]
    assert ds.fingerprint() == plain.fingerprint()
    for split in ("train", "val", "test"):
        assert getattr(ds, split).texts == getattr(plain, split).texts
        assert getattr(ds, split).labels.tolist() == getattr(plain, split).labels.tolist()
    assert Counter(labels_of(ds.val, ds.label_names)) == {"a": 30, "b": 20, "c": 10}


def test_integer_labels_with_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [f"text {i}" for i in range(50)], [i % 2 for i in range(50)])
    ds = load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'train.jsonl'}", "data.label_names=[neg,pos]"))
    assert ds.label_names == ["neg", "pos"]
    for split in (ds.train, ds.val, ds.test):
        assert [int(t.split()[1]) % 2 for t in split.texts] == split.labels.tolist()


def test_no_test_file_holds_one_out(tmp_path):
    texts = [f"unique text number {i}" for i in range(200)]
    labels = ["x" if i % 4 else "y" for i in range(200)]
    write_jsonl(tmp_path / "all.jsonl", texts, labels)
    ds = load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'all.jsonl'}"))
    assert len(ds.test) == 40  # test_fraction 0.2
    assert len(ds.val) == 32 and len(ds.train) == 128  # val_size 0.2 of what is left
    assert not set(ds.test.texts) & (set(ds.train.texts) | set(ds.val.texts))
    assert set(ds.test.texts) | set(ds.train.texts) | set(ds.val.texts) == set(texts)
    assert Counter(labels_of(ds.test, ds.label_names)) == {"x": 30, "y": 10}  # stratified
    assert "held out" in ds.sources["test"]


def test_missing_column_names_the_existing_ones(tmp_path):
    unique_dataset(tmp_path)
    with pytest.raises(DataError, match=r"no column 'review' \(data.text_column\).*the columns are: text, label"):
        load_dataset(unique_cfg(tmp_path, "data.text_column=review"))
    with pytest.raises(DataError, match=r"no column 'stars' \(data.label_column\)"):
        load_dataset(unique_cfg(tmp_path, "data.label_column=stars"))


def test_single_class(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [f"text {i}" for i in range(30)], ["only"] * 30)
    with pytest.raises(DataError, match="single class"):
        load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'train.jsonl'}"))


def test_test_label_unseen_in_train(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [f"text {i}" for i in range(30)], ["a", "b"] * 15)
    write_jsonl(tmp_path / "test.jsonl", [f"other {i}" for i in range(9)], ["a", "b", "zebra"] * 3)
    with pytest.raises(DataError, match=r"test labels \['zebra'\] never occur in the training data"):
        load_dataset(data_cfg("data=files", "data.train_file=null", f"data.path={tmp_path}"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'nope.csv'}"))
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(data_cfg("data=files", "data.train_file=null", f"data.path={tmp_path / 'nowhere'}"))
    with pytest.raises(DataError, match="no 'train' file"):
        load_dataset(data_cfg("data=files", "data.train_file=null", f"data.path={tmp_path}"))


def test_files_requires_a_source():
    with pytest.raises(DataError, match="no data source"):
        load_dataset(data_cfg("data=files"))


def test_unsupported_file_type(tmp_path):
    (tmp_path / "train.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'train.xlsx'}"))


def test_empty_texts_dropped_and_counted(tmp_path):
    texts = [f"text {i}" for i in range(100)]
    for i in (3, 17, 40):
        texts[i] = ""
    texts[55] = "   \n "
    labels = ["a", "b"] * 50
    write_jsonl(tmp_path / "train.jsonl", texts, labels)
    ds = load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'train.jsonl'}"))
    assert ds.notes["train_dropped_empty"] == 4
    assert len(ds.train) + len(ds.val) + len(ds.test) == 96
    assert all(t.strip() for s in (ds.train, ds.val, ds.test) for t in s.texts)


def test_too_many_empty_texts(tmp_path):
    texts = [f"text {i}" if i % 5 else "" for i in range(100)]  # 20% empty > max_dropped_fraction 0.1
    write_jsonl(tmp_path / "train.jsonl", texts, ["a", "b"] * 50)
    with pytest.raises(DataError, match=r"20 of 100 rows.*max_dropped_fraction=0.1"):
        load_dataset(data_cfg("data=files", f"data.train_file={tmp_path / 'train.jsonl'}"))


def test_duplicates_between_train_and_test_are_counted(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [f"text {i}" for i in range(40)], ["a", "b"] * 20)
    write_jsonl(tmp_path / "test.jsonl", ["text 0", "text 1", "fresh one", "fresh two"], ["a", "b", "a", "b"])
    ds = load_dataset(data_cfg("data=files", "data.train_file=null", f"data.path={tmp_path}"))
    assert ds.notes.get("train_test_duplicate_texts", 0) == len(set(ds.train.texts) & {"text 0", "text 1"})


def test_duplicates_between_train_and_validation_are_counted(tmp_path):
    texts = [f"text {i % 20}" for i in range(40)]  # every text twice: the validation cut separates some pairs
    write_jsonl(tmp_path / "train.jsonl", texts, ["a", "b"] * 20)
    write_jsonl(tmp_path / "test.jsonl", ["fresh one", "fresh two"], ["a", "b"])
    ds = load_dataset(data_cfg("data=files", "data.train_file=null", f"data.path={tmp_path}"))
    shared = len(set(ds.train.texts) & set(ds.val.texts))
    assert shared > 0 and ds.notes["train_val_duplicate_texts"] == shared


# ----------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.skipif(not IMDB.is_dir(), reason=f"no IMDb copy at {IMDB}")
def test_imdb_local_copy():
    ds = load_dataset(data_cfg("data=imdb", f"data.path={IMDB}", "data.train_size=200", "data.test_size=200"))
    assert ds.name == "imdb"
    assert ds.num_labels == 2 and ds.label_names == ["neg", "pos"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (200, 20, 200)
    for split in (ds.train, ds.val, ds.test):
        assert np.bincount(split.labels, minlength=2).tolist() == [len(split) // 2] * 2
    assert not set(ds.train.texts) & set(ds.val.texts)
    assert ds.sources["train"].endswith("train.parquet") and ds.sources["test"].endswith("test.parquet")
    assert min(len(t) for t in ds.train.texts) > 20


# ----------------------------------------------------------------------------- a user's own CSV
def stars_csv(path: Path, typo_rows: int = 1) -> Path:
    """A 4-class training file with `typo_rows` rows labelled "grate" (a typo for "great")."""
    labels = [("terrible", "bad", "good", "great")[i % 4] for i in range(80)]
    labels[3 : 3 + 4 * typo_rows : 4] = ["grate"] * typo_rows
    pd.DataFrame({"review": [f"review {i}" for i in range(80)], "stars": labels}).to_csv(path, index=False)
    return path


def test_a_rare_training_label_stops_the_run_in_one_line(tmp_path):
    cfg = ("data=files", f"data.train_file={stars_csv(tmp_path / 'stars.csv')}", "data.text_column=review",
           "data.label_column=stars")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg(*cfg))
    assert str(e.value) == ("training label 'grate' occurs in only 1 row(s) of 80: fix it in the data, "
                            "or keep it as a class with data.min_class_count=1")
    ds = load_dataset(data_cfg(*cfg, "data.min_class_count=1"))  # the documented override keeps it
    assert ds.label_names == ["bad", "good", "grate", "great", "terrible"]


def test_min_class_count_is_bookkeeping():
    from experiments.identity import config_hash

    assert config_hash(compose([])) == config_hash(compose(["data.min_class_count=1"]))


def test_relative_paths_resolve_from_the_launch_directory(tmp_path, monkeypatch):
    launch = tmp_path / "launch"
    launch.mkdir()
    unique_dataset(launch)
    monkeypatch.chdir(launch)
    ds = load_dataset(data_cfg("data=files", "data.train_file=train.jsonl", "data.test_file=test.jsonl"))
    assert ds.sources["train"] == str(launch / "train.jsonl")
    with pytest.raises(DataError) as e:  # a typo is reported where the user looked, not in the project
        load_dataset(data_cfg("data=files", "data.train_file=trian.jsonl"))
    assert str(e.value).startswith(f"data file {launch / 'trian.jsonl'} does not exist")
    ds = load_dataset(data_cfg("data=demo"))  # data/demo is not here: the project's copy
    assert ds.sources["train"] == str(REPO / "data" / "demo" / "train.jsonl")


def test_test_seed_fixes_the_test_examples_alone(tmp_path):
    """split_seed with a fixed test_seed: other training subsets (and validation), the same test examples —
    both for a test_size subset and for a test split held out of train."""
    unique_dataset(tmp_path)
    a = load_dataset(unique_cfg(tmp_path, "data.split_seed=0", "data.test_size=30", "data.train_size=60"))
    b = load_dataset(unique_cfg(tmp_path, "data.split_seed=1", "data.test_size=30", "data.train_size=60", "data.test_seed=0"))
    c = load_dataset(unique_cfg(tmp_path, "data.split_seed=1", "data.test_size=30", "data.train_size=60"))
    assert a.test.texts == b.test.texts and set(a.train.texts) != set(b.train.texts)
    assert set(c.test.texts) != set(a.test.texts)  # null: the split seed draws the test subset too
    held = [load_dataset(data_cfg("data=files", f"data.train_file={tmp_path}/train.jsonl", *o))
            for o in (["data.split_seed=0"], ["data.split_seed=2", "data.test_seed=0"])]
    assert held[0].test.texts == held[1].test.texts and set(held[0].train.texts) != set(held[1].train.texts)


def test_test_seed_alone_moves_only_the_test_examples(tmp_path):
    unique_dataset(tmp_path)
    a = load_dataset(unique_cfg(tmp_path, "data.test_size=30", "data.train_size=60"))
    b = load_dataset(unique_cfg(tmp_path, "data.test_size=30", "data.train_size=60", "data.test_seed=5"))
    assert a.train.texts == b.train.texts and a.val.texts == b.val.texts and set(a.test.texts) != set(b.test.texts)


@pytest.mark.parametrize("override", ["data.split_seed=-1", "data.test_seed=-3", "data.test_seed=4294967296"])
def test_seeds_out_of_range_are_one_line_errors(override):
    from experiments.schema import validate

    with pytest.raises(ConfigError, match=r"must be in \[0, 2\*\*32\)"):
        validate(compose([override]))
