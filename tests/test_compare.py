"""The comparison report on runs written straight into a temporary MLflow store (no training): the table
matches the runs' metrics, plots are written, McNemar and Holm match hand computations, and only runs on the
same data are paired."""

from __future__ import annotations

import itertools
import math
import statistics
import time

import numpy as np
import pandas as pd
import pytest

from experiments import compare

N = 20  # test examples per prediction file
TRUE = ["pos" if i % 2 else "neg" for i in range(N)]
_clock = itertools.count(int(time.time() * 1000))  # strictly increasing start times: "newest" is well defined


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its schema takes seconds); tests keep apart by experiment."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("compare-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return root, uri, MlflowClient(tracking_uri=uri)


def experiment(store, name: str) -> str:
    root, _, client = store
    return client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())


def predictions(wrong=(), probs=None) -> pd.DataFrame:
    """A predictions file like the runner's: right on every example except the indices in `wrong`."""
    flip = {"pos": "neg", "neg": "pos"}
    pred = [flip[t] if i in wrong else t for i, t in enumerate(TRUE)]
    p_pos = np.array(probs if probs is not None else [0.9 if p == "pos" else 0.1 for p in pred])
    return pd.DataFrame({"text": [f"review {i}" for i in range(N)], "true": TRUE, "pred": pred,
                         "prob_neg": 1 - p_pos, "prob_pos": p_pos})


def log_run(store, exp_id, strategy, seed, acc, *, model="minilm", fingerprint="fp", params=None, preds=None,
            status="FINISHED", parent=None, **metrics) -> str:
    from mlflow.entities import Metric, Param

    client = store[2]
    tags = {"strategy": strategy, "model": model, "dataset": "demo", "seed": str(seed),
            "data_fingerprint": fingerprint} | ({"mlflow.parentRunId": parent} if parent else {})
    run_id = client.create_run(exp_id, start_time=next(_clock), tags=tags).info.run_id
    values = {"test_accuracy": acc, "test_f1_macro": acc - 0.01, "trainable_params": 1000,
              "train_time_s": 1.0, "inference_examples_per_s": 100.0, "data_train_size": 320} | metrics
    params = {"seed": str(seed), "classifier.random_state": str(seed), "classifier.C": "1.0"} | (params or {})
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    if preds is not None:
        client.log_text(run_id, preds.to_csv(index=False), compare.PREDICTIONS)
    client.set_terminated(run_id, status)
    return run_id


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_table_plots_and_pairing(store, tmp_path):
    exp = experiment(store, "sweep")
    base = {"acc": [0.80, 0.84, 0.86], "time": [0.2, 0.4, 0.3], "speed": [9000, 11000, 10000]}
    emb = {"acc": [0.70, 0.75, 0.72], "time": [10.0, 14.0, 12.0], "speed": [50, 70, 60]}
    log_run(store, exp, "baseline", 0, 0.50, model="none", preds=predictions())  # older repeat: ignored
    for s in range(3):
        log_run(store, exp, "baseline", s, base["acc"][s], model="none", trainable_params=1272,
                train_time_s=base["time"][s], inference_examples_per_s=base["speed"][s], preds=predictions())
        # embed is wrong on the first 10 examples in every seed: b = 10, c = 0
        log_run(store, exp, "embed", s, emb["acc"][s], trainable_params=385, train_time_s=emb["time"][s],
                inference_examples_per_s=emb["speed"][s], preds=predictions(wrong=range(10)))
    log_run(store, exp, "baseline", 3, 0.99, model="none", status="FAILED")  # not FINISHED: ignored
    log_run(store, exp, "freeze", 0, 0.78, fingerprint="other-data", preds=predictions(wrong=[0]))
    log_run(store, experiment(store, "elsewhere"), "lora", 0, 0.9)

    report = compare.build_report("sweep", store[1], tmp_path / "out")

    assert report.group_by == ["strategy"]  # baseline's model "none" is not a second encoder
    t = report.table.set_index("strategy")
    assert list(t.index) == ["baseline", "freeze", "embed"]  # best accuracy first
    for name, d in (("baseline", base), ("embed", emb)):
        assert t.loc[name, "runs"] == 3 and t.loc[name, "seeds"] == "0,1,2"
        assert t.loc[name, "acc_mean"] == pytest.approx(statistics.mean(d["acc"]))
        assert t.loc[name, "acc_std"] == pytest.approx(statistics.stdev(d["acc"]))
        assert t.loc[name, "f1_mean"] == pytest.approx(statistics.mean(d["acc"]) - 0.01)
        assert t.loc[name, "train_time_s_mean"] == pytest.approx(statistics.mean(d["time"]))
        assert t.loc[name, "examples_per_s_mean"] == pytest.approx(statistics.mean(d["speed"]))
    assert t.loc["baseline", "trainable_params"] == 1272 and t.loc["embed", "trainable_params"] == 385
    assert t.loc["freeze", "runs"] == 1 and math.isnan(t.loc["freeze", "acc_std"])
    # Pareto on parameters: each is more accurate than every group with fewer params (385 < 1000 < 1272);
    # on train time, baseline is both fastest and most accurate, so it alone is on the front.
    assert t["pareto_params"].to_dict() == {"baseline": True, "freeze": True, "embed": True}
    assert t["pareto_time"].to_dict() == {"baseline": True, "freeze": False, "embed": False}
    assert any("1 repeated run" in n for n in report.notes)

    # McNemar: only baseline vs embed share the data; exact p = 2 * 0.5**10
    assert len(report.pairs) == 1
    pair = report.pairs.iloc[0]
    assert {pair["a"], pair["b"]} == {"baseline", "embed"}
    assert sorted([pair["only_a_right"], pair["only_b_right"]]) == [0, 10]
    assert pair["test"] == "exact" and pair["p"] == pytest.approx(2 * 0.5**10)
    assert pair["p_holm"] == pytest.approx(2 * 0.5**10) and pair["significant"]
    assert any("freeze" in n for n in report.notes)  # said why it was not tested

    out = tmp_path / "out"
    written = ("comparison.md", "comparison.csv", "significance.csv", "pareto_params.png", "pareto_time.png")
    for name in written:
        assert (out / name).is_file(), name
    assert is_png(out / "pareto_params.png") and is_png(out / "pareto_time.png")
    assert not (out / "learning_curve.png").exists() and not (out / "layer_accuracy.png").exists()
    csv = pd.read_csv(out / "comparison.csv").set_index("strategy")
    assert csv.loc["embed", "acc_mean"] == pytest.approx(statistics.mean(emb["acc"]))
    md = (out / "comparison.md").read_text()
    mean, std = statistics.mean(base["acc"]), statistics.stdev(base["acc"])
    assert f"{mean:.4f} ± {std:.4f}" in md and "1,272" in md
    assert "**baseline** is more accurate than **embed**: significant at 0.05" in md


