"""The comparison report: read the FINISHED runs of an experiment (or of one sweep) from MLflow and say which
strategy to use — a table (mean ± std over seeds), Pareto plots, learning curves, accuracy per layer, and a
paired McNemar test between strategies scored on the same test set.

    python -m experiments.compare --experiment NAME[,NAME…] [--tracking-uri sqlite:///mlflow.db]
                                  [--parent-run-id ID] [--out DIR] [--group-by strategy,data.train_size]
                                  [--where KEY=VALUE …] [--reference baseline]
    python -m experiments.compare --from-export DIR[,DIR…] [--out DIR] [--group-by …] [--where …]

Writes comparison.md, comparison.csv, significance.csv and PNG plots to --out; with --parent-run-id the same
files are also logged to that run under report/. It also writes the runs it read, runs.csv (tags, params,
metrics) and predictions.parquet (their test predictions, compact): an export that outlives the MLflow store.
--from-export rebuilds the report, significance tests included, from one or several such exports, e.g. runs
of one study made on machines whose stores are gone. `build_report()` is the same thing as a function.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .identity import NEUTRAL, NOT_CONFIG

ALPHA = 0.05
EXACT_BELOW = 25  # McNemar: exact binomial when b + c < 25, where the chi-square approximation is poor
PREDICTIONS = "predictions/test_predictions.csv"
RUNS_FILE, PREDICTIONS_FILE = "runs.csv", "predictions.parquet"  # an export: the report's runs, and their predictions
TRAIN_SIZE, LAYERS = "data.train_size", "strategy.layers"
CACHE = "params.runtime.feature_cache"  # hit/partial: the run read encoder features instead of computing them
TIMINGS = ("train_time_s", "examples_per_s")
UNCACHED = {"train_time_s": "train_time_uncached_s", "examples_per_s": "inference_examples_per_s_uncached"}
TAGS = ("strategy", "model", "dataset", "experiment")  # group-by keys shown bare in labels; params as name=value
METRICS = {  # table column -> MLflow metric
    "acc": "test_accuracy",
    "f1": "test_f1_macro",
    "trainable_params": "trainable_params",
    "train_time_s": "train_time_s",
    "examples_per_s": "inference_examples_per_s",
    "train_examples": "data_train_size",
}
# The runner's machine canary (resources.machine_speed): each run logs its median sample of each
SPEEDS = {"machine_matmul_gflops": ("a 512² matmul", "GFLOP/s"), "machine_copy_gbps": ("a 32 MB copy", "GB/s"),
          "machine_block_tokens_per_s": ("a transformer block", "tokens/s")}
SPEED_SPREAD = 1.1  # runs whose machine ran at speeds further apart than this get a note on their times
SIGNIFICANCE_METHOD = (
    "McNemar's test on paired test predictions, only between groups whose runs share one `data_fingerprint` "
    "(the same train/val/test examples). With several seeds a group is represented by its per-example "
    "majority vote across seeds (ties broken by the mean predicted probability): every seed contributes, and "
    "each test example is counted once, which is the independence McNemar needs. It tests whether the "
    "consensus predictions differ in error rate on this test set; seed-to-seed spread is the ± std column. "
    f"Exact binomial when the discordant count b + c < {EXACT_BELOW}, else chi-square with continuity "
    "correction; p-values Holm-adjusted for the number of pairs."
)


class ReportError(ValueError):
    """Nothing to report on: unknown experiment, no finished runs, unknown group-by key."""


@dataclass
class Report:
    table: pd.DataFrame  # one row per group
    pairs: pd.DataFrame  # one row per McNemar comparison
    group_by: list[str]
    markdown: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: str = "baseline"  # the series the others are measured against along a sweep axis


# ----------------------------------------------------------------------------- reading runs
def fetch_runs(client, experiment: str | list[str], parent_run_id: str | None = None) -> pd.DataFrame:
    """FINISHED runs as one row each (run_id, start_time, tags.*, params.*, metrics.*), newest first.
    experiment: a name, or a list of names (tags.experiment says which each run came from)."""
    names = {}
    for name in [experiment] if isinstance(experiment, str) else experiment:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise ReportError(f"no MLflow experiment named '{name}'")
        names[exp.experiment_id] = name
    query = "attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    rows, token = [], None
    while True:  # paginated: a large sweep has more runs than one page
        page = client.search_runs(list(names), query, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for r in page:
            rows.append({"run_id": r.info.run_id, "start_time": r.info.start_time}
                        | {f"tags.{k}": v for k, v in r.data.tags.items()}
                        | {"tags.experiment": names[r.info.experiment_id]}  # after the run's own tags: ours wins
                        | {f"params.{k}": v for k, v in r.data.params.items()}
                        | {f"metrics.{k}": v for k, v in r.data.metrics.items()})
        token = page.token
        if not token:
            break
    runs = pd.DataFrame(rows)
    if runs.empty or "metrics.test_accuracy" not in runs:
        raise ReportError(f"no finished runs with test metrics in '{experiment}'"
                          + (f" under parent run {parent_run_id}" if parent_run_id else ""))
    for col in (f"metrics.{m}" for m in METRICS.values()):
        if col not in runs:
            runs[col] = np.nan
    # A sweep's parent run finishes too but has no test metrics of its own.
    return runs[runs["metrics.test_accuracy"].notna()].reset_index(drop=True)


def _config_columns(runs: pd.DataFrame) -> list[str]:
    """Params that define a configuration: not bookkeeping, not runtime outputs, not copies of the seed
    (classifier.random_state is ${seed})."""
    seed = runs.get("params.seed")
    cols = []
    for col in (c for c in runs.columns if c.startswith("params.")):
        name = col.removeprefix("params.")
        if name in NOT_CONFIG or name.startswith("runtime."):
            continue
        if seed is not None and (runs[col].isna() | (runs[col] == seed)).all():
            continue
        cols.append(col)
    return cols


def deduplicate(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the newest run of each identical (config, seed, data): a re-launched sweep repeats runs, and a
    repeat is not an independent replicate — counting it would shrink the std. The same run in two experiments
    of one report is two runs: the experiment is a group key."""
    ids = ["tags.strategy", "tags.model", "tags.dataset", "tags.seed", "tags.data_fingerprint", "params.seed",
           "tags.experiment"]
    cols = [c for c in _config_columns(runs) + ids if c in runs]
    if not cols:
        return runs, 0
    kept = runs.loc[~runs[cols].fillna("").astype(str).duplicated()]  # newest first: keeps the newest
    return kept.reset_index(drop=True), len(runs) - len(kept)


