"""Files on disk: where runs and app data live, writes that are atomic, and content hashes.

Every file a reader in another process may open is written beside its target and renamed into
place, so nobody ever sees half of one; a set of files that must agree is replaced together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
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


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the run from another user's app
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each ``(temporary, target)`` pair into place; if one rename fails, the targets
    already replaced get their old files back, so the set changes together or not at all."""
    backups: dict[Path, Path] = {}  # target -> hard link to its previous file
    replaced: list[Path] = []
    try:
        for source, target in pairs:
            if target.exists():
                backups[target] = target.with_name(f".{target.name}.previous")
                backups[target].unlink(missing_ok=True)
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
