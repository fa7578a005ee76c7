"""Identify every face in a new photo with a finished run, and say why.

``Recognizer.from_run(run_dir).identify(image)`` takes a path, bytes, a PIL image or an array
and returns one dict per face: ``box``, ``confidence``, ``label`` (``"unknown"`` for a face too
unlike everyone known), ``nearest`` and ``name`` (the closest person, as labelled and as
shown), ``known``, ``score`` (the open-set score, lower is closer), ``similarity`` (the same on
a 0..1 scale, :func:`celebmodel.open_set.similarity`), ``probability`` and ``top_k`` (class
probabilities), and ``evidence``: the closest gallery faces of the person named and of the
runner-up, each ``{label, name, similarity, path}``. People removed from the run are never
named.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import Backbone, get_backbone
from .config import TrainConfig
from .errors import RunError
from .face_network import FaceEmbedder
from .faces import FaceStage, resize_whole
from .graph import compiled
from .images import load_image
from .model import embedding_model, takes_embeddings
from .open_set import centroids_of, cosine_similarity, l2_normalize, similarity, unknown_scores
from .people import names, removed
from .pipeline import face_stage
from .runs import Run, load_run

UNKNOWN = "unknown"
EVIDENCE_SAME = 3  # closest gallery faces of the person named
EVIDENCE_OTHER = 1  # closest gallery faces of the runner-up


@dataclass
class Recognizer:
    """A loaded run, ready to identify faces (thread-safe: one photo at a time).

    ``model`` gives embeddings and probabilities; ``takes_embeddings`` marks a head-only model
    of a run made before the face network was in Keras (it is fed flip-averaged embeddings
    from the pretrained network, as it was trained).
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
    top_k: int = 5
    takes_embeddings: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _graph: Any = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run_dir: str | Path | Run, top_k: int = 5) -> Recognizer:
        """Load a finished run's model, labels, gallery, people and calibrated threshold."""
        run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
        config = run.config()
        labels = run.labels()
        model = run.load_model()
        n_outputs = int(model.output.shape[-1])
        if n_outputs != len(labels):
            raise RunError(
                f"{run.path}: model.keras has {n_outputs} classes but labels.json names "
                f"{len(labels)}; the model belongs to another run"
            )
        gallery, gallery_labels = run.gallery()
        calibration = run.read_json("calibration.json") or {}
        threshold = calibration.get("threshold")
        if not isinstance(threshold, (int, float)):
            raise RunError(f"{run.file('calibration.json')}: missing or invalid threshold")
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
            top_k=top_k,
            takes_embeddings=takes_embeddings(model),
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

    def _inputs(self, crops: list[np.ndarray]) -> np.ndarray:
        if self.takes_embeddings:
            return FaceEmbedder(flip=True).embed(crops)
        batch = np.stack(crops).astype(np.float32)
        return np.asarray(self.backbone.preprocess(batch))

    def warm_up(self) -> Recognizer:
        """Trace the model's graph and load the detectors now, not on the first photo."""
        from .faces import warm_up

        warm_up()
        size = self.model.inputs[0].shape[1:]
        self._predict(np.zeros((1, *size), np.float32))
        return self

    def _predict(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and probabilities through the model's traced graph (traced once)."""
        if self._graph is None:
            self._graph = compiled(self.model)
        embeddings, probabilities = self._graph(inputs)
        return embeddings, probabilities

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities with removed people masked out and the rest renormalised."""
        probabilities = np.asarray(raw, dtype=np.float64).copy()
        masked = [self.labels.index(label) for label in self.removed if label in self.labels]
        if masked:
            probabilities[:, masked] = 0.0
            probabilities /= np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)
        return probabilities

    def analyse(
        self, image: Any, threshold: float | None = None, top_k: int | None = None
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """:meth:`identify`'s faces and their unit-length embeddings (for grouping)."""
        pixels = load_image(image)
        threshold = self.threshold if threshold is None else threshold
        top_k = min(top_k or self.top_k, len(self.people))
        stage = self.stage
        with self._lock:
            if stage.enabled:
                faces = stage.faces(pixels)
                crops = [stage.align(pixels, face) for face in faces]
                found = [(f.to_dict()["box"], f.confidence) for f in faces]
            else:
                height, width = pixels.shape[:2]
                crops = [resize_whole(pixels, stage.size)]
                found = [([0, 0, width, height], 1.0)]
            if not crops:
                return [], np.zeros((0, self.centroids.shape[1]), np.float32)
            embeddings, raw = self._predict(self._inputs(crops))
        probabilities = self._probabilities(raw)
        embeddings = l2_normalize(np.asarray(embeddings).reshape(len(crops), -1))
        scores = unknown_scores(embeddings, probabilities, self.centroids)
        results = []
        for i, ((box, confidence), p, score) in enumerate(
            zip(found, probabilities, scores, strict=True)
        ):
            order = np.argsort(-p)[:top_k]
            known = bool(score <= threshold)
            best = self.labels[order[0]]
            results.append(
                {
                    "box": box,
                    "confidence": round(float(confidence), 4),
                    "label": best if known else UNKNOWN,
                    "nearest": best,
                    "name": self.names.get(best, best),
                    "probability": float(p[order[0]]),
                    "known": known,
                    "score": float(score),
                    "similarity": float(similarity(score)),
                    "top_k": [
                        {
                            "label": self.labels[j],
                            "name": self.names.get(self.labels[j], self.labels[j]),
                            "probability": float(p[j]),
                        }
                        for j in order
                    ],
                    "evidence": self._evidence(embeddings[i], order),
                }
            )
        return results, embeddings

    def identify(
        self, image: Any, threshold: float | None = None, top_k: int | None = None
    ) -> list[dict[str, Any]]:
        """Every face in ``image`` (see the module's docstring for each face's keys).

        With the face stage off (a ``--no-faces`` run) the whole photo counts as one face.
        Raises :class:`celebmodel.errors.ImageError` for an unreadable image.
        """
        return self.analyse(image, threshold, top_k)[0]

    def _evidence(self, embedding: np.ndarray, order: np.ndarray) -> list[dict[str, Any]]:
        """The gallery faces closest to ``embedding`` of the person named (three) and of the
        runner-up (one), most similar first (cosine similarity of the embeddings)."""
        if len(self.gallery) == 0:
            return []
        closeness = cosine_similarity(embedding[None], self.gallery)[0]
        evidence = []
        for rank, count in ((0, EVIDENCE_SAME), (1, EVIDENCE_OTHER)):
            if rank >= len(order):
                break
            members = np.flatnonzero(self.gallery_labels == order[rank])
            for j in members[np.argsort(-closeness[members])][:count]:
                label = self.labels[order[rank]]
                evidence.append(
                    {
                        "label": label,
                        "name": self.names.get(label, label),
                        "similarity": round(float(closeness[j]), 4),
                        "path": self.gallery_paths[j] if j < len(self.gallery_paths) else "",
                        "runner_up": rank == 1,
                    }
                )
        return evidence