def test_mcnemar_and_holm_by_hand():
    assert compare.mcnemar(10, 0) == (pytest.approx(2 * 0.5**10), "exact")
    assert compare.mcnemar(3, 5)[0] == pytest.approx(2 * sum(math.comb(8, k) for k in range(4)) / 2**8)
    assert compare.mcnemar(0, 0) == (1.0, "exact")
    # chi2 = (|30 - 10| - 1)^2 / 40, and the survival function of chi-square(1) is erfc(sqrt(x / 2))
    p, test = compare.mcnemar(30, 10)
    assert test == "chi2" and p == pytest.approx(math.erfc(math.sqrt((19**2 / 40) / 2)))
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, max(2 * 0.03, 0.03), max(1 * 0.04, 0.06)
    assert compare.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert compare.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_majority_vote_and_tie_break():
    a, b, c = predictions(), predictions(wrong=[0, 1]), predictions(wrong=[1])
    # example 0 (neg): two of three right; example 1 (pos): two of three wrong -> the vote is wrong too
    assert list(compare.majority_vote([a, b, c])[:3]) == ["neg", "neg", "neg"]
    # two seeds disagree on example 0: the mean probability of "pos" decides
    sure_wrong = predictions(wrong=[0], probs=[0.99] + [0.5] * (N - 1))
    barely_right = predictions(probs=[0.45] + [0.5] * (N - 1))
    assert compare.majority_vote([sure_wrong, barely_right])[0] == "pos"


