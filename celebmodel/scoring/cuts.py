"""How far apart two faces (or two groups of faces) of one person usually are for a model: the
cuts that album grouping uses, learnt from the model's own gallery, never from the faces being
grouped (see :mod:`celebmodel.albums.grouping` for how they are used).

A training records its gallery's :func:`distance_profile` (mirror-averaged faces) in
``calibration.json`` under :data:`MIRRORED`; :func:`profile_cuts` reads the cuts off it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vectors import chord_distance, l2_normalize

# Of the gallery's same-person pairwise distances (LFW-8's gallery, mirror-averaged faces:
# 0.311, 0.352 and 0.407).
PAIR_QUANTILE = 0.60
GROUP_QUANTILE = 0.88
LOOSE_QUANTILE = 0.99
PROFILE = np.linspace(0, 100, 101)  # the percentiles of a gallery's distances a run records
MIRRORED = "mirrored_distances"  # where in calibration.json: its gallery, mirror-averaged
PER_PERSON = 1_000  # gallery faces of one person measured (evenly spaced): memory stays small

@dataclass(frozen=True)
class Cuts:
    """How far apart two groups may be to merge: ``pair`` for two single faces, tending to
    ``group`` as they grow (``group - (group - pair) / (n_a * n_b)``); with no rival near,
    tending to ``loose`` instead."""

    pair: float
    group: float
    loose: float

    def at(self, n_a: np.ndarray, n_b: np.ndarray, loose: bool = False) -> np.ndarray:
        far = self.loose if loose else self.group
        return far - (far - self.pair) / (np.asarray(n_a) * np.asarray(n_b))

    def values(self) -> list[float]:
        """``pair``, ``group`` and ``loose``, as a groups file keeps them."""
        return [self.pair, self.group, self.loose]


def distance_profile(gallery: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The percentiles (:data:`PROFILE`) of the distances between gallery faces that share a
    label: how far apart two photos of one person usually are for this network."""
    gallery = l2_normalize(np.asarray(gallery, dtype=np.float32))
    labels = np.asarray(labels)
    distances = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        if len(members) > PER_PERSON:
            members = members[np.linspace(0, len(members) - 1, PER_PERSON).astype(int)]
        faces = gallery[members]
        gram = faces @ faces.T
        upper = np.triu_indices(len(faces), k=1)
        distances.append(chord_distance(gram[upper]))
    if not distances:
        raise ValueError("no person with two gallery faces to learn a grouping distance from")
    return np.percentile(np.concatenate(distances), PROFILE)


def profile_cuts(profile: np.ndarray | list[float]) -> Cuts:
    """The cuts from a gallery's :func:`distance_profile` (as a run records it)."""
    profile = np.asarray(profile, dtype=np.float64)
    if (
        profile.shape != PROFILE.shape
        or not np.isfinite(profile).all()
        or (np.diff(profile) < 0).any()
    ):
        raise ValueError(f"not a distance profile of {len(PROFILE)} rising percentiles")
    quantiles = [PAIR_QUANTILE, GROUP_QUANTILE, LOOSE_QUANTILE]
    return Cuts(*(float(v) for v in np.interp(np.multiply(quantiles, 100), PROFILE, profile)))


def group_cuts(gallery: np.ndarray, labels: np.ndarray) -> Cuts:
    """The cuts for this model: quantiles of the distances between gallery faces that share
    a label."""
    return profile_cuts(distance_profile(gallery, labels))
