"""Scaling out, against real servers: a PostgreSQL server and `mlflow server` on it (proxied artifacts), started
once per session on free loopback ports by experiments.server, and a local Ray. No mocks.

Without PostgreSQL's binaries, psycopg or Ray these tests skip with the reason; CI sets
TRANSFER_BENCH_REQUIRE_SERVERS=1 (.ci/run installs them), which turns those skips into failures."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import RUN_PY, MlflowStore, subprocess_env

REQUIRE = os.environ.get("TRANSFER_BENCH_REQUIRE_SERVERS") == "1"


def need(ok, reason: str) -> None:
    if not ok:
        if REQUIRE:
            pytest.fail(f"{reason} (TRANSFER_BENCH_REQUIRE_SERVERS=1 requires it)")
        pytest.skip(reason)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


class ServerStore(MlflowStore):
    """The tracking server as the tests see it: the same overrides, client and runs as the SQLite store's."""

    def __init__(self, url: str, root: Path, postgres_uri: str):
        self.uri, self.root, self.postgres_uri = url, root, postgres_uri


@pytest.fixture(scope="session")
def tracking_server():
    from experiments import server

    need(server.pg_binary("initdb") and server.pg_binary("pg_ctl"),
         "PostgreSQL's server binaries are missing (Debian: apt-get install postgresql)")
    need(importlib.util.find_spec("psycopg"), "psycopg is missing (pip install -e '.[server]')")
    if os.geteuid() == 0:
        need(shutil.which("runuser") and _has_user("postgres"), "as root, PostgreSQL needs runuser and a postgres user")
    root = Path(tempfile.mkdtemp(prefix="transfer-bench-servers-"))  # not under pytest's 0700 folders:
    root.chmod(0o755)  # the postgres user must reach its data folder
    pg = server.LocalPostgres(root / "pgdata").start()
    log = open(root / "mlflow-server.log", "w")  # noqa: SIM115 — open for the server's whole life
    mlflow_server = server.TrackingServer(pg.uri, str(root / "artifacts"), workers=2)
    try:
        mlflow_server.start(log=log, timeout=300)
        yield ServerStore(mlflow_server.url, root, pg.uri)
    finally:
        mlflow_server.stop()
        pg.stop()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def run_py(cwd, *args, timeout=900, check=True):
    out = subprocess.run([sys.executable, str(RUN_PY), *args], cwd=cwd, env=subprocess_env(),
                         capture_output=True, text=True, timeout=timeout)
    logs = out.stdout + out.stderr
    if check:
        assert out.returncode == 0, logs[-4000:]
    return out.returncode, logs


def split(runs):
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    return parents, [r for r in runs if r.data.tags.get("sweep") != "parent"]


def assert_one_parent_of(runs, n_children: int, seeds=None):
    parents, children = split(runs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(r.info.status, r.data.tags) for r in parents]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * n_children
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    if seeds is not None:
        assert sorted(int(r.data.params["seed"]) for r in children) == sorted(seeds)
    return parents[0], children


# ----------------------------------------------------------------------------- no server needed
@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_unreachable_tracking_server_fails_before_training_with_one_line(tmp_path, multirun):
    from experiments.server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    code, logs = run_py(tmp_path, *(["-m"] if multirun else []), "strategy=baseline", f"tracking_uri={uri}",
                        check=False, timeout=300)
    assert code == 1, logs[-3000:]
    assert f"error: tracking_uri={uri}: no MLflow server answers there" in logs, logs[-3000:]
    assert "Traceback" not in logs and "epoch" not in logs
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


# ----------------------------------------------------------------------------- PostgreSQL + mlflow server
def test_joblib_sweep_of_8_on_the_server_loses_none_and_relaunch_skips_all(tmp_path, tracking_server):
    """4 workers, 8 jobs, all over HTTP: 8 FINISHED children of one parent, each with its dataset inputs."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "strategy=baseline", "seed=0,1,2,3,4,5,6,7",
            "log_model=false", "sweep_report=false", *tracking_server.overrides("server-joblib")]
    run_py(tmp_path, *args)
    parent, children = assert_one_parent_of(tracking_server.runs("server-joblib"), 8, range(8))
    for r in children:  # log_input: the train/validation/test splits as MLflow datasets
        contexts = {t.value for d in r.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
        assert contexts == {"training", "validation", "test"}
    _, logs = run_py(tmp_path, *args)  # skip_finished against the server: nothing reruns
    assert logs.count("skipping: run") == 8
    assert len(tracking_server.runs("server-joblib")) == 9
    assert_one_parent_of(tracking_server.runs("server-joblib"), 8)


def test_submitit_local_sweep_of_8_on_the_server(tmp_path, tracking_server):
    """Separate processes (the path SLURM jobs take), logging over HTTP."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_py(tmp_path, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
           "strategy=baseline", "seed=0,1,2,3,4,5,6,7", "log_model=false",
           "sweep_report=false", *tracking_server.overrides("server-submitit"))
    [sweep] = [p.parent for p in tmp_path.glob("multirun/*/*/mlflow_parent.json")]
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 8  # one process per job
    _, children = assert_one_parent_of(tracking_server.runs("server-submitit"), 8, range(8))
    assert len({r.data.tags["worker.pid"] for r in children}) == 8


