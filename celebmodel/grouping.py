"""Faces nobody knows, grouped by person, at archive scale.

Neighbours first: each face's ``NEIGHBOURS`` nearest faces (exact up to ``EXACT_UP_TO`` faces,
beyond that an inverted-file index of faiss), so time and memory grow with the faces times
``NEIGHBOURS``, not with their square. Then average linkage on that graph: every round, each
group finds its closest neighbouring group (the mean squared distance between their faces,
exact, from the groups' embedding sums) and pairs that choose each other merge; a pair whose
distance is over the cut stops growing. On all of LFW as strangers this groups at BCubed F
0.94 in seconds; average linkage over every pair of faces reached 0.93 at the best single cut
in 20 s and 1.5 GB, HDBSCAN 0.91, single linkage 0.90 (``bench/grouping_scale.py``).

The cut comes from the model's own gallery, never from the faces being grouped: two single
faces join only within the ``PAIR_QUANTILE`` of the distances between the gallery's
same-person faces, and the cut loosens towards its ``GROUP_QUANTILE`` as the groups grow
(the mean of many distances is surer than one). In a large crowd two strangers are often as
close as two photos of one person, so one close pair is weak evidence; many are not.
A face alone stays ungrouped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .open_set import l2_normalize

# Of the gallery's same-person pairwise distances (LFW-8's gallery: 0.325 and 0.372). Chosen by
# bench/grouping_scale.py on all of LFW and on its 96 people with 10-19 photos.
PAIR_QUANTILE = 0.60
GROUP_QUANTILE = 0.90
NEIGHBOURS = 10  # k of the k-nearest-neighbour graph (30 grouped LFW no better, 3x slower)
EXACT_UP_TO = 20_000  # faces searched exactly; above, faiss's inverted file (IVF)
PROBES = 16  # IVF cells searched per face: 97% of the true 10 neighbours at 100,000 faces
UNGROUPED = 0  # group number of a face left on its own
_CHUNK = 65_536  # edges whose linkage is computed at once (bounds the gathered sums)


@dataclass(frozen=True)
class Cuts:
    """How far apart two groups may be to merge: ``pair`` for two single faces, tending to
    ``group`` as they grow (``group - (group - pair) / (n_a * n_b)``)."""

    pair: float
    group: float

    def at(self, n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
        return self.group - (self.group - self.pair) / (np.asarray(n_a) * np.asarray(n_b))


def group_cuts(gallery: np.ndarray, labels: np.ndarray) -> Cuts:
    """The cuts for this model: quantiles of the distances between gallery faces that share
    a label (how far apart two photos of one person usually are for this network)."""
    gallery = l2_normalize(np.asarray(gallery, dtype=np.float32))
    labels = np.asarray(labels)
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
    pair, group = np.quantile(np.concatenate(distances), [PAIR_QUANTILE, GROUP_QUANTILE])
    return Cuts(float(pair), float(group))


def _as_cuts(cuts: Cuts | float) -> Cuts:
    return cuts if isinstance(cuts, Cuts) else Cuts(float(cuts), float(cuts))


def neighbour_edges(
    embeddings: np.ndarray, max_distance: float, k: int = NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each face's ``k`` nearest other faces within ``max_distance``: (faces, neighbours,
    distances), one entry per edge. Exact up to :data:`EXACT_UP_TO` faces; above, faiss's
    IVF index with :data:`PROBES` cells per face (memory: the embeddings and the edges)."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = x.shape
    k = min(k, n - 1)
    empty = np.zeros(0, np.int64)
    if k < 1:
        return empty, empty, np.zeros(0, np.float32)
    if n <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        cells = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, cells * 40), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = PROBES
    index.add(x)
    similarity, found = index.search(x, k + 1)  # the face itself is among them
    rows = np.repeat(np.arange(n, dtype=np.int64), k + 1)
    found = found.ravel().astype(np.int64)
    distance = np.sqrt(np.clip(2.0 - 2.0 * similarity.ravel(), 0.0, 4.0))
    keep = (found >= 0) & (found != rows) & (distance <= max_distance)
    return rows[keep], found[keep], distance[keep].astype(np.float32)


def _linkage(sums: np.ndarray, sizes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root mean squared distance between the faces of groups ``a`` and ``b`` (unit-length
    faces: ``2 - 2 mean_a . mean_b``), computed in chunks so memory stays bounded."""
    out = np.empty(len(a), np.float64)
    for start in range(0, len(a), _CHUNK):
        i, j = a[start : start + _CHUNK], b[start : start + _CHUNK]
        dot = np.einsum("ij,ij->i", sums[i], sums[j], dtype=np.float64)
        out[start : start + _CHUNK] = dot / (sizes[i] * sizes[j])
    return np.sqrt(np.clip(2.0 - 2.0 * out, 0.0, 4.0))


