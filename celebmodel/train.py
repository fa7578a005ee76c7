"""Fine-tune a backbone on a celebrity dataset and keep everything in a run directory.

:class:`CelebrityClassifier` is the estimator (settings in, ``fit`` returns ``self``, learned
state ends in ``_``); :func:`train_run` is the whole job the command line and the app start:
scan, split, face stage, fit, calibrate, evaluate, then write the model atomically.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from .backbones import WeightsError, get_backbone, l2_normalize
from .config import RECIPES, ConfigError, TrainConfig
from .data import (
    DatasetError,
    describe_duplicates,
    find_duplicates,
    make_split,
    read_split,
    scan_dataset,
    write_split,
)
from .pipeline import Inputs, face_stage, model_dataset, prepare_inputs
from .runs import Run, RunError, atomic_write_json, now_iso, pid_alive, replace_together

log = logging.getLogger("celebmodel")

PACKAGES = ("celebmodel", "tensorflow-cpu", "keras", "dlib-bin", "mtcnn", "scikit-learn", "numpy")
OPEN_SET_ACCEPT = 0.95  # share of known validation faces the default threshold accepts


class Cancelled(Exception):
    """The training process was asked to stop (SIGTERM, or Ctrl-C)."""


class HistoryWriter(keras.callbacks.Callback):
    """Adds phase, learning rate and seconds to each epoch's logs before ``CSVLogger`` runs."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["phase"] = self.phase
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logs["seconds"] = round(time.perf_counter() - self.started, 2)
        log.info(
            "epoch %d (%s): loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f",
            epoch + 1,
            self.phase,
            *(logs.get(k, float("nan")) for k in ("loss", "accuracy", "val_loss", "val_accuracy")),
        )


def build_model(config: TrainConfig, n_classes: int) -> tuple[Any, Any]:
    """The classifier and its base: base → pooling (named ``embedding``) → dropout → softmax."""
    backbone = get_backbone(config.backbone)
    recipe = RECIPES[config.recipe]
    if backbone.kind == "embedding":
        inputs = keras.Input((backbone.embedding_size,), name="embedding")
        x, base = inputs, None
    else:
        base = backbone.build(config.weights, config.image_size)
        base.trainable = recipe.base_trainable
        inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
        x = base(inputs, training=recipe.base_trainable)
        pool = (
            keras.layers.Flatten
            if recipe.pooling == "flatten"
            else keras.layers.GlobalAveragePooling2D
        )
        x = pool(name="embedding")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", name="classifier"
    )(x)
    return keras.Model(inputs, outputs, name=f"celebmodel_{config.backbone}"), base


def augmentation(seed: int) -> Any:
    """Flip, small rotation, zoom, brightness and contrast, for the training subset only."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, seed=seed),
            keras.layers.RandomZoom(0.1, seed=seed),
            keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed),
            keras.layers.RandomContrast(0.15, seed=seed),
        ],
        name="augmentation",
    )


class CelebrityClassifier:
    """A backbone with a softmax head, fitted by the recipe named in ``config``.

    Parameters
    ----------
    config : TrainConfig
        Resolved settings (see :meth:`TrainConfig.resolved`).
    history_file : path, optional
        ``CSVLogger`` target, appended to after every epoch of either phase.

    Attributes
    ----------
    model_ : keras.Model
    classes_ : list of str
    history_ : pandas.DataFrame
        One row per epoch with its phase.
    """

    def __init__(self, config: TrainConfig, history_file: str | Path | None = None) -> None:
        self.config = config
        self.history_file = history_file

    def _callbacks(self, phase: str) -> list[Any]:
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.config.patience, restore_best_weights=True
            ),
            HistoryWriter(phase),
            StopOnRequest(),
        ]
        if self.history_file:
            callbacks.append(keras.callbacks.CSVLogger(str(self.history_file), append=True))
        return callbacks

    def _fit_phase(self, phase: str, train: Any, val: Any, learning_rate: float) -> None:
        self.model_.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        start = len(self.history_)
        _Stop.defer = True
        try:
            result = self.model_.fit(
                train,
                validation_data=val,
                epochs=start + self.config.max_epochs,
                initial_epoch=start,
                callbacks=self._callbacks(phase),
                shuffle=False,  # tf.data shuffles, seeded
                verbose=0,
            )
        finally:
            _Stop.defer = False
        _Stop.check()
        rows = pd.DataFrame(result.history)
        rows.insert(0, "epoch", range(start, start + len(rows)))
        self.history_ = pd.concat([self.history_, rows], ignore_index=True)

    def fit(self, train: Any, val: Any, classes: list[str]) -> CelebrityClassifier:
        """Train on ``train`` (a ``tf.data`` pipeline), early-stopped on ``val``.

        The improved recipe first trains the head on the frozen base, then unfreezes the
        base from ``Backbone.fine_tune_from`` and fine-tunes at a low learning rate.
        """
        keras.utils.set_random_seed(self.config.seed)
        recipe = RECIPES[self.config.recipe]
        self.classes_ = list(classes)
        self.model_, base = build_model(self.config, len(classes))
        self.history_ = pd.DataFrame()
        first = "head" if recipe.two_phase or base is None else "full"
        self._fit_phase(first, train, val, self.config.learning_rate)
        backbone = get_backbone(self.config.backbone)
        if recipe.two_phase and base is not None:
            base.trainable = True
            unfrozen = False
            for layer in base.layers:
                unfrozen = unfrozen or layer.name == backbone.fine_tune_from
                layer.trainable = unfrozen
            self._fit_phase("fine-tune", train, val, self.config.fine_tune_learning_rate)
        return self

    def embedding_model(self) -> Any:
        return embedding_model(self.model_)


def embedding_model(model: Any) -> Any:
    """A model giving both the ``embedding`` layer's output and the class probabilities."""
    return keras.Model(model.input, [model.get_layer("embedding").output, model.output])


