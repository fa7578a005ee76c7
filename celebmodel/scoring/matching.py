"""Who in a gallery of faces a new face is, and how sure: the open-set scoring of gallery
models (the built-in public-figures model and copies of it).

Plain nearest-face cosine similarity breaks down with thousands of people: some faces (and
whole groups of similar-looking people) are close to everyone, so a stranger's best match
scores as high as a known person's. Measured on all of LFW with the protocol of
:mod:`celebmodel.scoring.protocol` (bench/public_figures.py), each step below earned its place:

1. **Flip-averaged embeddings** (the face and its mirror image): rank-1 0.926 → 0.941, DIR at
   FAR 1% 0.553 → 0.607, verification TAR at FAR 0.1% 0.944 → 0.962.
2. **Score normalisation against a cohort** (adaptive symmetric normalisation, AS-norm): a
   similarity is judged against the top :data:`COHORT_TOP` similarities of the face and of
   the gallery face to other people, ``z = ((s - mu_probe) / sd_probe + (s - mu_gallery) /
   sd_gallery) / 2``. DIR at FAR 1% 0.607 → 0.718. The cohort is the gallery itself (another
   person's faces are what a face must stand out from); a person's own faces never count.
3. **A learned decision**: logistic regression on ``[z1, z1 - z2, s1, s1 - s2]`` (the best
   person's normalised and raw similarity, and their margins over the runner-up), fitted on
   simulated identifications of people kept apart for learning: DIR at FAR 1% 0.718 → 0.745.
4. **Calibrated confidence**: the decision value is reported as how rarely strangers reach it
   (``1 - FAR``), measured by leaving each person out of the gallery in turn.

Tried and dropped (same bench): linear projections learned on the held-out people (WCCN,
LDA, centring, removing principal directions) all lowered DIR (0.55 → 0.20-0.63); more
test-time views (zoom, rotation, shifts) added nothing over the flip; gradient boosting
instead of logistic regression was worse (0.69).

numpy only: identifying a face never imports scikit-learn (fitting the decision does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import RunError
from ..vectors import l2_normalize

COHORT_TOP = 100  # similarities to other people each score is normalised against
FEATURES = ("z1", "z1 - z2", "s1", "s1 - s2")
CANDIDATES = 8  # people re-ranked by normalised score (the rest by raw similarity)
BLOCK = 512  # probe faces per block: bounds the memory of a similarity matrix
NONE = -1  # "no face / no person excluded"



class _Shortlist:
    """Each row's highest values with their columns, best first, so the statistics of many
    candidates cost one partial sort per row, not one per candidate. ``spare`` extra values
    are kept for the ones a candidate's person takes out; a row where they run short (a
    person with very many close faces) is recomputed from its whole row (``whole(rows)``),
    so the result is always exact."""

    def __init__(
        self,
        similarities: np.ndarray,
        labels: np.ndarray,
        top: int,
        spare: int = 64,
        whole: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.width, self.all_labels, self.top = similarities.shape[1], labels, top
        self.whole = whole or (lambda rows: similarities[rows])
        keep = min(self.width, top + spare)
        columns = np.argpartition(-similarities, keep - 1, axis=1)[:, :keep]
        values = np.take_along_axis(similarities, columns, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        self.values = np.take_along_axis(values, order, axis=1)
        self.columns = np.take_along_axis(columns, order, axis=1)
        self.labels = labels[self.columns]

    @classmethod
    def of_blocks(cls, parts: list[_Shortlist], whole: Callable) -> _Shortlist:
        """One shortlist of the rows of ``parts``, in order."""
        joined = cls.__new__(cls)
        first = parts[0]
        joined.width, joined.all_labels, joined.top = first.width, first.all_labels, first.top
        joined.whole = whole
        for name in ("values", "columns", "labels"):
            setattr(joined, name, np.concatenate([getattr(p, name) for p in parts]))
        return joined

    def stats(
        self,
        without: np.ndarray,
        also_without: np.ndarray | None = None,
        face: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of the best ``top`` values of ``rows`` (default: all) leaving out
        the columns of person ``without`` (and ``also_without``, and column ``face``)."""
        rows = np.arange(len(self.values)) if rows is None else np.asarray(rows)
        labels, values = self.labels[rows], self.values[rows]
        valid = labels != np.asarray(without)[:, None]
        if also_without is not None:
            valid &= labels != np.asarray(also_without)[:, None]
        if face is not None:
            valid &= self.columns[rows] != np.asarray(face)[:, None]
        valid &= np.isfinite(values)
        chosen = valid & (np.cumsum(valid, axis=1) <= self.top)
        count = chosen.sum(axis=1)
        mean = np.where(chosen, values, 0.0).sum(axis=1) / np.maximum(count, 1)
        spread = np.sqrt(
            np.where(chosen, (values - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(count, 1)
        )
        short = np.flatnonzero((count < self.top) & (values.shape[1] < self.width))
        if len(short):  # too few kept: these rows from their whole similarities
            exact = _Shortlist(self.whole(rows[short]), self.all_labels, self.top, self.width)
            mean[short], spread[short] = exact.stats(
                *(None if a is None else np.asarray(a)[short] for a in (without, also_without,
                                                                        face))
            )
        return mean, np.maximum(spread, 1e-3)


def _repeat(values: np.ndarray | None, times: int) -> np.ndarray | None:
    return None if values is None else np.repeat(np.asarray(values), times)


def _masked(
    similarities: np.ndarray,
    labels: np.ndarray,
    exclude_labels: np.ndarray | None = None,
    exclude_faces: np.ndarray | None = None,
    more_labels: np.ndarray | None = None,
) -> np.ndarray:
    """``similarities`` (rows: faces, columns: cohort) with excluded columns at ``-inf``:
    per row, every face of ``exclude_labels[row]`` and ``more_labels[row]`` and the single
    face ``exclude_faces[row]``."""
    out = similarities.copy()
    for chosen in (exclude_labels, more_labels):
        if chosen is not None:
            out[labels[None, :] == np.asarray(chosen)[:, None]] = -np.inf
    if exclude_faces is not None:
        rows = np.flatnonzero(np.asarray(exclude_faces) != NONE)
        out[rows, np.asarray(exclude_faces)[rows]] = -np.inf
    return out


def cohort_stats(
    faces: np.ndarray, labels: np.ndarray, cohort: np.ndarray, cohort_labels: np.ndarray,
    top: int = COHORT_TOP,
) -> tuple[np.ndarray, np.ndarray]:
    """Each face's normalisation statistics: mean and spread of its ``top`` similarities to
    cohort faces of other people (its own person's faces never count)."""
    means = np.zeros(len(faces), np.float32)
    spreads = np.ones(len(faces), np.float32)
    for start in range(0, len(faces), BLOCK):
        chunk = slice(start, start + BLOCK)
        near = _Shortlist(faces[chunk] @ cohort.T, cohort_labels, top)
        means[chunk], spreads[chunk] = near.stats(labels[chunk])
    return means, spreads


@dataclass
class Candidates:
    """The best people for each probe face, best first (``people`` are label indices,
    ``face`` the gallery face nearest to the probe for that person)."""

    people: np.ndarray  # (n, k) int
    similarity: np.ndarray  # (n, k) cosine similarity to the person's nearest face
    normalised: np.ndarray  # (n, k) AS-norm of that similarity
    face: np.ndarray  # (n, k) gallery index of that nearest face

    def features(self) -> np.ndarray:
        """The decision's inputs (:data:`FEATURES`), one row per probe."""
        z, s = self.normalised, self.similarity
        if z.shape[1] < 2:  # a gallery of one person: no runner-up, no margin
            z = np.c_[z, np.full(len(z), -10.0)]
            s = np.c_[s, np.full(len(s), -1.0)]
        return np.c_[z[:, 0], z[:, 0] - z[:, 1], s[:, 0], s[:, 0] - s[:, 1]]


class Matcher:
    """Nearest people in a gallery, with AS-norm scores (scikit-learn style: settings in the
    constructor, :meth:`fit` learns the gallery's statistics, learned state ends in ``_``).

    Parameters
    ----------
    top : int
        How many of the highest similarities to other people normalise a score.
    """

    def __init__(self, top: int = COHORT_TOP) -> None:
        self.top = top

    def fit(
        self,
        gallery: np.ndarray,
        labels: np.ndarray,
        cohort: np.ndarray | None = None,
        cohort_labels: np.ndarray | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Matcher:
        """Keep the gallery (and cohort: the gallery itself unless given) and each gallery
        face's normalisation statistics (computed, unless ``stats`` are saved ones)."""
        self.gallery_ = l2_normalize(gallery)
        self.labels_ = np.asarray(labels, dtype=np.int64)
        same = cohort is None
        self.cohort_ = self.gallery_ if same else l2_normalize(cohort)
        self.cohort_labels_ = self.labels_ if same else np.asarray(cohort_labels, np.int64)
        self.cohort_is_gallery_ = same
        if stats is None:
            stats = cohort_stats(self.gallery_, self.labels_, self.cohort_, self.cohort_labels_,
                                 self.top)
        self.gallery_mean_, self.gallery_spread_ = (np.asarray(s, np.float32) for s in stats)
        if len(self.gallery_mean_) != len(self.gallery_):
            raise RunError("gallery: normalisation statistics do not match its faces")
        order = np.argsort(self.labels_, kind="stable")
        self.order_ = order
        self.people_, self.starts_ = np.unique(self.labels_[order], return_index=True)
        return self

    def candidates(
        self,
        probes: np.ndarray,
        k: int = 5,
        exclude_labels: np.ndarray | None = None,
        exclude_faces: np.ndarray | None = None,
        masked_people: np.ndarray | None = None,
        similarities: np.ndarray | None = None,
    ) -> Candidates:
        """The ``k`` best people for each probe, by normalised score.

        ``exclude_labels`` / ``exclude_faces`` (one per probe, :data:`NONE` for none) take a
        person or a single face out of the gallery and the cohort for that probe: how a
        stranger or a held-out photo is simulated. ``masked_people`` are never named (people
        removed from a run). ``similarities``: :meth:`similarities` of the probes, when the
        caller has them already (a photo's faces: the evidence reads them too).
        """
        probes = l2_normalize(probes)
        n = len(probes)
        k = max(1, min(k, len(self.people_) - (0 if masked_people is None else
                                               len(masked_people))))
        shape = (n, k)
        out = Candidates(
            np.zeros(shape, np.int64), np.zeros(shape, np.float32),
            np.zeros(shape, np.float32), np.zeros(shape, np.int64),
        )
        for start in range(0, n, BLOCK):
            rows = slice(start, start + BLOCK)
            self._block(probes[rows], out, rows, k,
                        None if exclude_labels is None else np.asarray(exclude_labels)[rows],
                        None if exclude_faces is None else np.asarray(exclude_faces)[rows],
                        masked_people,
                        None if similarities is None else similarities[rows])
        return out

    def similarities(self, probes: np.ndarray) -> np.ndarray:
        """Cosine similarity of each probe to each gallery face."""
        return l2_normalize(probes) @ self.gallery_.T

    def _block(
        self,
        probes: np.ndarray,
        out: Candidates,
        rows: slice,
        k: int,
        exclude_labels: np.ndarray | None,
        exclude_faces: np.ndarray | None,
        masked_people: np.ndarray | None,
        similarities: np.ndarray | None = None,
    ) -> None:
        similarities = probes @ self.gallery_.T if similarities is None else similarities
        gallery = _masked(similarities, self.labels_, exclude_labels, exclude_faces)
        if masked_people is not None and len(masked_people):
            gallery[:, np.isin(self.labels_, masked_people)] = -np.inf
        # Each person's nearest face, by raw similarity.
        by_person = np.maximum.reduceat(gallery[:, self.order_], self.starts_, axis=1)
        shortlist = min(by_person.shape[1], max(CANDIDATES, k))
        best = np.argpartition(-by_person, shortlist - 1, axis=1)[:, :shortlist]
        people = self.people_[best]  # (m, shortlist) labels
        raw = np.take_along_axis(by_person, best, axis=1)
        faces = self._nearest_faces(gallery, people)
        cohort = similarities if self.cohort_is_gallery_ else probes @ self.cohort_.T
        near = _Shortlist(cohort, self.cohort_labels_, self.top)
        same = self.cohort_is_gallery_
        z = np.full(raw.shape, -np.inf, np.float32)
        gallery_stats = self._gallery_stats(faces, exclude_labels, exclude_faces)
        for j in range(shortlist):
            probe_mean, probe_spread = near.stats(
                people[:, j], exclude_labels if same else None, exclude_faces if same else None
            )
            mean, spread = gallery_stats[0][:, j], gallery_stats[1][:, j]
            z[:, j] = 0.5 * ((raw[:, j] - probe_mean) / probe_spread
                             + (raw[:, j] - mean) / spread)
        z[~np.isfinite(raw)] = -np.inf
        order = np.argsort(-z, axis=1, kind="stable")[:, :k]
        out.people[rows] = np.take_along_axis(people, order, axis=1)
        out.similarity[rows] = np.take_along_axis(raw, order, axis=1)
        out.normalised[rows] = np.take_along_axis(z, order, axis=1)
        out.face[rows] = np.take_along_axis(faces, order, axis=1)

    def _nearest_faces(self, gallery: np.ndarray, people: np.ndarray) -> np.ndarray:
        """The gallery index of each (probe, person)'s nearest face."""
        faces = np.zeros(people.shape, np.int64)
        for j in range(people.shape[1]):
            members = self.labels_[None, :] == people[:, j][:, None]
            faces[:, j] = np.argmax(np.where(members, gallery, -np.inf), axis=1)
        return faces

    def _gallery_stats(
        self, faces: np.ndarray, exclude_labels: np.ndarray | None,
        exclude_faces: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The saved statistics of ``faces`` (probes x candidates), or, when a simulated
        stranger or held-out photo sits in the cohort, the statistics recomputed without it
        (from each gallery face's shortlist of cohort neighbours, made once)."""
        if not self.cohort_is_gallery_ or (exclude_labels is None and exclude_faces is None):
            return self.gallery_mean_[faces], self.gallery_spread_[faces]
        n, k = faces.shape
        flat = faces.reshape(-1)
        mean, spread = self._neighbours().stats(
            self.labels_[flat], _repeat(exclude_labels, k), _repeat(exclude_faces, k), rows=flat
        )
        return mean.reshape(n, k), spread.reshape(n, k)

    def _cohort_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.gallery_[rows] @ self.cohort_.T

    def _neighbours(self) -> _Shortlist:
        """Every gallery face's closest cohort faces (only simulations need them)."""
        if getattr(self, "neighbours_", None) is None:
            parts = [
                _Shortlist(self._cohort_rows(np.arange(s, min(s + BLOCK, len(self.gallery_)))),
                           self.cohort_labels_, self.top)
                for s in range(0, len(self.gallery_), BLOCK)
            ]
            self.neighbours_ = _Shortlist.of_blocks(parts, self._cohort_rows)
        return self.neighbours_


# The decision and its calibration ------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A logistic decision on :data:`FEATURES` (higher: more likely a true match), as plain
    numbers so identification needs no scikit-learn."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def __call__(self, features: np.ndarray) -> np.ndarray:
        standard = (np.asarray(features, np.float64) - self.mean) / self.scale
        return standard @ np.asarray(self.weights) + self.bias

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> Decision:
        try:
            if list(data["features"]) != list(FEATURES):
                raise ValueError(f"features {data['features']} are not {list(FEATURES)}")
            fields = [tuple(float(v) for v in data[k]) for k in ("mean", "scale", "weights")]
            if any(len(f) != len(FEATURES) for f in fields):
                raise ValueError("mean, scale and weights need one number per feature")
            return cls(*fields, float(data["bias"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"decision: unusable ({exc})") from exc


def fit_decision(features: np.ndarray, correct: np.ndarray) -> Decision:
    """Logistic regression telling a correct identification from a stranger's or a wrong
    one (``correct``: the probe's best person is its own)."""
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, np.float64)
    mean, scale = features.mean(axis=0), np.maximum(features.std(axis=0), 1e-9)
    if len(np.unique(correct)) < 2:  # nothing right (or nothing wrong) to learn from:
        weights = (1.0,) + (0.0,) * (len(FEATURES) - 1)  # the normalised score alone
        return Decision(tuple(map(float, mean)), tuple(map(float, scale)), weights, 0.0)
    model = LogisticRegression(max_iter=2000).fit((features - mean) / scale, correct)
    return Decision(
        tuple(float(v) for v in mean), tuple(float(v) for v in scale),
        tuple(float(v) for v in model.coef_[0]), float(model.intercept_[0]),
    )


def simulate(
    matcher: Matcher, rng: np.random.Generator, strangers: int = 4000, known: int = 6000
) -> dict[str, np.ndarray]:
    """Identifications of the matcher's own gallery with answers known: ``known`` probes
    are gallery faces of people with several faces, each held out of the gallery (and the
    cohort) for its own search; ``strangers`` are faces of people taken out of both in turn.

    Returns the candidates' :meth:`Candidates.features` and whether the best person is
    right, for the genuine and the stranger probes.
    """
    labels = matcher.labels_
    counts = np.bincount(labels)
    several = np.flatnonzero(counts[labels] >= 2)
    genuine = rng.choice(several, min(known, len(several)), replace=False)
    anyone = np.arange(len(labels))
    impostor = rng.choice(anyone, min(strangers, len(anyone)), replace=False)
    found = {}
    for name, probes, faces, people in (
        ("genuine", genuine, genuine, None),
        ("stranger", impostor, None, labels[impostor]),
    ):
        candidates = matcher.candidates(
            matcher.gallery_[probes], k=2, exclude_labels=people, exclude_faces=faces
        )
        found[name] = candidates.features()
        found[f"{name}_correct"] = (
            candidates.people[:, 0] == labels[probes] if people is None
            else np.zeros(len(probes), bool)
        )
    return found


TAIL_SHARE = 0.1  # the highest strangers the tail past them is fitted to ...
TAIL_MIN = 5  # ... and at least this many


@dataclass(frozen=True)
class Confidence:
    """How rarely strangers reach a decision value: ``confidence = 1 - FAR``, from the
    sorted decisions of simulated strangers (each person left out of the gallery in turn).

    Past the highest stranger a finite sample says nothing, yet a face far past it is surer
    than one just past it: there the share of strangers follows an exponential tail fitted to
    the highest :data:`TAIL_SHARE` of them (peaks over a threshold: the mean excess is the
    tail's scale), so the number keeps telling two faces, and two thresholds, apart.
    """

    strangers: np.ndarray  # sorted ascending

    @property
    def _tail(self) -> tuple[float, float, float]:
        """The highest stranger, the share of strangers it stands for, and the tail's scale."""
        n = len(self.strangers)
        if n == 0:
            return 0.0, 1.0, 1.0
        k = min(n - 1, max(TAIL_MIN, math.ceil(TAIL_SHARE * n)))
        top = float(self.strangers[-1])
        if k < 1:
            return top, 1.0 / n, 1.0
        scale = float(np.mean(self.strangers[-k:] - self.strangers[-k - 1]))
        return top, 1.0 / n, max(scale, 1e-9)

    def false_accept(self, decisions: np.ndarray | float) -> np.ndarray | float:
        """Share of strangers at or above each decision; past the highest, the fitted tail's
        (a finite sample cannot promise zero)."""
        values = np.asarray(decisions, np.float64)
        n = len(self.strangers)
        above = n - np.searchsorted(self.strangers, values, side="left")
        top, share, scale = self._tail
        beyond = share * np.exp(-np.maximum(values - top, 0.0) / scale)
        rate = np.where(above > 0, above / max(n, 1), beyond)
        return float(rate) if rate.ndim == 0 else rate

    def __call__(self, decisions: np.ndarray | float) -> np.ndarray | float:
        rate = self.false_accept(decisions)
        return 1.0 - rate

    def at_least(self, confidence: float) -> float:
        """The lowest decision value whose confidence is at least ``confidence`` (just past a
        stranger's; on the fitted tail past the highest): the way back from a confidence
        shown."""
        values = np.r_[self.strangers[:1], np.nextafter(self.strangers, np.inf)]
        reached = np.asarray(self(values)) >= confidence - 1e-12
        if reached.any():
            return float(values[np.argmax(reached)])
        top, share, scale = self._tail
        return top + scale * math.log(share / max(1.0 - confidence, 1e-300))

    def threshold(self, false_accept: float) -> float:
        """The decision value that names at most ``false_accept`` of strangers."""
        return float(np.quantile(self.strangers, 1.0 - false_accept, method="higher"))
