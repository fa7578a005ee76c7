"""An album's groups of unknown faces that last: stable ids, new photos joining, and the user's
merge, split, rename and undo.

Why a file: grouping an album again from scratch renumbers every group, so a name typed
against "group 3" lands on whoever is third next time, and a user's merges are lost. Here each
face (a photo and its face number) keeps its group id until the user changes it; ids are never
reused. More photos later: each new unknown face joins the existing group it is close enough
to (:func:`celebmodel.albums.grouping.join_groups`), and only the rest are grouped, with the faces
still alone from before. Every change is one atomic replace of the file, and recorded so
:meth:`AlbumGroups.undo` can take it back.

The file is one ``.npz`` (no pickle): ``photos``, ``faces``, ``groups`` and ``embeddings`` per
face, and ``meta``, a JSON text: format, model (the run whose network made the embeddings),
the cuts, group names, the next id and the history. A damaged file, or one from another model,
is set aside (``<name>.damaged``) with a :attr:`AlbumGroups.notice` that says why, and the
album is grouped afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import GroupError
from ..runs.run import Run
from ..scoring.cuts import Cuts
from ..storage import atomic_files, now_iso
from ..vectors import l2_normalize
from .grouping import UNGROUPED, group_faces, join_groups

FORMAT = "celebmodel-album-groups-1"
HISTORY = 50  # changes that can be undone
SAME_FACE = 0.999  # cosine above which a face seen again is the same face (same network)
_DAMAGED = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def beside(csv: str | Path) -> Path:
    """The groups file kept beside an album's CSV: ``faces.csv`` -> ``faces.groups.npz``."""
    csv = Path(csv)
    return csv.with_name(f"{csv.stem}.groups.npz")


def kept_with(run: Run, album: str) -> Path:
    """The groups file of the app's album ``album`` (a zip's name, a folder's path), kept with
    the model that grouped it: ``<run>/albums/<digest>.groups.npz`` (the built-in model's in
    the user's data folder, :attr:`~celebmodel.runs.run.Run.user_files`)."""
    digest = hashlib.sha256(album.encode("utf-8")).hexdigest()[:16]
    return run.user_files / "albums" / f"{digest}.groups.npz"


def face_key(photo: str, face: int) -> str:
    """How a face is named to the user and on the command line: ``photo#face``."""
    return f"{photo}#{int(face)}"


