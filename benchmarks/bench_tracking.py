"""Tracking-store benchmark: the same parallel sweep logged to SQLite and to `mlflow server` on PostgreSQL.

    python benchmarks/bench_tracking.py                         # 16 baseline jobs on the demo data, joblib x 4
    python benchmarks/bench_tracking.py --jobs 4 --workers 2    # a quick check that it runs

For each store, one `run.py -m hydra/launcher=joblib` sweep of --jobs baseline jobs (seeds 0..jobs-1,
log_model=false, no report, skip_finished=false) in a fresh folder. The PostgreSQL store is a throwaway
PostgreSQL and `mlflow server` started by experiments.server (as `python -m experiments.server
--local-postgres` does), unless --server-uri names a running server. Reported per store:
  jobs_per_min         jobs / the sweep's wall-clock time (process start to exit, Hydra and imports included)
  overhead_per_run_s   per run, the time inside its MLflow run not spent training or predicting (the run's
                       end - start minus train_time_s and inference_time_s): logging params, dataset inputs,
                       metrics and artifacts, plus scoring (the same work on both stores); mean and median
Run it on a quiet machine: the load average is recorded before and after each sweep. Writes
benchmarks/results/tracking-<date>-<time>.json and .md (never overwritten)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from experiments import server  # noqa: E402


def sweep(cwd: Path, tracking_uri: str, experiment: str, jobs: int, workers: int) -> dict:
    cmd = [sys.executable, str(REPO / "run.py"), "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}",
           "strategy=baseline", "seed=" + ",".join(map(str, range(jobs))), "log_model=false", "sweep_report=false",
           "skip_finished=false", f"tracking_uri={tracking_uri}", f"experiment_name={experiment}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"the sweep on {tracking_uri} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("sweep") != "parent"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    overhead = [(r.info.end_time - r.info.start_time) / 1000 - r.data.metrics["train_time_s"]
                - r.data.metrics["inference_time_s"] for r in finished]
    return {
        "tracking_uri": tracking_uri.split("@")[-1], "jobs": jobs, "workers": workers, "finished_runs": len(finished),
        "wall_s": round(wall, 2), "jobs_per_min": round(60 * len(finished) / wall, 2),
        "overhead_per_run_s_mean": round(statistics.mean(overhead), 3),
        "overhead_per_run_s_median": round(statistics.median(overhead), 3),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "command": " ".join(cmd[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=16, help="baseline jobs per sweep (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=4, help="joblib workers (default: %(default)s)")
    ap.add_argument("--stores", default="sqlite,postgres", help="which stores, in order (default: %(default)s)")
    ap.add_argument("--server-uri", help="a running tracking server to use instead of starting one")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    work.chmod(0o755)  # the postgres user must reach its data folder when this runs as root
    results = []
    try:
        for store in args.stores.split(","):
            folder = work / store
            folder.mkdir()
            experiment = f"bench-tracking-{stamp}"
            if store == "sqlite":
                results.append({"store": "sqlite"} | sweep(folder, f"sqlite:///{folder / 'mlflow.db'}", experiment,
                                                           args.jobs, args.workers))
            elif store == "postgres" and args.server_uri:
                results.append({"store": "server"} | sweep(folder, args.server_uri, experiment, args.jobs, args.workers))
            elif store == "postgres":
                pg = server.LocalPostgres(work / "pgdata").start()
                srv = server.TrackingServer(pg.uri, str(work / "artifacts"), workers=4)
                try:
                    with open(work / "mlflow-server.log", "w") as log:
                        srv.start(log=log, timeout=300)
                        results.append({"store": "postgres+mlflow server"}
                                       | sweep(folder, srv.url, experiment, args.jobs, args.workers))
                finally:
                    srv.stop()
                    pg.stop()
            else:
                raise SystemExit(f"error: --stores: unknown store {store!r} (sqlite, postgres)")
            print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta = {"date": stamp, "host": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "mlflow": metadata.version("mlflow"), "argv": sys.argv[1:]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tracking-{stamp}"
    path.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [f"# Tracking stores, {stamp}", "", f"`python benchmarks/bench_tracking.py {' '.join(sys.argv[1:])}` "
             f"on {meta['host']} ({meta['cpu_count']} CPUs), MLflow {meta['mlflow']}", "",
             "| store | jobs | workers | wall (s) | jobs/min | overhead per run (s), mean / median | load before / after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['store']} | {r['finished_runs']}/{r['jobs']} | {r['workers']} | {r['wall_s']} | {r['jobs_per_min']} | "
              f"{r['overhead_per_run_s_mean']} / {r['overhead_per_run_s_median']} | {r['load_before']} / {r['load_after']} |"
              for r in results]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
