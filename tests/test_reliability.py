"""Bad input gets one clear line and never a FINISHED run; failures are recorded; training resumes exactly;
the same config and seed give the same metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from conftest import RUN_PY, STRATEGY_PRESETS, compose, subprocess_env

from experiments.bundle import build_strategy
from experiments.runner import check_config, run
from experiments.schema import DataConfig, RunConfig
from strategies.backbone import ModelSpec


# ----------------------------------------------------------------------------- bad data files
def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


GOOD_ROWS = "".join(f'"review number {i} is {"great" if i % 2 else "awful"}",{"pos" if i % 2 else "neg"}\n' for i in range(40))


def _bad_data(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, the message the user must see). Each builds its own files under tmp."""
    good = _csv(tmp / "good.csv", "text,label\n" + GOOD_ROWS)
    files = ["data=files", f"data.train_file={good}", "data.test_file=null"]
    cases = {
        "missing file": (["data=files", f"data.train_file={tmp / 'nope.csv'}"], "does not exist"),
        "missing folder": (["data=demo", f"data.path={tmp / 'no-such-dir'}"], "no such directory"),
        "no train file in folder": (["data=demo", f"data.path={tmp}"], "no 'train' file"),
        "unsupported type": (["data=files", f"data.train_file={_csv(tmp / 'x.xlsx', 'a')}"], "unsupported file type"),
        "missing text column": (files + ["data.text_column=review"], "no column 'review' (data.text_column); the columns are: text, label"),
        "missing label column": (files + ["data.label_column=stars"], "no column 'stars' (data.label_column)"),
        "empty split": (["data=files", f"data.train_file={_csv(tmp / 'empty.csv', 'text,label' + chr(10))}"], "split is empty"),
        "single class": (
            ["data=files", f"data.train_file={_csv(tmp / 'one.csv', 'text,label' + chr(10) + ''.join(f'review {i},pos' + chr(10) for i in range(20)))}"],
            "single class",
        ),
        "unseen test label": (
            files + [f"data.test_file={_csv(tmp / 'test3.csv', 'text,label' + chr(10) + 'fine,neg' + chr(10) + 'odd,meh' + chr(10))}"],
            "never occur in the training data",
        ),
        "mostly empty texts": (
            ["data=files", f"data.train_file={_csv(tmp / 'blank.csv', 'text,label' + chr(10) + ''.join(('  ' if i % 3 else f'r{i}') + ',' + ('pos' if i % 2 else 'neg') + chr(10) for i in range(30)))}"],
            "empty text or label",
        ),
        "not utf-8": (["data=files", f"data.train_file={_csv(tmp / 'latin.csv', 'text,label' + chr(10) + 'très bien é,pos' + chr(10) * 1 + 'mauvais ñ,neg' + chr(10), 'latin-1')}"], "UTF-8"),
        "train_size too large": (files + ["data.train_size=1000"], "exceed"),
        "test_size too large": (files + ["data.test_size=500"], "exceeds the"),
        "val_size not a size": (files + ["data.val_size=1.5"], "data.val_size=1.5"),
        "rare label (a typo)": (
            ["data=files", f"data.train_file={_csv(tmp / 'typo.csv', 'text,label' + chr(10) + GOOD_ROWS + 'one more,gerat' + chr(10))}"],
            "training label 'gerat' occurs in only 1 row(s) of 41: fix it in the data, or keep it as a class with data.min_class_count=1",
        ),
        "label_names too short": (["data=imdb", "data.path=data/demo", "data.label_names=[a]"], "data.label_names"),
    }
    return cases