def predict_inputs(
    model: Any, config: TrainConfig, inputs: Inputs
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length embeddings and class probabilities of a subset's usable photos."""
    data = model_dataset(config, inputs, {})
    if len(inputs.usable) == 0:
        return np.zeros((0, 1), np.float32), np.zeros((0, model.output.shape[-1]), np.float32)
    embeddings, probabilities = embedding_model(model).predict(data, verbose=0)
    embeddings = embeddings.reshape(len(embeddings), -1)
    return l2_normalize(embeddings), np.asarray(probabilities, dtype=np.float64)


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


class _Stop:
    """SIGTERM handling that never raises inside TensorFlow.

    Outside ``fit`` the handler raises :class:`Cancelled` at once; during ``fit`` (and while the
    finished model is written) it only sets ``requested``: :class:`StopOnRequest` ends training
    at the next batch, after which :meth:`check` raises. (An exception raised from a handler
    inside TensorFlow can be swallowed by AutoGraph or wrapped by pybind11.)
    """

    requested: str | None = None
    defer: bool = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = f"stopped by signal {signal.Signals(signum).name}"
        if not cls.defer:
            raise Cancelled(cls.requested)

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise Cancelled(cls.requested)


class StopOnRequest(keras.callbacks.Callback):
    """Ends ``fit`` at the next batch once a stop was requested."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _Stop.requested:
            self.model.stop_training = True


def train_run(config: TrainConfig, run_dir: str | Path, progress: bool = False) -> Run:
    """Train, evaluate and save one run; the run's ``status.json`` tells how it ended.

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
    run.set_status("running", pid=os.getpid(), started=now_iso(), ended=None, error=None)
    try:
        _train(config, run, progress)
    except (Cancelled, KeyboardInterrupt) as exc:
        log.warning("cancelled: %s", exc or "interrupted")
        run.set_status("cancelled", ended=now_iso(), error=str(exc) or "interrupted")
        raise Cancelled(str(exc) or "interrupted") from None
    except Exception as exc:
        if _Stop.requested:  # a stop that library code wrapped in another exception
            log.warning("cancelled: %s", _Stop.requested)
            run.set_status("cancelled", ended=now_iso(), error=_Stop.requested)
            raise Cancelled(_Stop.requested) from None
        if isinstance(exc, KNOWN_ERRORS):  # expected problems: the message says it all
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


KNOWN_ERRORS = (DatasetError, ConfigError, WeightsError, RunError, OSError)


def _cleanup_partial_model(run: Run) -> None:
    for partial in run.path.glob(".model*.keras"):
        partial.unlink(missing_ok=True)


def _train(config: TrainConfig, run: Run, progress: bool) -> None:
    config = config.resolved()
    if config.precision == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    backbone = get_backbone(config.backbone)
    if config.weights == "none" and backbone.kind == "cnn":
        log.warning("weights none: %s starts from random initialisation", backbone.name)

    scan = scan_dataset(config.data_dir)
    for skipped in scan.skipped:
        log.warning("skipped %s: %s", skipped.path, skipped.reason)
    if run.file("split.csv").is_file():
        split = read_split(run.file("split.csv"))
        log.info("reusing %s", run.file("split.csv"))
    else:
        split, warnings = make_split(
            scan, per_class=config.per_class, seed=config.seed, drop_small=config.drop_small
        )
        for warning in warnings:
            log.warning(warning)
        write_split(split, run.file("split.csv"))
    split = config.kept(split)
    labels = sorted(split["label"].unique())
    atomic_write_json(run.file("labels.json"), labels)
    duplicates = find_duplicates(config.data_dir, split)
    for line in describe_duplicates(duplicates):
        log.warning(line)
    config.save(
        run.file("config.json"),
        extra={
            "dataset_fingerprint": scan.fingerprint(),
            "n_photos": len(split),
            "n_celebrities": len(labels),
            "versions": package_versions(),
            "leaking_duplicates": int(duplicates["leak"].sum()) if len(duplicates) else 0,
        },
    )
    log.info(
        "%d celebrities, %d photos, split %s",
        len(labels),
        len(split),
        split["subset"].value_counts().to_dict(),
    )

    inputs = {s: prepare_inputs(config, split[split["subset"] == s], progress) for s in SUBSETS}
    _record_face_stage(run, inputs)
    index = {label: i for i, label in enumerate(labels)}
    augment = augmentation(config.seed) if config.augment and backbone.kind == "cnn" else None
    train = model_dataset(config, inputs["train"], index, training=True, augment=augment)
    val = model_dataset(config, inputs["val"], index)
    for subset in ("train", "val"):
        if len(inputs[subset].usable) == 0:
            raise DatasetError(f"no usable photo in the {subset} subset (see faces.csv)")

    log.info("training %s (%s recipe, weights %s)", backbone.name, config.recipe, config.weights)
    classifier = CelebrityClassifier(config, history_file=run.file("history.csv"))
    classifier.fit(train, val, labels)

    from .evaluate import calibrate, evaluate_subset

    outputs = {s: predict_inputs(classifier.model_, config, inputs[s]) for s in SUBSETS}
    train_labels = np.array([index[x] for x in inputs["train"].usable["label"]], dtype=np.int64)
    save_gallery(run, outputs["train"][0], train_labels)
    calibration = calibrate(outputs, inputs, index, OPEN_SET_ACCEPT)
    atomic_write_json(run.file("calibration.json"), calibration)
    for subset in SUBSETS:
        evaluate_subset(run, subset, inputs[subset], *outputs[subset], labels=labels)

    _Stop.check()
    _Stop.defer = True  # from here the run is finished: a late stop must not split model and status
    partial = run.file(".model.tmp.keras")
    classifier.model_.save(partial)
    os.replace(partial, run.file("model.keras"))
    run.set_status("finished", ended=now_iso(), epochs=len(classifier.history_))
    log.info("finished: %s", run.file("model.keras"))


SUBSETS = ("train", "val", "test")


def _record_face_stage(run: Run, inputs: dict[str, Inputs]) -> None:
    """``faces.csv`` per photo and a summary of the routes photos took, for the pages to show."""
    records = pd.concat([inputs[s].records for s in SUBSETS], ignore_index=True)
    columns = ["path", "label", "subset", "route", "n_faces", "error"]
    records[columns].to_csv(run.file("faces.csv"), index=False)
    counts = records["route"].value_counts().to_dict()
    log.info("face stage: %s", counts)
    for row in records[records["route"].isin(["none", "error"])].itertuples():
        log.warning("skipped %s", row.error or f"{row.path}: no face found")  # errors name it
    run.set_status("running", face_routes=counts)


def save_gallery(run: Run, embeddings: np.ndarray, labels: np.ndarray) -> None:
    """Training-face embeddings (for centroids and enrolment), plain arrays, no pickle."""
    os.replace(_write_gallery(run, embeddings, labels), run.file("gallery.npz"))


def _write_gallery(run: Run, embeddings: np.ndarray, labels: np.ndarray) -> Path:
    partial = run.file(".gallery.tmp.npz")
    np.savez(partial, embeddings=embeddings.astype(np.float32), labels=labels.astype(np.int64))
    return partial


def _photo_files(photos: list[str | Path]) -> list[Path]:
    from .data import photos_under

    files: list[Path] = []
    for photo in map(Path, photos):
        if photo.is_dir():
            files += photos_under(photo)
        else:
            files.append(photo)
    return files


def enroll(run: Run, name: str, photos: list[str | Path]) -> dict[str, Any]:
    """Add a celebrity to a finished embedding run from a few photos, without retraining a CNN.

    The new faces join the gallery (so the class gets a centroid) and the softmax head is refit
    on the whole gallery, which takes seconds. Recorded in ``enrolled.json``.
    """
    from .data import ImageError, load_image
    from .faces import FaceEmbedder

    started = time.perf_counter()
    config = run.config()
    if get_backbone(config.backbone).kind != "embedding":
        raise RunError(f"{run.name}: enrolment needs a face-embedding run (--backbone dlib128)")
    labels = run.labels()
    name = name.strip().replace(" ", "_")
    if not name or "/" in name or name.startswith("."):
        raise RunError(f"{name!r}: not a usable celebrity name")
    if name in labels:
        raise RunError(f"{name}: already a celebrity of {run.name}")
    stage = face_stage(config)
    chips, used, skipped = [], [], []
    for photo in _photo_files(photos):
        try:
            chip, info = stage.extract(load_image(photo))
        except (ImageError, OSError) as exc:
            skipped.append({"path": str(photo), "reason": str(exc)})
            continue
        if chip is None:
            skipped.append({"path": str(photo), "reason": "no face found"})
            continue
        chips.append(chip)
        used.append(str(photo))
    if not chips:
        raise RunError(f"{name}: none of the photos holds a usable face")

    model = run.load_model()
    gallery, gallery_labels = run.gallery()
    gallery = np.vstack([gallery, FaceEmbedder().embed(chips)])
    gallery_labels = np.r_[gallery_labels, np.full(len(chips), len(labels))]
    labels = [*labels, name]
    head = refit_head(config, model, gallery, gallery_labels, len(labels))

    # Everything is written beside the run first, then renamed together: a failure leaves the
    # old model, labels and gallery, never a model that disagrees with its labels.
    partial = run.file(".model.tmp.keras")
    partial_labels = run.file(".labels.tmp.json")
    try:
        head.save(partial)
        partial_labels.write_text(json.dumps(labels), encoding="utf-8")
        os.chmod(partial_labels, 0o644)
        replace_together(
            [
                (_write_gallery(run, gallery, gallery_labels), run.file("gallery.npz")),
                (partial_labels, run.file("labels.json")),
                (partial, run.file("model.keras")),
            ]
        )
    finally:
        for leftover in (partial, partial_labels, run.file(".gallery.tmp.npz")):
            leftover.unlink(missing_ok=True)
    record = {"name": name, "photos": used, "skipped": skipped, "when": now_iso()}
    history = run.read_json("enrolled.json", default=[]) or []
    atomic_write_json(run.file("enrolled.json"), [*history, record])
    seconds = time.perf_counter() - started
    log.info("enrolled %s from %d photo(s) in %.1f s", name, len(used), seconds)
    return {**record, "n_photos": len(used), "seconds": seconds}


def refit_head(
    config: TrainConfig, model: Any, embeddings: np.ndarray, labels: np.ndarray, n_classes: int
) -> Any:
    """A new softmax head on the whole gallery, classes weighted so a few photos still count."""
    from sklearn.utils.class_weight import compute_class_weight

    keras.utils.set_random_seed(config.seed)
    head, _ = build_model(config, n_classes)
    old = model.get_layer("classifier").get_weights()
    kernel, bias = head.get_layer("classifier").get_weights()
    kernel[:, : old[0].shape[1]], bias[: old[1].shape[0]] = old[0], old[1]
    head.get_layer("classifier").set_weights([kernel, bias])
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    head.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    head.fit(
        embeddings,
        labels,
        batch_size=32,
        epochs=200,
        class_weight=dict(enumerate(weights)),
        callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=config.patience)],
        verbose=0,
    )
    return head
