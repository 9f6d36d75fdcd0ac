"""Entry point: `python run.py strategy=freeze` (see README.md). Hydra composes conf/; run() does the work."""

import hydra
from omegaconf import DictConfig

from experiments.runner import run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
