"""Identify every face in a new photo with a finished run, and say why.

``Recognizer.from_run(run_dir).identify(image)`` takes a path, bytes, a PIL image or an array
and returns one dict per face:

- ``box`` and ``confidence`` (the face detector's, 0..1);
- ``known``, ``label`` (``"unknown"`` for a face too unlike everyone known) and ``name`` (the
  person's name as shown, ``None`` for an unknown face: a client showing ``name`` never puts
  a person's name on a stranger);
- ``nearest`` and ``nearest_name``: the person named, or for an unknown face the person
  whose gallery face is most similar to it (so the closest person shown is always the one
  the evidence's similarities say is closest);
- ``match_confidence``: how rarely strangers score as high as this face (``1 - FAR``, 0..1;
  ``None`` for older trained runs that were never calibrated against strangers); the
  headline number;
- ``similarity`` (0..1, the raw closeness: for gallery models the cosine similarity to the
  person's nearest face; for trained runs the similarity to the person's mean face,
  :func:`celebmodel.scoring.open_set.similarity`) and ``score`` (the model's own decision scale);
- ``top_k`` (known faces only; class probabilities for trained runs, similarities for
  gallery models) and ``evidence``: the closest gallery faces of the nearest person and of
  the runner-up, each ``{label, name, similarity, path, runner_up}`` plus, for the built-in
  model, ``photo`` (an LFW file name) and ``link`` (the person's LFW page).

People removed from the run are never named.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import Backbone, get_backbone
from ..config import TrainConfig
from ..cores import one_blas_thread
from ..data.images import load_image
from ..errors import RunError
from ..faces.detection import FaceStage, face_stage, resize_whole
from ..faces.graph import compiled
from ..faces.network import NETWORKS, FaceEmbedder
from ..learning.model import embedding_model, takes_embeddings
from ..runs.run import Run, load_run
from ..scoring.cuts import MIRRORED, Cuts, group_cuts, profile_cuts
from ..scoring.matching import Confidence, Decision, Matcher
from ..scoring.open_set import (
    centroids_of,
    similarity,
    stranger_confidence,
    unknown_scores,
)
from ..vectors import l2_normalize
from .evidence import Evidence
from .people import names, removed

UNKNOWN = "unknown"


def album_cuts(run: Run, gallery: np.ndarray, labels: np.ndarray) -> Cuts:
    """How close two faces of an album must be to be grouped, learnt from the run's own
    gallery in the space :meth:`Recognizer.analyse_for_groups` gives (or its network's own,
    where the network has them: :data:`~celebmodel.faces.network.NETWORKS`): the distances between
    its gallery's faces averaged with their mirror images, as a trained run's training
    recorded them (``gallery`` and ``labels`` unused), else between the gallery's faces (a
    gallery model's are mirror-averaged already; a run trained before they were recorded
    groups its faces as embedded)."""
    network = NETWORKS.get(run.config_dict().get("backbone", ""))
    if network is not None and network.grouping is not None:  # one scale for everyone
        return Cuts(*network.grouping)
    recorded = (run.read_json("calibration.json") or {}).get(MIRRORED)
    if recorded is not None and run.scoring == "classifier":
        return profile_cuts(recorded)
    return group_cuts(gallery, labels)


def _same_network(run: Run, config: TrainConfig, gallery: np.ndarray) -> None:
    """Refuse a gallery whose faces another network embedded: embeddings of two networks
    are not comparable, and a mix would name faces at random."""
    size = get_backbone(config.backbone).embedding_size
    if size and gallery.ndim == 2 and len(gallery) and gallery.shape[1] != size:
        raise RunError(
            f"{run.file('gallery.npz')}: its faces are {gallery.shape[1]}-d, but the run's "
            f"network {config.backbone} gives {size}-d embeddings: faces of two networks never "
            "mix; rebuild the gallery with one network"
        )


@dataclass
class Recognizer:
    """A loaded run, ready to identify faces (thread-safe: one photo at a time).

    Trained runs (``scoring == "classifier"``): ``model`` gives embeddings and probabilities;
    a face is known when its open-set ``score`` is at most ``threshold``. ``takes_embeddings``
    marks a head-only model of a run made before the face network was in Keras (it is fed
    flip-averaged embeddings from the pretrained network, as it was trained).

    Gallery models (``scoring == "gallery"``: the built-in public-figures model and copies):
    dlib's network gives flip-averaged embeddings, ``matcher`` finds the nearest people, and
    a face is known when the ``decision`` reaches ``threshold``.
    """

    run: Run
    config: TrainConfig
    labels: list[str]
    model: Any
    centroids: np.ndarray
    threshold: float
    gallery: np.ndarray
    gallery_labels: np.ndarray
    gallery_paths: list[str]
    names: dict[str, str]
    removed: set[str]
    strangers: Confidence | None = None
    scoring: str = "classifier"
    matcher: Matcher | None = None
    decision: Decision | None = None
    top_k: int = 5
    takes_embeddings: bool = False
    mirror_groups: bool = False  # albums group its faces averaged with their mirror images
    lfw: bool = False  # gallery faces are LFW photos: evidence names them and links the person
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _graph: Any = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run_dir: str | Path | Run, top_k: int = 5) -> Recognizer:
        """Load a finished run's model, labels, gallery, people and calibrated threshold."""
        run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
        config = run.config()
        labels = run.labels()
        calibration = run.read_json("calibration.json") or {}
        threshold = calibration.get("threshold")
        if not isinstance(threshold, (int, float)):
            raise RunError(f"{run.file('calibration.json')}: missing or invalid threshold")
        if run.scoring == "gallery":
            recognizer = cls._gallery_model(
                run, config, labels, calibration, float(threshold), top_k
            )
            _same_network(run, config, recognizer.gallery)
            return recognizer
        model = run.load_model()
        n_outputs = int(model.output.shape[-1])
        if n_outputs != len(labels):
            raise RunError(
                f"{run.path}: model.keras has {n_outputs} classes but labels.json names "
                f"{len(labels)}; the model belongs to another run"
            )
        gallery, gallery_labels = run.gallery()
        _same_network(run, config, gallery)
        return cls(
            run=run,
            config=config,
            labels=labels,
            model=embedding_model(model),
            centroids=centroids_of(gallery, gallery_labels, len(labels)),
            threshold=float(threshold),
            gallery=l2_normalize(gallery),
            gallery_labels=gallery_labels,
            gallery_paths=run.gallery_paths(),
            names=names(run),
            removed=removed(run),
            strangers=stranger_confidence(calibration),
            top_k=top_k,
            takes_embeddings=takes_embeddings(model),
            mirror_groups=calibration.get(MIRRORED) is not None,
        )

    @classmethod
    def _gallery_model(
        cls, run: Run, config: TrainConfig, labels: list[str], calibration: dict,
        threshold: float, top_k: int,
    ) -> Recognizer:
        gallery, gallery_labels, stats = run.gallery_with_stats()
        if len(gallery_labels) and (gallery_labels.min() < 0 or
                                    gallery_labels.max() >= len(labels)):
            raise RunError(f"{run.file('gallery.npz')}: labels outside labels.json's "
                           f"{len(labels)} people")
        strangers = calibration.get("strangers")
        if not strangers or "decision" not in calibration:
            raise RunError(f"{run.file('calibration.json')}: no decision or strangers to "
                           "calibrate a gallery model")
        return cls(
            run=run,
            config=config,
            labels=labels,
            model=None,
            centroids=centroids_of(gallery, gallery_labels, len(labels)),
            threshold=threshold,
            gallery=gallery,
            gallery_labels=gallery_labels,
            gallery_paths=run.gallery_paths(),
            names=names(run),
            removed=removed(run),
            strangers=Confidence(np.sort(np.asarray(strangers, np.float64))),
            scoring="gallery",
            matcher=Matcher().fit(gallery, gallery_labels, stats=stats),
            decision=Decision.from_dict(calibration["decision"]),
            top_k=top_k,
            lfw=run.lfw_gallery,
        )

    @property
    def backbone(self) -> Backbone:
        return get_backbone(self.config.backbone)

    @property
    def stage(self) -> FaceStage:
        return face_stage(self.config)

    @property
    def people(self) -> list[str]:
        """The labels the model may name (everyone but the people removed)."""
        return [label for label in self.labels if label not in self.removed]

    # Thresholds: the model's own scale and the match confidence ------------------------------

    def closeness(self, scores: np.ndarray | float) -> np.ndarray | float:
        """The model's scores as "higher is closer" (a trained run's score is a distance)."""
        return np.negative(scores) if self.scoring == "classifier" else scores

    def match_confidence(self, scores: np.ndarray | float) -> np.ndarray | float | None:
        """How rarely strangers reach these scores (``None`` without stranger scores)."""
        if self.strangers is None:
            return None
        return self.strangers(self.closeness(scores))

    def is_known(self, score: float, threshold: float | None = None) -> bool:
        threshold = self.threshold if threshold is None else threshold
        return bool(score <= threshold if self.scoring == "classifier" else score >= threshold)

    def threshold_for(self, confidence: float) -> float:
        """The threshold on the model's own scale that names faces of at least this match
        confidence (strangers reach it at most ``1 - confidence`` of the time)."""
        if self.strangers is None:
            raise RunError(f"{self.run.title}: no stranger scores to set a confidence "
                           "threshold; evaluate the run again to calibrate it")
        value = self.strangers.threshold(max(1e-9, 1.0 - confidence))
        return float(self.closeness(value))

    # Identification ---------------------------------------------------------------------

    def _inputs(self, crops: list[np.ndarray]) -> np.ndarray:
        if self.takes_embeddings:
            return FaceEmbedder(self.config.backbone, flip=True).embed_photo(crops)
        batch = np.stack(crops).astype(np.float32)
        return np.asarray(self.backbone.preprocess(batch))

    def warm_up(self) -> Recognizer:
        """Trace the model's graph and load the detectors now, not on the first photo."""
        from ..faces.detection import warm_up

        warm_up(self.stage.detector)
        if self.scoring == "gallery":
            size = self.stage.size
            self._embed([np.zeros((size, size, 3), np.uint8)])
            self.matcher.candidates(self.gallery[:1], k=self.top_k)
            return self
        size = self.model.inputs[0].shape[1:]
        self._predict(np.zeros((1, *size), np.float32))
        return self

    def _predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities through the model's traced graph (traced once)."""
        if self._graph is None:
            self._graph = compiled(self.model)
        embeddings, probabilities = self._graph(inputs)
        return embeddings, probabilities

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """A gallery model's embeddings: its face network, face and mirror image averaged."""
        return FaceEmbedder(self.config.backbone, flip=True).embed_photo(crops)

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities with removed people masked out and the rest renormalised."""
        probabilities = np.asarray(raw, dtype=np.float64).copy()
        masked = [self.labels.index(label) for label in self.removed if label in self.labels]
        if masked:
            probabilities[:, masked] = 0.0
            probabilities /= np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
        return probabilities

    def face_crops(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The network inputs of a photo's faces, in the order :meth:`identify` numbers them."""
        return self._faces(np.asarray(pixels))[0]

    def _faces(self, pixels: np.ndarray) -> tuple[list[np.ndarray], list[tuple[list, float]]]:
        stage = self.stage
        if stage.enabled:
            faces = stage.faces(pixels)
            crops = [stage.align(pixels, face) for face in faces]
            return crops, [(f.to_dict()["box"], f.confidence) for f in faces]
        height, width = pixels.shape[:2]
        return [resize_whole(pixels, stage.size)], [([0, 0, width, height], 1.0)]

    @cached_property
    def evidence(self) -> Evidence:
        """Its gallery's faces as the evidence shown beside each face."""
        return Evidence(
            self.gallery, self.gallery_labels, self.gallery_paths, self.labels, self.names,
            self.removed, self.lfw,
        )

    @cached_property
    def cuts(self) -> Cuts:
        """How close its albums' faces must be to be grouped (:func:`album_cuts`)."""
        return album_cuts(self.run, self.gallery, self.gallery_labels)

    def analyse(
        self, image: Any, threshold: float | None = None, top_k: int | None = None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """:meth:`identify`'s faces and their unit-length embeddings."""
        faces, embeddings, _ = self.analyse_for_groups(image, threshold, top_k, mirror=False)
        return faces, embeddings

    def analyse_for_groups(
        self,
        image: Any,
        threshold: float | None = None,
        top_k: int | None = None,
        mirror: bool = True,
    ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
        """:meth:`analyse`, and the faces as albums group them (at :attr:`cuts`): with
        :attr:`mirror_groups` (and ``mirror``), each embedding averaged with its mirror
        image's, else the embeddings themselves. Mirror-averaged faces group strangers better
        (all of LFW: BCubed F 0.944 to 0.952) for one more pass of the network per face."""
        with one_blas_thread():
            return self._analysed(load_image(image), threshold, top_k, mirror)

    def _analysed(
        self, pixels: np.ndarray, threshold: float | None, top_k: int | None, mirror: bool
    ) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
        threshold = self.threshold if threshold is None else threshold
        top_k = max(1, min(top_k or self.top_k, len(self.people)))
        with self._lock:
            crops, found = self._faces(pixels)
            if not crops:
                empty = np.zeros((0, self.gallery.shape[1]), np.float32)
                return [], empty, empty
            if self.scoring == "gallery":
                embeddings = self._embed(crops)
            else:
                flip = mirror and self.mirror_groups
                mirrored = [crop[:, ::-1] for crop in crops] if flip else []
                embeddings, raw = self._predict(self._inputs(crops + mirrored))
        if self.scoring == "gallery":
            return self._gallery_faces(embeddings, found, threshold, top_k), embeddings, embeddings
        n = len(crops)
        probabilities = self._probabilities(np.asarray(raw)[:n])
        both = l2_normalize(np.asarray(embeddings).reshape(n + len(mirrored), -1))
        embeddings = both[:n]
        grouped = l2_normalize(embeddings + both[n:]) if mirrored else embeddings
        scores = unknown_scores(embeddings, probabilities, self.centroids)
        results = []
        for i, ((box, confidence), p, score) in enumerate(
            zip(found, probabilities, scores, strict=True)
        ):
            results.append(
                self._face(box, confidence, int(np.argmax(p)), float(score),
                           float(similarity(score)), threshold, top_k, embeddings[i],
                           probabilities=p)
            )
        return results, embeddings, grouped

    def _gallery_faces(
        self, embeddings: np.ndarray, found: list, threshold: float, top_k: int
    ) -> list[dict[str, Any]]:
        masked = np.array([self.labels.index(x) for x in self.removed if x in self.labels])
        similarities = self.matcher.similarities(embeddings)  # once: scoring and evidence
        candidates = self.matcher.candidates(embeddings, k=2,
                                             masked_people=masked if len(masked) else None,
                                             similarities=similarities)
        decisions = self.decision(candidates.features())
        return [
            self._face(box, confidence, int(candidates.people[i][0]), float(decisions[i]),
                       float(candidates.similarity[i][0]), threshold, top_k, embeddings[i],
                       similarities=similarities[i])
            for i, (box, confidence) in enumerate(found)
        ]

    def _face(
        self, box: list, confidence: float, best: int, score: float, closeness: float,
        threshold: float, top_k: int, embedding: np.ndarray,
        probabilities: np.ndarray | None = None, similarities: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """One face's answer (see the module's docstring for its keys).

        ``top_k`` lists the person named first, then the others in the order of the number
        shown beside them (a trained run's probability; else how alike each one's closest
        photo is); the runner-up, in the evidence too, is always the second of that order.
        """
        known = self.is_known(score, threshold)
        alike, nearness = self.evidence.nearest_people(embedding, top_k + 1, similarities)
        if probabilities is not None:
            ranked = [int(j) for j in np.argsort(-probabilities)[:top_k]]
            top = [self._entry(j, probability=float(probabilities[j])) for j in ranked]
        else:
            near = dict(zip(alike.tolist(), nearness.tolist(), strict=True))
            closeness = near.get(best, closeness)  # one similarity per face, wherever shown
            others = [j for j in alike.tolist() if j != best][: top_k - 1]
            top = [self._entry(best, similarity=closeness),
                   *[self._entry(j, similarity=near[j]) for j in others]]
        if known:  # the person named first, then the runner-up of the list shown
            order = [best, *[self.labels.index(t["label"]) for t in top[1:2]]]
        else:  # by the faces alone: the closest person is the one whose face is closest
            order = [int(j) for j in alike[:2]]
            best = order[0] if order else best
            if probabilities is None and order:
                closeness = float(nearness[0])  # the similarity of that closest face
        label = self.labels[best]
        shown = self.names.get(label, label)
        match = self.match_confidence(score)
        return {
            "box": box,
            "confidence": round(float(confidence), 4),
            "known": known,
            "label": label if known else UNKNOWN,
            "name": shown if known else None,
            "nearest": label,
            "nearest_name": shown,
            "match_confidence": None if match is None else round(float(match), 6),
            "similarity": float(closeness),
            "score": float(score),
            "probability": float(probabilities[best]) if known and probabilities is not None
            else None,
            "top_k": top if known else [],
            "evidence": self.evidence.faces(embedding, order),
        }

    def _entry(self, index: int, **number: float) -> dict[str, Any]:
        label = self.labels[index]
        return {"label": label, "name": self.names.get(label, label),
                **{key: round(value, 4) if key == "similarity" else value
                   for key, value in number.items()}}

    @property
    def pools_faces(self) -> bool:
        """Whether several faces of one person can be scored as one (their mean embedding):
        a gallery model, or a trained face-network run (its head reads unit embeddings)."""
        return self.scoring == "gallery" or (
            self.backbone.kind == "embedding" and not self.takes_embeddings
        )

    def identify_pooled(
        self, embeddings: np.ndarray, threshold: float | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        """One answer for several faces of one person (a video's track): their mean embedding
        scored as one face, so one calibrated match confidence says how rarely a stranger's
        faces come as close. ``box`` and ``confidence`` are left to the caller."""
        if not self.pools_faces:
            raise RunError(f"{self.run.title}: its {self.config.backbone} network cannot pool "
                           "faces; identify them one by one")
        threshold = self.threshold if threshold is None else threshold
        top_k = max(1, min(top_k or self.top_k, len(self.people)))
        mean = l2_normalize(np.asarray(embeddings, np.float32).mean(axis=0, keepdims=True))
        found = [([0, 0, 0, 0], 1.0)]
        if self.scoring == "gallery":
            return self._gallery_faces(mean, found, threshold, top_k)[0]
        weights, bias = self.model.get_layer("classifier").get_weights()
        logits = mean.astype(np.float64) @ weights + bias
        raw = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = self._probabilities(raw / raw.sum(axis=1, keepdims=True))
        score = float(unknown_scores(mean, probabilities, self.centroids)[0])
        return self._face(found[0][0], 1.0, int(np.argmax(probabilities[0])), score,
                          float(similarity(score)), threshold, top_k, mean[0],
                          probabilities=probabilities[0])

    def identify(
        self, image: Any, threshold: float | None = None, top_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Every face in ``image`` (see the module's docstring for each face's keys).

        ``threshold`` is on the model's own scale (:meth:`threshold_for` turns a match
        confidence into one). With the face stage off (a ``--no-faces`` run) the whole photo
        counts as one face. Raises :class:`celebmodel.errors.ImageError` for an unreadable
        image.
        """
        return self.analyse(image, threshold, top_k)[0]
