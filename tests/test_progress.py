"""Progress of long work: plain lines (not bars) when stderr is not a terminal, none with progress=false; the
sweep's job count; freeze ends on its best validation epoch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import compose, demo_split
from omegaconf import OmegaConf

from experiments.bundle import build_strategy
from experiments.callbacks import job_count, sweep_line
from strategies import progress

LOGGER = "transfer_bench.progress"


@pytest.fixture
def progress_now(monkeypatch):
    """Progress on, shown from the first moment (short test work would otherwise stay under DELAY_S)."""
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setattr(progress, "ENABLED", True)


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_without_a_terminal_a_line_every_tenth(progress_now, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with progress.bar(200, "encode", unit="text") as bar:
        for _ in range(40):
            bar.update(5, loss=0.123456)
    out = lines(caplog)
    assert [line.split()[1] for line in out] == [f"{p}%" for p in range(10, 101, 10)]
    assert out[-1].startswith("encode: 100% 200/200 [") and "text/s, loss=0.1235]" in out[-1]
    assert "\r" not in "".join(out) and "|" not in "".join(out)  # no bar drawn into a log


def test_short_work_and_progress_off_write_nothing(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(progress, "ENABLED", True)  # DELAY_S as shipped: this ends well before it
    with progress.bar(10, "encode") as bar:
        bar.update(10)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    progress.set_enabled(False)
    try:
        with progress.bar(10, "encode") as bar:
            bar.update(10)
    finally:
        progress.set_enabled(True)
    assert lines(caplog) == []


@pytest.mark.parametrize("on", [True, False])
def test_a_run_without_a_terminal_writes_progress_lines_unless_off(on, tiny_overrides, in_store, progress_now,
                                                                   caplog):
    from experiments.runner import run

    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = compose(["strategy=freeze", "strategy.epochs=3", "cache=false", "log_model=false", f"progress={on}",
                   "data.train_size=40", "data.test_size=20", *tiny_overrides,
                   *in_store.overrides(f"progress-{on}")])
    run(cfg)
    out = lines(caplog)
    if not on:
        assert out == []
        return
    assert any(x.startswith("encode: 100% 40/40 [") for x in out), out  # the training texts
    assert any(x.startswith("train head: 100% 3/3 [") and "loss=" in x for x in out), out


def test_finetune_steps_show_sequences_per_second_and_loss(tiny_overrides, progress_now, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = compose(["strategy=finetune", "strategy.epochs=2", "strategy.batch_size=8", *tiny_overrides]).strategy
    torch.manual_seed(0)
    build_strategy(cfg, 2).fit(demo_split(40))
    out = [x for x in lines(caplog) if x.startswith("epoch ")]
    assert [x.split(":")[0] for x in out if " 100% " in x] == ["epoch 1/2", "epoch 2/2"]
    assert all("seq/s" in x and "loss=" in x for x in out), out


def test_sweep_job_count_and_line():
    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"seed": "0,1,2", "data.train_size": "100,200"}},
                                      "overrides": {"task": ["strategy=baseline,embed", "seed=0,1", "+epochs=1"]}}})
    assert job_count(cfg) == 2 * 2 * 2  # the command line's seed=0,1 replaces the preset's three seeds
    assert job_count(OmegaConf.create({"hydra": {"sweeper": {"n_trials": 30}, "overrides": {"task": []}}})) == 30
    assert sweep_line(3, 8, 30.0, 1) == "sweep:  38% 3/8 [00:30<00:50, 10.00s/job, 1 failed]"
    assert sweep_line(3, None, 30.0, 0) == "sweep: 3 job(s) done, 0 failed"


# ----------------------------------------------------------------------------- freeze keeps its best epoch
def test_freeze_ends_on_its_best_validation_epoch(tiny_overrides):
    """By default (keep_best: true) freeze restores the head of the epoch with the lowest validation
    log-loss, without stopping early: 30 epochs at a high learning rate overfit 40 texts after a few."""
    cfg = compose(["strategy=freeze", "strategy.epochs=12", "strategy.lr=0.05", *tiny_overrides]).strategy
    train, val = demo_split(40), demo_split(24, offset=40)
    seen: dict[int, np.ndarray] = {}
    torch.manual_seed(0)
    strategy = build_strategy(cfg, 2)
    strategy.fit(train, val, lambda epoch, scalars, proba: seen.__setitem__(epoch, proba))
    assert sorted(seen) == list(range(1, 13))  # never stopped early
    loss = {e: -np.log(np.clip(p[np.arange(len(val)), val.labels], 1e-7, 1)).mean() for e, p in seen.items()}
    best = min(loss, key=loss.get)
    assert best < 12, "the setting no longer overfits: the test would not tell best from last"
    assert strategy.best_epoch == best
    np.testing.assert_allclose(strategy.predict_proba(val.texts), seen[best], atol=1e-6)
    assert strategy.fit_report().best_epoch == best  # what the runner logs as runtime.best_epoch
