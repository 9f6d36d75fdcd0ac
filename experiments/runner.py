"""The shared runner: data -> splits -> seeded strategy -> fit -> test metrics -> MLflow.

It owns data, seeding, metrics, tracking and timing, and treats every strategy the same way: it never
asks which kind of strategy it is running."""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from strategies import distributed as ddp
from strategies import progress
from strategies.backbone import set_threads
from strategies.base import FitReport, Strategy

from . import tracking
from .bundle import build_strategy, save_bundle
from .callbacks import read_parent
from .data import Dataset, load_dataset
from .errors import ConfigError, DataError, UserError
from .identity import config_hash, run_params
from .metrics import Evaluation, confusion_figure, evaluate
from .resources import MACHINE_SPEED_KEYS, Measure, machine_speed, release_memory
from .schema import check_arguments, validate

log = logging.getLogger("transfer_bench")
OBJECTIVE = "objective_val_f1_macro"  # the metric run() returns to sweepers
EXAMPLE_CHARS = 300  # the logged model's input example: two test texts, cut to this length to stay readable


def quiet_libraries() -> None:
    """Progress bars and advisory warnings from the libraries drown the per-epoch lines in sweep logs."""
    import os
    import warnings

    import datasets

    datasets.disable_progress_bars()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=".*dataset source can be interpreted in multiple ways.*")
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
    # fp16 loss scaling skips the first step(s) while it finds its scale; the schedule still advances
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextmanager
def strategy_errors(cfg: DictConfig):
    """Constructor, checking and loading errors (Hydra wraps the constructor's) as one readable line."""
    try:
        yield
    except InstantiationException as e:
        cause = " ".join(str(e.__cause__ or e).split())
        raise ConfigError(f"strategy '{cfg.strategy.name}': {cause}") from e
    except (ValueError, TypeError, OSError) as e:
        cause = " ".join(str(e).split())  # library messages (hub, peft) may span lines
        raise ConfigError(f"strategy '{cfg.strategy.name}' with model '{cfg.model.name}': {cause}") from e


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked before the data and the weights load (about a second): the schema,
    then the strategy built from its config and checked against the model's config.json."""
    validate(cfg)
    check_arguments(cfg.strategy)
    names = cfg.data.get("label_names")  # the real number of classes is known only once the data is read
    with strategy_errors(cfg):
        build_strategy(cfg.strategy, len(names) if names else 2).check()


def make_strategy(cfg: DictConfig, num_labels: int):
    """Build the strategy and load what it needs — before an MLflow run exists."""
    with strategy_errors(cfg):
        strategy = build_strategy(cfg.strategy, num_labels)
        strategy.prepare()
        return strategy


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e)