def test_sweep_axes_become_groups_and_plots(store, tmp_path):
    lc = experiment(store, "learning-curve")
    for size, strategy, seed in itertools.product((100, 200), ("baseline", "embed"), (0, 1)):
        log_run(store, lc, strategy, seed, 0.6 + size / 1000, fingerprint=f"fp{size}", data_train_size=size,
                params={"data.train_size": size}, preds=predictions(wrong=range(size // 50)))
    report = compare.build_report("learning-curve", store[1], tmp_path / "lc")
    assert report.group_by == ["strategy", "data.train_size"]
    assert report.table["group"].tolist() == ["baseline · train_size=100", "baseline · train_size=200",
                                              "embed · train_size=100", "embed · train_size=200"]
    assert set(report.table["runs"]) == {2}
    assert is_png(tmp_path / "lc" / "learning_curve.png")
    # paired only at the same train size (the fingerprint covers the training examples too)
    assert len(report.pairs) == 2
    assert all(p["a"].split("=")[-1] == p["b"].split("=")[-1] for _, p in report.pairs.iterrows())

    probe = experiment(store, "layer-probe")
    for layer, seed in itertools.product((1, 3, 6), (0, 1)):
        log_run(store, probe, "embed", seed, 0.6 + layer / 100, params={"strategy.layers": f"[{layer}]"},
                preds=predictions(wrong=range(6 - layer)))
    report = compare.build_report("layer-probe", store[1], tmp_path / "probe")
    assert report.group_by == ["strategy", "strategy.layers"]  # classifier.random_state = seed is no axis
    assert report.table["strategy.layers"].tolist() == ["[1]", "[3]", "[6]"]  # along the axis
    assert is_png(tmp_path / "probe" / "layer_accuracy.png")
    assert len(report.pairs) == 3 and (report.pairs["p_holm"] >= report.pairs["p"]).all()

    explicit = compare.build_report("layer-probe", store[1], tmp_path / "pooled", group_by=["strategy"])
    assert explicit.table["runs"].tolist() == [6]
    # the pooled axis is named wherever the ± is explained
    assert "mean ± sample std over runs (seeds and strategy.layers)" in explicit.markdown
    assert "over runs (seeds);" in report.markdown

    top = experiment(store, "top-level-axis")  # a top-level param as an axis reads name=value, not a bare value
    for precision in ("fp32", "bf16"):
        log_run(store, top, "embed", 0, 0.7, params={"precision": precision})
    assert sorted(compare.build_report("top-level-axis", store[1], tmp_path / "top").table["group"]) == [
        "embed · precision=bf16", "embed · precision=fp32"]


def test_timings_leave_out_cache_hits(store, tmp_path):
    exp = experiment(store, "cache")
    log_run(store, exp, "embed", 0, 0.7, train_time_s=20.0, inference_examples_per_s=50,
            params={"runtime.feature_cache": "miss"})
    log_run(store, exp, "embed", 1, 0.7, train_time_s=0.5, inference_examples_per_s=9000,
            params={"runtime.feature_cache": "hit"})
    # a cache hit that logged its uncached estimate counts at that estimate
    log_run(store, exp, "embed", 2, 0.7, train_time_s=0.5, inference_examples_per_s=9000,
            train_time_uncached_s=18.0, inference_examples_per_s_uncached=60, params={"runtime.feature_cache": "hit"})
    log_run(store, exp, "freeze", 0, 0.6, train_time_s=0.4, params={"runtime.feature_cache": "hit"})
    # tapt that read its adapted encoder from the store (no feature cache): its estimate, adaptation included
    log_run(store, exp, "tapt", 0, 0.8, train_time_s=300.0, inference_examples_per_s=80,
            train_time_uncached_s=1200.0, inference_examples_per_s_uncached=80, params={"runtime.adapt_cache": "hit"})
    # rerun with bookkeeping changed (no cache, no skipping, other checkpoints): the same configuration
    log_run(store, exp, "freeze", 1, 0.6, train_time_s=0.4, params={
        "runtime.feature_cache": "hit", "cache": "false", "strategy.cache": "false", "skip_finished": "false",
        "checkpoint_every": "7", "cache_dir": "/elsewhere"})
    report = compare.build_report("cache", store[1], tmp_path)
    t = report.table.set_index("strategy")
    assert report.group_by == ["strategy"]  # hit/miss is an outcome, not a configuration; bookkeeping neither
    assert t.loc["freeze", "runs"] == 2
    # freeze is the fastest group, but only thanks to the cache: not on the train-time Pareto front
    assert t.loc["embed", "pareto_time"] and not t.loc["freeze", "pareto_time"]
    assert t.loc["embed", "train_time_s_mean"] == 19.0 and t.loc["embed", "examples_per_s_mean"] == 55
    assert not t.loc["embed", "timing_cached"]
    assert t.loc["freeze", "train_time_s_mean"] == 0.4 and t.loc["freeze", "timing_cached"]
    assert t.loc["tapt", "train_time_s_mean"] == 1200.0 and not t.loc["tapt", "timing_cached"]
    assert "| freeze | 2 | 0,1 | 0.6000 ± 0.0000 | 0.5900 ± 0.0000 | 1,000 | 0.4 * | 100 * |  |" in report.markdown


def test_a_note_says_when_the_machine_ran_at_other_speeds(store, tmp_path):
    exp = experiment(store, "canary")
    # one run's own outliers (min 150) are no spread between runs: the medians are compared
    log_run(store, exp, "finetune", 0, 0.9, machine_matmul_gflops_median=296, machine_matmul_gflops_min=150,
            machine_copy_gbps_median=20)
    log_run(store, exp, "lora", 0, 0.9, machine_matmul_gflops_median=302, machine_copy_gbps_median=21)
    log_run(store, exp, "baseline", 0, 0.9)  # a run from before the canary: no samples, no say
    steady = compare.build_report("canary", store[1], tmp_path / "steady")
    assert not any("machine" in n for n in steady.notes)  # within 10%: nothing to say
    log_run(store, exp, "ia3", 0, 0.9, machine_matmul_gflops_median=220, machine_copy_gbps_median=21)
    drifted = compare.build_report("canary", store[1], tmp_path / "drifted")
    note = "a 512² matmul ran at 220 to 302 GFLOP/s (1.37x)"
    assert sum(note in n for n in drifted.notes) == 1 and note in drifted.markdown
    assert "32 MB copy" not in drifted.markdown  # the copies stayed within 10%


def test_cli_parent_run_children_only_and_artifacts(store, tmp_path, capsys):
    client = store[2]
    exp = experiment(store, "nested")
    parent = client.create_run(exp, tags={"mlflow.runName": "sweep"}).info.run_id
    client.set_terminated(parent, "FINISHED")  # a finished parent without test metrics is not a row
    log_run(store, exp, "baseline", 0, 0.8, model="none", parent=parent, preds=predictions())
    log_run(store, exp, "embed", 0, 0.7, parent=parent, preds=predictions(wrong=[1, 2]))
    log_run(store, exp, "embed", 1, 0.1)  # same experiment, another sweep

    out = tmp_path / "report"
    rc = compare.main(["--experiment", "nested", "--tracking-uri", store[1], "--parent-run-id", parent,
                       "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| baseline | 1 | 0 | 0.8000 |" in printed and "0.1000" not in printed
    logged = {f.path for f in client.list_artifacts(parent, "report")}
    assert {"report/comparison.md", "report/comparison.csv", "report/pareto_params.png"} <= logged


def test_errors(store, tmp_path):
    with pytest.raises(compare.ReportError, match="no MLflow experiment"):
        compare.build_report("missing", store[1], tmp_path)
    log_run(store, experiment(store, "one"), "baseline", 0, 0.8)
    with pytest.raises(compare.ReportError, match="neither a tag nor a param"):
        compare.build_report("one", store[1], tmp_path, group_by=["nonsense"])
    with pytest.raises(SystemExit) as e:
        compare.main(["--experiment", "missing", "--tracking-uri", store[1], "--out", str(tmp_path)])
    assert e.value.code == 2


def test_pareto_plot_has_a_title_separate_labels_and_an_honest_axis(tmp_path, monkeypatch):
    """Labels of coinciding points do not overlap; the y-axis says mean ± std only when there are seeds."""
    import experiments.compare as compare

    axes = []
    real = compare._figure

    def keep():
        plt, fig, ax = real()
        axes.append(ax)
        return plt, fig, ax

    monkeypatch.setattr(compare, "_figure", keep)
    table = pd.DataFrame({"group": ["embed", "freeze", "finetune"], "trainable_params": [770, 770, 22_000_000],
                          "acc_mean": [0.8, 0.8, 0.9], "acc_std": [float("nan")] * 3, "runs": [1, 1, 1],
                          "pareto_params": [True, True, True]})
    compare.plot_pareto(table, "trainable_params", "pareto_params", "x", tmp_path / "one.png", "demo: a title")
    ax = axes[-1]
    assert ax.get_title() == "demo: a title" and ax.get_ylabel() == "test accuracy"
    offsets = [text.xyann for text in ax.texts]
    assert len(set(offsets[:2])) == 2, offsets  # the two coinciding points' labels are apart
    compare.plot_pareto(table.assign(runs=[3, 3, 1], acc_std=[0.01, 0.02, float("nan")]), "trainable_params",
                        "pareto_params", "x", tmp_path / "seeds.png")
    assert axes[-1].get_ylabel() == "test accuracy (mean ± std over seeds)"


def test_grid_along_the_axis_marks_what_mcnemar_separates(store, tmp_path):
    """At size 100 embed is wrong on 10 more of 20 examples (exact p = 0.002): significant, unmarked. At 200
    the two differ by one example: ≈. A group on other data than the column's best: ?."""
    exp = experiment(store, "grid")
    wrong = {(100, "baseline"): (), (100, "embed"): range(10), (200, "baseline"): (0,), (200, "embed"): ()}
    for (size, strategy), w in wrong.items():
        for seed in (0, 1):
            log_run(store, exp, strategy, seed, 1 - len(w) / N, fingerprint=f"fp{size}", data_train_size=size,
                    params={"data.train_size": size}, preds=predictions(wrong=w))
    log_run(store, exp, "lora", 0, 0.5, fingerprint="other", data_train_size=200, params={"data.train_size": 200},
            preds=predictions(wrong=range(10)))
    report = compare.build_report("grid", store[1], tmp_path / "grid")
    md = report.markdown
    assert "## Along data.train_size" in md
    assert "| strategy | train_size=100 | train_size=200 |" in md
    assert "| baseline | **100.0 ± 0.0** | 95.0 ± 0.0 ≈ |" in md
    assert "| embed | 50.0 ± 0.0 | **100.0 ± 0.0** |" in md
    assert "| lora | — | 50.0 ? |" in md


def test_against_the_baseline_names_where_each_strategy_overtakes(store, tmp_path):
    """embed is significantly worse than the baseline at 100 labels and significantly better from 200 on:
    it overtakes from 200. lora (no run at 100) is never separable from it: never. freeze wins at 200 but was
    scored on other data at 300: open. Measured against embed instead, the baseline wins, then loses: a lead
    that does not last, named where it held."""
    exp = experiment(store, "overtake")
    wrong = {(100, "baseline"): (), (100, "embed"): range(10),
             (200, "baseline"): range(10), (200, "embed"): (), (200, "lora"): range(8), (200, "freeze"): (),
             (300, "baseline"): range(10), (300, "embed"): (), (300, "lora"): range(8), (300, "freeze"): ()}
    for (size, strategy), w in wrong.items():
        other = strategy == "freeze" and size == 300
        log_run(store, exp, strategy, 0, 1 - len(w) / N, fingerprint="other" if other else f"fp{size}",
                data_train_size=size, params={"data.train_size": size}, preds=predictions(wrong=w))

    def rows(reference):
        md = compare.build_report("overtake", store[1], tmp_path / reference, reference=reference).markdown
        section = md.split(f"## Against {reference}")[1].split("##")[0].splitlines()
        return {line.split(" | ")[0].removeprefix("| "): line for line in section if line.startswith("| ")}

    against = rows("baseline")
    assert "-50.0 ▼" in against["embed"] and against["embed"].count("+50.0 ▲") == 2
    assert against["embed"].endswith("| from 200 |")
    assert against["lora"].startswith("| lora | — |") and against["lora"].count("+10.0 ≈") == 2
    assert against["lora"].endswith("| never (in the range run) |")
    assert "+50.0 ▲" in against["freeze"] and "+50.0 ?" in against["freeze"]
    assert against["freeze"].endswith("| open: not tested at 300 |")
    against = rows("embed")  # the reference is now the second of each pair: the verdicts turn round
    assert "+50.0 ▲" in against["baseline"] and against["baseline"].count("-50.0 ▼") == 2
    assert against["baseline"].endswith("| not for good: ahead at 100 only |")
    # no such series: no section, and a note says so
    md = compare.build_report("overtake", store[1], tmp_path / "o2", reference="svm").markdown
    assert "## Against" not in md and "--reference 'svm' matches 0 series" in md


@pytest.mark.parametrize("wins, said", [
    ([(100, False), (300, True), (1000, True)], "from 300"),
    ([(100, True), (300, None), (1000, False)], "not for good: ahead at 100 only"),  # a lead, a gap, a loss
    ([(100, True), (300, True), (None, False)], "not for good: ahead at 100, 300 only"),
    ([(100, True), (300, None)], "open: not tested at 300"),
    ([(100, False), (300, False)], "never (in the range run)"),
    ([(100, True)], "ran at 100 only"),
])
def test_overtaken_names_a_lead_only_where_it_held(wins, said):
    assert compare.overtaken(wins, lambda v: "all" if v is None else str(v)) == said


def test_several_experiments_and_where(store, tmp_path):
    """Tuned rows logged to their own experiment join the defaults' full-size runs in one report: the
    experiment becomes a group key, --where keeps the full-size runs, and McNemar pairs across experiments."""
    defaults, tuned = experiment(store, "curve"), experiment(store, "curve_tuned")
    for size in ("100", "None"):
        log_run(store, defaults, "baseline", 0, 0.7, fingerprint=f"fp{size}", params={"data.train_size": size},
                preds=predictions(wrong=range(6)))
    for seed in (0, 1):
        log_run(store, tuned, "baseline", seed, 0.9, fingerprint="fpNone",
                params={"data.train_size": "None", "classifier.C": "4.0"}, preds=predictions(wrong=range(2)))
    report = compare.build_report(["curve", "curve_tuned"], store[1], tmp_path / "both",
                                  conditions=["data.train_size=null"])
    t = report.table.set_index("group")
    assert report.group_by == ["strategy", "experiment"]
    assert t.loc["baseline · curve", "runs"] == 1 and t.loc["baseline · curve_tuned", "runs"] == 2
    (pair,) = report.pairs.to_dict("records")
    assert {pair["a"], pair["b"]} == {"baseline · curve", "baseline · curve_tuned"} and pair["n"] == N
    assert report.markdown.startswith("# Comparison: experiments `curve`, `curve_tuned`")
    # without --where: a learning curve of two series; "baseline" names both, "curve" one (ran at one size)
    md = compare.build_report(["curve", "curve_tuned"], store[1], tmp_path / "all").markdown
    assert "'baseline' matches 2 series along data.train_size (baseline · curve, baseline · curve_tuned)" in md
    md = compare.build_report(["curve", "curve_tuned"], store[1], tmp_path / "ref", reference="curve").markdown
    assert "| baseline · curve_tuned | — | +20.0 ≈ (p 0.12) | ran at all only |" in md
    kept = compare.build_report("curve", store[1], tmp_path / "small", conditions=["data.train_size!=None"]).table
    assert kept["runs"].sum() == 1 and kept["train_examples_mean"].iloc[0] == 320
    for bad, match in ((["data.train_size"], "KEY=VALUE"), (["nonsense=1"], "neither a tag nor a param"),
                       (["data.train_size=7"], "no finished runs meet")):
        with pytest.raises(compare.ReportError, match=match):
            compare.build_report("curve", store[1], tmp_path / "bad", conditions=bad)


def test_where_reads_hydra_spellings_and_neutral_options(store, tmp_path):
    """--where takes Hydra's null/true/false; an option logged only when set (identity.NEUTRAL) reads as its
    neutral value where a run did not log it; the same run in two experiments is two runs, not a repeat."""
    a, b = experiment(store, "where_a"), experiment(store, "where_b")
    log_run(store, a, "finetune", 0, 0.8, params={"data.train_size": "None"}, preds=predictions())
    log_run(store, a, "finetune", 0, 0.7, params={"data.train_size": "None", "strategy.gradual_unfreeze": "True"})
    log_run(store, b, "finetune", 0, 0.8, params={"data.train_size": "None"}, preds=predictions())
    def kept(names, *conditions):
        return compare.build_report(names, store[1], tmp_path / "w", conditions=list(conditions)).table["runs"].sum()
    assert kept("where_a", "data.train_size=null", "strategy.gradual_unfreeze=false") == 1
    assert kept("where_a", "strategy.gradual_unfreeze=true") == 1
    assert kept("where_a", "strategy.gradual_unfreeze!=False") == 1
    assert kept("where_a", "data.test_seed=null") == 2  # logged by no run: neutral everywhere
    assert kept(["where_a", "where_b"], "strategy.gradual_unfreeze=false") == 2  # not deduplicated away


def test_an_export_rebuilds_the_report_without_the_store(store, tmp_path):
    """The report's runs.csv and predictions.parquet are enough to write the same report again, significance
    tests and the two seeds' tie-break included, and exports from stores that are gone merge into one report
    that pairs their runs: one study run in pieces on machines that kept nothing."""
    exp = experiment(store, "export-a")
    # 2 seeds disagree on example 0 (neg): the mean probability of pos, 0.525, decides the vote (wrongly);
    # without probabilities the tie would go to the first label, neg
    for seed, p0 in ((0, 0.6), (1, 0.45)):
        preds = predictions(wrong=[0] if p0 > 0.5 else [], probs=[p0] + [0.9 if t == "pos" else 0.1 for t in TRUE[1:]])
        log_run(store, exp, "finetune", seed, 0.95, params={"data.train_size": "None"}, preds=preds)
    for size, wrong in (("None", range(9)), ("100", range(4))):
        log_run(store, exp, "baseline", 0, 1 - len(wrong) / N, model="none", fingerprint="fp" if size == "None" else "fp100",
                params={"data.train_size": size}, preds=predictions(wrong=wrong))
    log_run(store, exp, "embed", 0, 0.5, params={"data.train_size": "None"})  # no predictions: a row, untested
    first = compare.build_report("export-a", store[1], tmp_path / "a")
    assert {f.name for f in first.files} >= {"runs.csv", "predictions.parquet"}
    again = compare.build_report(None, out_dir=tmp_path / "again", exports=[tmp_path / "a"])
    assert again.markdown == first.markdown  # title, table, grid, verdicts and notes alike
    pd.testing.assert_frame_equal(again.pairs, first.pairs)
    (pair,) = first.pairs.to_dict("records")
    assert pair["b"] == "finetune · train_size=None" and pair["vote_acc_b"] == 0.95  # kept through float16

    # a later piece of the study, in a store of its own (here: another experiment, read back by name)
    log_run(store, experiment(store, "export-b"), "lora", 0, 0.97, params={"data.train_size": "None"},
            preds=predictions(wrong=[5]))
    compare.build_report("export-b", store[1], tmp_path / "b")
    rc = compare.main(["--from-export", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--group-by", "strategy,data.train_size",
                       "--out", str(tmp_path / "both")])
    assert rc == 0
    merged = compare.build_report(None, out_dir=tmp_path / "m", group_by=["strategy", "data.train_size"],
                                  exports=[tmp_path / "a", tmp_path / "b"], conditions=["data.train_size=null"])
    pair = merged.pairs.set_index(["a", "b"]).loc[("baseline · train_size=None", "lora · train_size=None")]
    assert (pair["only_a_right"], pair["only_b_right"]) == (0, 8)  # baseline wrong on 0-8, lora on 5
    assert merged.table["runs"].sum() == 5  # 2 finetune + baseline + embed + lora: each run once
    only_b = compare.build_report("export-b", out_dir=tmp_path / "nb", exports=[tmp_path / "a", tmp_path / "b"])
    assert only_b.table["strategy"].tolist() == ["lora"]

    with pytest.raises(compare.ReportError, match="holds no runs.csv: export it with"):
        compare.build_report(None, out_dir=tmp_path / "x", exports=[tmp_path])
    with pytest.raises(SystemExit) as e:
        compare.main(["--from-export", str(tmp_path / "a"), "--parent-run-id", "abc", "--out", str(tmp_path / "y")])
    assert e.value.code == 2
