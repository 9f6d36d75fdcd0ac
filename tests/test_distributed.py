"""Data-parallel fine-tuning under torchrun (CPU, gloo, 2 processes, the tiny BERT): the same result as one
process with the same global batch, one MLflow run, and an exact resume after a kill."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import REPO, RUN_PY, STRATEGY_PRESETS, compose, subprocess_env, tiny_model_overrides

from experiments.runner import run

sys.path.insert(0, str(REPO / "tests"))
import ddp_presets  # noqa: E402

# Two ranks sum their gradients in another order than one process does, and pad their micro-batches to
# other lengths: float32 rounding, nothing more (measured: at most 3e-7 on a 2-core CPU, 2026-12-02).
PROBA_TOL = 1e-5


@pytest.fixture(scope="module")
def dropless_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT without dropout: ranks draw other dropout masks than one process does, so only a
    dropout-free model can match step for step."""
    folder = tmp_path_factory.mktemp("dropless") / "bert"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _overrides(model, store, experiment):
    # 61 training texts in batches of 6: a last batch of one, so one rank gets an empty share; micro-batches
    # of 2 make each rank accumulate (no_sync) over two of them.
    return [*tiny_model_overrides(model), "strategy=finetune", "strategy.epochs=2", "strategy.batch_size=6",
            "strategy.micro_batch_size=2", "strategy.dropout=0", "data.train_size=61", "data.val_size=20",
            "data.test_size=40", "precision=fp32", "log_model=false", "checkpoint_every=5",
            *store.overrides(experiment)]


def _torchrun(overrides, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(RUN_PY), *overrides]


def _result(store, experiment):
    """(run, test probabilities) of the experiment's only run."""
    runs = store.runs(experiment)
    assert len(runs) == 1, [r.info.status for r in runs]
    [r] = runs
    path = store.client().download_artifacts(r.info.run_id, "predictions/test_predictions.csv")
    preds = pd.read_csv(io.StringIO(open(path, encoding="utf-8").read()))
    return r, preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy()


@pytest.fixture(scope="module")
def two_ranks(dropless_bert, mlflow_store, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp-two")
    out = subprocess.run(_torchrun(_overrides(dropless_bert, mlflow_store, "ddp-two")), cwd=cwd,
                         env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return _result(mlflow_store, "ddp-two")


def test_two_ranks_match_one_process_and_log_one_run(two_ranks, dropless_bert, in_store):
    run(compose(_overrides(dropless_bert, in_store, "ddp-one")))
    one, one_proba = _result(in_store, "ddp-one")
    two, two_proba = two_ranks  # _result asserted: exactly one run
    assert two.info.status == "FINISHED"
    assert two.data.metrics["world_size"] == 2 and two.data.tags["distributed_backend"] == "gloo"
    assert one.data.metrics["world_size"] == 1 and one.data.tags["distributed_backend"] == "none"
    assert two.data.tags["config_hash"] == one.data.tags["config_hash"]  # the world size is not a setting
    print(f"finetune, 2 ranks vs 1 process: max |probability difference| = {np.abs(two_proba - one_proba).max():.3g}")
    np.testing.assert_allclose(two_proba, one_proba, atol=PROBA_TOL)
    for key in ("test_log_loss", "val_log_loss", "train_loss"):
        assert two.data.metrics[key] == pytest.approx(one.data.metrics[key], abs=PROBA_TOL)
    assert two.data.metrics["test_accuracy"] == one.data.metrics["test_accuracy"]


@pytest.fixture(scope="module")
def killed_two_ranks(dropless_bert, mlflow_store, tmp_path_factory):
    """A 2-rank run killed (SIGKILL, agent and workers) right after its first checkpoint; a copy of the
    checkpoint folder as it was then."""
    cwd = tmp_path_factory.mktemp("ddp-killed")
    cmd = _torchrun(_overrides(dropless_bert, mlflow_store, "ddp-resume"))
    proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(cwd.glob("checkpoints/*/trainer_state.pt")):
        assert proc.poll() is None and time.time() < deadline, "training ended before a checkpoint was written"
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)  # torchrun starts them in their own sessions
    for p in [*workers, psutil.Process(proc.pid)]:
        p.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(workers, timeout=30)
    copy = tmp_path_factory.mktemp("ddp-killed-copy") / "checkpoints"
    shutil.copytree(cwd / "checkpoints", copy)
    return cwd, cmd, copy


def test_killed_two_rank_run_resumes_to_the_same_result(two_ranks, killed_two_ranks, mlflow_store):
    expected_run, expected = two_ranks
    cwd, cmd, _ = killed_two_ranks
    [interrupted] = mlflow_store.runs("ddp-resume")
    assert interrupted.info.status == "RUNNING"  # killed hard: nothing could mark it

    out = subprocess.run(cmd + ["resume=true"], cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "resuming MLflow run" in out.stdout + out.stderr
    resumed, proba = _result(mlflow_store, "ddp-resume")
    assert resumed.info.run_id == interrupted.info.run_id and resumed.info.status == "FINISHED"
    assert int(resumed.data.params["runtime.resumed_from_step"]) >= 5
    np.testing.assert_array_equal(proba, expected)
    keep = ("test_accuracy", "test_log_loss", "val_log_loss", "train_loss")
    assert {k: resumed.data.metrics[k] for k in keep} == {k: expected_run.data.metrics[k] for k in keep}
    assert not list(cwd.glob("checkpoints/*"))  # removed once FINISHED


def test_two_rank_checkpoint_resumes_in_one_process(two_ranks, killed_two_ranks, dropless_bert, in_store):
    """Another world size than the checkpoint's: the same global batches continue from the same step (the
    model has no dropout, whose draws would differ), so one plain process ends where 2 ranks did."""
    _, expected = two_ranks
    _, _, copy = killed_two_ranks
    [folder] = copy.iterdir()
    run_id = in_store.client().create_run(in_store.client().create_experiment("ddp-resize")).info.run_id
    (folder / "run.json").write_text(json.dumps({"run_id": run_id}))  # a run of its own to continue
    run(compose(_overrides(dropless_bert, in_store, "ddp-resize") + ["resume=true", f"checkpoint_dir={copy}"]))
    resumed, proba = _result(in_store, "ddp-resize")
    assert resumed.info.run_id == run_id and resumed.data.metrics["world_size"] == 1
    assert int(resumed.data.params["runtime.resumed_from_step"]) >= 5
    np.testing.assert_allclose(proba, expected, atol=PROBA_TOL)


def test_no_sweeps_under_torchrun(monkeypatch):
    """Every rank would run the whole sweep, each with its own MLflow parent run: refused in one line."""
    from experiments.callbacks import SweepSummary

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit, match="torchrun runs one run"):
        SweepSummary().on_multirun_start(compose())  # before it reads anything of the config


# ----------------------------------------------------------------------------- every preset
@pytest.fixture(scope="module")
def presets_on_two_ranks(dropless_bert, tmp_path_factory):
    """One torchrun launch fits every preset on 2 ranks (starting Python twice costs more than the fits)."""
    out = tmp_path_factory.mktemp("presets-two")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "ddp_presets.py"), str(out), str(dropless_bert), *STRATEGY_PRESETS]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return out