def _sweep_dir() -> Path | None:
    """The sweep folder when this job is part of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def checkpoint_path(cfg: DictConfig) -> Path:
    return Path(cfg.get("checkpoint_dir", "checkpoints")).expanduser() / config_hash(cfg)


def sweep_job_tags() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return {"sweep.job": str(hc.job.num), "sweep.overrides": " ".join(hc.overrides.task)}


def checkpoint_folder(cfg: DictConfig) -> tuple[Path, str | None]:
    """(folder for this config's resumable state, MLflow run id to continue or None)."""
    folder = checkpoint_path(cfg)
    meta = folder / "run.json"
    if cfg.get("resume", False):
        if meta.is_file():
            run_id = json.loads(meta.read_text())["run_id"]
            log.info("resuming MLflow run %s from %s", run_id, folder)
            return folder, run_id
        log.warning("resume=true but %s holds no interrupted run of this config: starting afresh", folder)
    shutil.rmtree(folder, ignore_errors=True)  # state of an earlier interrupted run is stale now
    return folder, None


def _split_frame(split, names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": split.texts, "label": [names[i] for i in split.labels]})


def epoch_label(cfg: DictConfig, epoch: int) -> str:
    """'epoch 3/30' for strategies trained in epochs; the others report their validation scores once."""
    epochs = cfg.strategy.get("epochs")
    return f"epoch {epoch}/{epochs}" if epochs else "validation"


def speed_text(summary: dict, cached: bool = False) -> str:
    """Train time and inference throughput. With encoder features read from the feature cache the measured
    figures leave encoding out (inference on cached features runs at memory speed): show the estimates."""
    if "inference_examples_per_s_uncached" not in summary:
        note = "  (encoder features read from the cache: the times leave encoding out)" if cached else ""
        return f"train {summary['train_time_s']:.1f}s  inference {summary['inference_examples_per_s']:.1f} ex/s{note}"
    return (f"train ~{summary['train_time_uncached_s']:.1f}s  inference ~"
            f"{summary['inference_examples_per_s_uncached']:.1f} ex/s (estimated with encoding: the features came "
            f"from the cache; measured {summary['train_time_s']:.1f}s and "
            f"{summary['inference_examples_per_s']:.0f} ex/s on cached features)")


def run(cfg: DictConfig) -> float | None:
    """One experiment. Returns the validation macro-F1 of the kept model (what sweepers optimise; never test).

    A user error (bad config or data) ends a single run with a one-line message and exit status 1. In a
    multirun sweep any failing job is recorded in <sweep dir>/failures.jsonl and the sweep goes on; the
    sweep ends with a summary (experiments.callbacks.SweepSummary)."""
    progress.set_enabled(cfg.get("progress", True))
    try:
        return _run(cfg)
    except Exception as e:
        sweep = _sweep_dir()
        if sweep is None:
            if isinstance(e, UserError):
                raise SystemExit(f"error: {e}") from None
            raise
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        job = hc.job
        record = {"job": job.num, "overrides": list(hc.overrides.task), "error": f"{type(e).__name__}: {e}"}
        sweep.mkdir(parents=True, exist_ok=True)
        with open(sweep / "failures.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        log.error("job %s failed: %s", job.num, record["error"], exc_info=not isinstance(e, UserError))
        return None
    finally:
        ddp.teardown()
        release_memory()  # a sweep runs its jobs in one process: free each job's model before the next


def _run(cfg: DictConfig) -> float | None:
    """One run as named steps; run() wraps it with the failure handling."""
    t_start = time.perf_counter()
    quiet_libraries()
    set_threads()
    join_process_group(cfg)  # under torchrun; nothing otherwise
    check_config(cfg)  # a config that cannot work fails here, not after the data and weights have loaded
    if not ddp.is_main():
        return _follow(cfg)
    experiment_id = tracking.setup(cfg.tracking_uri, cfg.experiment_name)
    done = finished_run(cfg, experiment_id)  # before loading anything: skipping is instant
    if done is not None:
        return done.data.metrics.get(OBJECTIVE)  # same config, same result: a sweeper may count it
    data = load_data(cfg)
    strategy = make_strategy(cfg, data.num_labels)
    strategy.set_held_out(data.val.texts + data.test.texts)  # never learned from, not even without labels
    strategy.report_steps(lambda step, scalars: tracking.log_metrics(scalars, step=step))
    ckpt_dir, resume_id = checkpoint_folder(cfg)
    strategy.enable_checkpoints(ckpt_dir, int(cfg.get("checkpoint_every", 0)))
    run_name, tags = describe_run(cfg, data, strategy)
    with tracking.tracked_run(experiment_id, run_name, tags, run_id=resume_id) as active:
        remember_run(ckpt_dir, active.info.run_id)  # what resume=true continues if this process dies
        log_inputs(cfg, data, resumed=resume_id is not None)
        fitted = fit_and_predict(cfg, strategy, data, resumed=resume_id is not None)
        summary = summarise(fitted, strategy, data)
        log_outputs(cfg, fitted, summary, strategy, data, run_name)
        tracking.log_metrics({"wall_time_s": time.perf_counter() - t_start})
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # FINISHED: nothing left to resume
    print_result(cfg, run_name, active.info.run_id, fitted, summary)
    return summary.get(OBJECTIVE)


# ----------------------------------------------------------------------------- the steps, in run order
def join_process_group(cfg: DictConfig) -> None:
    """Under torchrun: join the process group (nothing otherwise), before anything asks CUDA about a device:
    that would open a context on GPU 0 in every rank."""
    try:
        ddp.setup(cfg.get("device", "auto"))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _follow(cfg: DictConfig) -> None:
    """A rank other than 0 under torchrun: with the same seeds, data and strategy as rank 0 it takes its share
    of training and evaluation, in step with rank 0. It never touches MLflow or the checkpoint folder (rank 0
    reads the checkpoint and sends it) and reports nothing."""
    logging.getLogger().setLevel(logging.WARNING)  # one copy of the progress lines: rank 0's
    data = load_data(cfg)
    strategy = make_strategy(cfg, data.num_labels)
    strategy.set_held_out(data.val.texts + data.test.texts)
    strategy.enable_checkpoints(checkpoint_path(cfg), int(cfg.get("checkpoint_every", 0)))
    strategy.fit(data.train, data.val)
    strategy.predict_proba(data.test.texts)
    return None


def finished_run(cfg: DictConfig, experiment_id: str):
    """In a sweep (skip_finished=true): the FINISHED run of this exact config, if there is one."""
    if _sweep_dir() is None or not cfg.get("skip_finished", True):
        return None
    done = tracking.find_finished(experiment_id, config_hash(cfg))
    if done is not None:  # a re-launched sweep continues where it stopped
        log.info("skipping: run %s already FINISHED this exact config (skip_finished=false to rerun)", done.info.run_id)
    return done


def load_data(cfg: DictConfig) -> Dataset:
    seed_everything(int(cfg.seed))
    data = load_dataset(cfg.data)
    seed_everything(int(cfg.seed))  # the strategy's initialisation must not depend on how data was read
    return data


def describe_run(cfg: DictConfig, data: Dataset, strategy: Strategy) -> tuple[str, dict[str, str]]:
    """The run's name and tags (what the UI and the report group by), and a line saying what runs."""
    model_tag = strategy.model_name or "none"
    tags = {
        "strategy": cfg.strategy.name,
        "model": model_tag,
        "dataset": data.name,
        "seed": str(cfg.seed),
        "data_fingerprint": data.fingerprint(),
        "config_hash": config_hash(cfg),
        "distributed_backend": ddp.backend(),  # gloo | nccl under torchrun, none for a plain run
    } | tracking.environment_tags()
    sweep = _sweep_dir()
    parent = read_parent(sweep) if sweep is not None else None
    if parent is not None:
        tags["mlflow.parentRunId"] = parent  # child of the sweep's parent run
        tags |= sweep_job_tags()  # which job: the sweep's summary names a run whose worker died
    run_name = f"{cfg.strategy.name}-{model_tag}-{data.name}-s{cfg.seed}"
    log.info("run %s: train %d / val %d / test %d, %d classes", run_name, len(data.train), len(data.val),
             len(data.test), data.num_labels)
    return run_name, tags


def remember_run(ckpt_dir: Path, run_id: str) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / "run.json").write_text(json.dumps({"run_id": run_id}))


def log_inputs(cfg: DictConfig, data: Dataset, resumed: bool) -> None:
    """The config and the splits (a resumed run logged them when it started), and the split sizes."""
    names = data.label_names
    if not resumed:
        tracking.log_params(run_params(cfg))
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
        tracking.log_inputs(
            {
                "training": (_split_frame(data.train, names), data.sources.get("train")),
                "validation": (_split_frame(data.val, names), data.sources.get("train")),
                "test": (_split_frame(data.test, names), data.sources.get("test")),
            },
            data.name,
        )
    tracking.log_metrics(
        {"data_train_size": len(data.train), "data_val_size": len(data.val), "data_test_size": len(data.test),
         "world_size": ddp.world_size()}  # processes that trained together (torchrun); 1 = plain run
        | {f"data_{k}": v for k, v in data.notes.items()}
    )

@dataclass
class Fitted:
    """What fit_and_predict measured."""

    proba: np.ndarray  # test probabilities
    fit: Measure
    inference: Measure
    val_scores: dict[int, dict]  # epoch -> validation accuracy, macro-F1, log-loss
    saved_in_fit_s: float  # of FitReport.time_saved_s, the part saved while fitting (not predicting)
    report: FitReport  # read after predicting
    evaluation: Evaluation  # the test metrics
    speeds: list[dict]  # machine_speed() samples (machine_canary), a continued run's earlier processes' first


CANARY_EVERY_S = 30.0  # the most often an epoch boundary samples the machine's speed


def fit_and_predict(cfg: DictConfig, strategy: Strategy, data: Dataset, resumed: bool = False) -> Fitted:
    """Fit (logging each epoch's scores on the validation split), then predict the test split, timed."""
    val_scores: dict[int, dict] = {}
    speeds = earlier_speeds() if resumed and cfg.get("machine_canary", True) else []
    sampled_at = [0.0]
    fit_m, inf_m = Measure(), Measure()

    def sample_speed(every_s: float = 0.0) -> dict:
        """The machine's speed now (machine_canary), if every_s have passed since the last sample: at the
        start, between epochs and at the end, never inside a step. A sample takes under 0.2 s on an idle
        2-CPU machine (counted in the train time between epochs: under 1% of it), so an epoch of seconds (a
        freeze head's) gets none."""
        if not cfg.get("machine_canary", True) or time.perf_counter() - sampled_at[0] < every_s:
            return {}
        try:
            with fit_m.excluded():  # its temporaries are not the strategy's memory
                speeds.append(machine_speed())
        except Exception as e:  # a canary must never end a run of hours; the run just has fewer samples
            log.warning("machine_canary: sampling the machine's speed failed (%s: %s)", type(e).__name__, e)
            return {}
        finally:
            sampled_at[0] = time.perf_counter()
        return speeds[-1]

    if first := sample_speed():
        tracking.log_metrics(first, step=0)

    def on_epoch(epoch: int, scalars: dict, val_proba) -> None:
        metrics = {k: float(v) for k, v in scalars.items()} | sample_speed(every_s=CANARY_EVERY_S)
        if val_proba is not None:
            val = evaluate(*data.shown(data.val.labels, val_proba), data.display_names, prefix="val_").scalars
            val_scores[epoch] = {k: val[k] for k in ("val_accuracy", "val_f1_macro", "val_log_loss")}
            metrics |= val_scores[epoch]
        tracking.log_metrics(metrics, step=epoch)
        log.info("%s: %s", epoch_label(cfg, epoch), "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    try:
        with fit_m:
            strategy.fit(data.train, data.val, on_epoch)
        saved_in_fit = float(strategy.fit_report().time_saved_s or 0.0)
        with inf_m:
            proba = strategy.predict_proba(data.test.texts)
    except (RuntimeError, MemoryError) as e:
        if _is_oom(e):
            raise MemoryError(
                f"out of memory on {strategy.info().get('device', 'cpu')}: lower strategy.micro_batch_size "
                f"(the same training, less memory), strategy.encode_batch_size, strategy.batch_size or "
                f"model.max_length, or set strategy.gradient_checkpointing=true"
            ) from e
        raise
    sample_speed()
    return Fitted(proba, fit_m, inf_m, val_scores, saved_in_fit, strategy.fit_report(),
                  evaluate(*data.shown(data.test.labels, proba), data.display_names),  # data.label_names' order
                  speeds)


def earlier_speeds() -> list[dict]:
    """The machine-speed samples a continued run's earlier processes logged (each logged every sample but the
    one after predicting, which a finished process takes): the run's slowest, median and fastest then cover
    all its hours, not only the last process's."""
    try:
        return tracking.logged_series(MACHINE_SPEED_KEYS)
    except Exception as e:  # as sample_speed: never the reason a run of hours ends
        log.warning("machine_canary: reading the earlier samples failed (%s: %s)", type(e).__name__, e)
        return []


def summarise(fitted: Fitted, strategy: Strategy, data: Dataset) -> dict[str, float]:
    """The run's summary metrics: test scores, size, time and memory, and the kept model's validation scores."""
    counts, report, n_test = strategy.parameter_counts(), fitted.report, len(data.test)
    fit_m, inf_m = fitted.fit, fitted.inference
    summary = fitted.evaluation.scalars | {
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "trainable_fraction": counts["trainable"] / max(1, counts["total"]),
        # a resumed run adds the training time spent before the interruption (up to its last checkpoint)
        "train_time_s": fit_m.seconds + float(report.train_time_before_resume_s or 0.0),
        "inference_time_s": inf_m.seconds,
        "inference_examples_per_s": n_test / max(inf_m.seconds, 1e-9),
        "peak_rss_mb": max(fit_m.peak_rss_mb, inf_m.peak_rss_mb),
        # in a sweep's one process, RSS carries what earlier jobs left: the start shows how much
        "rss_at_start_mb": fit_m.start_rss_mb,
        "peak_cuda_mb": max(fit_m.peak_cuda_mb, inf_m.peak_cuda_mb),
    }
    # The machine's own speed over the run (slowest, median, fastest sample): times taken while it ran slow
    # are the machine's, not the strategy's (the report says when its runs' machine speeds differ)
    for key in dict.fromkeys(k for sample in fitted.speeds for k in sample):  # an earlier process may lack some
        samples = [s[key] for s in fitted.speeds if key in s]
        summary |= {f"{key}_min": min(samples), f"{key}_max": max(samples),
                    f"{key}_median": float(np.median(samples))}  # what the report compares between runs
    if fitted.speeds:
        summary["machine_samples"] = len(fitted.speeds)  # how many samples the figures above rest on (at most)
    # Work a strategy skipped by reusing stored results (the feature cache): the measured times leave it
    # out, so the report also gets what the run would have cost without them (an estimate).
    saved = float(report.time_saved_s or 0.0)
    if saved:
        summary["train_time_uncached_s"] = summary["train_time_s"] + fitted.saved_in_fit_s
        summary["inference_examples_per_s_uncached"] = n_test / (inf_m.seconds + saved - fitted.saved_in_fit_s)
    # The model that was kept (the best epoch when early stopping restored one, else the last): its
    # validation scores, and what a sweeper optimises (its macro-F1). Never a test metric.
    kept = report.best_epoch or max(fitted.val_scores, default=None)
    if kept in fitted.val_scores:
        summary |= {"kept_epoch": kept} | {f"kept_{k}": v for k, v in fitted.val_scores[kept].items()}
        summary[OBJECTIVE] = fitted.val_scores[kept]["val_f1_macro"]
    return summary


def log_outputs(cfg: DictConfig, fitted: Fitted, summary: dict, strategy: Strategy, data: Dataset, run_name: str) -> None:
    """Summary metrics, the strategy's runtime facts, the classification report, the confusion matrix, the
    test predictions and the model."""
    ev, names = fitted.evaluation, data.label_names
    tracking.log_metrics(summary)
    tracking.log_params({f"runtime.{k}": str(v) for k, v in (strategy.info() | fitted.report.params()).items()})
    tracking.log_text(ev.report_text, "classification_report.txt")
    tracking.log_dict(ev.report, "classification_report.json")
    tracking.log_figure(confusion_figure(ev.confusion, data.display_names, run_name), "confusion_matrix.png")
    if cfg.get("save_predictions", True):
        preds = _split_frame(data.test, names).rename(columns={"label": "true"})
        preds["pred"] = [names[i] for i in fitted.proba.argmax(1)]
        for i in data.display_order or range(len(names)):
            preds[f"prob_{names[i]}"] = fitted.proba[:, i]
        tracking.log_table(preds, "predictions/test_predictions.csv")
    if cfg.get("log_model", True):
        with tempfile.TemporaryDirectory() as tmp:
            bundle = save_bundle(strategy, cfg.strategy, names, Path(tmp) / "bundle", data.display_order)
            tracking.log_model(bundle, data.display_names, [t[:EXAMPLE_CHARS] for t in data.test.texts[:2]])


def print_result(cfg: DictConfig, run_name: str, run_id: str, fitted: Fitted, summary: dict) -> None:
    print(f"\n== {run_name}  (MLflow run {run_id}, experiment '{cfg.experiment_name}')")
    print(fitted.evaluation.report_text)
    print(
        f"accuracy {summary['test_accuracy']:.4f}  macro-F1 {summary['test_f1_macro']:.4f}  "
        f"trainable {summary['trainable_params']:,} / {summary['total_params']:,} params  "
        f"{speed_text(summary, fitted.report.feature_cache in ('hit', 'partial'))}  "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB"
    )


__all__ = ["run", "ConfigError", "DataError", "UserError"]