STRATEGY_CASES = {
    # name: (overrides, expected message) — the strategy's constructor or its check() against the model's
    # config.json rejects these before the data or the weights load
    "lr <= 0": (["strategy=freeze", "strategy.lr=0"], "strategy.lr=0"),
    "epochs < 1": (["strategy=finetune", "strategy.epochs=0"], "strategy.epochs=0"),
    "batch size < 1": (["strategy=freeze", "strategy.batch_size=0"], "strategy.batch_size=0"),
    "too many trainable layers": (["strategy=partial", "strategy.trainable_layers=9"], "has 2 layers"),
    "layer out of range": (["strategy=embed", "strategy.layers=[5]"], "must be in [-3, 2]"),
    "unknown pooling": (["strategy=freeze", "strategy.pooling=max"], "strategy.pooling=max is not one of cls|mean"),
    "unknown head": (["strategy=freeze", "strategy.head=cnn"], "strategy.head=cnn"),
    "max_length over model limit": (["strategy=embed", "model.max_length=1000"], "exceeds what 'tiny' supports (128)"),
    "peft modules not in model": (["strategy=lora", "strategy.peft.target_modules=[nope]"], "does not fit model 'tiny'"),
    "fp16 on cpu": (["strategy=freeze", "precision=fp16"], "needs a CUDA GPU"),
    "peft and trainable_layers": (["strategy=lora", "strategy.trainable_layers=1"], "exclude each other"),
    "unknown combine": (["strategy=freeze", "strategy.layers=[-2,-1]", "strategy.combine=sum"],
                        "strategy.combine=sum is not one of concat|mean"),
    "dropout over 1": (["strategy=freeze", "strategy.dropout=1.5"], "strategy.dropout=1.5: must be in [0, 1)"),
    "warm-up beyond the run": (["strategy=finetune", "strategy.warmup_ratio=5"], "strategy.warmup_ratio=5"),
    "classifier C <= 0": (["strategy=baseline", "classifier.C=-1"], "classifier: The 'C' parameter of LogisticRegression"),
    "svm C = 0 (embed)": (["strategy=embed", "classifier=svm", "classifier.C=0"], "The 'C' parameter of LinearSVC"),
    "vectorizer min_df": (["strategy=baseline", "strategy.vectorizer.min_df=-2"], "strategy.vectorizer: The 'min_df'"),
    # the constructors' type hints (experiments.schema.check_arguments)
    "lr not a number": (["strategy=finetune", "strategy.lr=abc"], "strategy.lr=abc: must be a number"),
    "epochs not whole": (["strategy=finetune", "strategy.epochs=2.5"], "strategy.epochs=2.5: must be a whole number"),
    "trainable_layers a word": (["strategy=partial", "strategy.trainable_layers=two"],
                                "strategy.trainable_layers=two: must be a whole number or null"),
    "layers not a list": (["strategy=embed", "strategy.layers=-1"], "strategy.layers=-1: must be a list of whole numbers"),
    "flag a number": (["strategy=finetune", "strategy.gradient_checkpointing=3"],
                      "strategy.gradient_checkpointing=3: must be true or false"),
}

SCHEMA_CASES = {
    # name: (overrides, expected message) — experiments/schema.py rejects these when the run starts
    "unknown precision": (["precision=fp64"], "precision=fp64: must be one of auto|fp32|bf16|fp16"),
    "unknown device": (["device=tpu"], "device=tpu: must be auto, cpu, cuda or cuda:N"),
    "seed not a number": (["seed=abc"], "seed=abc: must be a whole number"),
    "negative train size": (["data.train_size=-3"], "data.train_size=-3: use a fraction in (0, 1) or a whole count"),
    "no validation split": (["data.val_size=null"], "data.val_size=null: use a fraction"),
    "negative checkpoint interval": (["checkpoint_every=-1"], "checkpoint_every=-1: must be >= 0"),
    "max_length 0": (["model.max_length=0"], "model.max_length=0: must be a whole number >= 1"),
    "flag not a bool": (["cache=maybe"], "cache=maybe: must be true or false"),
    "dropped fraction over 1": (["data.max_dropped_fraction=2"], "data.max_dropped_fraction=2.0: must be in [0, 1]"),
    "sha256 not hex": (["model.sha256=xyz"], "model.sha256=xyz: must be 64 hex digits"),
    "null text column": (["data.text_column=null"], "data.text_column=null: must not be null"),
    "min_class_count 0": (["data.min_class_count=0"], "data.min_class_count=0: must be >= 1"),
    "one label name": (["data.label_names=[a]"], "data.label_names=['a']: needs at least 2"),
    "strategy class not found": (["strategy._target_=strategies.nope.Nope"],
                                 "strategy._target_=strategies.nope.Nope: cannot import it"),
}
CONFIG_CASES = STRATEGY_CASES | SCHEMA_CASES


