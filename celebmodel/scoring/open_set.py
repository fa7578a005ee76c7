"""Is this face someone the model knows? Centroids, unknown scores and the calibrated threshold.

numpy only, so identifying a face never imports scikit-learn. A face's unknown score is its
distance to the centroid of its predicted celebrity's training faces, times ``2 - p`` (the
classifier's doubt); the threshold accepts a chosen share of known validation faces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..vectors import l2_normalize
from .matching import Confidence


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



PRESETS = {  # name -> share of known validation faces it accepts (Balanced: the calibration's)
    "Strict": 0.90,
    "Balanced": None,
    "Lenient": 0.99,
}


def stranger_scores(
    embeddings: np.ndarray, probabilities: np.ndarray, centroids: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Each known face scored as if its person were not in the model (their class masked
    out of the probabilities, so the face is judged against everyone else): what strangers
    score, measured without any stranger photos. Sorted ascending (closest first)."""
    if len(embeddings) == 0:
        return np.zeros(0)
    masked = np.asarray(probabilities, dtype=np.float64).copy()
    masked[np.arange(len(masked)), np.asarray(labels, dtype=int)] = 0.0
    masked /= np.maximum(masked.sum(axis=1, keepdims=True), 1e-12)
    return np.sort(unknown_scores(embeddings, masked, centroids))


def _share(values: np.ndarray, accepted: np.ndarray) -> float | None:
    return float(np.mean(accepted)) if len(values) else None


def _named(strangers: np.ndarray, closer: np.ndarray) -> float | None:
    """Share of strangers named at a threshold, as :class:`celebmodel.scoring.matching.Confidence`
    counts it (at least half a stranger: a finite sample cannot promise zero)."""
    if not len(strangers):
        return None
    return max(int(np.sum(closer)), 0.5) / len(strangers)


def threshold_for(calibration: dict, confidence: float) -> float:
    """The threshold (the model's own scale) naming faces of at least this match confidence:
    strangers reach it at most ``1 - confidence`` of the time. Read from ``calibration.json``
    alone, so no model needs loading."""
    if calibration.get("method") == "gallery":
        closeness = np.asarray(calibration.get("strangers") or [], np.float64)
        sign = 1.0
    else:
        closeness = -np.asarray(calibration.get("stranger_scores") or [], np.float64)
        sign = -1.0
    if not len(closeness):
        raise ValueError("no stranger scores to set a confidence threshold")
    value = float(np.quantile(np.sort(closeness), confidence, method="higher"))
    return sign * value


def presets(calibration: dict) -> dict[str, dict]:
    """Strict / Balanced / Lenient, each with its ``threshold`` (the model's own scale) and
    what it means on this model: ``known_named`` (share of known faces it names) and
    ``strangers_named`` (share of strangers it names wrongly), where measured;
    ``match_confidence`` (the confidence it needs) and, for trained runs, ``similarity``.

    Gallery models define them by strangers (1% / 5% / 10% named wrongly, see
    :mod:`celebmodel.recognition.public_figures`; ``lookalikes_named``: the share of LFW's own
    people left out in turn named at it, when photos from elsewhere set it;
    ``known_elsewhere_named`` and ``_wrong``: the shares of photos of its people taken elsewhere
    named right and wrongly, when measured). Trained runs by
    the share of their known validation faces accepted (90% / the calibrated threshold / 99%);
    their strangers are each known face scored with its own person left out
    (:func:`stranger_scores`). Runs from before the validation scores were kept get Balanced
    alone.
    """
    if calibration.get("method") == "gallery":
        strangers = np.asarray(calibration.get("strangers") or [], np.float64)
        stored = calibration.get("presets") or {}
        found = {}
        for name in sorted(stored, key=lambda n: list(PRESETS).index(n) if n in PRESETS else 9):
            value = float(stored[name]["threshold"])
            named = _named(strangers, strangers >= value)
            found[name] = {
                "threshold": value,
                "match_confidence": None if named is None else 1.0 - named,
                "known_named": stored[name].get("known_named"),
                "strangers_named": named,
                "lookalikes_named": stored[name].get("lookalikes_named"),
                "strangers_measured": len(strangers),
                "known_elsewhere_named": stored[name].get("known_elsewhere_named"),
                "known_elsewhere_wrong": stored[name].get("known_elsewhere_wrong"),
            }
        return found
    threshold = float(calibration["threshold"])
    scores = np.asarray(calibration.get("val_scores") or [], dtype=np.float64)
    strangers = np.asarray(calibration.get("stranger_scores") or [], dtype=np.float64)
    found = {}
    for name, accept in PRESETS.items():
        if accept is None:
            value = threshold
        elif len(scores):
            value = float(np.quantile(scores, accept, method="higher"))
        else:
            continue
        known = _share(scores, scores <= value)
        named = _named(strangers, strangers <= value)
        found[name] = {
            "threshold": value,
            "similarity": similarity(value),
            "match_confidence": None if named is None else 1.0 - named,
            "known_named": known if known is not None else calibration.get("target_accept"),
            "strangers_named": named,
            "strangers_measured": len(strangers),
        }
    return found


@dataclass(frozen=True)
class ThresholdScale:
    """A trained run's thresholds as people read them: ``shown`` gives the share a score on the
    run's own scale (a distance) stands for, ``score`` the way back. The match confidence (how
    rarely strangers come that close), or, for a run calibrated before stranger scores were
    kept, the similarity."""

    name: str
    shown: Callable[[np.ndarray | float], np.ndarray | float]
    score: Callable[[float], float]


def stranger_confidence(calibration: dict) -> Confidence | None:
    """A trained run's match confidence, on closeness (its scores negated: they are distances),
    from the stranger scores its ``calibration.json`` keeps; ``None`` for a run trained before
    they were kept."""
    strangers = calibration.get("stranger_scores")
    return Confidence(np.sort(-np.asarray(strangers, np.float64))) if strangers else None


def threshold_scale(calibration: dict) -> ThresholdScale:
    """The scale of a trained run's ``calibration.json``."""
    confidence = stranger_confidence(calibration)
    if confidence is None:
        return ThresholdScale("similarity", similarity, score_for)
    return ThresholdScale(
        "match confidence",
        lambda scores: confidence(np.negative(scores)),
        lambda share: -confidence.at_least(share),
    )
