"""The few numpy operations on embeddings that every part uses, written once (numpy only).

Embeddings are compared as unit-length rows: cosine similarity is then a dot product, and the
Euclidean (chord) distance between two unit rows is ``sqrt(2 - 2·cos)``.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows, so distances compare directions, not magnitudes."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    return np.clip(l2_normalize(a) @ l2_normalize(b).T, -1.0, 1.0)


def chord_distance(similarity: np.ndarray | float) -> np.ndarray:
    """Euclidean distance between unit rows whose cosine similarity is ``similarity``."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(similarity), 0.0, 4.0))

