"""The built-in model as a run folder: where it lives, its files checked against its
provenance, the LFW page of each person, and writable copies of it ("Make my own copy").

Kept apart from :mod:`celebmodel.recognition.public_figures` (which builds it, with the face
stage and TensorFlow) so that opening runs stays light.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..storage import atomic_folder, atomic_write_json, file_sha256, runs_root

NAME = "lfw-public-figures"  # how every command and page addresses the built-in model
TITLE = "LFW public figures"
PERSON_PAGE = "https://umass-vis-lfw.github.io/person/{label}.html"
FILES = ("config.json", "labels.json", "status.json", "meta.json", "gallery.npz",
         "calibration.json", "protocol.json")


def folder() -> Path:
    """Where the built-in model lives inside the installed package."""
    return Path(__file__).parents[1] / "builtin" / NAME


def person_page(label: str) -> str:
    """The person's page on the LFW site."""
    return PERSON_PAGE.format(label=label)


def verify(path: Path | None = None) -> Path:
    """The built-in model's folder, every file checked against ``provenance.json``: one clear
    error naming the file when one is missing, damaged, truncated or altered."""
    path = path or folder()
    return _verified(str(path), _stamp(path))


def _stamp(path: Path) -> tuple:
    return tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.glob("*.json"))
    ) + tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.glob("*.npz"))


@cache
def _verified(path_text: str, stamp: tuple) -> Path:
    path = Path(path_text)
    how = ("reinstall celebmodel, or rebuild it from LFW with `celebmodel build-lfw-model "
           "LFW_FOLDER`; meanwhile train your own model")
    provenance = path / "provenance.json"
    try:
        recorded = json.loads(provenance.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        raise RunError(f"{provenance}: missing, so the built-in model cannot be checked; "
                       f"{how}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{provenance}: damaged ({exc}); {how}") from exc
    for name in FILES:
        file = path / name
        if name not in recorded:
            raise RunError(f"{provenance}: does not list {name}; {how}")
        if not file.is_file():
            raise RunError(f"{file}: missing from the built-in model; {how}")
        if file_sha256(file) != recorded[name]:
            raise RunError(f"{file}: damaged or altered (its sha256 differs from "
                           f"provenance.json); {how}")
    return path


def provenance(path: Path | None = None) -> dict[str, Any]:
    return json.loads(((path or folder()) / "provenance.json").read_text(encoding="utf-8"))


def available() -> bool:
    """Whether the built-in model is installed (it may still fail :func:`verify`)."""
    return (folder() / "provenance.json").is_file()


def copy_to_runs(source: Path, title: str, root: str | Path | None = None) -> Path:
    """A writable copy of a run folder under the runs folder (``<time>-<name>``), written
    beside it and renamed into place when whole: "Make my own copy"."""
    root = Path(root) if root else runs_root()
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = next(
        (root / name for name in (f"{stamp}-copy", *(f"{stamp}-copy-{n}" for n in range(1, 1000)))
         if not (root / name).exists()),
        None,
    )
    if target is None:
        raise RunError(f"{root}: cannot find a free run name for {stamp}-copy")
    with atomic_folder(target) as partial:
        for item in source.iterdir():
            if item.name.startswith(".") or item.name == "provenance.json":
                continue
            if item.is_dir():
                shutil.copytree(item, partial / item.name)
            else:
                shutil.copy2(item, partial / item.name)
        meta_file = partial / "meta.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        notes = (f"A copy of {meta.get('name') or source.name} made on {stamp[:4]}-{stamp[4:6]}-"
                 f"{stamp[6:8]}: yours to change (add, rename and remove people on People).")
        meta = {"name": title, "notes": notes, "copied_from": str(source)}
        atomic_write_json(meta_file, meta)
    return target
