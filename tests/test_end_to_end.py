"""`python run.py …` as a user runs it (a subprocess per preset, on the tiny BERT), checked through MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, RUN_PY, STRATEGY_PRESETS, preset_has, quick, subprocess_env
from sklearn.metrics import f1_score

# Small splits keep each run to seconds; the ~5-10 s of every subprocess is imports.
DATA = ["data.train_size=80", "data.test_size=40"]
SUMMARY_METRICS = ("test_accuracy", "test_f1_macro", "trainable_params", "total_params", "train_time_s", "peak_rss_mb",
                   "machine_matmul_gflops_min", "machine_copy_gbps_max")
ARTIFACTS = (
    "classification_report.txt",
    "classification_report.json",
    "confusion_matrix.png",
    "predictions/test_predictions.csv",
    "config/resolved.yaml",
)
LABELS = {"negative", "positive"}


def run_py(store, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(RUN_PY), *args]
    proc = subprocess.run(
        cmd, cwd=store.root, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stderr (tail)\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def preset_run(mlflow_store, tiny_overrides):
    """preset name -> (run id, stdout) of one `python run.py strategy=<name>` — each preset runs once per module."""
    done: dict[str, tuple[str, str]] = {}

    def get(name: str) -> tuple[str, str]:
        if name not in done:
            experiment = f"e2e-{name}"
            epochs = quick(name)
            proc = run_py(mlflow_store, [f"strategy={name}", *tiny_overrides, *mlflow_store.overrides(experiment), *DATA, *epochs])
            runs = mlflow_store.runs(experiment)
            assert len(runs) == 1, f"expected exactly one run in '{experiment}', found {len(runs)}"
            # the logged model has a signature and a working input example (MLflow warns otherwise)
            assert "Failed to infer model signature" not in proc.stderr
            assert "Failed to validate serving input example" not in proc.stderr
            done[name] = (runs[0].info.run_id, proc.stdout)
        return done[name]

    return get


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


@pytest.fixture
def pyfunc_store(mlflow_store, restore_sys_path):
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_store.uri)
    yield mlflow_store
    mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_run_py_logs_a_complete_run(name, preset_run, pyfunc_store, tmp_path):
    import mlflow

    store = pyfunc_store
    run_id, stdout = preset_run(name)
    client = store.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run_id in stdout and "accuracy" in stdout

    metrics = run.data.metrics
    missing = [m for m in SUMMARY_METRICS if m not in metrics]
    assert not missing, f"missing metrics {missing}"
    if not preset_has(name, "encoder"):
        # Learns from the demo texts themselves (TF-IDF): clearly above chance (0.5) on the 40 test texts
        # (0.75 measured). The presets with an encoder start here from the tests' random tiny BERT, so
        # for them the checks below (predictions, metrics and the logged model agree) are what can fail.
        assert metrics["test_accuracy"] >= 0.65 and metrics["test_f1_macro"] >= 0.65
    assert 0 < metrics["trainable_params"] <= metrics["total_params"]
    assert metrics["train_time_s"] > 0 and metrics["peak_rss_mb"] > 50
    for key in ("machine_matmul_gflops", "machine_copy_gbps", "machine_block_tokens_per_s"):  # the run's slowest and fastest sample
        assert 0 < metrics[f"{key}_min"] <= metrics[f"{key}_max"] < 1e6
    assert (metrics["data_train_size"], metrics["data_val_size"], metrics["data_test_size"]) == (80, 16, 40)
    for key in ("val_accuracy", "val_f1_macro"):
        history = client.get_metric_history(run_id, key)
        assert [m.step for m in history] == [1], f"{key} history {history}"
        assert 0.0 <= history[0].value <= 1.0

    tags = run.data.tags
    assert tags["strategy"] == name
    assert tags["model"] == ("none" if name == "baseline" else "tiny")
    assert tags["dataset"] == "demo"
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_commit"])
    if (REPO / ".git").exists():
        assert tags["git_commit"] != "unknown"
    params = run.data.params
    assert params["strategy.name"] == name
    if name == "baseline":  # the model group is not used, so it is not logged
        assert not any(k.startswith("model.") for k in params)
    else:
        assert params["model.name"] == "tiny" and params["model.max_length"] == "64"

    arts = artifact_paths(client, run_id)
    assert set(ARTIFACTS) <= arts, f"missing artifacts {set(ARTIFACTS) - arts}"
    preds = pd.read_csv(client.download_artifacts(run_id, "predictions/test_predictions.csv", str(tmp_path)))
    assert list(preds.columns[:3]) == ["text", "true", "pred"]
    assert {"prob_negative", "prob_positive"} <= set(preds.columns)
    assert len(preds) == 40 and set(preds.true) <= LABELS and set(preds.pred) <= LABELS
    np.testing.assert_allclose(preds[["prob_negative", "prob_positive"]].sum(axis=1), 1.0, atol=1e-4)
    assert metrics["test_accuracy"] == pytest.approx((preds.true == preds.pred).mean())
    assert metrics["test_f1_macro"] == pytest.approx(f1_score(preds.true, preds.pred, average="macro"))
    assert preds.true.value_counts().to_dict() == {"negative": 20, "positive": 20}  # the stratified test cut

    contexts = {
        tag.value
        for inp in run.inputs.dataset_inputs
        for tag in inp.tags
        if tag.key == "mlflow.data.context"
    }
    assert run.inputs.dataset_inputs and contexts == {"training", "validation", "test"}

    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")  # the model page's schema
    assert info.signature.inputs.input_names() == ["text"]
    assert info.signature.outputs.input_names() == ["label", "score", "prob_negative", "prob_positive"]
    assert info.saved_input_example_info["type"] == "dataframe"
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    out = model.predict(pd.DataFrame({"text": ["A moving, beautifully acted film.", "Two hours I want back."]}))
    assert len(out) == 2 and "label" in out.columns and set(out.label) <= LABELS
    # The logged model reproduces the run's own test predictions (same texts, same order, same batches).
    again = model.predict(pd.DataFrame({"text": preds.text.tolist()}))
    assert again.label.tolist() == preds.pred.tolist()
    np.testing.assert_allclose(again[["prob_negative", "prob_positive"]].to_numpy(),
                               preds[["prob_negative", "prob_positive"]].to_numpy(), atol=1e-5)


def test_freeze_run_counts_only_the_head(preset_run, mlflow_store):
    run = mlflow_store.client().get_run(preset_run("freeze")[0])
    assert run.data.metrics["trainable_params"] == 32 * 2 + 2


def test_multirun_sweep(mlflow_store, tiny_overrides, capsys):
    experiment = "e2e-sweep"
    run_py(
        mlflow_store,
        ["-m", "strategy=baseline,embed", "seed=0,1", *tiny_overrides, *mlflow_store.overrides(experiment), *DATA],
        timeout=400,
    )
    runs = mlflow_store.runs(experiment)
    assert all(r.info.status == "FINISHED" for r in runs)
    jobs = [r for r in runs if "test_accuracy" in r.data.metrics]
    assert len(jobs) == 4
    # the rest of the experiment is exactly one run: the sweep's parent, with the 4 jobs as its children
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1 and len(runs) == 5
    assert {r.data.tags.get("mlflow.parentRunId") for r in jobs} == {parents[0].info.run_id}
    # the experiment has a saved view of the runs table with the summary metrics as columns (UI 3.x)
    exp = mlflow_store.client().get_experiment(parents[0].info.experiment_id)
    view = json.loads(exp.tags["mlflow.sharedViewState.runs"])
    columns = json.loads(view["state"])["selectedColumns"]
    assert {"metrics.`test_accuracy`", "metrics.`test_f1_macro`", "metrics.`train_time_s`"} <= set(columns)
    runs = jobs
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in runs) == [
        ("baseline", "0"), ("baseline", "1"), ("embed", "0"), ("embed", "1"),
    ]
    # every job is scored on the same examples: the split seed is not the training seed
    assert len({r.data.tags["data_fingerprint"] for r in runs}) == 1
    # predict on the parent (it has no model) says so and names child runs
    code, _, err = _predict(["--run-id", parents[0].info.run_id, "--tracking-uri", mlflow_store.uri, "x"], capsys)
    assert code == 2 and "is a sweep's parent run" in err
    assert any(r.info.run_id in err for r in jobs), err


def test_predict_cli_prints_labels(preset_run, mlflow_store, capsys, restore_sys_path, tmp_path):
    from experiments.predict import main

    run_id, _ = preset_run("embed")
    texts = ["A moving, beautifully acted film.", "Two hours I want back."]
    assert main(["--run-id", run_id, "--tracking-uri", mlflow_store.uri, *texts]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["text", "label", "score"]
    assert len(lines) == 3
    for text, line in zip(texts, lines[1:], strict=True):
        assert line.strip().startswith(text)
        assert set(line.split()) & LABELS

    out = tmp_path / "preds.csv"
    assert main(["--model-uri", f"runs:/{run_id}/model", "--tracking-uri", mlflow_store.uri,
                 "--output", str(out), *texts]) == 0
    df = pd.read_csv(out)
    assert df.text.tolist() == texts and set(df.label) <= LABELS


def test_predict_cli_unknown_run(mlflow_store, capsys):
    from experiments.predict import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--run-id", "0" * 32, "--tracking-uri", mlflow_store.uri, "some text"])
    assert exit_info.value.code == 2
    assert "cannot load" in capsys.readouterr().err


def test_predict_cli_run_without_a_model(mlflow_store, capsys):
    from experiments import tracking
    from experiments.predict import main

    experiment_id = tracking.setup(mlflow_store.uri, "no-model")
    with tracking.tracked_run(experiment_id, "no-model", {}) as active:
        tracking.log_params({"log_model": "False"})
    with pytest.raises(SystemExit) as exit_info:
        main(["--run-id", active.info.run_id, "--tracking-uri", mlflow_store.uri, "some text"])
    assert exit_info.value.code == 2
    assert "made with log_model=false" in capsys.readouterr().err


def _predict(args: list[str], capsys) -> tuple[int, str, str]:
    from experiments.predict import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_cli_reads_a_text_file_and_standard_input(preset_run, mlflow_store, capsys, monkeypatch,
                                                          restore_sys_path, tmp_path):
    import io

    run_id, _ = preset_run("baseline")
    model = ["--run-id", run_id, "--tracking-uri", mlflow_store.uri]
    texts = ["A moving, beautifully acted film.", "Two hours I want back.", "Dull, and far too long."]
    txt = tmp_path / "reviews.txt"
    txt.write_text(texts[0] + "\n\n" + "\n".join(texts[1:]) + "\n", encoding="utf-8")  # blank lines skipped
    out = tmp_path / "from_file.csv"
    assert _predict([*model, "--file", str(txt), "--output", str(out)], capsys)[0] == 0
    from_file = pd.read_csv(out)
    assert from_file.text.tolist() == texts and set(from_file.label) <= LABELS

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    out = tmp_path / "from_stdin.csv"
    assert _predict([*model, "--output", str(out)], capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), from_file)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_predict_cli_reads_the_text_column_of_a_table(suffix, preset_run, mlflow_store, capsys,
                                                      restore_sys_path, tmp_path):
    run_id, _ = preset_run("baseline")
    model = ["--run-id", run_id, "--tracking-uri", mlflow_store.uri]
    table = pd.DataFrame({"review": ["A moving, beautifully acted film.", "Two hours I want back."],
                          "stars": ["great", "terrible"]})
    path = tmp_path / f"test{suffix}"
    {".csv": lambda: table.to_csv(path, index=False), ".parquet": lambda: table.to_parquet(path),
     ".jsonl": lambda: table.to_json(path, orient="records", lines=True)}[suffix]()
    out = tmp_path / "preds.csv"
    code, _, _ = _predict([*model, "--file", str(path), "--text-column", "review", "--output", str(out)], capsys)
    assert code == 0
    assert pd.read_csv(out).text.tolist() == table.review.tolist()  # no header, no label column as texts

    code, _, err = _predict([*model, "--file", str(path)], capsys)  # the default column 'text' is not there
    assert code == 2 and "no column 'text'; pick one with --text-column (the columns are: review, stars)" in err
    assert len(err.strip().splitlines()) == 1


def test_predict_cli_refuses_an_unknown_file_type(mlflow_store, capsys, tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK")
    code, _, err = _predict(["--run-id", "0" * 32, "--tracking-uri", mlflow_store.uri, "--file", str(path)], capsys)
    assert code == 2 and "unsupported type '.xlsx'" in err and len(err.strip().splitlines()) == 1


def test_logged_model_lists_probabilities_in_label_names_order(mlflow_store, capsys, restore_sys_path, tmp_path):
    """data.label_names orders the display only: the logged model's probability columns (and its signature)
    follow it too, while the label each text gets is the same."""
    from experiments.predict import main

    experiment = "e2e-display-order"
    run_py(mlflow_store, ["strategy=baseline", "data.label_names=[positive,negative]", *DATA,
                          *mlflow_store.overrides(experiment)])
    (run,) = mlflow_store.runs(experiment)
    out = tmp_path / "preds.csv"
    texts = ["A moving, beautifully acted film.", "Two hours I want back."]
    assert main(["--run-id", run.info.run_id, "--tracking-uri", mlflow_store.uri, "--output", str(out), *texts]) == 0
    df = pd.read_csv(out)
    assert [c for c in df.columns if c.startswith("prob_")] == ["prob_positive", "prob_negative"]
    assert (df.label == df[["prob_positive", "prob_negative"]].idxmax(axis=1).str[5:]).all()
    import mlflow

    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert [c["name"] for c in info.signature.outputs.to_dict()][2:] == ["prob_positive", "prob_negative"]
    # models logged before the display order existed run their own pyfunc_model.py against today's bundle
    # module, and it unpacks load_bundle() as a pair
    from experiments.bundle import load_bundle

    model_dir = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "dl"),
                                                    tracking_uri=mlflow_store.uri)
    strategy, names = load_bundle(Path(model_dir) / "artifacts" / "bundle")
    assert names == ["negative", "positive"]
