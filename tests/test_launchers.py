"""Cluster launchers: conf/hydra/launcher/slurm.yaml (hydra-submitit-launcher) and ray.yaml (this project's
hydra_plugins/ray_task_launcher). There is no SLURM cluster here: the SLURM config is turned into the sbatch
script it would submit, and submitit's local backend runs a real sweep in separate processes. Sweeps on a
real local Ray run in tests/test_scale_out.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF_DIR, RUN_PY, subprocess_env


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_config_becomes_the_sbatch_script_it_would_submit(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    submitit = pytest.importorskip("submitit")
    from hydra.utils import instantiate

    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # No SLURM here: make submitit believe srun exists, and keep the executor instead of submitting.
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executors = []

    def keep(self, fn, *iterables):
        executors.append(self)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", keep)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == []  # the plugin's own launch path
    [executor] = executors
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=240"):
        assert f"#SBATCH {line}\n" in script, script
    assert executor._executor.parameters["array_parallelism"] == 16


def test_ray_config_composes(monkeypatch):
    """Ray is an optional extra: the config and the plugin's import need no Ray."""
    from hydra.utils import instantiate

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = _compose("hydra/launcher=ray").hydra.launcher
    assert ray._target_ == "hydra_plugins.ray_task_launcher.ray_task_launcher.RayTaskLauncher"
    assert ray.address is None  # no RAY_ADDRESS: Ray starts locally
    assert (ray.remote.num_gpus, ray.remote.num_cpus, ray.remote.max_calls) == ("auto", 4, 1)
    launcher = instantiate(ray)
    assert launcher.remote == {"num_cpus": 4, "num_gpus": "auto", "max_calls": 1, "max_retries": 0}
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert _compose("hydra/launcher=ray").hydra.launcher.address == "auto"  # join the running cluster


def test_ray_jobs_no_node_can_hold_fail_at_once():
    """Ray would queue them and wait for ever (4 CPUs per job on a 2-CPU machine)."""
    from hydra_plugins.ray_task_launcher.ray_task_launcher import check_feasible

    nodes = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 8.0, "GPU": 1.0}]
    check_feasible({"num_cpus": 8, "num_gpus": 1}, nodes)  # the second node holds it
    with pytest.raises(ValueError, match=r"remote.num_cpus=16: .*the most is 8.*wait_for_resources=true"):
        check_feasible({"num_cpus": 16, "num_gpus": 0}, nodes)
    with pytest.raises(ValueError, match=r"remote.num_gpus=2: .*the most is 1"):
        check_feasible({"num_cpus": 1, "num_gpus": 2}, nodes)


def test_submitit_local_sweep_keeps_parent_and_children_across_processes(tmp_path, mlflow_store):
    """Jobs run as separate processes (submitit's local backend, the code path SLURM jobs take) and still
    become children of the sweep's parent run, which they find in <sweep dir>/mlflow_parent.json."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         "strategy=baseline", "seed=0,1", "log_model=false", "sweep_report=false", *mlflow_store.overrides("submitit")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    [sweep] = [p.parent for p in tmp_path.glob("multirun/*/*/mlflow_parent.json")]
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # one submitit job (process) per sweep job
    runs = mlflow_store.runs("submitit")
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert parent.info.status == "FINISHED"
    assert sorted((r.data.params["seed"], r.info.status) for r in children) == [("0", "FINISHED"), ("1", "FINISHED")]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
