"""A Hydra launcher that runs each sweep job as one Ray task, on a Ray cluster or a local Ray.

Why not hydra-ray-launcher: its last release (1.2.2) pins cloudpickle<3 (a downgrade next to MLflow 3), and it always
passes object_store_memory to ray.init(), which Ray refuses when joining a running cluster ("When connecting to
an existing cluster, object_store_memory must not be provided"). This plugin uses Ray's own API only:

    address      RAY_ADDRESS (auto, HEAD:6379, ray://...) joins that cluster; null starts a local Ray
    init         more ray.init() arguments (resource sizes such as num_cpus apply to a local Ray only)
    remote       each job's ray.remote() options: num_cpus, num_gpus ("auto": 1 when the cluster has GPUs),
                 memory, resources, max_calls (1 = a fresh worker process per job)

All jobs are submitted at once; Ray places them where their CPUs/GPUs are free (Ray sets CUDA_VISIBLE_DEVICES and
OMP_NUM_THREADS for each). A job whose worker dies (killed, out of memory, its node lost) is recorded in
<sweep dir>/failures.jsonl, as the runner records a job that raised, and the sweep goes on. Hydra discovers
the plugin in the hydra_plugins namespace; Ray is imported only when a sweep uses it (the `ray` extra).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# ray.init() arguments that size a new local Ray; Ray refuses them when joining a running cluster
LOCAL_ONLY = ("num_cpus", "num_gpus", "resources", "object_store_memory", "_memory", "labels")


def _run_job(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
             singleton_state: dict[Any, Any], cwd: str) -> JobReturn:
    """In the Ray worker: the launching directory when this node has it (a shared file system), then the
    job as Hydra's other launchers run it."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def check_feasible(options: dict, nodes: list[dict]) -> None:
    """Ray queues a task that no node can hold and waits for ever; fail at once instead, in one line."""
    for key, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        need = float(options.get(key) or 0)
        most = max((float(n.get(resource, 0)) for n in nodes), default=0.0)
        if need > most:
            raise ValueError(f"hydra.launcher.remote.{key}={options[key]:g}: no node of the Ray cluster has that "
                             f"many {resource}s (the most is {most:g}); lower it, or set "
                             f"hydra.launcher.wait_for_resources=true on a cluster that adds nodes")


class RayTaskLauncher(Launcher):
    def __init__(self, address: str | None = None, init: Any = None, remote: Any = None,
                 wait_for_resources: bool = False) -> None:
        self.wait_for_resources = bool(wait_for_resources)
        self.address = address
        self.init = OmegaConf.to_container(init, resolve=True) if isinstance(init, DictConfig) else dict(init or {})
        self.remote = OmegaConf.to_container(remote, resolve=True) if isinstance(remote, DictConfig) else dict(remote or {})
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _start_ray(self):
        import ray

        if ray.is_initialized():
            return ray
        kwargs = dict(self.init)
        if self.address:
            dropped = [k for k in LOCAL_ONLY if kwargs.pop(k, None) is not None]
            if dropped:
                log.warning("joining the Ray cluster at %s: ignoring %s (they size a local Ray only)",
                            self.address, ", ".join(dropped))
            kwargs["address"] = self.address
        log.info("Ray: %s", f"joining the cluster at {self.address}" if self.address else "starting a local Ray")
        ray.init(**kwargs)
        return ray

    def _options(self, ray) -> dict[str, Any]:
        options = {k: v for k, v in self.remote.items() if v is not None}
        if options.get("num_gpus") == "auto":
            options["num_gpus"] = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        if not self.wait_for_resources:
            check_feasible(options, [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])
        return options

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from experiments.callbacks import record_failure

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        ray = self._start_ray()
        options = self._options(ray)
        task = ray.remote(**options)(_run_job) if options else ray.remote(_run_job)
        log.info("Ray: launching %d jobs (each %s), sweep output dir: %s", len(job_overrides), options, sweep_dir)
        submitted = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            ref = task.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state(), os.getcwd())
            submitted.append((idx, list(overrides), sweep_config, ref))
        results = []
        for idx, overrides, sweep_config, ref in submitted:
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as e:  # the worker died or its node was lost: the job never returned
                error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                log.error("job %d: its Ray task ended without a result: %s", idx, error)
                record_failure(sweep_dir, idx, overrides, error)
                results.append(JobReturn(overrides=overrides, cfg=sweep_config, hydra_cfg=sweep_config,
                                         status=JobStatus.COMPLETED, _return_value=None))
        return results