def test_sigkilled_worker_ends_killed_and_a_relaunch_finishes_it(tmp_path, tracking_server, tiny_overrides):
    """A joblib worker killed mid-training: its run ends KILLED (not RUNNING for ever), the sweep says so and
    fails, and the same command again reruns only that job."""
    experiment = "server-kill"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "strategy=baseline,finetune",
            "data.train_size=200", "+epochs=12", "checkpoint_every=0", "log_model=false",
            "sweep_report=false", *tiny_overrides, *tracking_server.overrides(experiment)]
    proc = subprocess.Popen([sys.executable, str(RUN_PY), *args], cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    victim = None
    while victim is None:
        assert proc.poll() is None and time.time() < deadline, "the finetune job ended before it could be killed"
        running = [r for r in tracking_server.runs(experiment)
                   if r.data.tags.get("strategy") == "finetune" and r.info.status == "RUNNING"]
        victim = running[0] if running and running[0].data.metrics.get("train_loss") is not None else None
        time.sleep(0.3)
    os.kill(int(victim.data.tags["worker.pid"]), signal.SIGKILL)
    logs = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0, logs[-3000:]
    killed = tracking_server.client().get_run(victim.info.run_id)
    assert killed.info.status == "KILLED", logs[-3000:]
    assert "worker ended without closing the run" in killed.data.tags["error"]
    assert "marked KILLED" in logs
    parents, _ = split(tracking_server.runs(experiment))
    assert [p.info.status for p in parents] == ["FAILED"]

    code, logs = run_py(tmp_path, *args, check=False)  # the same sweep again: only the unfinished job reruns
    assert code == 0, logs[-4000:]
    assert logs.count("skipping: run") == 1
    runs = tracking_server.runs(experiment)
    parents, children = split(runs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted((r.data.tags["strategy"], r.info.status) for r in children) == [
        ("baseline", "FINISHED"), ("finetune", "FINISHED"), ("finetune", "KILLED")]


def test_compare_predict_and_artifacts_through_the_server(tmp_path, tracking_server, restore_sys_path):
    """One run with its model: the report reads the server, predict loads the model through it, and the
    artifacts live behind the server's proxy (mlflow-artifacts:), not in a path the client could open."""
    run_py(tmp_path, "strategy=baseline", *tracking_server.overrides("server-artifacts"))
    [run] = tracking_server.runs("server-artifacts")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    client = tracking_server.client()
    png = Path(client.download_artifacts(run.info.run_id, "confusion_matrix.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import mlflow.artifacts

    [logged] = client.search_logged_models([run.info.experiment_id])  # MLflow 3: the run's model is a LoggedModel
    assert logged.source_run_id == run.info.run_id and logged.artifact_location.startswith("mlflow-artifacts:")
    model = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location,
                                                     dst_path=str(tmp_path / "model"), tracking_uri=tracking_server.uri))
    assert (model / "MLmodel").is_file()

    env = subprocess_env()
    out = subprocess.run([sys.executable, "-m", "experiments.predict", "--run-id", run.info.run_id, "--tracking-uri",
                          tracking_server.uri, "A moving, beautifully acted film.", "Two hours I want back."],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "beautifully acted" in out.stdout and ("positive" in out.stdout or "negative" in out.stdout)

    out = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "server-artifacts",
                          "--tracking-uri", tracking_server.uri, "--out", str(tmp_path / "report")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "baseline" in (tmp_path / "report" / "comparison.md").read_text()


def test_schema_upgrade_on_a_migrated_database(tracking_server):
    """What the server command runs first on an existing database: `mlflow db upgrade` (a no-op here)."""
    from experiments.server import upgrade_schema

    upgrade_schema(tracking_server.postgres_uri)


# ----------------------------------------------------------------------------- Ray
@pytest.fixture
def ray_cluster(tmp_path):
    """A running one-node Ray cluster (`ray start --head --block`: 2 CPUs, a 100 MB object store), stopped by
    ending its process group (never `ray stop`, which ends every Ray on the machine)."""
    need(importlib.util.find_spec("ray"), "Ray is missing (pip install -e '.[ray]')")
    from experiments.server import free_port

    port = free_port()
    # a loopback-only test cluster without Ray's token authentication (clients would need its token)
    env = {k: v for k, v in subprocess_env().items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0",
                                                                              "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                             "--num-cpus=2", "--num-gpus=0", "--object-store-memory=100000000",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", f"--address=127.0.0.1:{port}"],
                             env=env, capture_output=True, timeout=120).returncode != 0:
            assert proc.poll() is None and time.time() < deadline, "ray start --head did not come up"
            time.sleep(2)
        yield f"127.0.0.1:{port}", env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(5)


def test_ray_sweep_on_a_running_cluster_runs_each_job_as_a_task(tmp_path, tracking_server, ray_cluster):
    """Joining a running Ray cluster (what hydra-ray-launcher broke: it passed object_store_memory, which Ray
    refuses then): 4 jobs, each a Ray task in a worker process of its own, all children of one parent."""
    address, env = ray_cluster
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "-m", "hydra/launcher=ray", "hydra.launcher.remote.num_cpus=1",
         "+hydra.launcher.init={object_store_memory: 100000000}", "strategy=baseline", "seed=0,1,2,3",
         "log_model=false", "sweep_report=false", *tracking_server.overrides("server-ray")],
        cwd=tmp_path, env=env | {"RAY_ADDRESS": address}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, logs[-4000:]
    assert f"joining the Ray cluster at {address}: ignoring object_store_memory" in logs
    _, children = assert_one_parent_of(tracking_server.runs("server-ray"), 4, range(4))
    pids = {int(r.data.tags["worker.pid"]) for r in children}
    assert len(pids) == 4 and proc.pid not in pids  # max_calls=1: each job in a fresh worker, none in the driver
