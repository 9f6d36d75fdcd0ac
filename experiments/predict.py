"""Classify new texts with a model logged by a run, like a `pipeline("text-classification")`.

    python -m experiments.predict --run-id <RUN_ID> "A moving, beautifully acted film." "Two hours I want back."
    python -m experiments.predict --run-id <RUN_ID> --file reviews.txt --output preds.csv   # one text per line
    echo "great fun" | python -m experiments.predict --run-id <RUN_ID>
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd


def load_model(model_uri: str, tracking_uri: str):
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a screenful of bars per call
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def why_no_model(run_id: str, tracking_uri: str) -> str | None:
    """The likely cause when a run's model cannot be loaded, if the run says so."""
    import mlflow

    try:
        run = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    except Exception:  # no such run: MLflow's own message says so
        return None
    if run.data.params.get("log_model") == "False":
        return f"run {run_id} was made with log_model=false, so it has no model: rerun its config with log_model=true"
    if run.info.status != "FINISHED":
        return f"run {run_id} is {run.info.status}: only a FINISHED run has a model"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run whose logged model to use")
    src.add_argument("--model-uri", help="any MLflow model URI, e.g. runs:/<id>/model or models:/<name>/1")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store (default: %(default)s)")
    p.add_argument("--file", help="text file with one input per line (default: the arguments, else stdin)")
    p.add_argument("--output", help="write predictions as CSV here instead of printing them")
    p.add_argument("texts", nargs="*", help="texts to classify")
    args = p.parse_args(argv)

    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f if line.strip()]
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
