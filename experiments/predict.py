"""Classify new texts with a model logged by a run, like a `pipeline("text-classification")`.

    python -m experiments.predict --run-id <RUN_ID> "A moving, beautifully acted film." "Two hours I want back."
    python -m experiments.predict --run-id <RUN_ID> --file reviews.txt --output preds.csv   # one text per line
    python -m experiments.predict --run-id <RUN_ID> --file test.csv --text-column review    # a table's text column
    echo "great fun" | python -m experiments.predict --run-id <RUN_ID>
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

TABLES = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_model(model_uri: str, tracking_uri: str):
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a screenful of bars per call
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def why_no_model(run_id: str, tracking_uri: str) -> str | None:
    """The likely cause when a run's model cannot be loaded, if the run says so."""
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri)
        run = client.get_run(run_id)
    except Exception:  # no such run: MLflow's own message says so
        return None
    if run.data.tags.get("sweep") == "parent":
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'",
                                      max_results=5, order_by=["attributes.start_time ASC"])
        listed = ", ".join(f"{c.info.run_id} ({c.info.run_name})" for c in children) or "none yet"
        return (f"run {run_id} is a sweep's parent run, which holds no model; use one of its child runs, "
                f"e.g. {listed} (all of them: the parent's row in the MLflow UI)")
    if run.data.params.get("log_model") == "False":
        return f"run {run_id} was made with log_model=false, so it has no model: rerun its config with log_model=true"
    if run.info.status != "FINISHED":
        return f"run {run_id} is {run.info.status}: only a FINISHED run has a model"
    return None


def read_texts(path: str, text_column: str) -> list[str]:
    """A .txt file holds one text per line; a table (CSV/TSV/JSON/JSONL/parquet) gives its text column.
    Anything else is refused: read line by line, a CSV's header and label column would become texts."""
    file, suffix = Path(path), Path(path).suffix.lower()
    if not file.is_file():
        raise ValueError(f"--file {path}: no such file")
    if suffix in ("", ".txt"):
        with open(file, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    if suffix not in TABLES:
        raise ValueError(f"--file {path}: unsupported type '{suffix}'; use .txt (one text per line) or "
                         f"a table ({', '.join(TABLES)}) with --text-column")
    from experiments.data import read_table  # the reader runs use, with its one-line errors
    from experiments.errors import DataError

    try:
        table = read_table(file)
    except DataError as e:
        raise ValueError(str(e)) from None
    if text_column not in table.columns:
        raise ValueError(f"--file {path}: no column '{text_column}'; pick one with --text-column "
                         f"(the columns are: {', '.join(map(str, table.columns))})")
    return [t for t in table[text_column].astype(str).tolist() if t.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run whose logged model to use")
    src.add_argument("--model-uri", help="any MLflow model URI, e.g. runs:/<id>/model or models:/<name>/1")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default: %(default)s)")
    p.add_argument("--file", help="a .txt file with one text per line, or a CSV/TSV/JSONL/parquet table "
                   "(see --text-column); default: the arguments, else stdin")
    p.add_argument("--text-column", default="text", help="the text column of a table --file (default: %(default)s)")
    p.add_argument("--output", help="write predictions as CSV here instead of printing them")
    p.add_argument("texts", nargs="*", help="texts to classify")
    args = p.parse_args(argv)

    if args.file:
        try:
            texts = read_texts(args.file, args.text_column)
        except ValueError as e:
            p.exit(2, f"error: {e}\n")
    else:
        texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        p.error("no texts given: pass them as arguments, with --file, or on stdin")

    model_uri = args.model_uri or f"runs:/{args.run_id}/model"
    try:
        model = load_model(model_uri, args.tracking_uri)
    except Exception as e:  # mlflow raises several types for a missing run/model
        cause = (args.run_id and why_no_model(args.run_id, args.tracking_uri)) or str(e).splitlines()[0]
        p.exit(2, f"error: cannot load {model_uri} from {args.tracking_uri}: {cause}\n")
    preds = model.predict(pd.DataFrame({"text": texts}))
    preds.insert(0, "text", texts)
    if args.output:
        preds.to_csv(args.output, index=False)
        print(f"wrote {len(preds)} predictions to {args.output}")
    else:
        with pd.option_context("display.max_colwidth", 60, "display.width", 160):
            print(preds.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
