"""Naming an album's group on the command line makes the model know them, as naming it on the
Identify page does (``celebmodel groups CSV rename N NAME``).

The group's faces are found again in their photos (the groups file keeps where each face is,
not its pixels) and added to the model the album was grouped with: on the read-only built-in
model, to the user's own copy of it, the model in use from then on
(:func:`celebmodel.recognition.people.name_faces`).
"""

from __future__ import annotations

import numpy as np

from ..data.images import load_image
from ..errors import GroupError
from ..recognition.people import learns_faces, name_faces
from ..recognition.recognize import Recognizer
from ..runs.run import Run, builtin_run_or_none, list_runs
from .groups import AlbumGroups, face_key


def model_of(book: AlbumGroups) -> Run | None:
    """The model ``book``'s faces were grouped with, if it is still there."""
    candidates = [*list_runs(), *filter(None, [builtin_run_or_none()])]
    return next((run for run in candidates if run.embeddings_id == book.model), None)


def enrol_group(book: AlbumGroups, group: int, name: str) -> tuple[Run, str, bool]:
    """Add group ``group``'s faces to the model as ``name``; returns the model they are in (a
    copy, for the built-in model), their label and whether the person is new."""
    run = model_of(book)
    if run is None:
        raise GroupError(f"{book.path}: its model ({book.model}) is not among the runs, so "
                         "nobody can be added to it (--label-only names the group alone)")
    if not learns_faces(run):
        raise GroupError(f"{run.title}: its network needs retraining to learn a face "
                         "(--label-only names the group alone)")
    recognizer = Recognizer.from_run(run)
    members = np.flatnonzero(book.groups == group)
    chips, sources = [], []
    for photo in sorted({book.photos[i] for i in members}):
        try:
            crops = recognizer.face_crops(load_image(photo, name=photo))
        except OSError as exc:
            raise GroupError(f"{photo}: cannot be read again to add its face ({exc})") from exc
        for i in members:
            if book.photos[i] != photo:
                continue
            if not 1 <= int(book.faces[i]) <= len(crops):
                raise GroupError(f"{face_key(photo, book.faces[i])}: no longer found in the "
                                 "photo (has it changed since it was grouped?)")
            chips.append(crops[int(book.faces[i]) - 1])
            sources.append(photo)
    return name_faces(run, name, chips, sources, None)
