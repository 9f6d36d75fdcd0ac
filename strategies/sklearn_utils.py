"""Helpers for strategies whose learner is a scikit-learn estimator."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from scipy.special import expit, softmax

MODEL_FILE = "sklearn.joblib"


def proba(estimator, X, num_labels: int) -> np.ndarray:
    """predict_proba where the estimator has it; otherwise a softmax/sigmoid of decision_function, so that
    margin classifiers such as LinearSVC still give scores for ROC-style metrics and the report."""
    if hasattr(estimator, "predict_proba"):
        p = estimator.predict_proba(X)
    else:
        d = np.asarray(estimator.decision_function(X))
        p = np.stack([1 - expit(d), expit(d)], axis=1) if d.ndim == 1 else softmax(d, axis=1)
    classes = getattr(estimator, "classes_", np.arange(p.shape[1]))
    if len(classes) != num_labels:  # a class absent from a tiny training set still gets its column
        full = np.zeros((p.shape[0], num_labels), dtype=np.float64)
        full[:, np.asarray(classes, dtype=int)] = p
        p = full
    return p.astype(np.float32)


def check_params(estimator, key: str) -> None:
    """scikit-learn checks parameter values only inside fit() (for embed: after every text is encoded), so
    check them when the strategy is built, which the runner does before anything loads."""
    from sklearn.utils._param_validation import InvalidParameterError

    validate = getattr(estimator, "_validate_params", None)  # every built-in estimator since sklearn 1.2
    if validate is not None:
        try:
            validate()
        except InvalidParameterError as e:
            raise ValueError(f"{key}: {e}") from None


def learned_parameters(estimator) -> int:
    """Number of fitted numbers in an estimator (or a Pipeline): weights, biases, support vectors, tree nodes.
    Tree nodes count once each: a split is one learned threshold (plus the feature it tests)."""
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    n = 0
    for est in steps:
        for attr in ("coef_", "intercept_", "dual_coef_", "support_vectors_", "coefs_", "intercepts_"):
            value = getattr(est, attr, None)
            if value is None:
                continue
            n += sum(np.size(v) for v in value) if isinstance(value, list) else np.size(value)
        for tree in getattr(est, "estimators_", []) or []:
            tree = tree[0] if isinstance(tree, np.ndarray) else tree
            n += int(getattr(getattr(tree, "tree_", None), "node_count", 0))
    return int(n)


def save(estimator, path: Path) -> None:
    # joblib is a pickle: load() only ever reads files this project wrote itself (see README, Safety)
    joblib.dump(estimator, Path(path) / MODEL_FILE)


def load(path: Path):
    return joblib.load(Path(path) / MODEL_FILE)