def cluster_faces(embeddings: np.ndarray, cuts: Cuts | float) -> np.ndarray:
    """A cluster id for every face (any integer; equal ids, same person) by average linkage on
    the neighbour graph. Level by level: the faces' graph first, then a graph of the groups it
    left (their mean faces), until a level merges nothing; so a group whose neighbours were all
    its own near-duplicates still meets the rest, and no face holds more than ``NEIGHBOURS``."""
    cuts = _as_cuts(cuts)
    x = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    n = len(x)
    owner = np.arange(n)
    sums, sizes = x.copy(), np.ones(n)
    alive = owner
    while len(alive) > 1:
        a, b, _ = neighbour_edges(l2_normalize(sums[alive]), max(cuts.pair, cuts.group))
        relabel = _merge_rounds(alive[a], alive[b], sums, sizes, cuts)
        if relabel is None:
            break
        owner = relabel[owner]
        alive = np.unique(owner)
    return owner


def _merge_rounds(
    a: np.ndarray, b: np.ndarray, sums: np.ndarray, sizes: np.ndarray, cuts: Cuts
) -> np.ndarray | None:
    """Reciprocal-closest merges on the edges ``a``-``b`` until none is left (``sums`` and
    ``sizes`` updated in place): where each group went, or ``None`` if nothing merged."""
    n = len(sums)
    frozen = np.zeros(n, bool)
    moved = np.arange(n)
    merged = False
    while len(a):
        keep = (a != b) & ~frozen[a] & ~frozen[b]
        low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
        pairs = np.unique(low * n + high)
        a, b = pairs // n, pairs % n
        if not len(a):
            break
        value = _linkage(sums, sizes, a, b)
        ends, others = np.concatenate([a, b]), np.concatenate([b, a])
        values = np.concatenate([value, value])
        order = np.lexsort((others, values, ends))
        first = order[np.r_[True, ends[order][1:] != ends[order][:-1]]]
        best = np.full(n, -1)
        best_value = np.full(n, np.inf)
        best[ends[first]] = others[first]
        best_value[ends[first]] = values[first]
        chosen = np.flatnonzero(best >= 0)
        p = chosen[(best[best[chosen]] == chosen) & (chosen < best[chosen])]
        q = best[p]
        over = best_value[p] > cuts.at(sizes[p], sizes[q])
        frozen[p[over]] = frozen[q[over]] = True  # closest neighbour too far: done growing
        p, q = p[~over], q[~over]
        merged |= bool(len(p))
        sums[p] += sums[q]
        sizes[p] += sizes[q]
        relabel = np.arange(n)
        relabel[q] = p
        moved, a, b = relabel[moved], relabel[a], relabel[b]
    return moved if merged else None


def number_groups(clusters: np.ndarray) -> np.ndarray:
    """Clusters renumbered 1, 2, ... (largest first, ties by first face), :data:`UNGROUPED`
    for a face alone in its cluster."""
    groups = np.full(len(clusters), UNGROUPED, dtype=int)
    if not len(clusters):
        return groups
    ids, first, inverse, sizes = np.unique(
        clusters, return_index=True, return_inverse=True, return_counts=True
    )
    ranked = [c for c in np.lexsort((first, -sizes)) if sizes[c] > 1]
    number = np.zeros(len(ids), dtype=int)
    number[ranked] = np.arange(1, len(ranked) + 1)
    groups[:] = number[inverse]
    return groups


def group_faces(embeddings: np.ndarray, cuts: Cuts | float) -> np.ndarray:
    """A group number for every face (1 = the largest group), :data:`UNGROUPED` for a face
    that matches no other. ``cuts`` from :func:`group_cuts` (a float: one cut at every size)."""
    return number_groups(cluster_faces(embeddings, cuts))


def join_groups(
    embeddings: np.ndarray, sums: np.ndarray, sizes: np.ndarray, cuts: Cuts | float
) -> np.ndarray:
    """For each new face, the index of the existing group it joins (-1: none): its closest
    group by the same linkage, if within the cut for a face and a group of that size.
    ``sums`` are the groups' embedding sums, ``sizes`` their face counts."""
    cuts = _as_cuts(cuts)
    x = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    joined = np.full(len(x), -1)
    if not len(x) or not len(sums):
        return joined
    means = (np.asarray(sums, np.float64) / np.asarray(sizes, np.float64)[:, None]).astype(
        np.float32
    )
    for start in range(0, len(x), 4096):
        similarity = x[start : start + 4096] @ means.T
        closest = similarity.argmax(axis=1)
        value = np.sqrt(np.clip(2.0 - 2.0 * similarity.max(axis=1), 0.0, 4.0))
        ok = value <= cuts.at(1, np.asarray(sizes)[closest])
        joined[start : start + 4096] = np.where(ok, closest, -1)
    return joined
