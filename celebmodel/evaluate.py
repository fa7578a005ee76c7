"""How good a run is: scikit-learn metrics per subset, overfitting in words, and open-set checks.

``metrics_<subset>.json`` keys: accuracy, precision/recall/F1 weighted (as the original reported)
and macro, top-5 accuracy, per_class, labels, confusion_matrix, subset, n, plus skipped photos,
the overfitting verdict, and ``open_set`` when a folder of unknown people was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from .backbones import l2_normalize
from .data import photos_under
from .runs import Run, atomic_write_json

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


def unknown_scores(
    embeddings: np.ndarray, probabilities: np.ndarray, centroids: np.ndarray
) -> np.ndarray:
    """How unlike its predicted celebrity each face is (higher means more likely unknown).

    Distance to the predicted class's centroid separates strangers far better than the top
    probability; multiplying by ``2 - p`` adds the classifier's doubt to that distance.
    """
    if len(embeddings) == 0:
        return np.zeros(0)
    predicted = probabilities.argmax(axis=1)
    distance = np.linalg.norm(l2_normalize(embeddings) - centroids[predicted], axis=1)
    return distance * (2.0 - probabilities.max(axis=1))


def centroids_of(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit-length mean embedding of each class's training faces."""
    dim = embeddings.shape[1] if embeddings.ndim == 2 else 1
    centroids = np.zeros((n_classes, dim), dtype=np.float32)
    for c in range(n_classes):
        members = embeddings[labels == c]
        if len(members):
            centroids[c] = members.mean(axis=0)
    return l2_normalize(centroids)


def calibrate(outputs: dict, inputs: dict, index: dict[str, int], accept: float) -> dict:
    """The unknown threshold that still accepts ``accept`` of the known validation faces."""
    train_labels = np.array([index[x] for x in inputs["train"].usable["label"]])
    centroids = centroids_of(outputs["train"][0], train_labels, len(index))
    scores = unknown_scores(*outputs["val"], centroids)
    threshold = float(np.quantile(scores, accept, method="higher")) if len(scores) else 1.0
    return {
        "threshold": threshold,
        "target_accept": accept,
        "calibrated_on": "val",
        "n": int(len(scores)),
        "score": "distance to the predicted class's centroid x (2 - top probability)",
    }


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


def evaluate_subset(
    run: Run,
    subset: str,
    inputs: Any,
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    open_set: dict | None = None,
) -> dict:
    """Write ``metrics_<subset>.json`` and ``predictions_<subset>.csv`` for one subset."""
    usable = inputs.usable
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index.get(label, -1) for label in usable["label"]])
    known = y_true >= 0
    metrics = compute_metrics(y_true[known], probabilities[known], labels)
    skipped = inputs.records[inputs.records["crop"].isna()]
    metrics.update(
        subset=subset,
        skipped=[
            {"path": r.path, "reason": r.error or "no face found"} for r in skipped.itertuples()
        ],
    )
    if open_set:
        metrics["open_set"] = open_set
    accuracies = {s: (run.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}
    accuracies[subset] = metrics["accuracy"]
    metrics["overfitting"] = overfitting_verdict(accuracies)
    atomic_write_json(run.file(f"metrics_{subset}.json"), metrics)

    predictions = pd.DataFrame(
        {
            "path": usable["path"].to_numpy(),
            "true": usable["label"].to_numpy(),
            "predicted": [labels[i] for i in probabilities.argmax(axis=1)] if len(usable) else [],
            "probability": probabilities.max(axis=1) if len(usable) else [],
            "route": usable["route"].to_numpy(),
        }
    )
    for i, label in enumerate(labels):
        predictions[f"p_{label}"] = probabilities[:, i] if len(usable) else []
    predictions.to_csv(run.file(f"predictions_{subset}.csv"), index=False)
    return metrics


def unknown_photos(folder: str | Path) -> list[str]:
    """Every image under ``folder``, any layout, as relative paths (people not in training)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of unknown people")
    return [str(p.relative_to(folder)) for p in photos_under(folder)]


def evaluate_run(
    run: Run, subset: str = "test", unknown_dir: str | Path | None = None, progress: bool = False
) -> dict[str, dict]:
    """Evaluate a finished run on one subset (or ``all``), optionally against unknown people."""
    from .pipeline import prepare_inputs
    from .train import predict_inputs

    config = run.config()
    labels = run.labels()
    model = run.load_model()
    split = config.kept(run.split())
    split = split[split["label"].isin(labels)]
    subsets = ("train", "val", "test") if subset == "all" else (subset,)
    threshold = (run.read_json("calibration.json") or {}).get("threshold")
    gallery, gallery_labels = run.gallery()
    centroids = centroids_of(gallery, gallery_labels, len(labels))
    strangers = None
    if unknown_dir is not None:
        rows = pd.DataFrame({"path": unknown_photos(unknown_dir)})
        rows["label"] = "unknown"
        stranger_inputs = prepare_inputs(config, rows, progress, root=unknown_dir)
        strangers = unknown_scores(*predict_inputs(model, config, stranger_inputs), centroids)
    results = {}
    for name in subsets:
        inputs = prepare_inputs(config, split[split["subset"] == name], progress)
        embeddings, probabilities = predict_inputs(model, config, inputs)
        open_set = None
        if strangers is not None and threshold is not None:
            known = unknown_scores(embeddings, probabilities, centroids)
            open_set = open_set_metrics(known, strangers, threshold)
        results[name] = evaluate_subset(
            run, name, inputs, embeddings, probabilities, labels, open_set
        )
    return results
