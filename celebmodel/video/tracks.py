"""Faces linked across a video's sampled frames into tracks: one person's face from when it
appears until it leaves, the shot changes, or it is lost for longer than :data:`MAX_GAP`.

Each new face joins the open track it matches best (Hungarian assignment over the frame's
faces): its box must overlap or sit near the track's last box, and its embedding must be
within the model's loose same-person cut of the track's recent faces (the 99th percentile of
its gallery's same-person distances, :class:`~celebmodel.scoring.cuts.Cuts`), so two people
crossing swap nobody's track and a frame of someone else in the same place starts a track of
its own. A shot cut (:class:`~celebmodel.data.videos.Frame`'s ``shot``) ends every track.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from ..scoring.cuts import Cuts
from ..vectors import chord_distance, l2_normalize

MAX_GAP = 1.0  # seconds a track may miss its face (a turn, a blink of the detector) and go on
RECENT = 4  # a track's last faces its next face is compared with
NEAR = 1.5  # a face may move this many face widths between two samples and keep its track
THUMB_SIDE = 160  # a track's best face, kept as its thumbnail at most this big
ANSWER_KEYS = ("known", "label", "name", "nearest", "nearest_name", "match_confidence",
               "similarity")


@dataclass
class Track:
    """One person's face over consecutive samples of one shot."""

    id: int
    shot: int
    times: list[float] = field(default_factory=list)
    boxes: list[list[int]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)  # each face's own answer
    embeddings: list[np.ndarray] = field(default_factory=list)
    best: int = 0  # the face kept as the thumbnail: the detector's surest, largest face
    thumbnail: Image.Image | None = None
    answer: dict[str, Any] = field(default_factory=dict)  # the track's one answer, once named
    person: str = ""  # whose track it is: a label, or "unknown-N"
    _best_quality: float = -1.0

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    def __len__(self) -> int:
        return len(self.times)

    def add(self, time: float, face: dict[str, Any], embedding: np.ndarray,
            crop: Callable[[], Image.Image]) -> None:
        self.times.append(time)
        self.boxes.append([int(v) for v in face["box"]])
        self.answers.append({key: face.get(key) for key in ANSWER_KEYS})
        self.embeddings.append(np.asarray(embedding, np.float32))
        x, y, w, h = face["box"]
        quality = float(face.get("confidence") or 0) * float(np.sqrt(max(w * h, 1)))
        if quality > self._best_quality:
            self._best_quality = quality
            self.best = len(self.times) - 1
            self.thumbnail = crop()

    def recent(self) -> np.ndarray:
        return np.stack(self.embeddings[-RECENT:])


def padded_face(pixels: np.ndarray, box: list[int]) -> Image.Image:
    """The face with a margin, at most :data:`THUMB_SIDE` pixels a side."""
    x, y, w, h = (int(v) for v in box)
    pad = int(0.25 * max(w, h))
    height, width = pixels.shape[:2]
    crop = pixels[max(0, y - pad) : min(height, y + h + pad),
                  max(0, x - pad) : min(width, x + w + pad)]
    image = Image.fromarray(np.ascontiguousarray(crop))
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return image


def overlap(a: list[int], b: list[int]) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / max(aw * ah + bw * bh - inter, 1)


def _near(a: list[int], b: list[int]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    distance = np.hypot(ax + aw / 2 - bx - bw / 2, ay + ah / 2 - by - bh / 2)
    return overlap(a, b) > 0 or distance <= NEAR * max(aw, bw)


class Tracker:
    """Faces in, tracks out: :meth:`add` each sampled frame's faces in time order, then
    :meth:`finish`. ``cuts`` are the model's (:attr:`Recognizer.cuts`)."""

    def __init__(self, cuts: Cuts, max_gap: float = MAX_GAP) -> None:
        self.cuts = cuts
        self.max_gap = max_gap
        self.shot = 0
        self._open: list[Track] = []
        self._closed: list[Track] = []
        self._next_id = 1

    def add(self, time: float, shot: int, faces: list[dict[str, Any]], embeddings: np.ndarray,
            crop: Callable[[int], Image.Image]) -> list[int]:
        """Link one frame's faces (of shot number ``shot``) to the tracks; returns each face's
        track id. ``crop(j)`` gives face ``j``'s thumbnail, asked only when it becomes a
        track's best face (a worker of a cluster hands them ready, see
        :mod:`celebmodel.video.ray_video`)."""
        if shot != self.shot:
            self.shot = shot
            self._close(lambda track: True)
        self._close(lambda track: time - track.end > self.max_gap)
        if not faces:
            return []
        embeddings = l2_normalize(np.asarray(embeddings, np.float32).reshape(len(faces), -1))
        cost = np.full((len(self._open), len(faces)), np.inf)
        for i, track in enumerate(self._open):
            distance = chord_distance(track.recent() @ embeddings.T).min(axis=0)
            for j, face in enumerate(faces):
                if distance[j] <= self.cuts.loose and _near(track.boxes[-1], face["box"]):
                    cost[i, j] = distance[j] + (1.0 - overlap(track.boxes[-1], face["box"]))
        owner: dict[int, Track] = {}
        if cost.size and np.isfinite(cost).any():
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e6))
            owner = {j: self._open[i] for i, j in zip(rows, cols, strict=True)
                     if np.isfinite(cost[i, j])}
        ids = []
        for j, face in enumerate(faces):
            track = owner.get(j)
            if track is None:
                track = Track(self._next_id, self.shot)
                self._next_id += 1
                self._open.append(track)
            track.add(time, face, embeddings[j], lambda j=j: crop(j))
            ids.append(track.id)
        return ids

    def _close(self, done: Any) -> None:
        self._closed += [track for track in self._open if done(track)]
        self._open = [track for track in self._open if not done(track)]

    def finish(self) -> list[Track]:
        """Every track, in the order they started."""
        self._close(lambda track: True)
        return sorted(self._closed, key=lambda track: (track.start, track.id))