@pytest.mark.parametrize("name", STRATEGY_PRESETS)
def test_every_preset_predicts_the_same_on_two_ranks(name, presets_on_two_ranks, dropless_bert, tmp_path):
    """Sharded features and evaluation, DDP for the encoder-training presets, rank 0 alone for scikit-learn:
    the same probabilities as one process."""
    ddp_presets.main(tmp_path, str(dropless_bert), [name])
    one, two = np.load(tmp_path / f"{name}.npz"), np.load(presets_on_two_ranks / f"{name}.npz")
    assert int(one["world"]) == 1 and int(two["world"]) == 2
    print(f"{name}, 2 ranks vs 1 process: max |probability difference| =",
          max(float(np.abs(two[s] - one[s]).max()) for s in ("val", "test")))
    for split in ("val", "test"):
        np.testing.assert_allclose(two[split], one[split], atol=PROBA_TOL, err_msg=f"{name} {split}")


# ----------------------------------------------------------------------------- process exit
EXIT_SCRIPT = """
import atexit, sys, threading, time
from strategies import distributed
class Finalized:
    def __del__(self): print(" finalized", end="")  # runs in the interpreter's teardown, which is skipped
kept = Finalized()
atexit.register(lambda: print(" atexit", end=""))  # unflushed: an os._exit before the flush would lose it
threading.Thread(target=lambda: (time.sleep(0.2), print(" thread", end=""))).start()  # not a daemon: waited for
how = sys.argv[1]
def main():
    if how == "message": sys.exit("error: a one-line message")
    if how == "status": sys.exit(3)
    if how == "none": sys.exit(None)
    if how == "raise": raise RuntimeError("boom")
    if how == "interrupt": raise KeyboardInterrupt
print("work", end="")
distributed.exit_without_finalizing(main)
print("never reached")
"""


@pytest.mark.parametrize("how, status", [("ok", 0), ("none", 0), ("message", 1), ("status", 3), ("raise", 1),
                                         ("interrupt", -signal.SIGINT)])
def test_exit_without_finalizing_ends_as_python_would(how, status):
    """A torchrun worker skips the interpreter's teardown (where gloo's threads abort it) but keeps what a
    normal exit gives: the exit status, the error message or traceback once, threads joined, atexit handlers
    and flushed output."""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, how], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == status, done.stderr
    assert done.stdout == "work thread atexit"  # and not " finalized"
    assert done.stderr.count("error: a one-line message") == (how == "message")
    assert done.stderr.count("RuntimeError: boom") == (how == "raise")
    assert done.stderr.count("KeyboardInterrupt") == (how == "interrupt")