def column_of(runs: pd.DataFrame, key: str) -> str:
    """A group-by key as a column: a tag (strategy, model, dataset) first, then a param (data.train_size)."""
    for col in (key, f"tags.{key}", f"params.{key}"):
        if col in runs:
            return col
    raise ReportError(f"'{key}' is neither a tag nor a param of these runs (--group-by, --where)")


SPELLINGS = {"null": "None", "~": "None", "true": "True", "false": "False"}  # Hydra's -> as params are logged


def where(runs: pd.DataFrame, conditions: list[str]) -> pd.DataFrame:
    """Only the runs meeting every condition, KEY=VALUE or KEY!=VALUE, compared as logged text; Hydra's
    spellings count too (data.train_size=null is the full training set, logged as None). A key a run did not
    log reads as its neutral value if it has one (identity.NEUTRAL: such options are logged only when set),
    else as '—'."""
    for cond in conditions:
        key, op, value = cond.partition("!=") if "!=" in cond else cond.partition("=")
        key, value = key.strip(), value.strip()
        if not op or not key:
            raise ReportError(f"--where '{cond}': write KEY=VALUE or KEY!=VALUE, e.g. data.train_size=null")
        value = SPELLINGS.get(value.lower(), value)
        try:
            logged = runs[column_of(runs, key)]
        except ReportError:
            if key not in NEUTRAL:
                raise
            logged = pd.Series(np.nan, index=runs.index, dtype=object)  # no run set it: all neutral
        text = logged.fillna(str(NEUTRAL[key]) if key in NEUTRAL else "—").astype(str)
        runs = runs[(text == value) if op == "=" else (text != value)]
    if runs.empty:
        raise ReportError(f"no finished runs meet --where {' '.join(conditions)}")
    return runs.reset_index(drop=True)


def parse_group_by(text: str | None) -> list[str] | None:
    """'strategy, data.train_size' (--group-by, report_group_by) -> its keys; empty or None -> None (default)."""
    keys = [k.strip() for k in str(text or "").split(",") if k.strip()]
    return keys or None


def default_group_by(runs: pd.DataFrame) -> list[str]:
    """strategy, + model/dataset/experiment when several, + every config param that varies within those groups
    (strategy.layers in a layer probe, data.train_size in a learning curve): runs that differ in anything
    but the seed are different configurations, never seeds of one."""
    def several(tag: str) -> bool:  # model "none" (the TF-IDF baseline) is not a second encoder
        return f"tags.{tag}" in runs and runs[f"tags.{tag}"].replace("none", np.nan).nunique() > 1

    keys = ["strategy"] + [tag for tag in ("model", "dataset", "experiment") if several(tag)]
    base = [column_of(runs, k) for k in keys]
    for col in _config_columns(runs):
        if runs.fillna({col: "—"}).groupby(base, dropna=False)[col].nunique().max() > 1:
            keys.append(col.removeprefix("params."))
    return keys


# ----------------------------------------------------------------------------- the table
def _seeds(s: pd.Series) -> str:
    return ",".join(sorted(s.dropna().astype(str), key=lambda x: (len(x), x)))


