"""Files on disk: where runs and app data live, writes that are atomic, and content hashes.

Every file a reader in another process may open is written beside its target and renamed into
place, so nobody ever sees half of one; a set of files that must agree is replaced together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def runs_root() -> Path:
    """``$CELEBMODEL_RUNS`` or ``runs/`` under the working directory."""
    return Path(os.environ.get("CELEBMODEL_RUNS", "runs")).expanduser().resolve()


def data_root() -> Path:
    """The app's data folder (uploads, datasets, caches): ``$CELEBMODEL_DATA`` or ``data/``."""
    return Path(os.environ.get("CELEBMODEL_DATA", "data")).expanduser().resolve()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _temp_beside(path: Path) -> Path:
    """A new, uniquely named empty file beside ``path`` ending in ``path``'s suffixes (Keras and
    numpy choose the format from them), so two writers of one target never share a temp file."""
    suffix = ".tmp" + "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _settle(path: Path) -> None:
    """Readable by the app of another user (mkstemp makes 0600), and on disk before the rename."""
    os.chmod(path, 0o644)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_files(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary files beside ``paths`` for the block to write, renamed into place together
    (:func:`replace_together`) when it succeeds and removed when it fails: readers see the old
    set or the new one, never a mix or half a file."""
    targets = [Path(path) for path in paths]
    temps: list[Path] = []
    try:
        temps.extend(_temp_beside(target) for target in targets)
        yield temps
        for temp in temps:
            _settle(temp)
        if len(temps) == 1:
            os.replace(temps[0], targets[0])
        else:
            replace_together(list(zip(temps, targets, strict=True)))
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write, renamed into place when it
    succeeds and removed when it fails."""
    with atomic_files(path) as (temp,):
        yield temp


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as temp:
        temp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A new folder beside ``path`` for the block to fill, swapped in for ``path`` (any old
    folder there is removed after the swap) when it succeeds and removed when it fails."""
    target = Path(path)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield partial
        os.chmod(partial, 0o755)  # mkdtemp's 0700 would hide it from another user's app
        for file in partial.rglob("*"):
            if file.is_file():
                _settle(file)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=partial.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(partial, target)
        except BaseException:
            if old is not None:
                os.replace(old / target.name, target)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each ``(temporary, target)`` pair into place; if one rename fails, the targets
    already replaced get their old files back, so the set changes together or not at all."""
    backups: dict[Path, Path] = {}  # target -> hard link to its previous file
    replaced: list[Path] = []
    try:
        for source, target in pairs:
            if target.exists():
                backups[target] = target.with_name(f".{target.name}.{uuid.uuid4().hex}.previous")
                os.link(target, backups[target])
            os.replace(source, target)
            replaced.append(target)
    except BaseException:
        for target in reversed(replaced):
            if target in backups:
                os.replace(backups[target], target)
            else:  # it did not exist before: the set had no such file
                target.unlink(missing_ok=True)
        raise
    finally:
        for backup in backups.values():
            backup.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=plain_json))


def plain_json(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, streamed in 1 MiB chunks so large files stay cheap."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(partial(handle.read, _CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
