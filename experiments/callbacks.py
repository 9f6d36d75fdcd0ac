"""Hydra callbacks (registered in conf/config.yaml under hydra.callbacks)."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import socket
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from tqdm import tqdm

from .errors import UserError

log = logging.getLogger("transfer_bench")

PARENT_FILE = "mlflow_parent.json"  # in the sweep folder: how jobs (in any process) find the parent run
PROGRESS_FILE = "progress.json"  # in the sweep folder: the number of jobs and when the sweep started


def job_count(config) -> int | None:
    """How many jobs the sweep launches: n_trials for a search, else the product of the sweep values
    (command line over hydra.sweeper.params, as Hydra's basic sweeper does); None when unknown."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if sweeper.get("n_trials"):
        return int(sweeper.n_trials)
    try:
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        counts = {}
        for o in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task)):
            if o.is_sweep_override() and o.is_interval_sweep():
                return None
            counts[o.key_or_group] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
        return math.prod(counts.values())
    except Exception:  # noqa: BLE001 — a sweeper this does not know: count without a total
        return None


def sweep_line(done: int, total: int | None, elapsed: float, failed: int) -> str:
    from strategies.progress import LINE_FORMAT

    if total is None:
        return f"sweep: {done} job(s) done, {failed} failed"
    return tqdm.format_meter(done, total, elapsed, prefix="sweep", unit="job", postfix=f"{failed} failed",
                             bar_format=LINE_FORMAT)
FAILURES_FILE = "failures.jsonl"  # in the sweep folder: one line per failed job (the runner, launchers)


def read_parent(sweep_dir: Path) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text())["run_id"] if path.is_file() else None


def record_failure(sweep_dir: Path, job, overrides: list[str], error: str) -> None:
    """One line of <sweep dir>/failures.jsonl, which the sweep's summary lists."""
    with open(Path(sweep_dir) / FAILURES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"job": job, "overrides": list(overrides), "error": error}) + "\n")


