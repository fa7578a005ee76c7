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
NEAR_CHANCE = 2.0  # held-out accuracy under this many times chance: the model learned little
MOST_PREDICTIONS = 0.5  # one celebrity taking more than this share of predictions: learned little
FEW_PHOTOS = 10  # fewer test photos per celebrity than this: say what one mistake is worth


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


def overfitting_verdict(accuracies: dict[str, float | None], chance: float | None = None) -> str:
    """Train accuracy against validation and test accuracy, in plain words.

    With ``chance`` (one over the number of celebrities), a model near chance on held-out
    photos is called that, never "no marked overfitting".
    """
    train = accuracies.get("train")
    held = {k: v for k, v in accuracies.items() if k in ("val", "test") and v is not None}
    if train is None or not held:
        return "Not enough subsets evaluated to judge overfitting."
    worst = min(held, key=held.get)
    gap = train - held[worst]
    figures = ", ".join(f"{k} {v:.1%}" for k, v in [("train", train), *held.items()])
    if chance is not None and max(held.values()) < NEAR_CHANCE * chance:
        return (
            f"Near chance: on photos it never saw the model is right about as often as a guess "
            f"({chance:.1%}); it learned little ({figures})."
        )
    if gap > OVERFIT_GAP:
        return (
            f"Overfitting: the model is right on {train:.1%} of the photos it trained on but only "
            f"{held[worst]:.1%} of {worst} photos it never saw ({figures})."
        )
    return f"No marked overfitting: train and held-out accuracy are within {gap:.1%} ({figures})."


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy), e.g. accuracy from k right of n."""
    from scipy.stats import binomtest

    if n <= 0:
        return (0.0, 1.0)
    interval = binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(interval.low), float(interval.high)


def intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """95% Wilson intervals of accuracy and of each celebrity's recall, from the confusion
    matrix (exact counts), so runs evaluated before intervals existed get them too."""
    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=int)
    labels = metrics.get("labels") or []
    if counts.size == 0:
        return {"accuracy": None, "recall": {}}
    support = counts.sum(axis=1)
    return {
        "accuracy": wilson_interval(int(np.trace(counts)), int(counts.sum())),
        "recall": {
            label: wilson_interval(int(counts[i, i]), int(support[i]))
            for i, label in enumerate(labels)
            if support[i] > 0
        },
    }


def chance(metrics: dict[str, Any]) -> float | None:
    """The accuracy of a blind guess: one over the number of celebrities."""
    labels = metrics.get("labels") or []
    return 1.0 / len(labels) if labels else None


def learning_verdict(metrics: dict[str, Any]) -> str | None:
    """ "Near chance" when accuracy is under twice chance, or when one celebrity takes most
    of the predictions; ``None`` when the model clearly learned."""
    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=int)
    level, accuracy = chance(metrics), metrics.get("accuracy")
    if counts.size == 0 or level is None or accuracy is None:
        return None
    predicted = counts.sum(axis=0)
    top = int(np.argmax(predicted))
    share = predicted[top] / max(1, counts.sum())
    reasons = []
    if accuracy < NEAR_CHANCE * level:
        reasons.append(f"accuracy {accuracy:.1%} against {level:.1%} for a blind guess")
    if len(predicted) > 2 and share > MOST_PREDICTIONS:
        name = (metrics.get("labels") or [])[top].replace("_", " ")
        reasons.append(f"{share:.0%} of the photos are predicted as {name}")
    if not reasons:
        return None
    return f"Near chance: the model learned little ({'; '.join(reasons)})."


def one_error_note(metrics: dict[str, Any]) -> str | None:
    """What a single mistake is worth when a celebrity has fewer than 10 photos in the subset."""
    supports = [c["support"] for c in (metrics.get("per_class") or {}).values() if c["support"]]
    if not supports or min(supports) >= FEW_PHOTOS:
        return None
    typical = int(np.median(supports))
    return (
        f"{typical} photo{'s' if typical != 1 else ''} per person: one mistake moves that "
        f"person's recall by "
        f"{100 / typical:.0f} points. For steadier numbers, look at validation + test together, "
        "or train with another seed and compare (cross-validation)."
    )


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