@pytest.fixture
def nothing_heavy_loads(monkeypatch):
    """Reading the data, the tokenizer or any weights fails the test: what it sees came from the config
    checks alone."""
    from transformers import AutoModel

    def refuse(what):
        def load(*args, **kwargs):
            raise AssertionError(f"{what} loaded before the config was checked")
        return load

    monkeypatch.setattr("experiments.runner.load_dataset", refuse("the data"))
    monkeypatch.setattr("strategies.encoder_base.load_encoder", refuse("the encoder"))
    monkeypatch.setattr("strategies.encoder_base.load_tokenizer", refuse("the tokenizer"))
    monkeypatch.setattr(AutoModel, "from_pretrained", refuse("pretrained weights"))


def _assert_rejected(overrides: list[str], message: str, store, experiment: str, capsys) -> None:
    cfg = compose(overrides + store.overrides(experiment) + ["log_model=false"])
    with pytest.raises(SystemExit) as exc:
        run(cfg)
    text = str(exc.value.code)
    assert text.startswith("error: ") and message in text, text
    assert "\n" not in text, f"not one line: {text!r}"
    assert not [r for r in store.runs(experiment) if r.info.status == "FINISHED"]


def test_bad_data_inputs(tmp_path, in_store, capsys):
    cases = _bad_data(tmp_path)
    for i, (name, (overrides, message)) in enumerate(cases.items()):
        try:
            _assert_rejected(["strategy=baseline", *overrides], message, in_store, f"bad-data-{i}", capsys)
        except AssertionError as e:
            raise AssertionError(f"case '{name}': {e}") from e


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_bad_configs_fail_before_data_or_weights_load(name, tiny_overrides, in_store, nothing_heavy_loads, capsys):
    overrides, message = CONFIG_CASES[name]
    experiment = "bad-cfg-" + "".join(c if c.isalnum() else "-" for c in name)
    # a missing data folder too: the config's message must come first
    _assert_rejected(tiny_overrides + overrides + ["data.path=/nonexistent"], message, in_store, experiment, capsys)
    assert in_store.runs(experiment) == []  # no MLflow run at all


def test_files_data_without_a_file(tiny_overrides, in_store, nothing_heavy_loads, capsys):
    _assert_rejected(tiny_overrides + ["data=files"], "no data source: set data.train_file", in_store, "no-file", capsys)


@pytest.mark.parametrize("name", [p for p in STRATEGY_PRESETS if p != "baseline"])
def test_check_reads_only_the_model_config(name, tiny_overrides, nothing_heavy_loads):
    strategy = build_strategy(compose(tiny_overrides + [f"strategy={name}"]).strategy, 2)
    strategy.check()  # a valid config passes without weights
    assert strategy._encoder is None and strategy._tokenizer is None


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_every_strategy_preset_passes_the_checks(name):
    check_config(compose([f"strategy={name}"]))  # with the packaged MiniLM: its config.json only


def test_schema_knows_every_key_in_conf():
    """Keys the schema does not know pass unchecked (a new key must not break runs): this test is the
    reminder to add them to experiments/schema.py."""
    for data in ("demo", "imdb", "files"):
        for model in ("minilm", "bert-base", "mpnet"):
            cfg = compose([f"data={data}", f"model={model}"])
            assert set(cfg) <= {f.name for f in fields(RunConfig)}
            assert set(cfg.data) <= {f.name for f in fields(DataConfig)}, data
            assert set(cfg.model) <= {f.name for f in fields(ModelSpec)}, model