def _process_gone(tags: dict) -> bool:
    """Whether the run's worker process is known to be gone (only knowable on its own host)."""
    if tags.get("worker.host") != socket.gethostname() or not tags.get("worker.pid", "").isdigit():
        return False
    try:
        os.kill(int(tags["worker.pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def close_orphans(client, parent: str, everything: bool) -> list:
    """Children of the parent run left RUNNING by a worker that died (SIGKILL, out of memory, a lost node):
    nothing in that worker could end its run. They end KILLED, with the reason as the `error` tag. With
    everything=True (the launch is over: every job has returned) all RUNNING children are closed; otherwise
    only those whose process on this host is gone (a relaunch after the whole sweep was killed)."""
    experiment_id = client.get_run(parent).info.experiment_id
    running = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'",
                                 max_results=10000)
    closed = [r for r in running if everything or _process_gone(r.data.tags)]
    for r in closed:
        client.set_tag(r.info.run_id, "error", ORPHAN_ERROR)
        client.set_terminated(r.info.run_id, status="KILLED")
        log.error("run %s (job %s) was left RUNNING by its worker (%s, pid %s), which is gone: marked KILLED",
                  r.info.run_id, r.data.tags.get("sweep.job", "?"), r.data.tags.get("worker.host", "?"),
                  r.data.tags.get("worker.pid", "?"))
    return closed


ORPHAN_ERROR = "its worker ended without closing the run (killed, out of memory, or its node lost)"


class SweepSummary(Callback):
    """Groups a multirun in MLflow and closes it with a summary.

    Start: creates the experiment and one parent run, before any job starts; each job's run becomes its
    child (the UI shows the sweep as one expandable row). End: lists failed jobs, writes the comparison
    report into the parent run, ends the parent FINISHED (FAILED if a job failed) and exits non-zero
    after failures, so scripts notice — the other jobs still ran to the end."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from strategies import distributed

        from . import tracking

        if distributed.launched():  # every rank would run the whole sweep and make its own parent run
            raise SystemExit("error: torchrun runs one run (no -m); launch each sweep job with torchrun, or "
                             "sweep with hydra/launcher=slurm|ray")

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:  # the experiment and the parent exist before any worker starts: workers never race to create them
            client, experiment_id = tracking.client_for(config.tracking_uri, config.experiment_name)
        except UserError as e:
            raise SystemExit(f"error: {e}") from None
        overrides = " ".join(config.hydra.overrides.task)
        key = hashlib.sha256(overrides.encode()).hexdigest()[:16]
        # The same sweep launched again (after a crash) continues under its earlier parent run, so the
        # skipped jobs' runs and the new ones stay together.
        earlier = client.search_runs([experiment_id], f"tags.sweep_key = '{key}'", max_results=1,
                                     order_by=["attributes.start_time DESC"])
        if earlier:
            run = earlier[0]
            client.update_run(run.info.run_id, status="RUNNING")
            close_orphans(client, run.info.run_id, everything=False)  # an earlier launch killed as a whole
        else:
            run = client.create_run(
                experiment_id, run_name=f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}",
                tags={"sweep": "parent", "sweep_key": key, "sweep_dir": str(sweep_dir),
                      "mlflow.note.content": f"run.py -m {overrides}"},
            )
        (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": run.info.run_id}))
        view = tracking.save_runs_view(client, experiment_id, "runs", "runs: accuracy, macro-F1, train time")
        log.info("sweep parent MLflow run %s in experiment '%s'; in `mlflow ui`, the runs table: "
                 "http://127.0.0.1:5000/%s", run.info.run_id, config.experiment_name, view)
        # Hydra calls no callback when the sweep itself stops (an override that does not compose for some
        # job, Ctrl-C, a launcher that raised because a joblib worker or a submitit job died): the parent and
        # the children of dead workers would stay RUNNING. Unless on_multirun_end ran, close them at exit.
        self._open_parent = (config.tracking_uri, config.experiment_name, run.info.run_id)
        atexit.register(self._fail_open_parent)
        total = job_count(config)
        (sweep_dir / PROGRESS_FILE).write_text(json.dumps({"total": total, "start": time.time()}))

    def _fail_open_parent(self) -> None:
        if getattr(self, "_open_parent", None) is None:
            return
        from . import tracking

        uri, experiment, run_id = self._open_parent
        self._open_parent = None
        try:
            client, _ = tracking.client_for(uri, experiment)
            closed = close_orphans(client, run_id, everything=True)  # no job of this sweep runs any more
            client.set_tag(run_id, "sweep_stopped", "the sweep stopped before its jobs ended (see its error output)")
            client.set_terminated(run_id, status="FAILED")
            if closed:
                log.error("sweep stopped early: %d run(s) left RUNNING by dead workers marked KILLED; relaunch the "
                          "same command to run what did not finish", len(closed))
        except Exception as e:  # noqa: BLE001 — at exit, a store problem is reported, never raised
            log.warning("could not mark the sweep's parent run %s FAILED: %s", run_id, e)

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        """One line per finished job: jobs done / total, failures so far, rate and ETA. In every launcher's
        worker process, so the counts live in files of the sweep folder."""
        if not config.get("progress", True) or "sweep" not in config.get("hydra", {}):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        meta_path = sweep_dir / PROGRESS_FILE
        if not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text())
        with open(sweep_dir / "jobs_done.txt", "a", encoding="utf-8") as f:
            f.write(f"{config.hydra.job.num}\n")
        done = len((sweep_dir / "jobs_done.txt").read_text(encoding="utf-8").split())
        failures = sweep_dir / "failures.jsonl"
        failed = len(failures.read_text(encoding="utf-8").splitlines()) if failures.is_file() else 0
        log.info(sweep_line(done, meta["total"], time.time() - meta["start"], failed))

    def on_multirun_end(self, config, **kwargs) -> None:
        from . import tracking

        sweep_dir = Path(config.hydra.sweep.dir)
        parent = read_parent(sweep_dir)
        path = sweep_dir / FAILURES_FILE
        if parent is not None:  # every job has returned: a child still RUNNING lost its worker
            client, _ = tracking.client_for(config.tracking_uri, config.experiment_name)
            for r in close_orphans(client, parent, everything=True):
                tags = r.data.tags
                record_failure(sweep_dir, tags.get("sweep.job", "?"), tags.get("sweep.overrides", "").split(),
                               f"KILLED: run {r.info.run_id}: {ORPHAN_ERROR}")
        failures = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x] if path.exists() else []
        if parent is not None:
            if config.get("sweep_report", True):
                self._report(config, sweep_dir, parent)
            self._search_results(client, sweep_dir, parent)
            if failures:
                client.log_text(parent, path.read_text(encoding="utf-8"), "failures.jsonl")
            client.set_terminated(parent, status="FAILED" if failures else "FINISHED")
            self._open_parent = None  # ended here, with its real status
        if not failures:
            log.info("sweep finished: no job failed")
            return
        lines = [f"  job {f['job']} [{' '.join(f['overrides'])}]: {f['error'].splitlines()[0]}" for f in failures]
        log.error(f"sweep finished: {len(failures)} job(s) failed (details in {path}):\n" + "\n".join(lines))
        raise SystemExit(1)

    @staticmethod
    def _search_results(client, sweep_dir: Path, parent: str) -> None:
        """An Optuna search (hydra/sweeper=optuna_journal) leaves its best trial and its trial table in the
        sweep folder: log them under search/ of the parent run, and the best value as a parent metric."""
        results = sweep_dir / "optimization_results.yaml"
        if not results.is_file():
            return
        for name in ("optimization_results.yaml", "optuna_trials.csv"):
            if (sweep_dir / name).is_file():
                client.log_artifact(parent, str(sweep_dir / name), "search")
        best = OmegaConf.load(results).get("best_value")
        if best is not None:
            client.log_metric(parent, "search_best_value", float(best))

    @staticmethod
    def _report(config, sweep_dir: Path, parent: str) -> None:
        """The comparison report of this sweep's runs, as files in the sweep folder and parent artifacts.
        A report problem (e.g. every job failed) is logged, never allowed to hide the sweep's own result."""
        from .compare import build_report, parse_group_by

        try:
            report = build_report(config.experiment_name, config.tracking_uri, sweep_dir / "report", parent_run_id=parent,
                                  group_by=parse_group_by(config.get("report_group_by")))
            print(report.markdown)
            print(f"comparison report: {report.out_dir}/comparison.md (also under report/ in the parent MLflow "
                  f"run {parent})")
        except Exception as e:  # noqa: BLE001
            log.warning("no comparison report for this sweep: %s", e)