def build_table(runs: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    cols = [column_of(runs, k) for k in group_by]
    runs = runs.fillna({c: "—" for c in cols})  # a param one strategy lacks (baseline has no layers)
    agg = {"runs": ("run_id", "size")}
    if "tags.seed" in runs:
        agg["seeds"] = ("tags.seed", _seeds)
    # A run that reused stored work (encoder features from the feature cache, tapt's adapted encoder) did not
    # pay for it: its train time and throughput are not the strategy's cost. Such a run counts with its
    # uncached estimate (its time plus what the reused work took when it was stored; the runner logs one
    # whenever a strategy reports time saved); a group with only feature-cache hits and no estimate (runs
    # from before estimates were logged) falls back to its times and is flagged.
    cached = runs[CACHE].isin(["hit", "partial"]) if CACHE in runs else pd.Series(False, index=runs.index)
    if f"metrics.{UNCACHED['train_time_s']}" in runs:
        cached |= runs[f"metrics.{UNCACHED['train_time_s']}"].notna()
    unknown = cached.copy()
    for name in TIMINGS:
        estimate = runs.get(f"metrics.{UNCACHED[name]}", pd.Series(np.nan, index=runs.index))
        runs[f"_{name}"] = runs[f"metrics.{METRICS[name]}"].where(~cached, estimate)
        unknown &= estimate.isna()
        agg[f"_{name}"] = (f"_{name}", "mean")
    agg["_cached"] = ("run_id", lambda ids: bool(unknown[ids.index].all()))
    for name, metric in METRICS.items():
        col = f"metrics.{metric}"
        agg[f"{name}_mean"] = (col, "mean")
        if name in ("acc", "f1"):
            agg[f"{name}_std"] = (col, "std")  # sample std (ddof=1) over seeds; NaN for a single run
    if "tags.data_fingerprint" in runs:
        agg["data_fingerprint"] = ("tags.data_fingerprint", lambda s: ",".join(sorted(s.dropna().unique())))
    table = runs.groupby(cols, sort=False).agg(**agg).reset_index()
    table.columns = group_by + list(table.columns[len(cols):])
    table = table.rename(columns={"trainable_params_mean": "trainable_params"})
    for name in TIMINGS:
        table[f"{name}_mean"] = table.pop(f"_{name}").fillna(table[f"{name}_mean"])
    table["timing_cached"] = table.pop("_cached")
    table["pareto_params"] = pareto_front(table["trainable_params"], table["acc_mean"])
    # a group timed only on cache hits did not pay for encoding: its time is no cost to rank it by
    table["pareto_time"] = pareto_front(table["train_time_s_mean"].mask(table["timing_cached"]), table["acc_mean"])
    table.insert(0, "group", [label(row, group_by) for _, row in table.iterrows()])
    if all(k in TAGS for k in group_by):  # strategies only: ranked, best first
        return table.sort_values("acc_mean", ascending=False, kind="stable").reset_index(drop=True)
    # a sweep axis (train size, layers): read along it, strategy by strategy
    return table.sort_values(group_by, key=lambda s: s.map(_natural), kind="stable").reset_index(drop=True)


def machine_speed_note(runs: pd.DataFrame) -> str | None:
    """Train times compare strategies only if the machine ran at one speed: name how far apart the runs'
    typical machine speeds (each run's median sample) were, when more than SPEED_SPREAD (a shared host, or
    runs from several machines). Medians, not each run's extremes: a long run's hundreds of 10 ms samples
    always hold a few outliers."""
    spans = []
    for key, (what, unit) in SPEEDS.items():
        med = runs.get(f"metrics.{key}_median")
        if med is None or med.isna().all():
            continue  # runs from before the canary
        slow, fast = med.min(), med.max()
        if fast > SPEED_SPREAD * slow:
            spans.append(f"{what} ran at {slow:.0f} to {fast:.0f} {unit} ({fast / slow:.2f}x)")
    if not spans:
        return None
    return ("the machine's own speed varied across these runs (each run's median sample, metrics machine_*_median): "
            + "; ".join(spans) + ". Differences in train time smaller than that may be the machine's, not the "
            "strategies'")


def label(row, group_by: list[str]) -> str:
    """'embed · layers=[3]': tag values as they are, params as short name=value."""
    return " · ".join(str(row[k]) if k in TAGS else f"{k.rsplit('.', 1)[-1]}={row[k]}" for k in group_by)


def pareto_front(cost: pd.Series, acc: pd.Series) -> np.ndarray:
    """True for groups no other group beats on both axes (lower or equal cost and higher accuracy)."""
    on = np.zeros(len(cost), dtype=bool)
    best = -np.inf
    for i in np.lexsort((-acc.to_numpy(), cost.to_numpy())):  # by cost, then best accuracy first
        if not np.isnan(cost.iloc[i]) and acc.iloc[i] > best:
            on[i], best = True, acc.iloc[i]
    return on


# ----------------------------------------------------------------------------- significance
def mcnemar(b: int, c: int) -> tuple[float, str]:
    """Two-sided McNemar p-value from the discordant counts b (only A right) and c (only B right)."""
    if b + c == 0:
        return 1.0, "exact"
    if b + c < EXACT_BELOW:
        return float(stats.binomtest(b, b + c, 0.5).pvalue), "exact"
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return float(stats.chi2.sf(chi2, df=1)), "chi2"


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def majority_vote(frames: list[pd.DataFrame]) -> np.ndarray:
    """Per-example majority of the seeds' predicted labels; ties go to the label with the higher mean
    predicted probability (a tie-break below one vote, since probabilities are in [0, 1])."""
    labels = sorted(set().union(*(f["pred"] for f in frames), *(f["true"] for f in frames)))
    score = np.zeros((len(frames[0]), len(labels)))
    for f in frames:
        for j, name in enumerate(labels):
            score[:, j] += (f["pred"] == name).to_numpy()
            if f"prob_{name}" in f:
                score[:, j] += 1e-3 * pd.to_numeric(f[f"prob_{name}"]).to_numpy() / len(frames)
    return np.asarray(labels)[score.argmax(1)]


def examples_digest(texts) -> str:
    """Which test examples, in which order: two runs pair only if their predictions list the same ones."""
    return hashlib.sha256("\n".join(map(str, texts)).encode()).hexdigest()[:16]


class MlflowPredictions:
    """A run's test predictions (true, pred, prob_*) from its MLflow artifact, downloaded once, with the digest
    of its examples' texts in attrs["examples"] (the texts themselves are not kept: 25,000 reviews a run).
    None where the run saved none (save_predictions=false)."""

    def __init__(self, client):
        self.client, self.cache = client, {}

    def __call__(self, run_id: str) -> pd.DataFrame | None:
        if run_id not in self.cache:
            self.cache[run_id] = None
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = self.client.download_artifacts(run_id, PREDICTIONS, tmp)
                except Exception:  # mlflow raises several types for a missing artifact
                    return None
                frame = pd.read_csv(path, dtype={"true": str, "pred": str, "text": str}, keep_default_na=False)
            frame.attrs["examples"] = examples_digest(frame.pop("text"))
            self.cache[run_id] = frame
        return self.cache[run_id]


def write_export(out: Path, runs: pd.DataFrame, load) -> list[Path]:
    """runs.csv (every run of the report, as read) and predictions.parquet (each run's predicted labels, in
    test-set order, and its class probabilities, which only break the majority vote's ties: as float16, the
    last class left empty where they sum to 1). The texts are not copied: a digest of each run's example list
    (predictions_sha256) pairs runs instead. About 50 kB a run for 25,000 binary predictions."""
    frames, digests, columns = [], {}, {}
    for run_id in runs["run_id"]:
        f = load(run_id)
        if f is None:
            continue
        digests[run_id] = f.attrs["examples"]
        probs = f[[c for c in f if c.startswith("prob_")]].apply(pd.to_numeric)
        columns[run_id] = "|".join(probs.columns)
        if probs.shape[1] > 1 and np.allclose(probs.sum(axis=1), 1, atol=1e-3):
            probs.iloc[:, -1] = np.nan  # 1 - the others: read_exports fills it back
        frames.append(pd.DataFrame({"run_id": run_id, "true": f["true"].astype(str), "pred": f["pred"].astype(str)})
                      .join(probs.astype("float16")))
    runs.assign(predictions_sha256=runs["run_id"].map(digests), predictions_probs=runs["run_id"].map(columns)) \
        .to_csv(out / RUNS_FILE, index=False)
    files = [out / RUNS_FILE]
    if frames:
        cats = {c: "category" for c in ("run_id", "true", "pred")}
        pd.concat(frames, ignore_index=True).astype(cats).to_parquet(out / PREDICTIONS_FILE, compression="zstd",
                                                                     index=False)
        files.append(out / PREDICTIONS_FILE)
    return files


def read_exports(dirs: list[str | Path]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The runs and predictions of one or several exports (write_export), as fetch_runs and a predictions
    loader give them: a run in several exports counts once, newest first."""
    runs, preds = [], {}
    for d in map(Path, dirs):
        if not (d / RUNS_FILE).is_file():
            raise ReportError(f"{d} holds no {RUNS_FILE}: export it with `python -m experiments.compare "
                              f"--experiment NAME --out {d}` (reports written before exports existed have none)")
        # params are logged text: read every column as text ('None' is a value), then the numbers back
        frame = pd.read_csv(d / RUNS_FILE, dtype=str, keep_default_na=False, na_values=[""])
        runs.append(frame)
        if (d / PREDICTIONS_FILE).is_file():
            long = pd.read_parquet(d / PREDICTIONS_FILE)
            meta = frame.set_index("run_id")
            for run_id, f in long.groupby("run_id", sort=False, observed=True):
                listed = meta.at[run_id, "predictions_probs"]  # NaN: the run had no probabilities
                probs = listed.split("|") if isinstance(listed, str) else []
                f = f[["true", "pred", *probs]].reset_index(drop=True).astype(
                    {"true": str, "pred": str} | {c: "float64" for c in probs})
                empty = [c for c in probs if f[c].isna().all()]
                if len(probs) > 1 and empty == probs[-1:]:  # left empty: the probabilities sum to 1
                    f[probs[-1]] = 1 - f[probs[:-1]].sum(axis=1)
                f.attrs["examples"] = meta.at[run_id, "predictions_sha256"]
                preds[str(run_id)] = f
    runs = pd.concat(runs, ignore_index=True)
    for col in [c for c in runs if c.startswith("metrics.")] + ["start_time"]:
        runs[col] = pd.to_numeric(runs[col])
    runs = runs.sort_values("start_time", ascending=False, kind="stable").drop_duplicates("run_id")
    return runs.drop(columns=["predictions_sha256", "predictions_probs"]).reset_index(drop=True), preds


def significance(load, runs: pd.DataFrame, table: pd.DataFrame,
                 group_by: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """McNemar between every two groups scored on the same data (equal data_fingerprint), Holm-adjusted.
    load: run id -> its predictions (MlflowPredictions, or an export's)."""
    notes: list[str] = []
    cols = [column_of(runs, k) for k in group_by]
    runs = runs.fillna({c: "—" for c in cols})
    keyed = {tuple(map(str, key)): members for key, members in runs.groupby(cols, sort=False)}
    votes: dict[str, tuple[str, tuple, np.ndarray]] = {}  # group -> (fingerprint, (examples, true), vote)
    for _, row in table.iterrows():
        members = keyed[tuple(str(row[k]) for k in group_by)]
        prints = members.get("tags.data_fingerprint", pd.Series(dtype=str)).dropna().unique()
        if len(prints) != 1:
            notes.append(f"{row['group']}: not tested (its runs have {len(prints)} data fingerprints)")
            continue
        frames = [f for f in map(load, members["run_id"]) if f is not None]
        if not frames or any(len(f) != len(frames[0]) for f in frames):
            notes.append(f"{row['group']}: not tested (no or inconsistent {PREDICTIONS})")
            continue
        votes[row["group"]] = (prints[0], (frames[0].attrs["examples"], frames[0]["true"].to_numpy()),
                               majority_vote(frames))

    rows = []
    for (ga, (fa, (ea, ta), va)), (gb, (fb, (eb, tb), vb)) in itertools.combinations(votes.items(), 2):
        if fa != fb:
            continue  # different data: not a paired comparison
        if ea != eb or not np.array_equal(ta, tb):  # same fingerprint should mean same rows: refuse to misalign
            notes.append(f"{ga} vs {gb}: not tested (prediction files list different examples)")
            continue
        ok_a, ok_b = va == ta, vb == tb
        b, c = int((ok_a & ~ok_b).sum()), int((~ok_a & ok_b).sum())
        p, test = mcnemar(b, c)
        rows.append({"a": ga, "b": gb, "n": len(ta), "vote_acc_a": ok_a.mean(), "vote_acc_b": ok_b.mean(),
                     "only_a_right": b, "only_b_right": c, "test": test, "p": p})
    untested = [g for g in votes if not any(g in (r["a"], r["b"]) for r in rows)]
    if untested and len(votes) > 1:
        notes.append("no other group on the same data (data_fingerprint) to compare with: "
                     + ", ".join(untested))
    pairs = pd.DataFrame(rows, columns=["a", "b", "n", "vote_acc_a", "vote_acc_b", "only_a_right",
                                        "only_b_right", "test", "p"])
    pairs["p_holm"] = holm(pairs["p"]) if len(pairs) else []
    pairs["significant"] = pairs["p_holm"] < ALPHA
    return pairs, notes


def verdicts(pairs: pd.DataFrame) -> list[str]:
    """One sentence per pair, significant ones first."""
    out = []
    for _, r in pairs.sort_values("p_holm", kind="stable").iterrows():
        better, worse = (r["a"], r["b"]) if r["only_a_right"] >= r["only_b_right"] else (r["b"], r["a"])
        counts = f"{r['only_a_right']} vs {r['only_b_right']} examples only one of them gets right"
        if r["significant"]:
            out.append(f"**{better}** is more accurate than **{worse}**: significant at {ALPHA} "
                       f"(Holm p = {r['p_holm']:.3g}; {counts}).")
        else:
            out.append(f"{r['a']} vs {r['b']}: no significant difference at {ALPHA} "
                       f"(Holm p = {r['p_holm']:.3g}; {counts}).")
    return out


# ----------------------------------------------------------------------------- plots
def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers, no windows in tests
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(7, 4.5))


def accuracy_label(table: pd.DataFrame) -> str:
    """The y-axis: mean ± std only where some group has several runs to average (over what: table.attrs)."""
    several = "runs" in table and (table["runs"] > 1).any()
    return f"test accuracy (mean ± std over {table.attrs.get('over', 'seeds')})" if several else "test accuracy"


def label_offsets(x: pd.Series, y: pd.Series, step: int = 10) -> list[tuple[int, int]]:
    """Text offsets (points) for the point labels: labels of points that coincide on the plot (same cost
    to 1% on the log axis, same accuracy to 0.1 point) are stacked upwards instead of printed over each other."""
    seen: dict[tuple, int] = {}
    out = []
    for xi, yi in zip(x, y, strict=True):
        key = (round(float(np.log10(xi)), 2), round(float(yi), 3))
        k = seen.get(key, 0)
        seen[key] = k + 1
        out.append((5, 5 + step * k))
    return out


def plot_pareto(table: pd.DataFrame, cost: str, front: str, xlabel: str, path: Path, title: str = "") -> Path:
    plt, fig, ax = _figure()
    x = table[cost].clip(lower=1e-3)  # log axis: keep a (theoretical) zero on the plot
    ax.errorbar(x, table["acc_mean"], yerr=table["acc_std"].fillna(0), fmt="o", color="tab:blue", capsize=3)
    on = table[table[front]].sort_values(cost)
    ax.step(on[cost].clip(lower=1e-3), on["acc_mean"], where="post", color="tab:red", lw=1.5,
            label="Pareto front")
    ax.scatter(on[cost].clip(lower=1e-3), on["acc_mean"], s=120, facecolors="none", edgecolors="tab:red")
    offsets = label_offsets(x, table["acc_mean"])
    for xi, yi, text, offset in zip(x, table["acc_mean"], table["group"], offsets, strict=True):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set(xscale="log", xlabel=xlabel, ylabel=accuracy_label(table), title=title)
    ax.margins(x=0.2, y=0.1)  # room for the labels of the outermost points
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_lines(table: pd.DataFrame, axis: str, x: str, series: list[str], xlabel: str, path: Path,
               log: bool = False) -> Path:
    """Accuracy along a sweep axis, one line per combination of the other group keys."""
    plt, fig, ax = _figure()
    categorical = x == axis  # layers are labels like "[3]" or "[-4,-3]"; sizes are numbers
    if categorical:
        order = sorted(table[axis].unique(), key=_natural)
        table = table.assign(_x=table[axis].map({v: i for i, v in enumerate(order)}))
        x = "_x"
        ax.set_xticks(range(len(order)), order)
    for name, line in table.groupby(series, sort=True) if series else [("all", table)]:
        line = line.sort_values(x)
        ax.errorbar(line[x], line["acc_mean"], yerr=line["acc_std"].fillna(0), marker="o", capsize=3,
                    label=" · ".join(map(str, name if isinstance(name, tuple) else (name,))))
    ax.set(xlabel=xlabel, ylabel=accuracy_label(table))
    if log:
        ax.set_xscale("log")
        sizes = sorted(table[x].dropna().unique())
        if len(sizes) <= 12:  # the measured sizes as ticks, not log decades with crowded minor labels
            ax.set_xticks(sizes, [f"{v:,.0f}" for v in sizes])
            ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _natural(value) -> tuple:
    """Sort key for param values as logged (strings): numbers and lists of numbers by value, the rest
    (None = all data, names) after them as text."""
    try:
        v = json.loads(str(value))
    except ValueError:
        return (2, (), str(value))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, (v,), "")
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return (1, tuple(v), "")
    return (2, (), str(value))


# ----------------------------------------------------------------------------- rendering
def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _num(x: float) -> str:
    return "—" if math.isnan(x) else (f"{x:.1f}" if abs(x) < 100 else f"{x:,.0f}")


def markdown_table(df: pd.DataFrame) -> str:
    cells = df.astype(str)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join(" --- " for _ in df.columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells.itertuples(index=False)])


