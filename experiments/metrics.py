"""Classification metrics, computed once, from probabilities, with scikit-learn."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, log_loss


@dataclass
class Evaluation:
    scalars: dict[str, float]  # flat metric name -> value, ready for MLflow
    report_text: str
    report: dict
    confusion: np.ndarray


def _safe(name: str) -> str:
    """MLflow metric names allow only alphanumerics, _ - . / and space."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(name))


def evaluate(y_true: np.ndarray, proba: np.ndarray, label_names: list[str], prefix: str = "test_") -> Evaluation:
    labels = list(range(len(label_names)))
    y_pred = proba.argmax(axis=1)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=label_names, output_dict=True, zero_division=0
    )
    text = classification_report(y_true, y_pred, labels=labels, target_names=label_names, digits=4, zero_division=0)
    scalars = {
        f"{prefix}accuracy": accuracy_score(y_true, y_pred),
        f"{prefix}f1_macro": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        f"{prefix}precision_macro": report["macro avg"]["precision"],
        f"{prefix}recall_macro": report["macro avg"]["recall"],
        f"{prefix}f1_weighted": report["weighted avg"]["f1-score"],
        f"{prefix}log_loss": log_loss(y_true, np.clip(proba, 1e-7, 1), labels=labels),
    }
    for name in label_names:
        for key, short in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1")):
            scalars[f"{prefix}{short}_{_safe(name)}"] = report[name][key]
    scalars = {k: float(v) for k, v in scalars.items()}
    return Evaluation(scalars, text, report, confusion_matrix(y_true, y_pred, labels=labels))


def confusion_figure(cm: np.ndarray, label_names: list[str], title: str):
    import matplotlib

    matplotlib.use("Agg")  # headless: sweeps run without a display
    import matplotlib.pyplot as plt

    size = max(3.5, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig
