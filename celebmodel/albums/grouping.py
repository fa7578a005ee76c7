"""Faces nobody knows, grouped by person, at archive scale.

Neighbours first: each face's ``NEIGHBOURS`` nearest faces (exact up to ``EXACT_UP_TO`` faces,
beyond that an inverted-file index of faiss), so time and memory grow with the faces times
``NEIGHBOURS``, not with their square. Then average linkage on that graph: every round, groups
that are each other's closest among the merges the cut allows (the mean squared distance
between their faces, exact, from the groups' embedding sums) merge.

The cut comes from the model's own gallery, never from the faces being grouped: two single
faces join only within the ``PAIR_QUANTILE`` of the distances between the gallery's
same-person faces, and the cut loosens towards its ``GROUP_QUANTILE`` as the groups grow (the
mean of many distances is surer than one). In a crowd of thousands, two strangers are often as
close as two photos of one person, so one close pair is weak evidence; many are not. Then a
second pass loosens it further, towards the ``LOOSE_QUANTILE``, but only for a merge with no
rival: every other group of two or more faces near either side must be farther by
``1 / MARGIN``. Whether a person's odd photo belongs to its nearest group depends on how
crowded the faces are (among 96 people it almost always does, among 5,748 it often does not);
the margin asks the faces that, and the gallery still sets every distance. A face alone stays
ungrouped.

Chosen by ``bench/grouping_scale.py`` on all of LFW as strangers (13,232 faces, 5,748 people)
and on its 96 people with 10 to 19 photos, faces averaged with their mirror images: BCubed F
0.952 and 0.977 (as the network gives them, 0.944 and 0.966). Without the second pass the two
pulled the cut in opposite directions (0.948 and 0.938); the loose cut without the margin
merged strangers (0.869 on LFW); average linkage over every pair of faces reached 0.937 on LFW
at its best single cut, in seconds and 1.5 GB; HDBSCAN on the graph 0.919, single linkage
0.920.
"""

from __future__ import annotations

import numpy as np

from ..scoring.cuts import Cuts
from ..vectors import chord_distance, l2_normalize

MARGIN = 0.90  # past the group cut, a merge's rivals must be 1/0.9 times as far
RIVAL_FACES = 2  # a single face is no rival: it may be an odd photo of the same person
NEIGHBOURS = 10  # k of the k-nearest-neighbour graph (30 grouped LFW no better, 3x slower)
EXACT_UP_TO = 20_000  # faces searched exactly; above, faiss's inverted file (IVF)
PROBES = 16  # IVF cells searched per face: 97% of the true 10 neighbours at 100,000 faces
UNGROUPED = 0  # group number of a face left on its own
_CHUNK = 65_536  # edges whose linkage is computed at once (bounds the gathered sums)


def _as_cuts(cuts: Cuts | float) -> Cuts:
    return cuts if isinstance(cuts, Cuts) else Cuts(float(cuts), float(cuts), float(cuts))


def neighbour_edges(
    embeddings: np.ndarray,
    max_distance: float,
    k: int = NEIGHBOURS,
    queries: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each face's ``k`` nearest other faces within ``max_distance`` (of the faces
    ``queries`` only, if given): (faces, neighbours, distances), one entry per edge. Exact up
    to :data:`EXACT_UP_TO` faces; above, faiss's IVF index with :data:`PROBES` cells per face
    (memory: the embeddings and the edges)."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = x.shape
    k = min(k, n - 1)
    rows = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, np.int64)
    empty = np.zeros(0, np.int64)
    if k < 1 or not len(rows):
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
    similarity, found = index.search(x[rows], k + 1)  # the face itself is among them
    rows = np.repeat(rows, k + 1)
    found = found.ravel().astype(np.int64)
    distance = chord_distance(similarity.ravel())
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
    return chord_distance(out)


def cluster_faces(embeddings: np.ndarray, cuts: Cuts | float) -> np.ndarray:
    """A cluster id for every face (any integer; equal ids, same person) by average linkage on
    the neighbour graph: within the group cut first, then within the loose cut where no rival
    is near. Level by level: the faces' graph first; after a level, the groups that grew look
    for their nearest groups again (by their mean faces), until a level merges nothing; so a
    group whose neighbours were all its own near-duplicates still meets the rest, and no face
    holds more than ``NEIGHBOURS``."""
    cuts = _as_cuts(cuts)
    x = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    owner = np.arange(len(x))
    sums, sizes = x.copy(), np.ones(len(x))
    reach = max(cuts.pair, cuts.group, cuts.loose / MARGIN)  # the farthest rival that matters
    a, b, _ = neighbour_edges(x, reach)
    for loose in (False, True) if cuts.loose > cuts.group else (False,):
        while True:
            relabel, a, b = _merge_rounds(a, b, sums, sizes, cuts, loose)
            grown = np.unique(relabel[relabel != np.arange(len(relabel))])
            if not len(grown):
                break
            owner = relabel[owner]
            alive = np.unique(owner)
            found, near, _ = neighbour_edges(
                l2_normalize(sums[alive]), reach, queries=np.searchsorted(alive, grown)
            )
            a, b = np.r_[a, alive[found]], np.r_[b, alive[near]]
    return owner


def _unique_edges(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The edges ``a``-``b`` (of ``n`` groups) once each, low end first, none to itself."""
    keep = a != b
    key = np.unique(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
    return key // n, key % n


def _closest(ends: np.ndarray, others: np.ndarray, values: np.ndarray, n: int):
    """Per group (of ``n``), over the edges ``ends``-``others`` of linkage ``values``: its
    closest other group (-1: none) and that linkage (ties: the lower group)."""
    closest, first = np.full(n, -1), np.full(n, np.inf)
    if len(ends):
        order = np.lexsort((others, values, ends))
        lead = order[np.r_[True, ends[order][1:] != ends[order][:-1]]]
        closest[ends[lead]] = others[lead]
        first[ends[lead]] = values[lead]
    return closest, first


def _nearest_rival(a, b, value, sizes, p, q):
    """For each pair ``p``-``q`` about to merge, the linkage of the closest other group of
    :data:`RIVAL_FACES` or more faces to either of them, over the edges ``a``-``b``."""
    n = len(sizes)
    partner = np.full(n, -1)
    partner[p], partner[q] = q, p
    near = np.flatnonzero((partner[a] >= 0) | (partner[b] >= 0))
    ends, others = np.r_[a[near], b[near]], np.r_[b[near], a[near]]
    keep = (partner[ends] >= 0) & (others != partner[ends]) & (sizes[others] >= RIVAL_FACES)
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, ends[keep], np.r_[value[near], value[near]][keep])
    return np.minimum(nearest[p], nearest[q])


def _merge_rounds(
    a: np.ndarray, b: np.ndarray, sums: np.ndarray, sizes: np.ndarray, cuts: Cuts, loose: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merges on the edges ``a``-``b`` until none is left (``sums`` and ``sizes`` updated in
    place): each round, groups that are each other's closest among the edges within the cut
    merge; in the ``loose`` pass only if no rival is near, else that edge is set aside. Only
    the edges of groups that merged are measured again. Where each group went, and the edges
    left between groups."""
    n = len(sums)
    moved = np.arange(n)
    a, b = _unique_edges(a, b, n)
    value = _linkage(sums, sizes, a, b)
    limit = cuts.at(sizes[a], sizes[b], loose)
    refused = np.zeros(len(a), bool)  # a merge with a rival near (until either side changes)
    while True:
        allowed = np.flatnonzero((value <= limit) & ~refused)
        if not len(allowed):
            break
        i, j, v = a[allowed], b[allowed], value[allowed]
        best, best_value = _closest(np.r_[i, j], np.r_[j, i], np.r_[v, v], n)
        chosen = np.flatnonzero(best >= 0)
        p = chosen[(best[best[chosen]] == chosen) & (chosen < best[chosen])]
        q = best[p]
        if loose:
            ok = best_value[p] <= MARGIN * _nearest_rival(a, b, value, sizes, p, q)
            refused[allowed[np.isin(i * n + j, p[~ok] * n + q[~ok])]] = True
            p, q = p[ok], q[ok]
            if not len(p):
                continue
        sums[p] += sums[q]
        sizes[p] += sizes[q]
        relabel = np.arange(n)
        relabel[q] = p
        moved = relabel[moved]
        hit = np.zeros(n, bool)
        hit[p] = True
        touched = hit[relabel[a]] | hit[relabel[b]]
        new_a, new_b = _unique_edges(relabel[a[touched]], relabel[b[touched]], n)
        a, b = np.r_[a[~touched], new_a], np.r_[b[~touched], new_b]
        value = np.r_[value[~touched], _linkage(sums, sizes, new_a, new_b)]
        limit = np.r_[limit[~touched], cuts.at(sizes[new_a], sizes[new_b], loose)]
        refused = np.r_[refused[~touched], np.zeros(len(new_a), bool)]
    return moved, a, b


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
    group by the same linkage, if within the cut for a face and a group of that size, or
    within the loose cut with no rival near (as :func:`cluster_faces` merges). ``sums`` are
    the groups' embedding sums, ``sizes`` their face counts."""
    cuts = _as_cuts(cuts)
    x = l2_normalize(np.asarray(embeddings, dtype=np.float32))
    joined = np.full(len(x), -1)
    if not len(x) or not len(sums):
        return joined
    sizes = np.asarray(sizes, np.float64)
    means = (np.asarray(sums, np.float64) / sizes[:, None]).astype(np.float32)
    no_rival = sizes < RIVAL_FACES
    for start in range(0, len(x), 4096):
        value = chord_distance(x[start : start + 4096] @ means.T)
        rows = np.arange(len(value))
        closest = value.argmin(axis=1)
        first = value[rows, closest]
        value[rows, closest] = np.inf
        value[:, no_rival] = np.inf
        alone = first <= MARGIN * value.min(axis=1)
        ok = (first <= cuts.at(1, sizes[closest])) | (
            alone & (first <= cuts.at(1, sizes[closest], loose=True))
        )
        joined[start : start + 4096] = np.where(ok, closest, -1)
    return joined