def series_name(row, series: list[str]) -> str:
    """A group's name along a sweep axis: its values of the other group-by keys, e.g. `lora` or `lora · mpnet`."""
    return " · ".join(str(row[k]) for k in series) or "all"


def grid(table: pd.DataFrame, pairs: pd.DataFrame, axis: str, series: list[str]) -> str:
    """Test accuracy (%) along a sweep axis: a row per series (e.g. strategy), a column per axis value. In
    each column the most accurate group is bold; ≈ marks a group McNemar cannot tell from it (Holm p ≥ ALPHA),
    ? one not tested against it (other data); unmarked ones are significantly less accurate."""
    verdict = {frozenset((a, b)): bool(s) for a, b, s in zip(pairs["a"], pairs["b"], pairs["significant"], strict=True)}
    values = sorted(table[axis].unique(), key=_natural)
    rows: dict[str, dict] = {}
    for v in values:
        column = table[table[axis] == v]
        best = column.loc[column["acc_mean"].idxmax(), "group"]
        for _, r in column.iterrows():
            m, s = 100 * r["acc_mean"], 100 * r["acc_std"]
            cell = f"{m:.1f}" if math.isnan(s) else f"{m:.1f} ± {s:.1f}"
            mark = verdict.get(frozenset((best, r["group"])))
            cell = f"**{cell}**" if r["group"] == best else cell + {None: " ?", False: " ≈", True: ""}[mark]
            rows.setdefault(series_name(r, series), {})[v] = cell
    short = axis.rsplit(".", 1)[-1]
    head = pd.DataFrame([{" / ".join(series) or "group": k, **{f"{short}={v}": row.get(v, "—") for v in values}}
                         for k, row in rows.items()])
    return markdown_table(head)


