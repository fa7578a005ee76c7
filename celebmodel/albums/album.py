"""Many photos at once (folders, uploads, a zip): every face a row, unknown faces grouped.

One row per face with the columns of :data:`COLUMNS`; a photo that cannot be read is listed
with its error and the others go on. With grouping, the unknown faces are clustered by person
(:mod:`celebmodel.albums.grouping`) and each group of two or more gets a number; with an
:class:`~celebmodel.albums.groups.AlbumGroups` file the numbers last (same faces, same group,
new faces joining) and the user's merges and splits are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.images import load_image
from ..errors import CelebmodelError
from ..progress import BarFactory, quiet_bar
from ..recognition.recognize import Recognizer
from ..scoring.cuts import Cuts
from ..storage import atomic_write_text
from .grouping import UNGROUPED, group_faces
from .groups import AlbumGroups

COLUMNS = (
    "photo", "face", "box", "label", "nearest", "match_confidence", "similarity", "known",
    "group",
)


@dataclass
class Album:
    """The faces of many photos: ``rows`` (:data:`COLUMNS`, ``nearest_name``, ``score``), one
    unit-length embedding per row, the photos that could not be read, and the faces as they
    are grouped (:meth:`~celebmodel.recognition.recognize.Recognizer.analyse_for_groups`; ``None``:
    the embeddings)."""

    rows: pd.DataFrame
    embeddings: np.ndarray
    faces: list[dict[str, Any]] = field(default_factory=list)  # Recognizer's dict, per row
    errors: list[dict[str, str]] = field(default_factory=list)
    photos: list[str] = field(default_factory=list)
    grouped: np.ndarray | None = None

    def group(self, cuts: Cuts, book: AlbumGroups | None = None) -> Album:
        """Number the groups of unknown faces at ``cuts`` (the recognizer's
        :attr:`~celebmodel.recognition.recognize.Recognizer.cuts`): afresh, or through ``book``,
        which keeps each face's group and saves the new ones."""
        unknown = ~self.rows["known"].to_numpy(dtype=bool)
        groups = np.full(len(self.rows), UNGROUPED, dtype=int)
        vectors = (self.embeddings if self.grouped is None else self.grouped)[unknown]
        if book is not None:
            photos, faces = list(self.rows["photo"]), self.rows["face"].to_numpy(dtype=int)
            strangers = [p for p, u in zip(photos, unknown, strict=True) if u]
            book.forget([p for p, u in zip(photos, unknown, strict=True) if not u], faces[~unknown])
            if unknown.any():
                groups[unknown] = book.assign(strangers, faces[unknown], vectors, cuts)
        elif unknown.any():
            groups[unknown] = group_faces(vectors, cuts)
        self.rows["group"] = [str(g) if g != UNGROUPED else "" for g in groups]
        for face, number in zip(self.faces, self.rows["group"], strict=True):
            face["group"] = number
        return self

    def groups(self) -> dict[int, pd.DataFrame]:
        """Each numbered group's rows, largest first (ties: lower number first)."""
        numbered = self.rows[self.rows["group"] != ""]
        parts = dict(list(numbered.groupby(numbered["group"].astype(int))))
        return dict(sorted(parts.items(), key=lambda item: (-len(item[1]), item[0])))

    def csv(self) -> str:
        frame = self.rows.loc[:, list(COLUMNS)].copy()
        frame["box"] = frame["box"].map(lambda box: " ".join(str(v) for v in box))
        frame["similarity"] = frame["similarity"].map("{:.4f}".format)
        frame["match_confidence"] = frame["match_confidence"].map(
            lambda value: "" if value is None or value != value else f"{value:.4f}"
        )
        return frame.to_csv(index=False, lineterminator="\n")

    def write_csv(self, path: str | Path) -> None:
        """The rows as CSV, written atomically (never a half-written file under the name)."""
        atomic_write_text(path, self.csv())


def identify_album(
    recognizer: Recognizer,
    photos: Sequence[tuple[str, Any]],
    threshold: float | None = None,
    bar: BarFactory = quiet_bar,
    top_k: int | None = None,
) -> Album:
    """Identify every face of ``photos`` (pairs of a name to show and a path, bytes or
    array); faces numbered left to right within each photo. ``threshold`` and ``top_k``
    default to the recognizer's."""
    rows, vectors, grouped, details, errors = [], [], [], [], []
    with bar(desc="photos", total=len(photos), unit="photo") as progress:
        for name, source in photos:
            try:
                faces, embeddings, as_grouped = recognizer.analyse_for_groups(
                    load_image(source, name=name), threshold, top_k
                )
            except (CelebmodelError, OSError) as exc:
                errors.append({"photo": name, "error": str(exc)})
                progress.update(1)
                continue
            order = sorted(
                range(len(faces)), key=lambda i: (faces[i]["box"][0], faces[i]["box"][1])
            )
            for number, i in enumerate(order, start=1):
                face = faces[i]
                rows.append(
                    {
                        "photo": name,
                        "face": number,
                        "box": face["box"],
                        "label": face["label"],
                        "nearest": face["nearest"],
                        "match_confidence": face["match_confidence"],
                        "similarity": face["similarity"],
                        "known": face["known"],
                        "group": "",
                        "nearest_name": face["nearest_name"],
                        "score": face["score"],
                    }
                )
                vectors.append(embeddings[i])
                grouped.append(as_grouped[i])
                details.append(face)
            progress.update(1)
    dim = recognizer.centroids.shape[1]
    embeddings = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
    as_grouped = np.stack(grouped) if grouped else embeddings
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "nearest_name", "score"])
    return Album(frame, embeddings, details, errors, [name for name, _ in photos], as_grouped)


def photo_results(album: Album) -> list[dict[str, Any]]:
    """One JSON-ready answer per photo, in the order given: ``image``, ``faces`` (the
    Recognizer's dicts, left to right) and ``error`` (why the photo could not be read, or
    ``"no face found"``, else ``None``).

    What ``celebmodel predict --json`` prints and ``POST /identify`` answers, from this one
    function so the two can never drift apart.
    """
    errors = {error["photo"]: error["error"] for error in album.errors}
    faces: dict[str, list[dict[str, Any]]] = {name: [] for name in album.photos}
    for face, name in zip(album.faces, album.rows["photo"], strict=True):
        faces[name].append(face)  # one pass: an archive's photos times its faces would not do
    return [
        {
            "image": name,
            "faces": faces[name],
            "error": errors.get(name) or (None if faces[name] else "no face found"),
        }
        for name in album.photos
    ]
