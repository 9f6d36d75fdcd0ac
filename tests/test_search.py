"""Optuna search (hydra/sweeper=optuna_journal): real tiny studies with the TF-IDF baseline on the demo data.
The study persists in a journal file and continues when the search is launched again; each trial is a child
MLflow run of the search's parent, and what Optuna maximises is the trial's validation macro-F1."""

from __future__ import annotations

import subprocess
import sys

import optuna  # a dependency: a missing optuna must fail here, not skip
import pytest
from conftest import CONF_DIR, RUN_PY, STRATEGY_PRESETS, subprocess_env


def _search(cwd, store, experiment, *overrides, ok=True):
    out = subprocess.run(
        [sys.executable, str(RUN_PY), "-m", "experiment=search_baseline", *store.overrides(experiment), *overrides],
        cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert (out.returncode == 0) == ok, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


def _study(cwd, experiment):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = cwd / "optuna" / f"{experiment}-demo-minilm.journal"  # conf/hydra/sweeper/optuna_journal.yaml
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=f"{experiment}-demo-minilm", storage=storage)


def test_search_persists_continues_and_optimises_validation_f1(tmp_path, mlflow_store):
    _search(tmp_path, mlflow_store, "search", "hydra.sweeper.n_trials=3")
    assert len(_study(tmp_path, "search").trials) == 3

    logs = _search(tmp_path, mlflow_store, "search", "hydra.sweeper.n_trials=3")  # relaunch: already done
    assert "3 of 3 trials done" in logs and len(_study(tmp_path, "search").trials) == 3

    _search(tmp_path, mlflow_store, "search", "hydra.sweeper.n_trials=6")  # continue the same study
    trials = _study(tmp_path, "search").trials
    assert [t.number for t in trials] == list(range(6))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    # the continued launch proposed new points, not a replay of the first launch's seeded random start
    assert len({t.params["classifier.C"] for t in trials}) == 6

    runs = mlflow_store.runs("search")
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]  # every launch joins one parent
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}

    # each trial's objective is its run's validation macro-F1 (test is never the objective)
    by_c = {float(r.data.params["classifier.C"]): r.data.metrics for r in children}
    for t in trials:
        [metrics] = [m for c, m in by_c.items() if c == pytest.approx(t.params["classifier.C"], rel=1e-12)]
        assert t.value == pytest.approx(metrics["objective_val_f1_macro"], abs=1e-12)
        assert t.value == pytest.approx(metrics["val_f1_macro"], abs=1e-12)  # no early stopping: the last epoch
    assert any(m["val_f1_macro"] != m["test_f1_macro"] for m in by_c.values())  # the two can be told apart

    best = max(t.value for t in trials)
    assert parent.data.metrics["search_best_value"] == pytest.approx(best)
    artifacts = {a.path for a in mlflow_store.client().list_artifacts(parent.info.run_id, "search")}
    assert artifacts == {"search/optimization_results.yaml", "search/optuna_trials.csv"}


def test_a_repeated_configuration_is_answered_by_its_finished_run(tmp_path, mlflow_store):
    """Four trials over two C values must repeat configurations: skip_finished answers a repeat with the
    earlier run's objective instead of training again, so every trial COMPLETEs and only two runs exist."""
    logs = _search(tmp_path, mlflow_store, "search_repeat", "hydra.sweeper.n_trials=4", "classifier.C=choice(0.5,8.0)",
                   "strategy.vectorizer.ngram_range=[1,2]", "strategy.vectorizer.min_df=1")  # only C varies
    trials = _study(tmp_path, "search_repeat").trials
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    children = [r for r in mlflow_store.runs("search_repeat") if r.data.tags.get("sweep") != "parent"]
    by_c = {float(r.data.params["classifier.C"]): r.data.metrics["objective_val_f1_macro"] for r in children}
    assert len(children) == len(by_c) == len({t.params["classifier.C"] for t in trials})
    assert logs.count("skipping: run") == 4 - len(children) > 0
    assert all(t.value == pytest.approx(by_c[t.params["classifier.C"]], abs=1e-12) for t in trials)


def test_failed_trials_are_told_to_optuna_and_the_study_goes_on(tmp_path, mlflow_store):
    """A negative C fails every trial (rejected by the config checks, before a run starts): each trial is
    recorded FAIL, the study is not broken, the launch still runs every trial and then exits non-zero like
    any sweep with failed jobs."""
    logs = _search(tmp_path, mlflow_store, "search_fail", "hydra.sweeper.n_trials=2",
                   "classifier.C=interval(-2.0,-1.0)", ok=False)  # the command line overrides the preset's C
    assert "2 job(s) failed" in logs
    trials = _study(tmp_path, "search_fail").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all(-2.0 <= t.params["classifier.C"] <= -1.0 for t in trials)
    assert "classifier: The 'C' parameter of LogisticRegression" in logs
    assert [r for r in mlflow_store.runs("search_fail") if r.data.tags.get("sweep") != "parent"] == []


def test_search_expressions_become_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.optuna_journal_sweeper.optuna_journal_sweeper import search_space

    space, fixed = search_space([
        "a=tag(log, interval(1e-5, 1e-3))", "b=interval(0.0, 0.2)", "c=range(1, 7)", "d=range(10, 70, 10)",
        "e=choice(linear, mlp)", "f=choice([1,1],[1,2])", "g=choice(4, 8)", "+h=fixed", "b=0.1",
    ])
    assert space == {
        "a": FloatDistribution(1e-5, 1e-3, log=True),
        "c": IntDistribution(1, 6),  # stop excluded, as in Hydra's range sweeps
        "d": IntDistribution(10, 60, step=10),
        "e": CategoricalDistribution(["linear", "mlp"]),
        "f": CategoricalDistribution(["[1,1]", "[1,2]"]),  # kept as written: goes back on the command line
        "g": CategoricalDistribution([4, 8]),
    }
    assert fixed == ["+h=fixed", "b=0.1"]  # a later fixed value wins over an earlier search (b)


@pytest.mark.parametrize("strategy", STRATEGY_PRESETS)
def test_each_strategy_has_a_search_preset_that_maximises_validation_f1(strategy):
    """conf/experiment/search_<strategy>.yaml composes, selects its strategy and gives a working sweeper."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=search_{strategy}"], return_hydra_config=True)
    # imported after Hydra's plugin scan, which re-executes every hydra_plugins module (new class objects)
    from hydra_plugins.optuna_journal_sweeper.optuna_journal_sweeper import OptunaJournalSweeper, search_space

    assert cfg.strategy.name == strategy and cfg.experiment_name == f"search_{strategy}"
    sweeper = instantiate(cfg.hydra.sweeper)
    assert isinstance(sweeper, OptunaJournalSweeper) and sweeper.direction == "maximize"
    assert sweeper.storage == f"optuna/search_{strategy}-demo-minilm.journal"
    space, fixed = search_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert len(space) >= 2 and not fixed  # every listed parameter is searched
    assert isinstance(sweeper.sampler(seed=0), optuna.samplers.TPESampler)