def against_reference(table: pd.DataFrame, pairs: pd.DataFrame, axis: str, series: list[str],
                      reference: str) -> tuple[str | None, str | None]:
    """Every series against the reference series (say, the baseline) at each value of the axis: the accuracy
    difference in points (of the mean over seeds) and McNemar's verdict (on the majority votes). A series
    overtakes the reference from the smallest value at which it is significantly more accurate and stays so
    at every larger value where it ran; one untested there (other data) leaves the claim open. Returns the
    markdown table (None if there is nothing to compare) and a note when the reference is not one series."""
    names = table.apply(lambda r: series_name(r, series), axis=1)
    matches = sorted({n for n in names if reference in (n, *n.split(" · "))})
    if len(matches) != 1:
        return None, (f"--reference '{reference}' matches {len(matches)} series along {axis}"
                      + (f" ({', '.join(matches)}): name one in full" if matches else ""))
    ref = table[names == matches[0]].set_index(axis)
    tests = {frozenset((r["a"], r["b"])): r for r in pairs.to_dict("records")}
    values = [v for v in sorted(table[axis].unique(), key=_natural) if v in ref.index]
    show = lambda v: "all" if str(v) == "None" else str(v)  # noqa: E731 — train_size=None: the whole train set
    key = " / ".join(series) or "group"
    rows = []
    for name in dict.fromkeys(n for n in names if n != matches[0]):
        mine = table[names == name].set_index(axis)
        row, wins = {key: name}, []  # wins: (value, True / False / None = not tested)
        for v in values:
            col = f"{axis.rsplit('.', 1)[-1]}={v}"
            if v not in mine.index:
                row[col] = "—"
                continue
            a, b = mine.loc[v, "group"], ref.loc[v, "group"]
            delta = f"{100 * (mine.loc[v, 'acc_mean'] - ref.loc[v, 'acc_mean']):+.1f}"
            t = tests.get(frozenset((a, b)))
            if t is None:
                row[col], win = f"{delta} ?", None
            else:
                mine_right, ref_right = ((t["only_a_right"], t["only_b_right"]) if t["a"] == a
                                         else (t["only_b_right"], t["only_a_right"]))
                win = bool(t["significant"]) and mine_right > ref_right
                mark = "▲" if win else "▼" if t["significant"] and mine_right < ref_right else "≈"
                row[col] = f"{delta} {mark} (p {t['p_holm']:.2g})"
            wins.append((v, win))
        row["overtakes"] = overtaken(wins, show)
        rows.append(row)
    if not rows or all(all(row[k] == "—" for k in row if k not in (key, "overtakes")) for row in rows):
        return None, None  # no series ran at any of the reference's values (a layer probe's baseline)
    return markdown_table(pd.DataFrame(rows)), None


