"""Everything that talks to MLflow. Strategies never import this; the runner does."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from .data import PROJECT_ROOT
from .errors import UserError

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "datasets", "scikit-learn", "peft", "hydra-core", "mlflow", "numpy")


def check_reachable(tracking_uri: str) -> None:
    """A tracking server that does not answer fails at once with one line, before any run exists (MLflow
    itself would retry for minutes and then fail mid-run). Any HTTP answer counts: MLflow reports the rest."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=10)
    except requests.RequestException as e:
        raise UserError(
            f"tracking_uri={tracking_uri}: no MLflow server answers there ({type(e).__name__}): start it "
            f"(python -m experiments.server, see README 'Scaling out') or fix tracking_uri"
        ) from None


def setup(tracking_uri: str, experiment_name: str) -> str:
    check_reachable(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.set_experiment(experiment_name)
    return exp.experiment_id


def client_for(tracking_uri: str, experiment_name: str) -> tuple[mlflow.MlflowClient, str]:
    """A client and the experiment id (created if missing), without touching the fluent active-run state."""
    check_reachable(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    return client, exp.experiment_id if exp else client.create_experiment(experiment_name)


# The MLflow UI (3.x) keeps saved views of the runs table as experiment tags under this prefix; a view opens
# with ?viewStateShareKey=<key>, and ?workflowType=machine_learning shows the runs table (the "Model training"
# side of the UI) instead of the GenAI overview. Both are read by the UI, not by the tracking server.
VIEW_TAG = "mlflow.sharedViewState."
VIEW_COLUMNS = ("test_accuracy", "test_f1_macro", "train_time_s", "trainable_params", "inference_examples_per_s")


def save_runs_view(client: mlflow.MlflowClient, experiment_id: str, key: str, name: str) -> str:
    """A saved view of the experiment's runs table (the UI lists it under its saved views): the summary
    metrics as columns. Returns the UI path that opens it. (The UI does not keep expanded rows in a saved
    view, so a sweep's parent row is expanded by a click on its +.)"""
    state = {"selectedColumns": [f"metrics.`{m}`" for m in VIEW_COLUMNS] + ["tags.`strategy`", "tags.`model`"]}
    now = int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, VIEW_TAG + key, json.dumps(envelope))
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={key}"


def find_finished(experiment_id: str, config_hash: str):
    """A FINISHED run (mlflow.entities.Run) of this exact config in the experiment, if there is one."""
    runs = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=1, output_format="list",
    )
    return runs[0] if runs else None


def log_params(params: Mapping[str, str]) -> None:
    """Values longer than the store allows are cut (the full config is an artifact), so a long list in a
    config never crashes a run the way it does with the HF Trainer's MLflow callback."""
    safe = {}
    for k, v in params.items():
        safe[k] = v if len(v) <= MAX_PARAM_VAL_LENGTH else v[: MAX_PARAM_VAL_LENGTH - 14] + "…[truncated]"
    items = list(safe.items())
    for i in range(0, len(items), 100):  # the REST/SQL stores take at most 100 params per batch
        mlflow.log_params(dict(items[i : i + 100]))


def git_state() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    sha = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if sha else False
    return {"git_commit": sha or "unknown", "git_dirty": str(dirty).lower()}


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@contextlib.contextmanager
def tracked_run(
    experiment_id: str, run_name: str, tags: Mapping[str, str], run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED only if the body completes; any exception ends it FAILED with the
    error as a tag and the traceback as an artifact, then propagates. run_id continues an existing run."""
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id)
        if old := run.data.tags.get("error"):  # the interruption it recovers from (e.g. marked KILLED as an orphan)
            mlflow.set_tag("interrupted", old)  # kept as history; "error" would read as this run's own failure
            mlflow.delete_tag("error")
        mlflow.set_tags(dict(tags))
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags))
    try:
        yield run
    except BaseException as e:
        with contextlib.suppress(Exception):
            mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:5000])
            log_text(traceback.format_exc(), "error/traceback.txt")
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        mlflow.end_run(status=status)
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_dict(obj, path: str) -> None:
    mlflow.log_dict(obj, path)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics(dict(metrics), step=step)


def logged_series(keys: list[str]) -> list[dict[str, float]]:
    """The active run's values of metrics logged together (one dict per logging call, oldest first, with the
    keys that call logged): what an earlier process of a continued run logged. One call's values share a
    timestamp and a step; a call cut short (a killed process, a file store writing one metric at a time) just
    lacks some keys."""
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    calls: dict[tuple[int, int], dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run_id, key):
            calls.setdefault((m.timestamp, m.step), {})[key] = m.value
    return [calls[when] for when in sorted(calls)]


def log_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    mlflow.log_figure(fig, path)
    plt.close(fig)


def log_table(df, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        df.to_csv(file, index=False)
        mlflow.log_artifact(str(file), str(Path(path).parent) if Path(path).parent != Path(".") else None)


# A unique-key violation as SQLite, PostgreSQL and MySQL word it (MLflow passes the driver's message on)
DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")


def log_inputs(frames: Mapping[str, tuple], name: str) -> None:
    """Each split as a dataset input of the run (digest = content hash), so the UI shows what was used."""
    for context, (df, source) in frames.items():
        ds = mlflow.data.from_pandas(df, source=source, targets="label", name=f"{name}-{context}")
        for attempt in range(5):
            try:
                mlflow.log_input(ds, context=context)
                break
            except mlflow.exceptions.MlflowException as e:
                # Parallel sweep jobs log the same splits: MLflow checks whether the dataset exists, then
                # inserts it, so two jobs can both insert and one fails. Once the other's insert is in, the
                # retry finds it and only links it to this run.
                if not any(m in str(e) for m in DUPLICATE_KEY) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))


def model_signature(label_names: list[str]):
    """What the logged model takes and answers (experiments.bundle.predict_frame): a "text" column in; the
    label, its probability and one probability column per class out. Given, not inferred: inferring it would
    run the model, and the model page shows it as the model's schema."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", "label"), ColSpec("double", "score")]
    outputs += [ColSpec("double", f"prob_{name}") for name in label_names]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))


def log_model(bundle_dir: Path, label_names: list[str], example_texts: list[str]) -> None:
    """The trained strategy as an MLflow pyfunc "model from code": the bundle (config + weights) is an
    artifact and the project code travels with it, so `mlflow.pyfunc.load_model` works anywhere. MLflow
    checks the input example by loading the logged model and predicting it (a failure is a warning)."""
    import pandas as pd

    requirements = [f"{n}=={v}" for n, v in package_versions().items() if n not in ("python",) and v != "missing"]
    mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PROJECT_ROOT / "experiments" / "pyfunc_model.py"),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(PROJECT_ROOT / "experiments"), str(PROJECT_ROOT / "strategies")],
        pip_requirements=requirements,  # explicit: inferring them would re-import the model (slow)
        signature=model_signature(label_names),
        input_example=pd.DataFrame({"text": list(example_texts)}),
    )


def environment_tags() -> dict[str, str]:
    tags = git_state()
    tags |= {f"version.{k}": v for k, v in package_versions().items()}
    tags["hostname_cpu_count"] = str(os.cpu_count())
    # the process that owns the run: a sweep closes runs left RUNNING by a worker that is gone (callbacks)
    tags |= {"worker.host": socket.gethostname(), "worker.pid": str(os.getpid())}
    return tags
