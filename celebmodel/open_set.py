"""Is this face someone the model knows? Centroids, unknown scores and the calibrated threshold.

numpy only, so identifying a face never imports scikit-learn. A face's unknown score is its
distance to the centroid of its predicted celebrity's training faces, times ``2 - p`` (the
classifier's doubt); the threshold accepts a chosen share of known validation faces.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows, so distances compare directions, not magnitudes."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


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


def calibrate(scores: np.ndarray, accept: float) -> dict:
    """The unknown threshold that still accepts ``accept`` of the known validation faces,
    from their :func:`unknown_scores`."""
    threshold = float(np.quantile(scores, accept, method="higher")) if len(scores) else 1.0
    return {
        "threshold": threshold,
        "target_accept": accept,
        "calibrated_on": "val",
        "n": int(len(scores)),
        "score": "distance to the predicted class's centroid x (2 - top probability)",
        "val_scores": [float(score) for score in np.sort(scores)],
    }


# The similarity scale the pages and the API show ------------------------------------------
#
# similarity = max(0, 1 - score**2 / 2). For a confident prediction (p near 1) the score is
# the distance d between the unit-length face and its person's mean face, and 1 - d**2 / 2 is
# their cosine similarity; the classifier's doubt (2 - p) lowers it. It falls as the score
# rises, so a threshold on either scale is the same decision.


def similarity(scores: np.ndarray | float) -> np.ndarray | float:
    """Unknown scores (0 = the person's mean face) on the 0..1 similarity scale."""
    values = np.clip(1.0 - np.square(scores) / 2.0, 0.0, 1.0)
    return float(values) if np.ndim(values) == 0 else values


def score_for(similarity_value: float) -> float:
    """The unknown score a similarity corresponds to (the inverse of :func:`similarity`)."""
    return float(np.sqrt(2.0 * (1.0 - float(np.clip(similarity_value, 0.0, 1.0)))))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (unit-length rows)."""
    return np.clip(l2_normalize(a) @ l2_normalize(b).T, -1.0, 1.0)


PRESETS = {  # name -> share of known validation faces it accepts (Balanced: the calibration's)
    "Strict": 0.90,
    "Balanced": None,
    "Lenient": 0.99,
}


def presets(calibration: dict) -> dict[str, dict]:
    """Strict / Balanced / Lenient thresholds, each with the share of the model's known
    validation faces it accepts. Balanced is the calibrated threshold; the others need the
    validation scores the calibration keeps (runs before them get Balanced alone)."""
    threshold = float(calibration["threshold"])
    scores = np.asarray(calibration.get("val_scores") or [], dtype=np.float64)
    found = {}
    for name, accept in PRESETS.items():
        if accept is None:
            value = threshold
        elif len(scores):
            value = float(np.quantile(scores, accept, method="higher"))
        else:
            continue
        accepted = (
            float(np.mean(scores <= value)) if len(scores) else calibration.get("target_accept")
        )
        found[name] = {"threshold": value, "similarity": similarity(value), "accepts": accepted}
    return found