def overtaken(wins: list[tuple], show) -> str:
    """'from V' for the smallest V from which every result is a significant win (at least two values run),
    else why not; a lead that does not last names where it held, so 'never' means no win anywhere.
    wins: (value, True = significantly better / False = not / None = not tested), in order."""
    if not wins:
        return "—"
    if len(wins) == 1:
        return f"ran at {show(wins[0][0])} only"
    for i, (v, _) in enumerate(wins):
        rest = [w for _, w in wins[i:]]
        if all(rest):
            return f"from {show(v)}"
        if False in rest:
            continue
        return f"open: not tested at {', '.join(show(u) for u, w in wins[i:] if w is None)}"
    ahead = [show(v) for v, w in wins if w]
    return f"not for good: ahead at {', '.join(ahead)} only" if ahead else "never (in the range run)"


def render(report: Report, experiment: str | list[str], parent_run_id: str | None, images: list[Path]) -> str:
    t = report.table
    shown = pd.DataFrame({k: t[k] for k in report.group_by})
    shown["runs"] = t["runs"]
    if "seeds" in t:
        shown["seeds"] = t["seeds"]
    shown["accuracy"] = [_pm(m, s) for m, s in zip(t["acc_mean"], t["acc_std"], strict=True)]
    shown["macro-F1"] = [_pm(m, s) for m, s in zip(t["f1_mean"], t["f1_std"], strict=True)]
    shown["trainable params"] = [f"{x:,.0f}" if not math.isnan(x) else "—" for x in t["trainable_params"]]
    star = t["timing_cached"].map({True: " *", False: ""})
    shown["train time (s)"] = t["train_time_s_mean"].map(_num) + star
    shown["inference (ex/s)"] = t["examples_per_s_mean"].map(_num) + star
    shown["Pareto"] = ["params+time" if a and b else "params" if a else "time" if b else ""
                       for a, b in zip(t["pareto_params"], t["pareto_time"], strict=True)]
    names = [experiment] if isinstance(experiment, str) else experiment
    scope = (f"experiment `{names[0]}`" if len(names) == 1 else "experiments " + ", ".join(f"`{n}`" for n in names)) \
        + (f", children of run `{parent_run_id}`" if parent_run_id else "")
    parts = [f"# Comparison: {scope}", "",
             f"{int(t['runs'].sum())} finished runs, grouped by {', '.join(report.group_by)}. "
             f"Accuracy and macro-F1 on the test set: mean ± sample std over runs ({t.attrs.get('over', 'seeds')}); train time and "
             "inference throughput: mean. Pareto: no other group is more accurate for fewer trainable "
             "parameters (params) or less train time (time).", "", markdown_table(shown), "",
             *(["\\* every run of this group read its encoder features from the feature cache and logged no "
                "uncached estimate: its train time and throughput leave out encoding (other groups count runs "
                "that encoded, and cache hits at their estimated uncached cost).", ""]
               if t["timing_cached"].any() else []),
             ]
    axes = [k for k in report.group_by if k not in TAGS and t[k].nunique() > 1]
    if len(axes) == 1:  # one sweep axis (train size, layers): the table as a grid, with the tests' verdicts
        axis = axes[0]
        series = [k for k in report.group_by if k != axis]
        parts += [f"## Along {axis}", "",
                  f"Test accuracy (%), mean ± std over each group's runs. Bold: the most accurate group at each "
                  f"{axis}; ≈: McNemar does not tell it from that one (Holm p ≥ {ALPHA}); ?: not tested against "
                  "it (other data); unmarked: significantly less accurate.", "",
                  grid(t, report.pairs, axis, series), ""]
        against, note = against_reference(t, report.pairs, axis, series, report.reference)
        absent_default = report.reference == "baseline" and note is not None and "matches 0" in note
        if note and not absent_default:  # a sweep without a baseline (a layer probe) needs no note
            report.notes.append(note)
        if against is not None:
            parts += [f"## Against {report.reference}", "",
                      f"Accuracy difference from {report.reference} at each {axis}, in points of the mean over "
                      f"seeds. ▲: significantly more accurate (McNemar on the majority votes, Holm p < {ALPHA}); "
                      "▼: significantly less; ≈: not separable; ?: not tested (other data); —: not run. Overtakes: "
                      f"the smallest {axis} from which it is significantly more accurate at every larger one run "
                      "(all: the whole training set); \"not for good\" names where a lead that did not last held.",
                      "", against, ""]
    parts += ["## Significance", "", SIGNIFICANCE_METHOD, ""]
    p = report.pairs
    if len(p):
        pt = pd.DataFrame({"A": p["a"], "B": p["b"], "examples": p["n"],
                           "vote acc A": p["vote_acc_a"].map("{:.4f}".format),
                           "vote acc B": p["vote_acc_b"].map("{:.4f}".format),
                           "only A right": p["only_a_right"], "only B right": p["only_b_right"],
                           "test": p["test"],
                           "p": p["p"].map("{:.3g}".format), "p (Holm)": p["p_holm"].map("{:.3g}".format),
                           f"significant at {ALPHA}": p["significant"].map({True: "yes", False: "no"})})
        parts += [markdown_table(pt), "", *(f"- {v}" for v in verdicts(p)), ""]
    else:
        parts += ["No pair of groups was scored on the same data, so nothing was tested.", ""]
    if report.notes:
        parts += ["Notes:", "", *(f"- {n}" for n in report.notes), ""]
    if images:
        parts += ["## Plots", "", *(f"![{i.stem}]({i.name})" for i in images), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the whole report
def build_report(experiment: str | list[str] | None, tracking_uri: str = "sqlite:///mlflow.db",
                 out_dir: str | Path = "comparison", parent_run_id: str | None = None, group_by: list[str] | None = None,
                 reference: str = "baseline", conditions: list[str] | None = None,
                 exports: list[str | Path] | None = None) -> Report:
    """Read the runs, write table/plots/significance (and the export, write_export) to out_dir, and log them
    to the parent run if given. reference: along a sweep axis, the series every other one is measured against
    (its name or a part of it). conditions: keep only the runs meeting each KEY=VALUE / KEY!=VALUE (where()).
    exports: read the runs from these exported report folders instead of MLflow (experiment: None, or the
    experiments to keep)."""
    if exports:
        client = None
        runs, stored = read_exports(exports)
        names = [experiment] if isinstance(experiment, str) else list(experiment or [])
        if names:
            runs = runs[runs["tags.experiment"].isin(names)]
            if runs.empty:
                raise ReportError(f"no run of {', '.join(names)} in {', '.join(map(str, exports))}")
        experiment = names or sorted(runs["tags.experiment"].dropna().unique())
        experiment = experiment[0] if len(experiment) == 1 else experiment
        load = stored.get
    else:
        from mlflow import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run's download
        client = MlflowClient(tracking_uri=tracking_uri)
        runs = fetch_runs(client, experiment, parent_run_id)
        load = MlflowPredictions(client)
    runs = where(runs, list(conditions or []))
    runs, repeats = deduplicate(runs)
    default = default_group_by(runs)
    # a group-by that leaves out a varying param (few_shot_subsets' data.split_seed) pools it with the seeds
    pooled = [k for k in default if group_by and k not in group_by]
    group_by = list(group_by) if group_by else default
    table = build_table(runs, group_by)
    table.attrs["over"] = " and ".join(["seeds", *pooled])  # what the ± spans, for the plots and the text
    pairs, notes = significance(load, runs, table, group_by)
    if speed := machine_speed_note(runs):
        notes.append(speed)
    if repeats:
        notes.insert(0, f"{repeats} repeated run(s) of an identical config and seed ignored (newest kept)")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = experiment if isinstance(experiment, str) else " + ".join(experiment)
    images = [
        plot_pareto(table, "trainable_params", "pareto_params", "trainable parameters (log)",
                    out / "pareto_params.png", f"{title}: test accuracy vs trainable parameters"),
        plot_pareto(table, "train_time_s_mean", "pareto_time", "train time, s (log)",
                    out / "pareto_time.png", f"{title}: test accuracy vs train time"),
    ]
    others = lambda axis: [k for k in group_by if k != axis]  # noqa: E731 — the series of a sweep plot
    if TRAIN_SIZE in group_by and table["train_examples_mean"].nunique() > 1:  # x = the real count
        images.append(plot_lines(table, TRAIN_SIZE, "train_examples_mean", others(TRAIN_SIZE),
                                 "training examples (log)", out / "learning_curve.png", log=True))
    if LAYERS in group_by and table[LAYERS].nunique() > 1:
        probed = table[table[LAYERS] != "—"]  # groups without layers (baseline) are not on this axis
        images.append(plot_lines(probed, LAYERS, LAYERS, others(LAYERS), "encoder layer(s) (0 = embeddings)",
                                 out / "layer_accuracy.png"))

    report = Report(table=table, pairs=pairs, group_by=group_by, markdown="", out_dir=out, notes=notes,
                    reference=reference)
    report.markdown = render(report, experiment, parent_run_id, images)
    (out / "comparison.md").write_text(report.markdown, encoding="utf-8")
    table.to_csv(out / "comparison.csv", index=False)
    pairs.to_csv(out / "significance.csv", index=False)
    report.files = [out / "comparison.md", out / "comparison.csv", out / "significance.csv", *images,
                    *write_export(out, runs, load)]
    if parent_run_id:
        for f in report.files:
            client.log_artifact(parent_run_id, str(f), "report")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment name, or several joined by commas")
    source.add_argument("--from-export", metavar="DIR[,DIR…]", help="read the runs from these report folders "
                        f"(their {RUNS_FILE} and {PREDICTIONS_FILE}) instead of an MLflow store")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose tag/param KEY is (=) or is not (!=) VALUE; repeatable, e.g. "
                   "--where data.train_size=None for the full-size runs of a learning curve")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db",
                   help="MLflow store (default: %(default)s)")
    p.add_argument("--parent-run-id",
                   help="only the children of this sweep run; the report is logged to it too")
    p.add_argument("--out", default="comparison", help="output folder (default: %(default)s)")
    p.add_argument("--group-by", help="comma-separated tags/params, e.g. strategy,model,data.train_size "
                   "(default: strategy, + model/dataset if several, + config params that vary)")
    p.add_argument("--reference", default="baseline", help="along a sweep axis (train size), the series every "
                   "other one is tested against, and said to overtake (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if args.from_export and args.parent_run_id:
            raise ReportError("--parent-run-id reads an MLflow store: drop it with --from-export")
        names = [e.strip() for e in (args.experiment or "").split(",") if e.strip()]
        exports = [d.strip() for d in (args.from_export or "").split(",") if d.strip()]
        report = build_report((names[0] if len(names) == 1 else names) or None, args.tracking_uri, args.out,
                              args.parent_run_id, parse_group_by(args.group_by), args.reference, args.where,
                              exports)
    except ReportError as e:
        p.exit(2, f"error: {e}\n")
    print(report.markdown)
    print(f"wrote {', '.join(str(f) for f in report.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