def test_wrong_sha256_is_rejected(in_store, capsys):
    _assert_rejected(["strategy=embed", "model.sha256=" + "0" * 64], "SHA-256 mismatch", in_store, "bad-sha", capsys)


def test_unknown_group_option_lists_the_choices(tmp_path):
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "strategy=nope"], cwd=tmp_path, env=subprocess_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    assert "Could not find 'strategy/nope'" in out.stderr and "finetune" in out.stderr  # Hydra lists the options


# ----------------------------------------------------------------------------- failures are recorded
def test_failure_inside_a_run_is_recorded_as_failed(tiny_overrides, in_store):
    # lr=1e6 makes the loss blow up: training must stop with a clear message and the run end FAILED
    cfg = compose(tiny_overrides + ["strategy=finetune", "strategy.lr=1e6", "strategy.head_lr=1e6", "precision=fp32",
                                    "strategy.max_grad_norm=null", "log_model=false"]
                  + in_store.overrides("nan-loss"))
    with pytest.raises(FloatingPointError, match="lower strategy.lr"):
        run(cfg)
    runs = in_store.runs("nan-loss")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "FloatingPointError" in runs[0].data.tags["error"]
    files = [a.path for a in in_store.client().list_artifacts(runs[0].info.run_id, "error")]
    assert files == ["error/traceback.txt"]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1")])
def test_out_of_memory_gives_advice(error, tiny_overrides, in_store, monkeypatch):
    """GPU and CPU allocation failures end the run FAILED with what to lower, not a bare allocator error.
    (Simulated: a real OOM needs a GPU; the forward pass raises the allocator's own exception type.)"""
    from strategies.finetune import EncoderClassifier

    def exhausted(self, batch):
        raise error

    monkeypatch.setattr(EncoderClassifier, "forward", exhausted)
    experiment = f"oom-{type(error).__name__}"
    cfg = compose(tiny_overrides + ["strategy=finetune", "log_model=false"] + in_store.overrides(experiment))
    with pytest.raises(MemoryError, match=r"out of memory on cpu: lower strategy.micro_batch_size") as exc:
        run(cfg)
    assert "\n" not in str(exc.value)
    runs = in_store.runs(experiment)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "lower strategy.micro_batch_size" in runs[0].data.tags["error"]


def test_failed_sweep_job_does_not_stop_the_others(tmp_path, mlflow_store):
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "-m", "strategy=baseline", "data.label_column=label,nope",
         "seed=0,1", "log_model=false", *mlflow_store.overrides("sweep-fail")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    logs = out.stdout + out.stderr  # Hydra logs to stdout
    assert out.returncode == 1, logs[-2000:]
    assert "2 job(s) failed" in logs and "no column 'nope'" in logs
    runs = mlflow_store.runs("sweep-fail")
    children = sorted(r.info.status for r in runs if r.data.tags.get("sweep") != "parent")
    assert children == ["FINISHED", "FINISHED"]  # the bad jobs never started a run; the others finished
    assert [r.info.status for r in runs if r.data.tags.get("sweep") == "parent"] == ["FAILED"]
    failures = list(tmp_path.glob("multirun/*/*/failures.jsonl"))
    assert len(failures) == 1
    assert sorted(json.loads(x)["job"] for x in failures[0].read_text().splitlines()) == [2, 3]


# ----------------------------------------------------------------------------- resume and reproducibility
def _finetune_cmd(tiny_overrides, store, experiment, *extra):
    return [sys.executable, str(RUN_PY), *tiny_overrides, "strategy=finetune", "strategy.epochs=2",
            "strategy.batch_size=4", "checkpoint_every=5", "log_model=false", "precision=fp32",
            *store.overrides(experiment), *extra]


def _final_metrics(store, experiment):
    runs = [r for r in store.runs(experiment) if r.info.status == "FINISHED"]
    assert len(runs) == 1
    keep = ("test_accuracy", "test_f1_macro", "test_log_loss", "val_log_loss")
    return runs[0].info.run_id, {k: runs[0].data.metrics[k] for k in keep}


