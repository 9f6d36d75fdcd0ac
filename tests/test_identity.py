"""Config identity across versions: a relaunched sweep must recognise the runs it finished before options
were added, so the shipped presets' hashes are pinned. Change a pin only when results really change (then
say so in the README: earlier runs rerun once)."""

import pytest
from conftest import compose

from experiments.identity import config_hash, run_params

PINNED = {  # at the default model and data
    "baseline": "b7d7a89f3989987c",
    "embed": "7605f9b43539e3c7",
    "freeze": "5528316620945567",  # 2026-12-02: freeze keeps its best validation epoch (keep_best)
    # 2026-12-02: the fine-tuning family trains with attention_dropout=0 (SDPA's fused kernel; same accuracy)
    "finetune": "19cd593239f7b367",
    "partial": "3dbb8052a02a3e5b",
    "lora": "823ad895535641d9",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_presets_keep_their_identity(name):
    assert config_hash(compose([f"strategy={name}"])) == PINNED[name]


def test_attention_dropout_left_at_the_models_own_is_the_old_identity():
    """attention_dropout=null is the configuration before the option existed: runs logged then still match."""
    assert config_hash(compose(["strategy=finetune", "strategy.attention_dropout=null"])) == "eb262d302dfe2d94"
    assert config_hash(compose(["strategy=lora", "strategy.attention_dropout=null"])) == "58e4eb9f12e0cb98"


def test_an_option_left_off_is_not_part_of_the_identity_but_one_set_is():
    plain = compose(["strategy=finetune"])
    assert "strategy.layer_lr_decay" not in run_params(plain)  # older runs lack the param too
    decayed = compose(["strategy=finetune", "strategy.layer_lr_decay=0.8"])
    assert config_hash(decayed) != config_hash(plain)
    assert run_params(decayed)["strategy.layer_lr_decay"] == "0.8"
    assert config_hash(compose(["strategy=finetune", "strategy.gradual_unfreeze=true"])) != config_hash(plain)


def test_a_test_seed_equal_to_the_split_seed_is_the_same_data_as_none():
    plain = compose(["strategy=embed"])
    same = compose(["strategy=embed", "data.test_seed=0"])
    assert config_hash(same) == config_hash(plain) and "data.test_seed" not in run_params(same)
    other = compose(["strategy=embed", "data.test_seed=0", "data.split_seed=1"])
    assert config_hash(other) != config_hash(compose(["strategy=embed", "data.split_seed=1"]))
    assert run_params(other)["data.test_seed"] == "0"
    assert config_hash(compose(["strategy=embed", "report_group_by=strategy"])) == config_hash(plain)  # bookkeeping