@dataclass
class AlbumGroups:
    """The groups of one album (see the module's docstring); :meth:`open` reads or starts one."""

    path: Path
    model: str
    photos: list[str] = field(default_factory=list)
    faces: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    names: dict[int, str] = field(default_factory=dict)
    next_id: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    cuts: Cuts | None = None
    notice: str | None = None  # why an existing file was not used
    csv: Path | None = None  # an album CSV whose ``group`` column is rewritten with each change

    @classmethod
    def open(cls, path: str | Path, model: str) -> AlbumGroups:
        """The groups kept at ``path`` for ``model``; new (with :attr:`notice`) if the file is
        missing, damaged or from another model. Never raises for the file's content."""
        path = Path(path)
        if not path.is_file():
            return cls(path, model)
        try:
            book = cls._read(path)
        except _DAMAGED as exc:
            return cls._afresh(path, model, f"damaged ({exc})")
        if book.model != model:
            return cls._afresh(path, model, f"made with another model ({book.model})")
        return book

    @classmethod
    def load(cls, path: str | Path) -> AlbumGroups:
        """The groups kept at ``path`` as they are, to change them; a missing or damaged file
        is a :class:`~celebmodel.errors.GroupError` that says so."""
        path = Path(path)
        if not path.is_file():
            raise GroupError(f"{path}: no groups yet (celebmodel predict … --csv FILE --group)")
        try:
            return cls._read(path)
        except _DAMAGED as exc:
            raise GroupError(f"{path}: damaged ({exc}); run predict --group again") from exc

    @classmethod
    def _afresh(cls, path: Path, model: str, why: str) -> AlbumGroups:
        aside = path.with_name(f"{path.name}.damaged")
        try:
            os.replace(path, aside)
            kept = f"; the old file is kept as {aside.name}"
        except OSError:
            kept = ""
        notice = f"{path}: {why}; the album's faces are grouped afresh{kept}"
        return cls(path, model, notice=notice)

    @classmethod
    def _read(cls, path: Path) -> AlbumGroups:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            photos = [str(p) for p in data["photos"]]
            faces = data["faces"].astype(int)
            groups = data["groups"].astype(int)
            embeddings = data["embeddings"].astype(np.float32)
        n = len(photos)
        if not (len(faces) == len(groups) == len(embeddings) == n) or embeddings.ndim != 2:
            raise ValueError("its arrays disagree in length")
        if (groups < 0).any() or (n and groups.max() >= int(meta["next_id"])):
            raise ValueError("a group id out of range")
        cuts = meta.get("cuts")
        if not (isinstance(cuts, list) and len(cuts) == 3):
            cuts = None  # none yet, or an older version's two: the next assign records them
        return cls(
            path,
            str(meta["model"]),
            photos,
            faces,
            groups,
            embeddings,
            {int(k): str(v) for k, v in meta.get("names", {}).items()},
            int(meta["next_id"]),
            list(meta.get("history", [])),
            Cuts(*(float(c) for c in cuts)) if cuts else None,
        )

    # Reading -----------------------------------------------------------------------------

    def summary(self) -> pd.DataFrame:
        """One row per group: ``group``, ``faces``, ``name``, ``photos`` (a few), largest first."""
        rows = []
        for group in self.ids():
            members = np.flatnonzero(self.groups == group)
            shown = sorted({self.photos[i] for i in members})
            more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
            rows.append(
                {
                    "group": group,
                    "faces": len(members),
                    "name": self.names.get(group, ""),
                    "photos": ", ".join(shown[:3]) + more,
                }
            )
        return pd.DataFrame(rows, columns=["group", "faces", "name", "photos"])

    def ids(self) -> list[int]:
        """The groups that have faces, largest first (ties: lower id first)."""
        ids, counts = np.unique(self.groups[self.groups != UNGROUPED], return_counts=True)
        return [int(ids[i]) for i in np.lexsort((ids, -counts))]

    def members(self, group: int) -> list[str]:
        """The faces of ``group`` as ``photo#face``."""
        self._check(group)
        return [
            face_key(self.photos[i], self.faces[i]) for i in np.flatnonzero(self.groups == group)
        ]

    def group_of(self, photos: Sequence[str], faces: Sequence[int]) -> np.ndarray:
        """The group id of each face given (:data:`UNGROUPED` for faces not kept here)."""
        index = self._index(photos, faces)
        if not len(self.groups):
            return np.full(len(index), UNGROUPED)
        return np.where(index >= 0, self.groups[index], UNGROUPED)

    def last_change(self) -> str | None:
        """What :meth:`undo` would take back, in words."""
        return self.history[-1]["action"] if self.history else None

    def _keys(self) -> list[str]:
        return [face_key(p, f) for p, f in zip(self.photos, self.faces, strict=True)]

    def _check(self, group: int) -> None:
        if group == UNGROUPED or not (self.groups == group).any():
            raise GroupError(f"{self.path}: no group {group}")

    # Changes -----------------------------------------------------------------------------

    def assign(
        self, photos: Sequence[str], faces: Sequence[int], embeddings: np.ndarray, cuts: Cuts
    ) -> np.ndarray:
        """The group id of each unknown face given, kept for faces seen before; new faces join
        an existing group when close enough, the rest are grouped with the faces still alone.
        Saved at once; the old groups change only where new faces join them."""
        embeddings = l2_normalize(np.asarray(embeddings, np.float32))
        index = self._index(photos, faces)
        seen = index >= 0
        if seen.any():  # the same photo's face again: the same embedding, or a changed photo
            same = np.einsum("ij,ij->i", self.embeddings[index[seen]], embeddings[seen])
            if (same < SAME_FACE).mean() > 0.5:
                self.notice = (
                    f"{self.path}: its faces do not match this model's embeddings; the album's "
                    "faces are grouped afresh"
                )
                fresh = AlbumGroups(self.path, self.model, notice=self.notice, csv=self.csv)
                self.__dict__.update(fresh.__dict__)
                return self.assign(photos, faces, embeddings, cuts)
            changed = np.flatnonzero(seen)[same < SAME_FACE]
            self.groups[index[changed]] = UNGROUPED
            self.embeddings[index[changed]] = embeddings[changed]
            index[changed] = -1
        new = np.flatnonzero(index < 0)
        if len(new):
            start = len(self.photos)
            self.photos += [photos[i] for i in new]
            self.faces = np.r_[self.faces, np.asarray(faces, int)[new]].astype(int)
            self.groups = np.r_[self.groups, np.zeros(len(new), int)]
            stored = self.embeddings.reshape(-1, embeddings.shape[1])
            self.embeddings = np.vstack([stored, embeddings[new]])
            index[new] = np.arange(start, start + len(new))
            self._place(index[new], cuts)
        if len(new) or self.cuts != cuts:
            self.cuts = cuts
            self.save()
        return self.groups[index]

    def forget(self, photos: Sequence[str], faces: Sequence[int]) -> None:
        """Drop faces the model now knows (their group was named, say); saved if any was kept."""
        index = self._index(photos, faces)
        if (index >= 0).any():
            keep = np.ones(len(self.photos), bool)
            keep[index[index >= 0]] = False
            self._keep(keep)
            self.save()

    def _keep(self, keep: np.ndarray) -> None:
        self.photos = [p for p, k in zip(self.photos, keep, strict=True) if k]
        self.faces, self.groups = self.faces[keep], self.groups[keep]
        self.embeddings = self.embeddings[keep] if len(self.embeddings) else self.embeddings
        live = set(self.groups.tolist())
        self.names = {g: n for g, n in self.names.items() if g in live}

    def _index(self, photos: Sequence[str], faces: Sequence[int]) -> np.ndarray:
        """Where each face given is kept (-1: not kept)."""
        where = {key: i for i, key in enumerate(self._keys())}
        keys = [face_key(p, f) for p, f in zip(photos, faces, strict=True)]
        return np.array([where.get(k, -1) for k in keys], dtype=int)

    def _place(self, new: np.ndarray, cuts: Cuts) -> None:
        """New faces into existing groups, or into new groups with the faces still alone."""
        ids = np.array(self.ids(), dtype=int)
        if len(ids):
            sums = np.zeros((self.next_id, self.embeddings.shape[1]))
            np.add.at(sums, self.groups, self.embeddings)  # one pass, not one per group
            sizes = np.bincount(self.groups, minlength=self.next_id)
            joined = join_groups(self.embeddings[new], sums[ids], sizes[ids], cuts)
            self.groups[new[joined >= 0]] = ids[joined[joined >= 0]]
        alone = np.flatnonzero(self.groups == UNGROUPED)
        numbers = group_faces(self.embeddings[alone], cuts)
        for number in range(1, numbers.max(initial=0) + 1):
            self.groups[alone[numbers == number]] = self.next_id
            self.next_id += 1

    def merge(self, into: int, other: int) -> str:
        """Every face of group ``other`` into group ``into`` (its name too, if it had none)."""
        if into == other:
            raise GroupError(f"{self.path}: cannot merge group {into} with itself")
        self._check(into)
        self._check(other)
        moved = np.flatnonzero(self.groups == other)
        action = f"merged group {other} into group {into}"
        names = {into: self.names.get(into), other: self.names.get(other)}
        self._record(action, moved, names)
        self.groups[moved] = into
        if not self.names.get(into) and self.names.get(other):
            self.names[into] = self.names[other]
        self.names.pop(other, None)
        self.save()
        return action

    def split(self, keys: Sequence[str], new_group: bool = True) -> str:
        """Take the faces ``keys`` (``photo#face``) out of their groups: into one new group
        (``new_group``), else into none."""
        if not keys:
            raise GroupError(f"{self.path}: no faces chosen to take out")
        where = {key: i for i, key in enumerate(self._keys())}
        missing = [key for key in keys if key not in where]
        if missing:
            raise GroupError(f"{self.path}: no face {missing[0]} in this album's groups")
        moved = np.array(sorted({where[key] for key in keys}), dtype=int)
        target = self.next_id if new_group else UNGROUPED
        action = (
            f"took {len(moved)} face(s) into new group {target}"
            if new_group
            else f"took {len(moved)} face(s) out of their groups"
        )
        self._record(action, moved, {})
        self.groups[moved] = target
        if new_group:
            self.next_id += 1
        self.save()
        return action

    def rename(self, group: int, name: str) -> str:
        """Call group ``group`` ``name`` (an empty name removes it)."""
        self._check(group)
        name = " ".join(name.split())
        action = f"named group {group} {name!r}" if name else f"removed group {group}'s name"
        self._record(action, np.zeros(0, int), {group: self.names.get(group)})
        if name:
            self.names[group] = name
        else:
            self.names.pop(group, None)
        self.save()
        return action

    def undo(self) -> str:
        """Take back the last merge, split or rename; what it was, in words."""
        if not self.history:
            raise GroupError(f"{self.path}: nothing to undo")
        change = self.history.pop()
        where = {key: i for i, key in enumerate(self._keys())}
        for key, group in change["groups"]:
            if key in where:  # a face forgotten since (the model knows it now) stays out
                self.groups[where[key]] = int(group)
        for group, name in change["names"].items():
            if name is None:
                self.names.pop(int(group), None)
            else:
                self.names[int(group)] = name
        self.next_id = max(self.next_id, int(change["next_id"]))
        self.save()
        return f"undid: {change['action']}"

    def _record(self, action: str, moved: np.ndarray, names: dict[int, str | None]) -> None:
        keys = self._keys()
        change = {
            "action": action,
            "at": now_iso(),
            "groups": [[keys[i], int(self.groups[i])] for i in moved],
            "names": {str(g): n for g, n in names.items()},
            "next_id": self.next_id,
        }
        self.history = [*self.history, change][-HISTORY:]

    def save(self) -> None:
        """Write the file atomically (a reader never sees half of it), and :attr:`csv`'s
        ``group`` column with it (both files change together or neither)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "model": self.model,
            "cuts": self.cuts.values() if self.cuts else None,
            "names": {str(k): v for k, v in self.names.items()},
            "next_id": self.next_id,
            "history": self.history,
            "updated": now_iso(),
        }
        targets = [self.path] + ([self.csv] if self.csv is not None else [])
        with atomic_files(*targets) as temps:
            np.savez(
                temps[0],
                photos=np.asarray(self.photos, dtype=str),
                faces=self.faces.astype(np.int64),
                groups=self.groups.astype(np.int64),
                embeddings=self.embeddings.astype(np.float32),
                meta=np.asarray(json.dumps(meta)),
            )
            if self.csv is not None:
                self._write_csv(temps[1])

    def _write_csv(self, partial: Path) -> None:
        """:attr:`csv` with each face's ``group`` as kept here, written to ``partial``."""
        try:
            rows = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
            faces = rows["face"].astype(int)
        except (OSError, ValueError, KeyError) as exc:
            raise GroupError(f"{self.csv}: not an album CSV of celebmodel predict ({exc})") from exc
        groups = self.group_of(list(rows["photo"]), list(faces))
        rows["group"] = [str(g) if g != UNGROUPED else "" for g in groups]
        partial.write_text(rows.to_csv(index=False, lineterminator="\n"), encoding="utf-8")