def test_killed_run_resumes_to_the_same_result(tmp_path, tiny_overrides, mlflow_store):
    env = subprocess_env()
    ref = subprocess.run(_finetune_cmd(tiny_overrides, mlflow_store, "resume-ref"), cwd=tmp_path / ".",
                         env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    _, expected = _final_metrics(mlflow_store, "resume-ref")

    work = tmp_path / "interrupted"
    work.mkdir()
    cmd = _finetune_cmd(tiny_overrides, mlflow_store, "resume-test")
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(work.glob("checkpoints/*/trainer_state.pt")):  # kill right after the first checkpoint
        assert proc.poll() is None and time.time() < deadline, "training ended before a checkpoint was written"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    killed_after = time.time() - started
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    [interrupted] = mlflow_store.runs("resume-test")
    assert interrupted.info.status == "RUNNING"  # killed hard: nothing could mark it

    resumed = subprocess.run(cmd + ["resume=true"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming MLflow run" in resumed.stdout + resumed.stderr
    run_id, got = _final_metrics(mlflow_store, "resume-test")
    assert run_id == interrupted.info.run_id  # continued into the same run
    assert got == expected
    run_info = mlflow_store.client().get_run(run_id)
    assert int(run_info.data.params["runtime.resumed_from_step"]) >= 5
    # training time up to the checkpoint: positive, and within the killed process's lifetime
    assert 0 < float(run_info.data.params["runtime.train_time_before_resume_s"]) < killed_after
    assert not list(work.glob("checkpoints/*"))  # removed once FINISHED
    # the machine's speed over the whole run: the killed process's samples count too (each process logged one
    # before fitting; the resumed one also sampled after predicting, never logged as a step)
    logged = [m.value for m in mlflow_store.client().get_metric_history(run_id, "machine_matmul_gflops")]
    metrics = run_info.data.metrics
    assert len(logged) >= 2 and metrics["machine_samples"] == len(logged) + 1
    assert metrics["machine_matmul_gflops_min"] <= min(logged) <= max(logged) <= metrics["machine_matmul_gflops_max"]


def test_same_config_and_seed_give_identical_metrics(tiny_overrides, in_store):
    def once(experiment):
        cfg = compose(tiny_overrides + ["strategy=lora", "strategy.epochs=1", "log_model=false", "save_predictions=false"]
                      + in_store.overrides(experiment))
        run(cfg)
        [r] = in_store.runs(experiment)
        # times, memory and the machine's speed are measurements of the machine, not results of the run
        return {k: v for k, v in r.data.metrics.items()
                if not k.endswith(("_s", "_per_s", "_mb")) and not k.startswith("machine_")}

    first, second = once("repro-a"), once("repro-b")
    assert first == second and "test_accuracy" in first


def test_objective_is_the_validation_score_of_the_kept_epoch(tiny_overrides, in_store):
    """Under early stopping the run keeps the best epoch: what run() returns to a sweeper (and logs as
    objective_val_f1_macro) is that epoch's validation macro-F1, not the last epoch's and never a test score."""
    from mlflow import MlflowClient

    cfg = compose(tiny_overrides + ["strategy=freeze", "strategy.epochs=12", "strategy.lr=0.5", "strategy.early_stopping_patience=2",
                                    "log_model=false", "save_predictions=false"] + in_store.overrides("objective"))
    value = run(cfg)
    [r] = in_store.runs("objective")
    history = [m.value for m in sorted(MlflowClient().get_metric_history(r.info.run_id, "val_f1_macro"), key=lambda m: m.step)]
    best = int(r.data.params["runtime.best_epoch"])
    assert best < len(history) <= 12  # early stopping happened and kept an earlier epoch (else the test proves nothing)
    assert value == r.data.metrics["objective_val_f1_macro"] == history[best - 1] != history[-1]
    # the kept model's validation scores sit beside the last epoch's (what val_* shows as latest)
    assert r.data.metrics["kept_epoch"] == best and r.data.metrics["kept_val_f1_macro"] == value
    losses = {m.step: m.value for m in MlflowClient().get_metric_history(r.info.run_id, "val_log_loss")}
    assert r.data.metrics["kept_val_log_loss"] == losses[best] == min(losses.values())


def test_a_continued_run_keeps_its_interruption_as_history_not_as_its_error(in_store):
    """resume=true continues the run an interruption left (its error tag set, or marked KILLED as an orphan);
    once it finishes, that error is history ("interrupted"), not the FINISHED run's own "error"."""
    import mlflow

    from experiments import tracking

    experiment_id = tracking.setup(in_store.uri, "continued")
    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(experiment_id, "cut", {}) as active:
        raise KeyboardInterrupt
    client = mlflow.MlflowClient(in_store.uri)
    assert client.get_run(active.info.run_id).data.tags["error"].startswith("KeyboardInterrupt")
    with tracking.tracked_run(experiment_id, "cut", {}, run_id=active.info.run_id):
        pass
    run = client.get_run(active.info.run_id)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert run.data.tags["interrupted"].startswith("KeyboardInterrupt")


def test_overlong_param_values_are_truncated_not_fatal(in_store):
    """The HF Trainer + MLflow failure: a param value longer than the store allows crashes the run."""
    import mlflow
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from experiments import tracking

    experiment_id = tracking.setup(in_store.uri, "long-params")
    with tracking.tracked_run(experiment_id, "long", {}) as active:
        tracking.log_params({"strategy.peft.target_modules": "x" * (MAX_PARAM_VAL_LENGTH * 2), "short": "ok"})
    run = mlflow.MlflowClient(in_store.uri).get_run(active.info.run_id)
    assert run.info.status == "FINISHED"
    value = run.data.params["strategy.peft.target_modules"]
    assert len(value) <= MAX_PARAM_VAL_LENGTH and value.endswith("[truncated]")
    assert run.data.params["short"] == "ok"


def test_a_finished_config_is_skipped_before_anything_loads(tiny_overrides, in_store, monkeypatch, tmp_path):
    """A relaunched sweep skips finished jobs at once: no data, no tokenizer, no weights (bert-base takes
    seconds to load), and cache or checkpoint settings do not make a finished config new."""
    monkeypatch.setattr("experiments.runner._sweep_dir", lambda: tmp_path)  # as if a multirun job
    overrides = tiny_overrides + ["strategy=freeze", "strategy.epochs=2", "log_model=false"] + in_store.overrides("skip")
    first = run(compose(overrides))
    for what in ("load_dataset", "make_strategy"):
        monkeypatch.setattr(f"experiments.runner.{what}", lambda *a, **k: pytest.fail("loaded before skipping"))
    assert run(compose(overrides + ["cache=false", "checkpoint_every=7"])) == first
    assert len(in_store.runs("skip")) == 1


def test_a_dataset_inserted_by_a_parallel_job_is_retried(in_store, monkeypatch):
    """Two sweep jobs logging the same split race in MLflow (check, then insert): the loser retries."""
    import mlflow
    import pandas as pd

    from experiments import tracking

    real, calls = mlflow.log_input, []

    def racing(ds, context=None, **kw):
        calls.append(context)
        if len(calls) == 1:  # what the SQL store raises when the other job inserted the dataset first
            raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.digest")
        return real(ds, context=context, **kw)

    monkeypatch.setattr(mlflow, "log_input", racing)
    experiment_id = tracking.setup(in_store.uri, "dataset-race")
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]})
    with tracking.tracked_run(experiment_id, "race", {}) as active:
        tracking.log_inputs({"training": (frame, None)}, "demo")
    run = mlflow.MlflowClient(in_store.uri).get_run(active.info.run_id)
    assert run.info.status == "FINISHED" and calls == ["training", "training"]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["demo-training"]
