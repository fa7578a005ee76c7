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
    }
