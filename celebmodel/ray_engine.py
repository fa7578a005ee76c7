"""The photo-parallel jobs on a Ray cluster (``--engine ray``): identifying a folder, and the
face stage of a training (crops and embeddings of a dataset, before the head is trained).

Why a second engine: one machine identifies some 30 photos a second, and an archive of a
million photos is a night's work; spread over a cluster, each worker adds its own rate. The
work itself is the local engine's, unchanged: each Ray actor loads the model once and calls
:func:`celebmodel.albums.identify_album` (or :func:`celebmodel.face_cache.prepare` and
:func:`~celebmodel.face_cache.embed_files`) on a block of photos, so both engines give the same
rows and the same cache entries. Ray is an optional extra, imported only here and only when
used; the local engine stays the default and needs none of it.

Photos go to the actors as absolute paths, so the photos, the run folder and the data folder
(the face cache) must be readable at the same paths on every machine of the cluster (a shared
filesystem). The driver writes each finished block's rows into ``<csv>.parts/`` (atomically),
so a job that stops resumes with the blocks still missing, and merges them into the CSV (also
atomically) only once every block is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .album_groups import AlbumGroups
from .albums import COLUMNS, Album, identify_album
from .backbones import get_backbone
from .config import TrainConfig
from .errors import EngineError
from .face_cache import cache_dir, embed_files, prepare
from .faces import FaceStage
from .open_set import l2_normalize
from .pipeline import face_stage
from .progress import BarFactory, quiet_bar
from .recognize import Recognizer, album_cuts
from .runs import Run, load_run
from .storage import atomic_write_text, data_root, plain_json

ENGINES = ("local", "ray")
BLOCK_PHOTOS = 32  # photos per block: a resumed job redoes at most this many per worker
WORKER_CPUS = 1  # CPUs each actor asks Ray for (and the threads its TensorFlow uses)
PART_FORMAT = 2  # bump when a part's content changes: old parts are then not reused
INSTALL = "pip install -e '.[ray]'"

# Test hook: the path of a marker file. The first actor to find it deletes it and kills its
# own process, so the tests can check that a worker dying mid-job loses and repeats nothing.
DIE_HOOK = "CELEBMODEL_RAY_TEST_DIE"


def _ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 (the engine needs Ray Data, not only Ray Core)
    except ImportError:
        raise EngineError(f"--engine ray: Ray is not installed; run {INSTALL}") from None
    return ray


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``$RAY_ADDRESS``, else none (start one here)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def cluster(address: str | None = None, keep: bool = False) -> Iterator[Any]:
    """Ray, connected: to the process's existing connection, to ``address`` (or
    ``$RAY_ADDRESS``), else to a local cluster started here with this machine's CPUs.

    On the way out, a cluster started here is shut down and a joined one disconnected
    (``keep`` leaves a joined one connected, for the app); an existing connection is left as
    it was. A cluster this process did not start is never stopped.
    """
    ray = _ray()
    address = cluster_address(address)
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray cluster"
        raise EngineError(f"{where}: cannot start or join the Ray cluster ({exc})") from exc
    _quiet(ray)
    try:
        yield ray
    finally:
        if not (keep and address):
            ray.shutdown()


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """Refuse a ``host:port`` nobody answers on at once: Ray itself would retry for minutes
    (``ray://``, ``auto`` and other forms are left to Ray)."""
    host, _, port = address.rpartition(":")
    if "/" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as exc:
        raise EngineError(
            f"{address}: no Ray cluster answers there ({exc}); start one with "
            "`ray start --head` or leave out --ray-address and RAY_ADDRESS"
        ) from None


def _quiet(ray: Any) -> None:
    """Ray Data's own bars and logs off: the command line shows one bar, in photos/s."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled", etc.


@dataclass(frozen=True)
class Block:
    """A fixed slice of the job's photos: ``id`` comes from its index and a hash of its
    photos and the job's settings, so a rerun of the same job finds the same blocks."""

    id: str
    items: tuple[tuple[str, str], ...]  # (name shown, absolute path)


def plan(items: Sequence[tuple[str, str]], key: Any, size: int | None = None) -> list[Block]:
    """``items`` cut into blocks of ``size`` (default :data:`BLOCK_PHOTOS`) in the order
    given."""
    size = size or BLOCK_PHOTOS
    blocks = []
    for index, start in enumerate(range(0, len(items), size)):
        chunk = tuple((str(name), str(path)) for name, path in items[start : start + size])
        text = json.dumps([PART_FORMAT, key, chunk], default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        blocks.append(Block(f"{index:06d}-{digest}", chunk))
    return blocks


def _workers(ray: Any, workers: int | None, blocks: int) -> int:
    """Actors to start: ``workers``, else one per ``WORKER_CPUS`` of the cluster; never more
    than there are blocks."""
    if workers is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, cpus // WORKER_CPUS)
    return max(1, min(workers, blocks))


def _run_blocks(
    ray: Any, actor: type, settings: dict[str, Any], blocks: Sequence[Block], workers: int | None
) -> Iterator[tuple[str, str]]:
    """(block id, the actor's JSON answer) of each block, as the blocks finish.

    A Ray Data actor pool: each actor is built once (model loaded once) and handed one block
    per call; an actor whose process dies is restarted and its block retried by Ray.
    """
    if not blocks:
        return
    items = [{"block": b.id, "items": json.dumps(b.items)} for b in blocks]
    data = ray.data.from_items(items, override_num_blocks=len(items))
    # Ray Data's actor pools restart a dead actor and retry its block (max_restarts and
    # max_task_retries default to -1 there), which is the fault tolerance the job relies on.
    answers = data.map_batches(
        actor,
        batch_size=1,
        batch_format="numpy",
        fn_constructor_kwargs={"settings": settings},
        compute=ray.data.ActorPoolStrategy(size=_workers(ray, workers, len(blocks))),
        num_cpus=WORKER_CPUS,
    )
    for row in answers.iter_rows():
        yield str(row["block"]), str(row["answer"])


def _settings() -> dict[str, Any]:
    """What every actor needs from the driver's environment."""
    return {"data": str(data_root()), "die": os.environ.get(DIE_HOOK) or None}


def _actor_setup(settings: dict[str, Any]) -> None:
    """In an actor, before the model loads: the driver's data folder, and TensorFlow held to
    the CPUs Ray gave the actor (else every actor of a machine would use all its cores)."""
    os.environ["CELEBMODEL_DATA"] = settings["data"]
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(WORKER_CPUS)
        tf.config.threading.set_inter_op_parallelism_threads(WORKER_CPUS)
    except RuntimeError:  # TensorFlow already started in this process: keep its threads
        pass


def _die_if_asked(settings: dict[str, Any]) -> None:
    """The :data:`DIE_HOOK` test hook: one actor (the one that deletes the marker) dies."""
    marker = settings.get("die")
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return
        os._exit(1)


# Identifying a folder --------------------------------------------------------------------------


class _Identifier:
    """A Ray actor: a run's Recognizer, loaded once, identifying one block per call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        _actor_setup(settings)
        self.settings = settings
        self.recognizer = Recognizer.from_run(settings["run"], top_k=settings["top_k"])
        self.recognizer.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _die_if_asked(self.settings)
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
    """What :func:`~celebmodel.albums.identify_album` (then ``Album.group`` when ``group``,
    through ``book`` if given) gives for ``photos`` (pairs of a name and a file), computed by
    Ray actors. The grouping runs here, on the driver, after the merge: it needs only the
    unknown faces' embeddings (512 bytes each) and grows with their number times the
    neighbours kept (:mod:`celebmodel.grouping`).

    With ``csv``, each finished block is kept in :func:`parts_dir` first (blocks already
    there are not done again: a stopped job resumes), then the CSV is written atomically and
    the parts removed. ``bar`` counts photos (``photos/s`` on the command line).
    """
    _ray()  # a missing Ray is said before anything is written
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
    settings = {**_settings(), "run": str(run.path), "top_k": top_k, "threshold": threshold}
    desc = f"photos (resumed: {len(parts)} of {len(blocks)} blocks done)" if parts else "photos"
    with bar(desc=desc, total=sum(sizes.values()), unit="photo") as progress:
        if missing:
            with cluster(address, keep=keep) as ray:
                for block_id, answer in _run_blocks(ray, _Identifier, settings, missing, workers):
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


# The face stage of a training ------------------------------------------------------------------


class _FaceWorker:
    """A Ray actor: the face stage (and the face network) loaded once, filling the face cache
    for one block of dataset photos per call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        _actor_setup(settings)
        from .face_network import FaceEmbedder

        self.settings = settings
        self.stage = FaceStage(**settings["stage"])
        self.embedder = FaceEmbedder(flip=False) if settings["embed"] else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _die_if_asked(self.settings)
        answers = []
        for items in batch["items"]:
            paths = [path for path, _ in json.loads(str(items))]
            records = prepare(self.settings["root"], paths, self.stage, self.settings["cache"])
            crops = [record["crop"] for record in records if record["crop"]]
            if self.embedder is not None:
                embed_files(crops, self.embedder)
            answers.append(json.dumps({"photos": len(paths), "crops": len(crops)}))
        return {"block": batch["block"], "answer": np.array(answers)}


def prepare_faces(
    config: TrainConfig,
    paths: Sequence[str],
    root: str | Path | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    bar: BarFactory = quiet_bar,
    block_size: int | None = None,
) -> int:
    """Crops (and, for a face network, embeddings) of the dataset photos ``paths`` (relative
    to ``root``, default the config's dataset) computed by Ray actors into this machine's face
    cache, under the keys the local engine uses: :func:`celebmodel.pipeline.prepare_inputs`
    then finds every photo done. Returns the number of crops.

    The cache is the resume: photos cached before are neither read nor detected again.
    """
    _ray()
    stage = face_stage(config)
    folder = Path(root if root is not None else config.data_dir).expanduser().resolve()
    embed = get_backbone(config.backbone).kind == "embedding"
    blocks = plan([(path, path) for path in paths], [str(folder), stage.key(), embed], block_size)
    settings = {
        **_settings(),
        "root": str(folder),
        "cache": str(cache_dir()),
        "stage": asdict(stage),
        "embed": embed,
    }
    sizes = {block.id: len(block.items) for block in blocks}
    crops, done = 0, set()
    with bar(desc="faces", total=len(paths), unit="photo") as progress:
        if blocks:
            with cluster(address) as ray:
                for block_id, answer in _run_blocks(ray, _FaceWorker, settings, blocks, workers):
                    if block_id in done:
                        continue
                    done.add(block_id)
                    crops += json.loads(answer)["crops"]
                    progress.update(sizes[block_id])
    return crops
