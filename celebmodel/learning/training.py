"""A training job, start to finish: the run directory the CLI and the app start.

:func:`train_run` scans and splits the dataset, runs the face stage, fits the estimator,
computes the gallery, calibration and metrics, then writes the model atomically. The run's
``status.json`` says how it ended; SIGTERM cancels it cleanly, and a failure leaves no model.

TensorFlow (seconds to import) is imported by :func:`train_run` itself, after the run says
it is running, and on a thread of its own while the dataset is scanned and its faces found
(which need none of it): a page watching a new training sees it at once, and the first
epoch comes seconds sooner.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backbones import get_backbone
from ..config import TrainConfig
from ..data.dataset import (
    describe_duplicates,
    find_duplicates,
    make_split,
    read_split,
    scan_dataset,
    write_split,
)
from ..errors import Cancelled, CelebmodelError, DatasetError, RunError
from ..faces.network import needs_tensorflow
from ..runs.run import Run, new_run_dir, pid_alive
from ..scoring.cuts import MIRRORED, distance_profile
from ..scoring.open_set import calibrate, centroids_of, stranger_scores, unknown_scores
from ..storage import atomic_file, atomic_write_json, atomic_write_text, now_iso
from ..vectors import l2_normalize
from .stages import Stages, _Stop

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import Inputs

log = logging.getLogger("celebmodel")


PACKAGES = ("celebmodel", "tensorflow-cpu", "keras", "dlib-bin", "mtcnn", "scikit-learn", "numpy")

OPEN_SET_ACCEPT = 0.95  # share of known validation faces the default threshold accepts

SUBSETS = ("train", "val", "test")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _setup_logging(run: Run) -> logging.Handler:
    handler = logging.FileHandler(run.file("log.txt"), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and h is not handler for h in log.handlers):
        log.addHandler(logging.StreamHandler(sys.stderr))
    log.setLevel(logging.INFO)
    return handler


def _lock(run: Run) -> None:
    """Claim the run directory for this process; a second trainer is refused.

    The lock file appears with the pid already in it (written aside, then hard-linked), so a
    reader never sees an empty lock and mistakes it for a stale one.
    """
    lock = run.file(".lock")
    mine = run.file(f".lock.{os.getpid()}")
    mine.write_text(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                os.link(mine, lock)
                return
            except FileExistsError:
                try:
                    owner = int(lock.read_text() or 0)
                except (OSError, ValueError):
                    owner = 0
                if owner != os.getpid() and pid_alive(owner):
                    raise RunError(
                        f"{run.path}: another training (pid {owner}) is writing it"
                    ) from None
                lock.unlink(missing_ok=True)
        raise RunError(f"{run.path}: cannot lock the run directory")
    finally:
        mine.unlink(missing_ok=True)


def train_run(
    config: TrainConfig,
    run_dir: str | Path,
    progress: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> Run:
    """Train, evaluate and save one run; the run's ``status.json`` tells how it ended.

    ``engine="ray"`` computes the face stage (crops and embeddings) on a Ray cluster
    (``ray_address``, else ``$RAY_ADDRESS``, else a local one; ``workers`` actors) into the
    same face cache: the engine changes where the work runs, never the run's results, so it
    is an argument, not a setting saved with the run.
    Raises the error that ended it (after recording it), so the command line exits non-zero.
    """
    run = Run(Path(run_dir).expanduser().resolve())
    run.path.mkdir(parents=True, exist_ok=True)
    if run.has_model():
        raise RunError(f"{run.path}: already holds a finished model; choose a new run directory")
    _lock(run)
    handler = _setup_logging(run)
    _Stop.requested, _Stop.defer = None, False
    previous = signal.signal(signal.SIGTERM, _Stop.handle)
    starting = {"key": "starting", "name": "Importing TensorFlow", "done": 0, "total": None}
    run.set_status(
        "running", pid=os.getpid(), started=now_iso(), ended=None, error=None, stage=starting
    )
    try:
        _train(config, run, progress, engine, ray_address, workers)
    except (Cancelled, KeyboardInterrupt) as exc:
        log.warning("cancelled: %s", exc or "interrupted")
        run.set_status("cancelled", ended=now_iso(), error=str(exc) or "interrupted")
        raise Cancelled(str(exc) or "interrupted") from None
    except Exception as exc:
        if _Stop.requested:  # a stop that library code wrapped in another exception
            log.warning("cancelled: %s", _Stop.requested)
            run.set_status("cancelled", ended=now_iso(), error=_Stop.requested)
            raise Cancelled(_Stop.requested) from None
        if isinstance(exc, (CelebmodelError, OSError)):  # expected: the message says it all
            message = str(exc)
            log.error("failed: %s", message)
        else:
            message = f"{type(exc).__name__}: {exc}"
            log.error("failed: %s\n%s", message, traceback.format_exc())
        run.set_status("failed", ended=now_iso(), error=message)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        _cleanup_partial_model(run)
        run.file(".lock").unlink(missing_ok=True)
        log.removeHandler(handler)
        handler.close()
    return run


def _cleanup_partial_model(run: Run) -> None:
    for partial in run.path.glob(".model*.keras"):
        partial.unlink(missing_ok=True)


def _load_tensorflow(backbone: str) -> None:
    """TensorFlow, and a face network loaded and traced, as the embedding stage needs them."""
    importlib.import_module("keras")
    if get_backbone(backbone).kind == "embedding":
        from ..faces.network import warm_up

        warm_up(backbone)


def _train(
    config: TrainConfig,
    run: Run,
    progress: bool,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> None:
    importing = threading.Thread(  # seconds of it, while the dataset's faces are found
        target=_load_tensorflow, args=(config.backbone,), name="import-tensorflow", daemon=True
    )
    importing.start()
    try:
        _train_stages(config, run, progress, engine, ray_address, workers, importing)
    finally:  # a process that leaves while TensorFlow loads aborts ("terminate called…")
        importing.join()


def _train_stages(
    config: TrainConfig,
    run: Run,
    progress: bool,
    engine: str,
    ray_address: str | None,
    workers: int | None,
    importing: threading.Thread,
) -> None:
    """Scan, split, faces, embeddings, phases, evaluation: the stages of :func:`_train`, while
    ``importing`` loads TensorFlow."""
    from .pipeline import with_embeddings

    config = config.resolved()
    stages = Stages(run, console=progress)
    backbone = get_backbone(config.backbone)
    if config.weights == "none" and backbone.kind == "cnn":
        log.warning("weights none: %s starts from random initialisation", backbone.name)
    split, labels = _split(config, run, stages)
    prepared = _faces(config, run, split, stages, engine, ray_address, workers)
    if backbone.kind == "embedding" and not needs_tensorflow(backbone.name):
        prepared = with_embeddings(config, prepared, stages.bar)  # while TensorFlow loads
    if importing.is_alive():
        stages.enter("starting")
        importing.join()
    import keras

    if config.precision == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if prepared.features is None:
        prepared = with_embeddings(config, prepared, stages.bar)
    inputs = {s: prepared.subset(s) for s in SUBSETS}
    classifier, phases = _fit(config, run, inputs, labels, stages)
    _evaluate(config, run, classifier, inputs, labels, stages)
    _Stop.check()
    _Stop.defer = True  # from here the run is finished: a late stop must not split model and status
    stages.enter("saving")
    with atomic_file(run.file("model.keras")) as temp:
        classifier.model_.save(temp)
    run.set_status("finished", ended=now_iso(), epochs=len(classifier.history_), phases=phases)
    log.info("finished: %s", run.file("model.keras"))




def _split(config: TrainConfig, run: Run, stages: Stages) -> tuple[pd.DataFrame, list[str]]:
    """Scan the dataset and split it (or reuse the run's split), with what it noticed as the
    run's warnings; writes ``split.csv``, ``labels.json`` and ``config.json``."""
    stages.enter("scanning")
    scan = scan_dataset(config.data_dir)
    stages.enter("scanning", len(scan.items), None, unit="photo", people=len(scan.labels))
    for skipped in scan.skipped:
        log.warning("skipped %s: %s", skipped.path, skipped.reason)
    for reason, paths in _grouped((s.reason, s.path) for s in scan.skipped):
        stages.warn(f"{len(paths)} file(s) left out of the dataset: {reason}", paths)
    if run.file("split.csv").is_file():
        split = read_split(run.file("split.csv"))
        log.info("reusing %s", run.file("split.csv"))
    else:
        split, warnings = make_split(
            scan, per_class=config.per_class, seed=config.seed, drop_small=config.drop_small
        )
        for warning in warnings:
            log.warning(warning)
        short = [w for w in warnings if "(fewer than per_class=" in w]
        if short:
            stages.warn(
                f"{len(short)} celebrit{'ies have' if len(short) > 1 else 'y has'} fewer than "
                f"{config.per_class} photos: all their photos are used",
                short,
                what=("celebrity", "celebrities"),
            )
        for warning in (w for w in warnings if w not in short):
            stages.warn(warning)
        write_split(split, run.file("split.csv"))
    split = config.kept(split)
    labels = sorted(split["label"].unique())
    atomic_write_json(run.file("labels.json"), labels)
    duplicates = describe_duplicates(find_duplicates(config.data_dir, split))
    for line in duplicates:
        log.warning(line)
    if duplicates:
        stages.warn(
            f"{len(duplicates)} group(s) of identical photos", duplicates, what=("group", "groups")
        )
    config.save(
        run.file("config.json"),
        extra={
            "dataset_fingerprint": scan.fingerprint(),
            "n_photos": len(split),
            "n_celebrities": len(labels),
            "versions": package_versions(),
            "leaking_duplicates": sum("in different subsets" in line for line in duplicates),
        },
    )
    log.info(
        "%d celebrities, %d photos, split %s",
        len(labels),
        len(split),
        split["subset"].value_counts().to_dict(),
    )

    return split, labels


def _faces(
    config: TrainConfig,
    run: Run,
    split: pd.DataFrame,
    stages: Stages,
    engine: str,
    ray_address: str | None,
    workers: int | None,
) -> Inputs:
    """The face stage of every photo (on Ray first, when asked), recorded in ``faces.csv``."""
    from .pipeline import prepare_inputs

    if engine == "ray":  # fills the face cache; prepare_inputs below then finds it all there
        from ..cluster.faces import prepare_faces

        log.info("face stage on Ray (%s)", ray_address or os.environ.get("RAY_ADDRESS", "local"))
        prepare_faces(
            config, list(split["path"]), address=ray_address, workers=workers, bar=stages.bar
        )
    prepared = prepare_inputs(config, split, stages.bar, embed=False)
    _record_face_stage(run, prepared, stages)
    for subset in ("train", "val"):
        if len(prepared.subset(subset).usable) == 0:
            raise DatasetError(f"no usable photo in the {subset} subset (see faces.csv)")
    return prepared


def _fit(
    config: TrainConfig,
    run: Run,
    inputs: dict[str, Inputs],
    labels: list[str],
    stages: Stages,
) -> tuple[Any, dict[str, Any]]:
    """The estimator fitted on the train subset (early stopping on val): it and its phases."""
    from .estimator import CelebrityClassifier

    backbone = get_backbone(config.backbone)
    log.info("training %s (%s recipe, weights %s)", backbone.name, config.recipe, config.weights)
    classifier = CelebrityClassifier(config, history_file=run.file("history.csv"), stages=stages)
    classifier.fit(inputs["train"], inputs["val"], labels)
    phases = {
        k: v if not isinstance(v, float) or np.isfinite(v) else None
        for k, v in classifier.phases_.items()
    }
    if "fine-tune" in phases and backbone.kind == "embedding":
        verdict = "kept" if phases["kept"] == "fine-tune" else "discarded: phase 1 kept"
        log.info(
            "phase 2 (fine-tune) %s: best val loss %.4f, against %.4f after phase 1",
            verdict,
            phases["fine-tune"],
            phases["head"],
        )
    run.set_status("running", phases=phases)
    return classifier, phases


def _evaluate(
    config: TrainConfig,
    run: Run,
    classifier: Any,
    inputs: dict[str, Inputs],
    labels: list[str],
    stages: Stages,
) -> None:
    """Every subset predicted and evaluated; the gallery and the open-set calibration saved."""
    from .estimator import BatchCounter
    from .evaluation import evaluate_subset
    from .inference import predict_inputs

    index = {label: i for i, label in enumerate(labels)}
    outputs = {}
    photos = sum(len(inputs[subset].usable) for subset in SUBSETS)
    with stages.bar("evaluating", photos, unit="photo") as bar:
        for subset in SUBSETS:  # the bar moves with every batch predicted
            counted = BatchCounter(bar, config.batch_size, len(inputs[subset].usable))
            outputs[subset] = predict_inputs(
                classifier.model_, config, inputs[subset], callbacks=[counted]
            )
    with stages.bar("mirroring", len(inputs["train"].usable), unit="photo") as bar:
        counted = BatchCounter(bar, config.batch_size, len(inputs["train"].usable))
        mirrored = predict_inputs(  # the gallery as albums group faces (recognize.album_cuts)
            classifier.model_, config, inputs["train"], callbacks=[counted], mirror=True
        )[0]
    train_labels = np.array([index[x] for x in inputs["train"].usable["label"]], dtype=np.int64)
    paths = list(inputs["train"].usable["path"])
    run.save_gallery(outputs["train"][0], train_labels, paths)
    centroids = centroids_of(outputs["train"][0], train_labels, len(labels))
    calibration = calibrate(unknown_scores(*outputs["val"], centroids), OPEN_SET_ACCEPT)
    val_labels = np.array([index[x] for x in inputs["val"].usable["label"]], dtype=np.int64)
    strangers = stranger_scores(*outputs["val"], centroids, val_labels)
    calibration["stranger_scores"] = [float(score) for score in strangers]
    if (np.bincount(train_labels) > 1).any():
        gallery = l2_normalize(outputs["train"][0] + mirrored)
        calibration[MIRRORED] = distance_profile(gallery, train_labels).tolist()
    atomic_write_json(run.file("calibration.json"), calibration)
    for subset in SUBSETS:
        evaluate_subset(run, subset, inputs[subset], *outputs[subset], labels=labels)


def _grouped(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(reason, files) groups from (reason, file) pairs, largest group first."""
    groups: dict[str, list[str]] = {}
    for reason, path in pairs:
        groups.setdefault(reason, []).append(path)
    return sorted(groups.items(), key=lambda item: -len(item[1]))


def _record_face_stage(run: Run, prepared: Inputs, stages: Stages) -> None:
    """``faces.csv`` per photo, the routes photos took, and the photos left out, grouped."""
    records = prepared.records
    columns = ["path", "label", "subset", "route", "n_faces", "box", "error"]
    boxes = [json.dumps(box) if isinstance(box, list) else "" for box in records["box"]]
    table = records.assign(box=boxes)
    atomic_write_text(run.file("faces.csv"), table[columns].to_csv(index=False))
    counts = records["route"].value_counts().to_dict()
    log.info("face stage: %s", counts)
    skipped = records[records["route"].isin(["none", "error"])]
    for row in skipped.itertuples():
        log.warning("skipped %s", row.error or f"{row.path}: no face found")  # errors name it
    missing = list(skipped[skipped["route"] == "none"]["path"])
    photos = ("photo", "photos")
    if missing:
        stages.warn(f"{len(missing)} photo(s) with no face found: left out", missing, photos)
    broken = list(skipped[skipped["route"] == "error"]["error"])
    if broken:
        stages.warn(f"{len(broken)} photo(s) that cannot be read: left out", broken, photos)
    run.set_status("running", face_routes=counts)




def train(data_dir: str | Path, run_dir: str | Path | None = None, **settings: Any) -> Run:
    """Train on a dataset folder (one sub-folder per celebrity) and return the finished run.

    ``settings`` are :class:`~celebmodel.config.TrainConfig` fields (``backbone="dlib128"``,
    ``per_class=60``, ...); the run goes to ``run_dir`` or a new folder under the runs folder.
    """
    config = TrainConfig(data_dir=str(data_dir), **settings).validate()
    return train_run(config, run_dir or new_run_dir(config.backbone))
