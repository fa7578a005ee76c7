"""How good predictions are: scikit-learn metrics, overfitting in words, open-set rates.

``compute_metrics`` gives the keys of ``metrics_<subset>.json``: accuracy, precision/recall/F1
weighted (as the original reported) and macro, top-5 accuracy, per_class, labels,
confusion_matrix and n.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

SUBSET_CHOICES = ("test", "val", "train", "all")

ORIGINAL = {  # the recipe the product started from, on its test set
    "accuracy": 0.53,
    "precision_weighted": 0.567,
    "recall_weighted": 0.533,
    "f1_weighted": 0.529,
}

OVERFIT_GAP = 0.10  # train accuracy this far above held-out accuracy is called overfitting


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    """The metrics of one subset from true class indices and predicted probabilities."""
    y_true = np.asarray(y_true, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = list(range(len(labels)))
    y_pred = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    metrics: dict[str, Any] = {"n": int(len(y_true)), "labels": list(labels)}
    if len(y_true) == 0:
        return {**metrics, "accuracy": None, "per_class": {}, "confusion_matrix": []}
    metrics["accuracy"] = float(accuracy_score(y_true, y_pred))
    for average in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, average=average, zero_division=0
        )
        metrics.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    k = min(5, len(labels))  # with k >= the number of classes every answer is in the top k
    metrics["top5_accuracy"] = (
        float(top_k_accuracy_score(y_true, probabilities, k=k, labels=classes))
        if k < len(labels)
        else 1.0
    )
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average=None, zero_division=0
    )
    metrics["per_class"] = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, label in enumerate(labels)
    }
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=classes).tolist()
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in metrics.items()}


def overfitting_verdict(accuracies: dict[str, float | None]) -> str:
    """Train accuracy against validation and test accuracy, in plain words."""
    train = accuracies.get("train")
    held = {k: v for k, v in accuracies.items() if k in ("val", "test") and v is not None}
    if train is None or not held:
        return "Not enough subsets evaluated to judge overfitting."
    worst = min(held, key=held.get)
    gap = train - held[worst]
    figures = ", ".join(f"{k} {v:.1%}" for k, v in [("train", train), *held.items()])
    if gap > OVERFIT_GAP:
        return (
            f"Overfitting: the model is right on {train:.1%} of the photos it trained on but only "
            f"{held[worst]:.1%} of {worst} photos it never saw ({figures})."
        )
    return f"No marked overfitting: train and held-out accuracy are within {gap:.1%} ({figures})."


def open_set_metrics(known: np.ndarray, unknown: np.ndarray, threshold: float) -> dict:
    """Share of strangers rejected and of known faces accepted at ``threshold``, and ROC AUC."""
    auc = None
    if len(known) and len(unknown):
        truth = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
        auc = float(roc_auc_score(truth, -np.r_[known, unknown]))
    return {
        "unknown_rejected": float(np.mean(unknown > threshold)) if len(unknown) else None,
        "known_accepted": float(np.mean(known <= threshold)) if len(known) else None,
        "auc": auc,
        "threshold": float(threshold),
        "n_unknown": int(len(unknown)),
        "n_known": int(len(known)),
    }
