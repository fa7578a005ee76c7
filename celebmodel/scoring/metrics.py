"""How good predictions are: scikit-learn metrics, overfitting in words, open-set rates.

``compute_metrics`` (from probabilities) and ``metrics_of`` (from predicted classes and the
true class's rank, what ``predictions_<subset>.csv`` keeps) give the keys of
``metrics_<subset>.json``: accuracy, precision/recall/F1 weighted (as the original reported)
and macro, top-5 accuracy, per_class, labels, n, and the confusion counts: the whole
``confusion_matrix`` up to :data:`DENSE_UP_TO` people, beyond that only its non-zero cells as
``confusion_cells`` (``[true, predicted, count]`` index triples), so a file, and every page
that reads it, grows with the photos and not with the square of the people.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
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
DENSE_UP_TO = 200  # people up to which metrics files keep the whole confusion matrix
TOP_K = 5


def true_ranks(probabilities: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Where the true class stands among each row's probabilities (1 = predicted; a tie
    counts in its favour), the one number per photo top-k accuracy needs."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=int)
    if len(y_true) == 0:
        return np.zeros(0, dtype=int)
    truth = probabilities[np.arange(len(y_true)), y_true]
    return 1 + (probabilities > truth[:, None]).sum(axis=1)


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    """The metrics of one subset from true class indices and predicted probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    return metrics_of(y_true, y_pred, true_ranks(probabilities, y_true), labels)


def metrics_of(
    y_true: np.ndarray, y_pred: np.ndarray, ranks: np.ndarray, labels: list[str]
) -> dict:
    """The metrics of one subset from true and predicted class indices and the true class's
    rank: no photos x people matrix is needed, so it holds at any number of people."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    classes = list(range(len(labels)))
    metrics: dict[str, Any] = {"n": int(len(y_true)), "labels": list(labels)}
    if len(y_true) == 0:
        return {**metrics, "accuracy": None, "per_class": {}, "confusion_matrix": []}
    metrics["accuracy"] = float(accuracy_score(y_true, y_pred))
    for average in ("weighted", "macro"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, average=average, zero_division=0
        )
        metrics.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
    # With k >= the number of classes every answer is in the top k.
    hits = np.asarray(ranks) <= TOP_K
    metrics["top5_accuracy"] = float(hits.mean()) if len(labels) > TOP_K else 1.0
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
    if len(labels) <= DENSE_UP_TO:
        metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=classes).tolist()
    else:
        cells = pd.DataFrame({"true": y_true, "predicted": y_pred}).value_counts(sort=False)
        metrics["confusion_cells"] = [
            [int(i), int(j), int(count)] for (i, j), count in sorted(cells.items())
        ]
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in metrics.items()}


def confusion_cells(metrics: dict[str, Any]) -> pd.DataFrame:
    """The non-zero cells of a metrics file's confusion counts, dense or sparse: ``true`` and
    ``predicted`` class indices and ``count`` (rows true, columns predicted)."""
    if "confusion_cells" in metrics:
        cells = np.asarray(metrics["confusion_cells"] or [], dtype=np.int64).reshape(-1, 3)
    else:
        counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=np.int64)
        if counts.ndim != 2:
            counts = np.zeros((0, 0), dtype=np.int64)
        true, predicted = np.nonzero(counts)
        cells = np.column_stack([true, predicted, counts[true, predicted]])
    return pd.DataFrame(cells, columns=["true", "predicted", "count"])


def confusion_counts(metrics: dict[str, Any]) -> np.ndarray:
    """The whole confusion matrix (for the few people a heatmap can show)."""
    n = len(metrics.get("labels") or [])
    counts = np.zeros((n, n), dtype=np.int64)
    cells = confusion_cells(metrics)
    np.add.at(counts, (cells["true"].to_numpy(), cells["predicted"].to_numpy()), cells["count"])
    return counts


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
    if gap < 0.0005:  # "within 0.0%" read like a rounding slip
        return f"No overfitting: held-out accuracy is as high as train accuracy ({figures})."
    return (f"No marked overfitting: train and held-out accuracy are within "
            f"{gap * 100:.1f} points ({figures}).")


def wilson_intervals(
    successes: np.ndarray, n: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score intervals of many proportions at once, the formula of scipy's
    ``binomtest(k, n).proportion_ci(method="wilson")`` (Newcombe 1998) on arrays: a
    scipy call per person took 0.4 ms, seconds for thousands of people. ``n = 0`` gives
    (0, 1)."""
    from scipy.special import ndtri

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = ndtri(0.5 + 0.5 * confidence)
    safe = np.maximum(n, 1.0)
    p = k / safe
    denominator = 2 * (safe + z**2)
    centre = (2 * safe * p + z**2) / denominator
    delta = z / denominator * np.sqrt(4 * safe * p * (1 - p) + z**2)
    low = np.where((k == 0) | (n <= 0), 0.0, centre - delta)
    high = np.where((k == n) | (n <= 0), 1.0, centre + delta)
    return low, high


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion, e.g. accuracy from k right of n."""
    low, high = wilson_intervals(np.array([successes]), np.array([n]), confidence)
    return float(low[0]), float(high[0])


def recall_intervals(metrics: dict[str, Any]) -> pd.DataFrame:
    """Each person's recall interval (``low``, ``high``, indexed by label) from the
    diagonal and row sums of the confusion counts; people without photos are left out."""
    labels = metrics.get("labels") or []
    cells = confusion_cells(metrics)
    n = np.bincount(cells["true"], weights=cells["count"], minlength=len(labels))
    right = cells[cells["true"] == cells["predicted"]]
    k = np.bincount(right["true"], weights=right["count"], minlength=len(labels))
    low, high = wilson_intervals(k, n)
    frame = pd.DataFrame({"low": low, "high": high}, index=pd.Index(labels, name="label"))
    return frame[n > 0]


def intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """95% Wilson intervals of accuracy and of each celebrity's recall, from the confusion
    counts (exact counts), so runs evaluated before intervals existed get them too."""
    cells = confusion_cells(metrics)
    if cells.empty:
        return {"accuracy": None, "recall": {}}
    right = int(cells.loc[cells["true"] == cells["predicted"], "count"].sum())
    recall = recall_intervals(metrics)
    return {
        "accuracy": wilson_interval(right, int(cells["count"].sum())),
        "recall": {
            label: (low, high)
            for label, low, high in zip(
                recall.index, recall["low"].tolist(), recall["high"].tolist(), strict=True
            )
        },
    }


def chance(metrics: dict[str, Any]) -> float | None:
    """The accuracy of a blind guess: one over the number of celebrities."""
    labels = metrics.get("labels") or []
    return 1.0 / len(labels) if labels else None


def learning_verdict(metrics: dict[str, Any]) -> str | None:
    """ "Near chance" when accuracy is under twice chance, or when one celebrity takes most
    of the predictions; ``None`` when the model clearly learned."""
    cells = confusion_cells(metrics)
    level, accuracy = chance(metrics), metrics.get("accuracy")
    if cells.empty or level is None or accuracy is None:
        return None
    labels = metrics.get("labels") or []
    predicted = np.bincount(cells["predicted"], weights=cells["count"], minlength=len(labels))
    top = int(np.argmax(predicted))
    share = predicted[top] / max(1, cells["count"].sum())
    reasons = []
    if accuracy < NEAR_CHANCE * level:
        reasons.append(f"accuracy {accuracy:.1%} against {level:.1%} for a blind guess")
    if len(labels) > 2 and share > MOST_PREDICTIONS:
        name = labels[top].replace("_", " ")
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
