"""A Hydra sweeper that runs an Optuna study kept in a journal file, so that a search can be continued.

Why not hydra-optuna-sweeper: its latest release (1.3.0) pins optuna<3, and optuna 2.10's SQLite storage
fails with SQLAlchemy 2 (which mlflow 3 requires) and has no journal storage. This sweeper uses optuna>=4
and keeps that plugin's search-space syntax (in hydra.sweeper.params or on the command line):

    key=tag(log, interval(1e-5, 1e-3))   float, log-uniform       key=interval(0.0, 0.5)   float, uniform
    key=range(1, 7)                       int 1..6 (stop excluded as in Hydra's sweeps; a step is allowed)
    key=choice(linear, mlp)               categorical              key=value                the same in every trial

`n_trials` is the study's total: launching the same search again continues it (after a crash, or with a
larger n_trials), and several launches on one machine or on a shared file system may share one study file.
A trial whose job returns None or NaN, or raises, is told to Optuna as FAIL and the study goes on.
Hydra discovers the plugin in the hydra_plugins namespace: from run.py's folder, or site-packages once installed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

# optuna is imported inside the functions: Hydra imports every hydra_plugins module at the start of every
# run, also the single runs that never search, and optuna costs ~0.2 s to import.

log = logging.getLogger(__name__)


def distribution(override: Override) -> Any:
    """The Optuna distribution of one parsed override, or None when the override is a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    sweep = override.value()
    if override.is_interval_sweep():  # Hydra parses interval bounds as floats; use range() for integers
        return FloatDistribution(sweep.start, sweep.end, log="log" in sweep.tags)
    values = list(override.sweep_iterator())
    if override.is_range_sweep() and not sweep.shuffle:
        if any(isinstance(v, float) for v in values):
            return FloatDistribution(values[0], values[-1], step=float(sweep.step))
        return IntDistribution(values[0], values[-1], step=int(sweep.step))
    # choice(): numbers stay numbers; anything else (strings, lists such as [1,2]) is kept as written, so
    # that the sampled value goes back on the command line unchanged.
    written = list(override.sweep_string_iterator())
    return CategoricalDistribution([v if type(v) in (int, float) else s for v, s in zip(values, written, strict=True)])


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The search space and the fixed overrides (verbatim). A later override of a key wins, so the command
    line can fix a parameter that a preset searches (or search one it fixes)."""
    entries: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        dist = distribution(override)
        entries.pop(key := override.get_key_element(), None)  # keeps the order in which values take effect
        entries[key] = override.input_line if dist is None else dist
    fixed = [v for v in entries.values() if isinstance(v, str)]
    return {k: v for k, v in entries.items() if not isinstance(v, str)}, fixed


def open_storage(storage: str) -> Any:
    """A database URL (sqlite:///..., postgresql://...) is used as it is; anything else is the path of a
    journal file, which needs no server and which Optuna locks for concurrent writers."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        return storage
    path = Path(storage).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def objective(ret: JobReturn) -> float | None:
    """The job's return value as a float, or None for a failed job (exception, None or NaN)."""
    try:
        value = ret.return_value  # re-raises the job's exception, if it raised
    except Exception as e:  # noqa: BLE001 - one failed trial must not end the study
        log.warning("trial job raised %s: %s", type(e).__name__, e)
        return None
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


class OptunaJournalSweeper(Sweeper):
    def __init__(self, storage: str, study_name: str, direction: str, n_trials: int, n_jobs: int,
                 seed: int | None, sampler: Any, params: DictConfig | None = None) -> None:
        self.storage, self.study_name, self.direction = str(storage), str(study_name), direction
        self.n_trials, self.n_jobs, self.seed = int(n_trials), max(1, int(n_jobs)), seed
        self.sampler = sampler  # a partial (_partial_: true): the seed is given per launch, see sweep()
        self.params = params or {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context  # validate_batch_is_legal() needs both
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        study = optuna.create_study(storage=open_storage(self.storage), study_name=self.study_name,
                                    direction=self.direction, load_if_exists=True)
        # Trials left RUNNING by a killed launch (or running in a parallel one) do not count as done.
        done = sum(t.state.is_finished() for t in study.trials)
        # The same seed in a continued study would replay the first launch's random start-up trials, so the
        # seed is offset by the number of trials the study already has (reproducible, and new points).
        study.sampler = self.sampler(seed=None if self.seed is None else int(self.seed) + len(study.trials))
        log.info("Optuna study '%s' (%s): %d of %d trials done; searching %s", self.study_name, self.storage,
                 done, self.n_trials, ", ".join(space) or "nothing")
        job_idx = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [tuple(fixed) + tuple(f"{k}={v}" for k, v in t.params.items()) for t in trials]
            self.validate_batch_is_legal(batch)  # a wrong key stops the search here, not in every trial
            returns = self.launcher.launch(batch, initial_job_idx=job_idx)
            job_idx += len(returns)
            for trial, ret in zip(trials, returns, strict=True):
                value = objective(ret)
                if value is None:
                    log.warning("trial %d failed: told to Optuna as FAIL, the study goes on", trial.number)
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += len(trials)
        self._save_results(study)

    def _save_results(self, study: Any) -> None:
        """optimization_results.yaml (best trial) and optuna_trials.csv (every trial) in the sweep folder."""
        from optuna.trial import TrialState

        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        study.trials_dataframe().to_csv(folder / "optuna_trials.csv", index=False)
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {"study_name": self.study_name, "storage": self.storage,
                                   "direction": self.direction, "n_trials": len(study.trials),
                                   "n_complete": len(complete)}
        if complete:
            best = study.best_trial
            results |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
            log.info("best trial %d: value %.4f with %s", best.number, best.value, best.params)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")
