"""Faces nobody knows, grouped by person: average-linkage clustering of their embeddings.

The distance that cuts the clustering comes from the model's own training faces (how far
apart two faces of one person usually are in its gallery), never from the photos being
grouped. A face alone in its cluster stays ungrouped.
"""

from __future__ import annotations

import numpy as np

from .open_set import l2_normalize

# Of the gallery's same-person pairwise distances. 0.90 split people too often; 0.95 grouped
# best both ways round on LFW (bench/grouping.py, with --known and --strangers swapped).
SAME_PERSON_QUANTILE = 0.95
UNGROUPED = 0  # group number of a face left on its own


def group_distance(gallery: np.ndarray, labels: np.ndarray) -> float:
    """How far apart two faces of one person may be: a high quantile of the distances
    between faces the model trained on that share a label."""
    gallery = l2_normalize(gallery)
    distances = []
    for label in np.unique(labels):
        members = gallery[labels == label]
        if len(members) < 2:
            continue
        gram = members @ members.T
        upper = np.triu_indices(len(members), k=1)
        distances.append(np.sqrt(np.clip(2.0 - 2.0 * gram[upper], 0.0, 4.0)))
    if not distances:
        raise ValueError("no person with two gallery faces to learn a grouping distance from")
    return float(np.quantile(np.concatenate(distances), SAME_PERSON_QUANTILE))


def group_faces(embeddings: np.ndarray, distance: float) -> np.ndarray:
    """A group number for every face (1 = the largest group), :data:`UNGROUPED` for a face
    that matches no other within ``distance`` (average linkage on unit-length embeddings)."""
    from sklearn.cluster import AgglomerativeClustering

    groups = np.full(len(embeddings), UNGROUPED, dtype=int)
    if len(embeddings) < 2:
        return groups
    clusters = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance, linkage="average", metric="euclidean"
    ).fit_predict(l2_normalize(embeddings))
    ids, sizes = np.unique(clusters, return_counts=True)
    first = {cluster: int(np.argmax(clusters == cluster)) for cluster in ids}
    ranked = sorted(
        (c for c, n in zip(ids, sizes, strict=True) if n > 1),
        key=lambda c: (-int(sizes[ids == c][0]), first[c]),
    )
    for number, cluster in enumerate(ranked, start=1):
        groups[clusters == cluster] = number
    return groups
