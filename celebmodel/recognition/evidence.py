"""A model's gallery faces as evidence: which people come closest to a face, and their faces
that resemble it most (what the pages show beside each face, and ``evidence`` in the JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs.builtin import person_page
from ..vectors import cosine_similarity
from .people import ADDED

EVIDENCE_SAME = 3  # gallery faces shown of the person named (or closest)
EVIDENCE_OTHER = 1  # and of the runner-up


@dataclass
class Evidence:
    """The gallery (unit-length faces, their label indices and source photos) of a model whose
    people are ``labels`` (shown as ``names``; ``removed`` ones never offered). ``lfw``: the
    faces are LFW photos, which are not shipped: the evidence names them and links the person.
    """

    gallery: np.ndarray
    gallery_labels: np.ndarray
    gallery_paths: list[str]
    labels: list[str]
    names: dict[str, str]
    removed: set[str]
    lfw: bool = False
    _by_person: Any = field(default=None, repr=False)

    def nearest_people(
        self, embedding: np.ndarray, count: int = 2, similarities: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` people whose gallery faces come closest to ``embedding`` (people
        removed from the run left out), closest first: their label indices and the similarity
        of each one's closest face. The one order of "most alike" every line shows.
        ``similarities``: the embedding's to every gallery face, when known already."""
        if self._by_person is None:
            order = np.argsort(self.gallery_labels, kind="stable")
            people, starts = np.unique(self.gallery_labels[order], return_index=True)
            allowed = np.array([self.labels[p] not in self.removed for p in people])
            self._by_person = (order, people, starts, allowed)
        order, people, starts, allowed = self._by_person
        if not len(order):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if similarities is None:
            similarities = self.gallery @ embedding
        closeness = np.maximum.reduceat(similarities[order], starts)
        closeness[~allowed] = -np.inf
        best = np.argsort(-closeness, kind="stable")[:count]
        best = best[np.isfinite(closeness[best])]
        return people[best], closeness[best]

    def faces(self, embedding: np.ndarray, order: list[int]) -> list[dict[str, Any]]:
        """The gallery faces closest to ``embedding`` of the nearest person (three) and of
        the runner-up (one), most similar first (cosine similarity of the embeddings)."""
        if len(self.gallery) == 0:
            return []
        evidence = []
        for rank, count in ((0, EVIDENCE_SAME), (1, EVIDENCE_OTHER)):
            if rank >= len(order):
                break
            members = np.flatnonzero(self.gallery_labels == order[rank])
            closeness = cosine_similarity(embedding[None], self.gallery[members])[0]
            label = self.labels[order[rank]]
            for j in np.argsort(-closeness)[:count]:
                path = self.gallery_paths[members[j]] if members[j] < len(self.gallery_paths) \
                    else ""
                item = {
                    "label": label,
                    "name": self.names.get(label, label),
                    "similarity": round(float(closeness[j]), 4),
                    "path": path,
                    "runner_up": rank == 1,
                }
                if self.lfw and path and not path.startswith(ADDED):
                    item["photo"] = Path(path).name
                    item["link"] = person_page(label)
                evidence.append(item)
        return evidence
