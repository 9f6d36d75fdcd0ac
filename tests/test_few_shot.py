"""conf/experiment/few_shot.yaml: its sweep composes, and on IMDb (skipped when the local copy is absent) each
total train size is exactly half per class, with the same validation and test reviews at every size."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONF_DIR, IMDB


def _sweep():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["experiment=few_shot"], return_hydra_config=True)


def test_few_shot_sweep_composes():
    cfg = _sweep()
    params = cfg.hydra.sweeper.params
    assert params["data.train_size"] == "16,32,64,128,512"
    assert set(params.strategy.split(",")) == {"baseline", "embed", "freeze", "lora", "setfit", "finetune"}
    assert params.seed == "0,1,2,3,4"
    assert (cfg.data.name, cfg.data.val_size, cfg.data.test_size) == ("imdb", 200, 2000)
    assert cfg.experiment_name == "few_shot"


@pytest.mark.skipif(not IMDB.is_dir(), reason="no local IMDb copy")
def test_few_shot_sizes_are_per_class_on_imdb():
    from conftest import compose

    from experiments.data import load_dataset

    val = test = None
    for total in (16, 512):
        ds = load_dataset(compose(["experiment=few_shot", f"data.path={IMDB}", f"data.train_size={total}"]).data)
        assert np.bincount(ds.train.labels).tolist() == [total // 2, total // 2]
        assert np.bincount(ds.test.labels).tolist() == [1000, 1000]
        assert val in (None, ds.val.texts) and test in (None, ds.test.texts)
        val, test = ds.val.texts, ds.test.texts


def test_few_shot_selects_nothing_on_validation():
    """Validation lies outside the labelled budget: no preset may pick an epoch with it (true few-shot)."""
    from conftest import compose

    for name in _sweep().hydra.sweeper.params.strategy.split(","):
        s = compose(["experiment=few_shot", f"strategy={name}"]).strategy
        assert not s.get("keep_best", False) and s.get("early_stopping_patience") is None, name
    assert compose(["strategy=freeze"]).strategy.keep_best  # elsewhere freeze keeps its best epoch


def test_few_shot_subsets_sweep_composes():
    """The subset draws: few_shot's data and test reviews, one training seed, five split seeds, the report
    grouped over the draws."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=few_shot_subsets"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert (params.seed, params["data.split_seed"], params["data.train_size"]) == ("0", "0,1,2,3,4", "16,32,64,128,512")
    assert set(params.strategy.split(",")) == {"baseline", "embed", "freeze"}
    assert (cfg.data.name, cfg.data.val_size, cfg.data.test_size, cfg.data.test_seed) == ("imdb", 200, 2000, 0)
    assert (cfg.experiment_name, cfg.report_group_by) == ("few_shot_subsets", "strategy,data.train_size")


@pytest.mark.skipif(not IMDB.is_dir(), reason="no local IMDb copy")
def test_few_shot_subsets_share_few_shots_test_reviews():
    from conftest import compose

    from experiments.data import load_dataset

    base = load_dataset(compose(["experiment=few_shot", f"data.path={IMDB}", "data.train_size=16"]).data)
    draw = load_dataset(compose(["experiment=few_shot_subsets", f"data.path={IMDB}", "data.train_size=16",
                                 "data.split_seed=3"]).data)
    assert draw.test.texts == base.test.texts and set(draw.train.texts) != set(base.train.texts)
