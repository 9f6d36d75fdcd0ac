"""Entry point: `python run.py strategy=freeze` (see README.md). Hydra composes conf/; run() does the work."""

import signal
import sys

import hydra
from omegaconf import DictConfig

from experiments.runner import run
from strategies import distributed


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    # SIGTERM (kill, a timeout, a scheduler's preemption) would end Python on the spot: the MLflow run, and a
    # sweep's parent, would stay RUNNING. As SystemExit it unwinds: the run ends FAILED, the parent FAILED
    # (SweepSummary's exit hook) and jobs left behind KILLED; a relaunch continues (skip_finished, resume).
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if distributed.launched():  # a torchrun worker: see exit_without_finalizing for the abort it avoids
        distributed.exit_without_finalizing(main)
    else:
        main()
