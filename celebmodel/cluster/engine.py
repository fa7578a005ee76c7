"""The photo-parallel jobs on a Ray cluster (``--engine ray``): identifying a folder, and the
face stage of a training (crops and embeddings of a dataset, before the head is trained).

Why a second engine: one machine identifies some 30 photos a second, and an archive of a
million photos is a night's work; spread over a cluster, each worker adds its own rate. The
work itself is the local engine's, unchanged: each Ray actor loads the model once and calls
:func:`celebmodel.albums.album.identify_album` (or :func:`celebmodel.faces.cache.prepare` and
:func:`~celebmodel.faces.cache.embed_files`) on a block of photos, so both engines give the same
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
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ..errors import EngineError
from ..storage import data_root

ENGINES = ("local", "ray")
BLOCK_PHOTOS = 32  # photos per block: a resumed job redoes at most this many per worker
WORKER_CPUS = 1  # CPUs each actor asks Ray for (and the threads its TensorFlow uses)
PART_FORMAT = 2  # bump when a part's content changes: old parts are then not reused
INSTALL = "pip install -e '.[ray]'"

# Test hook: the path of a marker file. The first actor to find it deletes it and kills its
# own process, so the tests can check that a worker dying mid-job loses and repeats nothing.
DIE_HOOK = "CELEBMODEL_RAY_TEST_DIE"


def import_ray() -> Any:
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
    ray = import_ray()
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
    """A fixed slice of the job's work: ``id`` comes from its index and a hash of its items
    and the job's settings, so a rerun of the same job finds the same blocks."""

    id: str
    items: tuple[tuple[Any, ...], ...]  # JSON values: (name shown, absolute path) for photos


def plan(items: Sequence[Sequence[Any]], key: Any, size: int | None = None) -> list[Block]:
    """``items`` (tuples of JSON values; paths are made text) cut into blocks of ``size``
    (default :data:`BLOCK_PHOTOS`) in the order given."""
    size = size or BLOCK_PHOTOS
    blocks = []
    for index, start in enumerate(range(0, len(items), size)):
        chunk = tuple(tuple(str(v) if isinstance(v, PurePath) else v for v in item)
                      for item in items[start : start + size])
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


def run_blocks(
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


def driver_settings() -> dict[str, Any]:
    """What every actor needs from the driver's environment."""
    return {"data": str(data_root()), "die": os.environ.get(DIE_HOOK) or None}


def actor_setup(settings: dict[str, Any]) -> None:
    """In an actor, before the model loads: the driver's data folder, and TensorFlow held to
    the CPUs Ray gave the actor (else every actor of a machine would use all its cores)."""
    os.environ["CELEBMODEL_DATA"] = settings["data"]
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(WORKER_CPUS)
        tf.config.threading.set_inter_op_parallelism_threads(WORKER_CPUS)
    except RuntimeError:  # TensorFlow already started in this process: keep its threads
        pass


def die_if_asked(settings: dict[str, Any]) -> None:
    """The :data:`DIE_HOOK` test hook: one actor (the one that deletes the marker) dies."""
    marker = settings.get("die")
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return
        os._exit(1)
