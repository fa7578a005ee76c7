"""A folder of photos identified on a Ray cluster (``predict --engine ray``): blocks of photos
identified by actors that each load the run once, finished blocks kept in ``<csv>.parts/``,
merged into one :class:`~celebmodel.albums.album.Album` with the local engine's rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cluster.engine import (
    PART_FORMAT,
    Block,
    actor_setup,
    cluster,
    cluster_address,
    die_if_asked,
    driver_settings,
    import_ray,
    plan,
    run_blocks,
)
from ..progress import BarFactory, quiet_bar
from ..recognition.recognize import Recognizer, album_cuts
from ..runs.run import Run, load_run
from ..storage import atomic_write_text, plain_json
from ..vectors import l2_normalize
from .album import COLUMNS, Album, identify_album
from .groups import AlbumGroups

# Identifying a folder --------------------------------------------------------------------------


class _Identifier:
    """A Ray actor: a run's Recognizer, loaded once, identifying one block per call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        actor_setup(settings)
        self.settings = settings
        self.recognizer = Recognizer.from_run(settings["run"], top_k=settings["top_k"])
        self.recognizer.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        die_if_asked(self.settings)
        answers = []
        for items in batch["items"]:
            photos = [(name, Path(path)) for name, path in json.loads(str(items))]
            album = identify_album(self.recognizer, photos, self.settings["threshold"])
            answers.append(_part(album))
        return {"block": batch["block"], "answer": np.array(answers)}


def _part(album: Album) -> str:
    """A block's album as JSON (floats round-trip exactly, so the CSV is the local one)."""
    rows = album.rows.loc[:, [*COLUMNS, "nearest_name", "score"]].to_dict("records")
    return json.dumps(
        {
            "format": PART_FORMAT,
            "rows": rows,
            "embeddings": album.embeddings.tolist(),
            "grouped": (album.embeddings if album.grouped is None else album.grouped).tolist(),
            "dim": int(album.embeddings.shape[1]),
            "faces": album.faces,
            "errors": album.errors,
            "photos": album.photos,
        },
        default=plain_json,
    )


def merge(parts: Sequence[dict[str, Any]]) -> Album:
    """One Album of the blocks' parts, in block order: the rows ``identify_album`` gives for
    the whole list at once."""
    dim = parts[0]["dim"] if parts else 128
    rows = [row for part in parts for row in part["rows"]]
    vectors = [np.asarray(p["embeddings"], np.float32).reshape(-1, p["dim"]) for p in parts]
    grouped = [np.asarray(p["grouped"], np.float32).reshape(-1, p["dim"]) for p in parts]
    return Album(
        pd.DataFrame(rows, columns=[*COLUMNS, "nearest_name", "score"]),
        np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
        [face for part in parts for face in part["faces"]],
        [error for part in parts for error in part["errors"]],
        [photo for part in parts for photo in part["photos"]],
        np.concatenate(grouped) if grouped else None,
    )


def parts_dir(csv: str | Path) -> Path:
    """Where the finished blocks of a job writing ``csv`` wait for the merge."""
    csv = Path(csv)
    return csv.with_name(f"{csv.name}.parts")


def _read_part(path: Path) -> dict[str, Any] | None:
    try:
        part = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: the block is done again
    return part if part.get("format") == PART_FORMAT else None


def folder_blocks(
    run: Run,
    photos: Sequence[tuple[str, str | Path]],
    threshold: float | None,
    top_k: int,
    block_size: int | None = None,
) -> list[Block]:
    """The blocks of a folder job: the same photos, run (and its files' times) and settings
    give the same blocks, so a rerun recognises the parts it already has."""
    items = [(name, str(Path(source).resolve())) for name, source in photos]
    return plan(items, [str(run.path), run.versions(), threshold, top_k], block_size)


def identify_folder(
    run_dir: str | Path | Run,
    photos: Sequence[tuple[str, str | Path]],
    csv: str | Path | None = None,
    threshold: float | None = None,
    top_k: int = 5,
    *,
    group: bool = False,
    book: AlbumGroups | None = None,
    address: str | None = None,
    workers: int | None = None,
    bar: BarFactory = quiet_bar,
    block_size: int | None = None,
    keep: bool = False,
) -> Album:
    """What :func:`~celebmodel.albums.album.identify_album` (then ``Album.group`` when ``group``,
    through ``book`` if given) gives for ``photos`` (pairs of a name and a file), computed by
    Ray actors. The grouping runs here, on the driver, after the merge: it needs only the
    unknown faces' embeddings (512 bytes each) and grows with their number times the
    neighbours kept (:mod:`celebmodel.albums.grouping`).

    With ``csv``, each finished block is kept in :func:`parts_dir` first (blocks already
    there are not done again: a stopped job resumes), then the CSV is written atomically and
    the parts removed. ``bar`` counts photos (``photos/s`` on the command line).
    """
    import_ray()  # a missing Ray is said before anything is written
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    blocks = folder_blocks(run, photos, threshold, top_k, block_size)
    folder = parts_dir(csv) if csv else None
    parts: dict[str, dict[str, Any]] = {}
    if folder is not None:
        for block in blocks:
            part = _read_part(folder / f"{block.id}.json")
            if part is not None:
                parts[block.id] = part
    missing = [block for block in blocks if block.id not in parts]
    sizes = {block.id: len(block.items) for block in missing}
    settings = {**driver_settings(), "run": str(run.path), "top_k": top_k, "threshold": threshold}
    desc = f"photos (resumed: {len(parts)} of {len(blocks)} blocks done)" if parts else "photos"
    with bar(desc=desc, total=sum(sizes.values()), unit="photo") as progress:
        if missing:
            with cluster(address, keep=keep) as ray:
                for block_id, answer in run_blocks(ray, _Identifier, settings, missing, workers):
                    if block_id in parts:
                        continue  # a block retried after it was delivered: counted once
                    if folder is not None:
                        folder.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(folder / f"{block_id}.json", answer)
                    parts[block_id] = json.loads(answer)
                    progress.update(sizes[block_id])
    album = merge([parts[block.id] for block in blocks])
    if group:
        gallery, labels = run.gallery()
        album.group(album_cuts(run, l2_normalize(gallery), labels), book)
    if csv:
        album.write_csv(csv)
        shutil.rmtree(folder, ignore_errors=True)
    return album


def identify_photos(
    recognizer: Recognizer,
    photos: Sequence[tuple[str, Any]],
    threshold: float | None = None,
    bar: BarFactory = quiet_bar,
) -> Album:
    """The Identify page's album: on the cluster of ``$RAY_ADDRESS`` when the app was started
    with one and every photo is a file the cluster can read, else on this machine."""
    on_files = all(isinstance(source, (str, Path)) for _, source in photos)
    if not (cluster_address() and on_files and photos):
        return identify_album(recognizer, photos, threshold, bar=bar)
    return identify_folder(
        recognizer.run, photos, None, threshold, recognizer.top_k, bar=bar, keep=True
    )


