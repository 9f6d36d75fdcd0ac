"""Hydra multirun sweeps in MLflow: one parent run, one child per job, skip-finished on relaunch, and the
comparison report logged to the parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, RUN_PY, subprocess_env


def _sweep(cwd, store, experiment, *overrides):
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "-m", "strategy=baseline", "seed=0,1", "classifier=logreg,svm",
         "log_model=false", *store.overrides(experiment), *overrides],
        cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


def test_sweep_is_one_parent_with_a_child_per_job_and_relaunch_skips_finished(tmp_path, mlflow_store):
    _sweep(tmp_path, mlflow_store, "sweeps")
    runs = mlflow_store.runs("sweeps")
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {(r.data.params["seed"], r.data.params["classifier._target_"].rsplit(".", 1)[1]) for r in children} == {
        ("0", "LogisticRegression"), ("1", "LogisticRegression"), ("0", "LinearSVC"), ("1", "LinearSVC")}
    report = {a.path for a in mlflow_store.client().list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/comparison.md", "report/comparison.csv", "report/pareto_params.png"} <= report

    logs = _sweep(tmp_path, mlflow_store, "sweeps")  # the same sweep again: nothing to do
    assert logs.count("skipping: run") == 4
    again = mlflow_store.runs("sweeps")
    assert len(again) == 5  # no new child, and the earlier parent was reused
    assert [r.info.run_id for r in again if r.data.tags.get("sweep") == "parent"] == [parents[0].info.run_id]

    # explicitly rerun everything, with the report's groups set: one per strategy, the classifiers pooled
    logs = _sweep(tmp_path, mlflow_store, "sweeps", "skip_finished=false", "report_group_by=strategy")
    assert "skipping: run" not in logs
    runs = mlflow_store.runs("sweeps")
    assert len(runs) == 10  # another command line: its own parent + 4 children
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent" and r.info.run_id != parents[0].info.run_id]
    table = mlflow_store.client().download_artifacts(parent.info.run_id, "report/comparison.csv", str(tmp_path))
    assert pd.read_csv(table)["group"].tolist() == ["baseline"]


EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def _job_values(override) -> list[str]:
    """What a sweep may give a job: each value of a list, choice() or range(), and the two bounds of an
    interval() (the Optuna search presets)."""
    if override.is_interval_sweep():
        return [str(override.value().start), str(override.value().end)]
    if not override.is_sweep_override():  # one value for every job (few_shot_subsets' seed: 0)
        return [override.get_value_element_as_str()]
    return list(override.sweep_string_iterator())


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_preset_composes_with_each_sweep_value(name):
    """Each preset, and each job its sweep would launch, composes and passes the checks a run starts with
    (the schema, the strategy against the model's config.json; no data, no weights, no training)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments.runner import check_config

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params or {})
        assert cfg.experiment_name, "a preset keeps its runs in their own experiment"
        parser = OverridesParser.create()
        for key, values in params.items():
            [override] = parser.parse_overrides([f"{key}={values}"])
            for value in _job_values(override):
                check_config(compose("config", overrides=[f"experiment={name}", f"{key}={value}"]))
        if not params:
            check_config(compose("config", overrides=[f"experiment={name}"]))


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


def test_parallel_joblib_sweep_loses_no_run(tmp_path, mlflow_store):
    """4 workers, 8 jobs, the default SQLite store: 8 finished runs, no 'database is locked'."""
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "strategy=baseline",
         "seed=0,1,2,3,4,5,6,7", "log_model=false", "sweep_report=false", *mlflow_store.overrides("joblib")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    logs = out.stdout + out.stderr
    assert out.returncode == 0, logs[-3000:]
    assert "database is locked" not in logs
    children = [r for r in mlflow_store.runs("joblib") if r.data.tags.get("sweep") != "parent"]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 8
    assert sorted(int(r.data.params["seed"]) for r in children) == list(range(8))


def _launch(cwd, *args):
    return subprocess.run([sys.executable, str(RUN_PY), "-m", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def test_a_sweep_that_cannot_launch_ends_its_parent_failed(tmp_path, mlflow_store):
    """`strategy.epochs=1` does not compose for baseline (it has no epochs): Hydra stops the sweep before
    any job, and the parent run must not stay RUNNING."""
    out = _launch(tmp_path, "strategy=baseline,freeze", "strategy.epochs=1", *mlflow_store.overrides("no-launch"))
    assert out.returncode != 0 and "Could not override 'strategy.epochs'" in out.stderr
    runs = mlflow_store.runs("no-launch")
    assert [(r.data.tags.get("sweep"), r.info.status) for r in runs] == [("parent", "FAILED")]


def test_a_mixed_sweep_sets_epochs_where_a_strategy_has_them(tmp_path, mlflow_store, tiny_overrides):
    """The README's idiom: +epochs=N reaches every preset with epochs, and leaves the others alone."""
    out = _launch(tmp_path, "strategy=baseline,freeze", "+epochs=2", "log_model=false", "data.train_size=60",
                  *tiny_overrides, *mlflow_store.overrides("mixed"))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "comparison report: " in out.stdout
    assert "sweep:  50% 1/2 [" in out.stdout + out.stderr and "sweep: 100% 2/2 [" in out.stdout + out.stderr
    runs = mlflow_store.runs("mixed")
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    children = {r.data.tags["strategy"]: r for r in runs if r.data.tags.get("sweep") != "parent"}
    assert children["freeze"].data.params["strategy.epochs"] == "2"
    assert "strategy.epochs" not in children["baseline"].data.params
    history = mlflow_store.client().get_metric_history(children["freeze"].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]


def test_a_sigtermed_sweep_leaves_nothing_running(tmp_path, mlflow_store, tiny_overrides):
    """kill (SIGTERM) mid-job: the job's run ends FAILED, the parent FAILED with a note, nothing stays
    RUNNING, and the process exits non-zero."""
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "-m", "strategy=finetune", "strategy.epochs=1000", "seed=0,1",
         "log_model=false", *tiny_overrides, *mlflow_store.overrides("sigterm")],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 300
        while not any(r.data.tags.get("sweep") != "parent" and r.info.status == "RUNNING"
                      for r in mlflow_store.runs("sigterm")):
            assert proc.poll() is None and time.time() < deadline, "the sweep never started a job"
            time.sleep(0.5)
        time.sleep(1)  # inside the job's training
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0, err[-2000:]
    runs = {r.data.tags.get("sweep", "child"): r for r in mlflow_store.runs("sigterm")}
    assert runs["parent"].info.status == "FAILED" and "sweep_stopped" in runs["parent"].data.tags
    assert [r.info.status for r in mlflow_store.runs("sigterm") if r.info.status == "RUNNING"] == []
    assert runs["child"].info.status in ("FAILED", "KILLED")
