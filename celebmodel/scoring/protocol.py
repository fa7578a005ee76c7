"""The open-set identification protocol the built-in model is measured with (after BLUFR,
Liao et al. 2014), on any set of face embeddings with person labels.

Per trial (seeds 0-9 by default): :data:`LEARN_PEOPLE` random people are kept for anything
learned (the decision and its calibration) and never tested; of the others,
:data:`GALLERY_PEOPLE` of those with at least two photos form the gallery (one random photo
each), their other photos are genuine probes, and every photo of the remaining people is an
impostor probe. Reported: rank-1 (genuine probes whose best gallery person is right), DIR at
FAR 1% and 0.1% (right AND scoring above the threshold that accepts that share of
impostors), and verification TAR at FAR 0.1% (all pairs of the tested people's photos); each
as mean, sd and mean - sd over the trials.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import CelebmodelError
from ..vectors import l2_normalize
from .matching import Matcher, fit_decision, simulate

DESCRIPTION = (
    "10 trials (seeds 0-9): 1,500 random people kept for learning and never tested; 1,000 of "
    "the other people with 2+ photos as the gallery (one random photo each), their other "
    "photos genuine probes; every photo of the remaining people an impostor probe"
)
LEARN_PEOPLE = 1500
GALLERY_PEOPLE = 1000
FARS = (0.01, 0.001)
VERIFY_FAR = 0.001
METRICS = ("rank1", "dir_far_1", "dir_far_0.1", "tar_far_0.1")


@dataclass(frozen=True)
class Trial:
    """One trial's photos, as indices into the embeddings."""

    learn: np.ndarray
    gallery: np.ndarray
    genuine: np.ndarray
    impostor: np.ndarray
    tested: np.ndarray


def make_trial(labels: np.ndarray, seed: int, learn_people: int = LEARN_PEOPLE,
               gallery_people: int = GALLERY_PEOPLE) -> Trial:
    """The protocol's split of people and photos for one seed."""
    labels = np.asarray(labels)
    people = np.unique(labels)
    counts = {p: c for p, c in zip(*np.unique(labels, return_counts=True), strict=True)}
    rng = np.random.default_rng(seed)
    learn = rng.choice(people, min(learn_people, len(people) - 2), replace=False)
    rest = np.setdiff1d(people, learn)
    several = np.array([p for p in rest if counts[p] >= 2])
    chosen = rng.choice(several, min(gallery_people, len(several)), replace=False)
    if len(chosen) < 2 or len(chosen) >= len(rest):
        raise CelebmodelError(
            f"protocol: {len(people)} people are too few (it needs tested people with two "
            "photos for the gallery and others as impostors)"
        )
    gallery, genuine = [], []
    for person in chosen:
        photos = np.flatnonzero(labels == person)
        pick = rng.choice(photos)
        gallery.append(pick)
        genuine.extend(int(i) for i in photos if i != pick)
    in_learn = np.isin(labels, learn)
    impostor = np.flatnonzero(~in_learn & ~np.isin(labels, chosen))
    return Trial(
        learn=np.flatnonzero(in_learn),
        gallery=np.array(gallery, np.int64),
        genuine=np.array(genuine, np.int64),
        impostor=impostor,
        tested=np.flatnonzero(~in_learn),
    )


Scorer = Callable[[np.ndarray, np.ndarray, Trial], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""(embeddings, labels, trial) -> (best person of each genuine probe, its score, the best
score of each impostor probe); higher scores mean more likely a match."""


def nearest_face(embeddings: np.ndarray, labels: np.ndarray, trial: Trial):
    """Plain cosine similarity to the nearest gallery photo (the scoring before issue 18)."""
    faces = l2_normalize(embeddings)
    gallery = faces[trial.gallery]
    genuine = faces[trial.genuine] @ gallery.T
    impostor = faces[trial.impostor] @ gallery.T
    return labels[trial.gallery][genuine.argmax(1)], genuine.max(1), impostor.max(1)


def normalised_decision(embeddings: np.ndarray, labels: np.ndarray, trial: Trial):
    """What gallery models use (:mod:`celebmodel.scoring.matching`): AS-norm against the learning
    people as cohort, the logistic decision fitted on identifications simulated among them."""
    faces = l2_normalize(embeddings)
    learner = Matcher().fit(faces[trial.learn], labels[trial.learn])
    seen = simulate(learner, np.random.default_rng(trial.gallery[:4].sum()))
    decision = fit_decision(
        np.r_[seen["genuine"], seen["stranger"]],
        np.r_[seen["genuine_correct"], seen["stranger_correct"]],
    )
    matcher = Matcher().fit(faces[trial.gallery], labels[trial.gallery],
                            cohort=faces[trial.learn], cohort_labels=labels[trial.learn])
    genuine = matcher.candidates(faces[trial.genuine], k=2)
    impostor = matcher.candidates(faces[trial.impostor], k=2)
    return (genuine.people[:, 0], decision(genuine.features()),
            decision(impostor.features()))


def identification(best: np.ndarray, truth: np.ndarray, genuine: np.ndarray,
                   impostor: np.ndarray, fars: Iterable[float] = FARS) -> dict[str, float]:
    """Rank-1 and DIR at each FAR from one trial's scores."""
    right = best == truth
    found = {"rank1": float(right.mean())}
    for far in fars:
        threshold = np.quantile(impostor, 1.0 - far)
        found[f"dir_far_{far * 100:g}"] = float(np.mean(right & (genuine > threshold)))
    return found


def verification(faces: np.ndarray, labels: np.ndarray, far: float = VERIFY_FAR,
                 block: int = 2048) -> float:
    """TAR at ``far`` over every pair of ``faces`` (cosine similarity), counted in blocks so
    ten thousand photos never need their whole similarity matrix at once."""
    faces = l2_normalize(faces)
    same, other = [], []
    for start in range(0, len(faces), block):
        rows = slice(start, start + block)
        scores = faces[rows] @ faces.T
        index = np.arange(start, min(start + block, len(faces)))
        upper = np.arange(len(faces))[None, :] > index[:, None]
        match = labels[rows][:, None] == labels[None, :]
        same.append(scores[upper & match])
        other.append(scores[upper & ~match])
    impostor = np.concatenate(other)
    threshold = np.quantile(impostor, 1.0 - far)
    return float(np.mean(np.concatenate(same) > threshold))


def run_protocol(embeddings: np.ndarray, labels: np.ndarray, scorer: Scorer = normalised_decision,
                 seeds: Iterable[int] = range(10), learn_people: int = LEARN_PEOPLE,
                 gallery_people: int = GALLERY_PEOPLE) -> dict[str, dict[str, float]]:
    """Every metric of :data:`METRICS` as ``{"mean", "sd", "mean_minus_sd", "trials"}``."""
    labels = np.asarray(labels)
    trials: dict[str, list[float]] = {name: [] for name in METRICS}
    for seed in seeds:
        trial = make_trial(labels, seed, learn_people, gallery_people)
        best, genuine, impostor = scorer(embeddings, labels, trial)
        for name, value in identification(best, labels[trial.genuine], genuine,
                                          impostor).items():
            trials[name].append(value)
        trials["tar_far_0.1"].append(
            verification(embeddings[trial.tested], labels[trial.tested])
        )
    return {name: summary(values) for name, values in trials.items()}


def summary(values: list[float]) -> dict[str, float | list[float]]:
    mean, sd = float(np.mean(values)), float(np.std(values))
    return {"mean": mean, "sd": sd, "mean_minus_sd": mean - sd, "trials": list(values)}
