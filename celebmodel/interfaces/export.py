"""A run's network for use outside the studio: Keras, SavedModel, TFLite or TensorFlow.js.

What is exported is the part of the run's model
:class:`~celebmodel.recognition.recognize.Recognizer` calls for every face (its ``_predict``): the
network input (an aligned face chip for dlib128 runs, a preprocessed crop for the ImageNet CNNs, a
128-d descriptor for dlib128 runs made before the face network was in Keras) to two named outputs,
``embedding`` and ``probabilities``. Beside it go what turns those into a name or "unknown":
``labels.json`` (the order of the probabilities), ``calibration.json`` (the threshold, the
stranger scores), ``gallery.npy``, ``centroids.npy`` (each person's mean face), ``export.json``
(the input spec, names shown, people removed) and a ``README.md`` whose Python example
reproduces ``celebmodel predict`` on one photo with the exported file plus celebmodel's face
stage (the tests run that example).

An export is written into a hidden folder beside the target and renamed into place when
complete: a failure leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CelebmodelError, ExportError
from ..faces.detection import CHIP_PADDING, EYE_DISTANCE, EYE_LEVEL
from ..recognition.recognize import Recognizer
from ..runs.run import Run
from ..scoring.open_set import similarity
from ..storage import atomic_folder, atomic_write_json, atomic_write_text, now_iso


@dataclass(frozen=True)
class Format:
    """One export format: the file or folder it writes and the package it needs beyond ours."""

    name: str
    title: str
    file: str
    extra: str | None = None  # a module that must be importable, from the optional extra

    @property
    def missing(self) -> str | None:
        """Why this format cannot be made here (with the install command), else ``None``."""
        if self.extra is None or importlib.util.find_spec(self.extra) is not None:
            return None
        return (
            f"--format {self.name}: needs the {self.extra} package, which is not installed; "
            f"pip install {self.extra} (or pip install 'celebmodel[{self.name}]')"
        )


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("keras", "Keras 3 (.keras)", "model.keras"),
        Format("savedmodel", "TensorFlow SavedModel (folder)", "savedmodel"),
        Format("tflite", "TensorFlow Lite, float32 (.tflite)", "model.tflite"),
        Format("tfjs", "TensorFlow.js (model.json + shards)", "tfjs", extra="tensorflowjs"),
    )
}

# keras.applications preprocessing, in words (it runs before the model, as in Recognizer).
SCALING = {
    "vgg16": "'caffe' mode: RGB to BGR, then minus the ImageNet channel means "
    "(103.939, 116.779, 123.68), no scaling",
    "resnet50": "'caffe' mode: RGB to BGR, then minus the ImageNet channel means "
    "(103.939, 116.779, 123.68), no scaling",
    "mobilenet_v2": "'tf' mode: x / 127.5 - 1, to -1..1",
    "efficientnet": "none: 0..255 passes through (the network rescales inside)",
}


def check_format(fmt: str) -> Format:
    """The format named, if it exists and can be made on this machine (before any work)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    chosen = FORMATS[fmt]
    if chosen.missing:
        raise ExportError(chosen.missing)
    return chosen


def format_choices() -> dict[str, str | None]:
    """Every format and why it cannot be made here (``None`` when it can): for the pages."""
    return {name: f.missing for name, f in FORMATS.items()}


def format_label(name: str) -> str:
    """How a selector names a format: its title, and the package it needs when missing."""
    chosen = FORMATS[name]
    return chosen.title + (f" (needs pip install {chosen.extra})" if chosen.missing else "")


# What the network takes ----------------------------------------------------------------------


def input_spec(recognizer: Recognizer) -> dict[str, Any]:
    """The network input as a user must prepare it: tensor name and shape, pixels, alignment."""
    tensor = recognizer.model.inputs[0]
    backbone, stage = recognizer.backbone, recognizer.stage
    if not stage.enabled:
        alignment = (
            f"none: the whole photo resized (bilinear) to {stage.size}x{stage.size} px; the run "
            "was trained with the face stage off (celebmodel.faces.detection.resize_whole)"
        )
    elif stage.alignment == "chip":
        alignment = (
            f"dlib's 5-point face chip, {stage.size}x{stage.size} px: dlib.get_face_chip(photo, "
            f"landmarks, size={stage.size}, padding={CHIP_PADDING}) "
            "(celebmodel.faces.detection.face_chip)"
        )
    elif stage.alignment == "arcface":
        alignment = (
            f"ArcFace's 5-point template (eyes, nose tip, mouth corners from the detector), "
            f"{stage.size}x{stage.size} px, one similarity transform, bilinear "
            "(celebmodel.faces.alignment.arcface_aligned)"
        )
    else:
        alignment = (
            f"eyes level, {EYE_DISTANCE:.0%} of the side apart, at {EYE_LEVEL:.0%} of the "
            f"height, {stage.size}x{stage.size} px, bilinear "
            "(celebmodel.faces.detection.eye_aligned)"
        )
    if recognizer.takes_embeddings:
        kind = "embedding"
        pixels = (
            "not pixels: the 128-d descriptor of dlib's pretrained face network of each chip "
            "(float32 RGB 0..255), averaged with its mirror image's and scaled to unit length "
            f"(celebmodel.faces.network.FaceEmbedder({backbone.name!r}, flip=True).embed(chips))"
        )
    elif backbone.kind == "embedding":
        kind = "chip"
        pixels = (
            "float32 RGB 0..255, not scaled: the model's first layer computes "
            "(pixel - mean) / 256 with dlib's channel means"
        )
    else:
        kind = "image"
        pixels = (
            f"float32 RGB 0..255 through keras.applications.{backbone.module}.preprocess_input "
            f"before the model ({SCALING.get(backbone.module or '', 'see Keras')})"
        )
    return {
        "name": tensor.name,
        "shape": [None, *tensor.shape[1:]],
        "dtype": "float32",
        "kind": kind,
        "pixels": pixels,
        "alignment": alignment,
        "size": stage.size,
    }


def network(recognizer: Recognizer) -> Any:
    """The Recognizer's model with named outputs: input → ``{"embedding", "probabilities"}``.

    Named, not positional, so every format (and a run with as many people as embedding
    dimensions) tells the two apart the same way.
    """
    import keras

    inner = recognizer.model
    embedding, probabilities = inner.outputs
    return keras.Model(
        inner.inputs[0],
        {"embedding": embedding, "probabilities": probabilities},
        name=f"celebmodel_{recognizer.config.backbone}",
    )


# Writing an export ---------------------------------------------------------------------------


def export(run: str | Path | Run | Recognizer, fmt: str, out_dir: str | Path) -> Path:
    """Export ``run`` in ``fmt`` into the new folder ``out_dir``; returns its path.

    Written into a hidden folder beside ``out_dir`` and renamed when complete, so the folder
    appears whole or not at all. An existing non-empty ``out_dir`` is refused.
    """
    chosen = check_format(fmt)
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: already exists and is not an empty folder; choose a new one")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"{out.parent}: cannot create the folder ({exc.strerror or exc})"
        ) from exc
    recognizer = run if isinstance(run, Recognizer) else Recognizer.from_run(run)
    if recognizer.scoring == "gallery":
        raise ExportError(
            f"{recognizer.run.title}: a gallery model has no trained network to export; it "
            f"uses the {recognizer.config.backbone} face network as shipped, and its people are "
            "its run folder's gallery.npz and calibration.json"
        )
    try:
        with atomic_folder(out) as partial:  # an empty folder there (checked above) is replaced
            _write(recognizer, chosen, partial)
    except PermissionError as exc:
        raise ExportError(f"{out.parent}: cannot write here ({exc.strerror or exc})") from exc
    return out


def export_zip(run: str | Path | Run | Recognizer, fmt: str) -> bytes:
    """The same export as :func:`export`, as a zip holding one folder ``<run>-<fmt>/``."""
    check_format(fmt)
    recognizer = run if isinstance(run, Recognizer) else Recognizer.from_run(run)
    name = f"{recognizer.run.name}-{fmt}"
    with tempfile.TemporaryDirectory(prefix="celebmodel-export-") as scratch:
        folder = export(recognizer, fmt, Path(scratch) / name)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _write(recognizer: Recognizer, chosen: Format, folder: Path) -> None:
    """Every file of an export, into ``folder`` (the caller makes it appear atomically)."""
    model = network(recognizer)
    target = folder / chosen.file
    try:
        if chosen.name == "keras":
            model.save(target)
        else:
            saved = target if chosen.name == "savedmodel" else folder / ".savedmodel"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            if chosen.name == "tflite":
                target.write_bytes(_tflite(saved))
            elif chosen.name == "tfjs":
                _tfjs(saved, target)
            if saved != target:
                shutil.rmtree(saved)
    except CelebmodelError:
        raise
    except Exception as exc:  # TensorFlow's converters raise many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(
            f"{recognizer.run.name}: the {chosen.name} conversion failed "
            f"({type(exc).__name__}: {first[:300]})"
        ) from exc
    labels = recognizer.labels
    atomic_write_json(folder / "labels.json", labels)
    atomic_write_json(
        folder / "calibration.json",
        {
            "threshold": recognizer.threshold,
            "similarity": similarity(recognizer.threshold),
            "score": "distance of the unit-length embedding to its predicted person's centroid "
            "x (2 - top probability); unknown above the threshold",
            "stranger_scores": (recognizer.run.read_json("calibration.json") or {}).get(
                "stranger_scores"
            ),
        },
    )
    np.save(folder / "centroids.npy", recognizer.centroids.astype(np.float32))
    np.save(folder / "gallery.npy", recognizer.gallery.astype(np.float32))
    np.save(folder / "gallery_labels.npy", recognizer.gallery_labels.astype(np.int64))
    manifest = _manifest(recognizer, chosen)
    atomic_write_json(folder / "export.json", manifest)
    atomic_write_text(folder / "README.md", readme(recognizer, chosen, manifest))


def _tflite(saved: Path) -> bytes:
    """The SavedModel as a float32 TFLite flatbuffer (no quantisation: same numbers)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    return converter.convert()


def _tfjs(saved: Path, target: Path) -> None:
    """The SavedModel as a TensorFlow.js graph model (``model.json`` and weight shards)."""
    from tensorflowjs.converters import convert_tf_saved_model

    convert_tf_saved_model(str(saved), str(target))


def _manifest(recognizer: Recognizer, chosen: Format) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from .. import __version__

    stage = recognizer.stage
    return {
        "format": chosen.name,
        "file": chosen.file,
        "run": recognizer.run.name,
        "title": recognizer.run.title,
        "backbone": recognizer.config.backbone,
        "input": input_spec(recognizer),
        "outputs": {
            "embedding": int(recognizer.centroids.shape[1]),
            "probabilities": len(recognizer.labels),
        },
        "face_stage": {
            "enabled": stage.enabled,
            "detector": stage.detector,
            "alignment": stage.alignment,
            "size": stage.size,
        },
        "threshold": recognizer.threshold,
        "top_k": recognizer.top_k,
        "names": {label: recognizer.names.get(label, label) for label in recognizer.labels},
        "removed": [label for label in recognizer.labels if label in recognizer.removed],
        "versions": {
            "celebmodel": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": sys.version.split()[0],
        },
        "created": now_iso(),
    }


# The README and its example ------------------------------------------------------------------


def readme(recognizer: Recognizer, chosen: Format, manifest: dict[str, Any]) -> str:
    """What the input must be and how to get celebmodel's answer from the exported file."""
    spec = manifest["input"]
    shape = "[" + ", ".join("N" if n is None else str(n) for n in spec["shape"]) + "]"
    n_people = len(recognizer.labels)
    lines = [
        f"# {recognizer.run.title}: {chosen.title}",
        "",
        f"Exported from celebmodel run `{recognizer.run.name}` (backbone "
        f"`{recognizer.config.backbone}`, {n_people} people) on {manifest['created']}.",
        "",
        "| File | What it is |",
        "| --- | --- |",
        f"| `{chosen.file}` | the network: input → `embedding`, `probabilities` |",
        "| `labels.json` | the person of each column of `probabilities` |",
        "| `centroids.npy` | each person's mean face (unit-length embeddings, float32) |",
        "| `gallery.npy`, `gallery_labels.npy` | the training faces (the closest person of "
        "an unknown face is the one whose face is closest) |",
        "| `calibration.json` | the unknown threshold the run calibrated, and the stranger "
        "scores its match confidence is read from |",
        "| `export.json` | input spec, names shown, people removed, versions |",
        "",
        "## Input",
        "",
        f"- Tensor `{spec['name']}`, float32, shape {shape}.",
        f"- Alignment: {spec['alignment']}.",
        f"- Values: {spec['pixels']}.",
        "",
        "## Outputs",
        "",
        f"- `embedding`: {manifest['outputs']['embedding']} values per face.",
        f"- `probabilities`: {n_people} values per face, in the order of `labels.json`.",
        "",
        "A face is known when its unknown score is at most `threshold` (calibration.json): "
        "the distance of its unit-length embedding to the centroid of the predicted person, "
        "times `2 - top probability`. Similarity shown by the studio: `1 - score² / 2`. People "
        "listed as `removed` in export.json get probability 0 (the rest renormalised).",
        "",
    ]
    if chosen.name == "tfjs":
        lines += _tfjs_usage(spec)
    else:
        lines += [
            "## Python: the same answer as `celebmodel predict --json`",
            "",
            "The face stage (detection, landmarks, alignment) comes from celebmodel "
            "(`pip install celebmodel`, which brings dlib); the network is the exported file. "
            "Save as `predict.py` and run `python predict.py THIS_FOLDER photo.jpg`.",
            "",
            "```python",
            example(recognizer, chosen),
            "```",
            "",
        ]
    return "\n".join(lines)


def _tfjs_usage(spec: dict[str, Any]) -> list[str]:
    return [
        "## JavaScript",
        "",
        "Prepare the input in the browser exactly as above (the face stage is not part of the "
        "export; in Python it is `celebmodel.faces.detection`).",
        "",
        "```javascript",
        "const model = await tf.loadGraphModel('tfjs/model.json');",
        f"const out = model.execute({{{spec['name']}: batch}}, ['embedding', 'probabilities']);",
        "```",
        "",
    ]


def _network_code(recognizer: Recognizer, chosen: Format) -> list[str]:
    """Lines loading the exported file as ``network(batch) -> (embeddings, probabilities)``."""
    if chosen.name == "keras":
        lines = ["import keras", ""]
        if recognizer.backbone.name == "dlib128" and not recognizer.takes_embeddings:
            lines += ["import celebmodel.faces.dlib_resnet  # registers dlib's layers", ""]
        return lines + [
            'model = keras.models.load_model(folder / "model.keras", compile=False)',
            "",
            "",
            "def network(batch):",
            "    out = model(batch, training=False)",
            '    return np.asarray(out["embedding"]), np.asarray(out["probabilities"])',
        ]
    if chosen.name == "savedmodel":
        return [
            "import tensorflow as tf",
            "",
            'model = tf.saved_model.load(str(folder / "savedmodel"))',
            "",
            "",
            "def network(batch):",
            "    out = model.serve(tf.constant(batch))",
            '    return np.asarray(out["embedding"]), np.asarray(out["probabilities"])',
        ]
    return [
        "try:",
        "    from ai_edge_litert.interpreter import Interpreter",
        "except ImportError:  # TensorFlow's own, deprecated in favour of LiteRT",
        "    import tensorflow as tf",
        "",
        "    Interpreter = tf.lite.Interpreter",
        "",
        'runner = Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner()',
        "(input_name,) = runner.get_input_details()",
        "",
        "",
        "def network(batch):",
        "    out = runner(**{input_name: batch})",
        '    return out["embedding"], out["probabilities"]',
    ]


def _inputs_code(recognizer: Recognizer) -> list[str]:
    """Lines turning the aligned ``crops`` into the network's ``batch``."""
    if recognizer.takes_embeddings:
        return [
            "    from celebmodel.faces.network import FaceEmbedder",
            "",
            f"    batch = FaceEmbedder({recognizer.backbone.name!r}, flip=True).embed(crops)",
        ]
    lines = ["    batch = np.stack(crops).astype(np.float32)"]
    if recognizer.backbone.kind != "embedding":
        module = recognizer.backbone.module
        lines += [f"    batch = np.asarray(keras.applications.{module}.preprocess_input(batch))"]
    return lines


def _face_stage_code(recognizer: Recognizer) -> list[str]:
    """Lines making ``crops`` and ``found`` (box, confidence) of ``photo`` as the run's face
    stage does."""
    stage = recognizer.stage
    if not stage.enabled:
        return [
            "# The run was trained without the face stage: the whole photo is one face.",
            "photo = load_image(photo_path)",
            f"crops = [resize_whole(photo, {stage.size})]",
            "found = [([0, 0, photo.shape[1], photo.shape[0]], 1.0)]  # box, confidence",
        ]
    return [
        "# The face stage, as the run was trained: every face, aligned, left to right.",
        f"stage = FaceStage(detector={stage.detector!r}, alignment={stage.alignment!r}, "
        f"size={stage.size})",
        "photo = load_image(photo_path)",
        "faces = sorted(stage.faces(photo), key=lambda face: face.box[:2])",
        "crops = [stage.align(photo, face) for face in faces]",
        "found = [(list(face.box), round(face.confidence, 4)) for face in faces]",
    ]


def example(recognizer: Recognizer, chosen: Format) -> str:
    """A script identifying the faces of one photo with the export, printing the same JSON
    as ``celebmodel predict --json`` (all but ``evidence``, which needs the run's gallery)."""
    stage = recognizer.stage
    needs_keras = recognizer.backbone.kind != "embedding" and chosen.name != "keras"
    lines = [
        "import json",
        "import sys",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "",
        "from celebmodel.faces.detection import FaceStage"
        if stage.enabled
        else "from celebmodel.faces.detection import resize_whole",
        "from celebmodel.data.images import load_image",
        "",
        "folder, photo_path = Path(sys.argv[1]), sys.argv[2]",
        'info = json.loads((folder / "export.json").read_text())',
        'labels = json.loads((folder / "labels.json").read_text())',
        'calibration = json.loads((folder / "calibration.json").read_text())',
        'threshold = calibration["threshold"]',
        "# strangers: each known validation face scored with its own person left out",
        'strangers = np.sort(-np.asarray(calibration["stranger_scores"] or [], dtype=float))',
        'centroids = np.load(folder / "centroids.npy")',
        'gallery, gallery_labels = np.load(folder / "gallery.npy"), np.load(folder / '
        '"gallery_labels.npy")',
        "",
        *(["import keras  # for preprocess_input", ""] if needs_keras else []),
        *_network_code(recognizer, chosen),
        "",
        "",
        *_face_stage_code(recognizer),
        "",
        "results = []",
        "if crops:",
        *_inputs_code(recognizer),
        "    embeddings, probabilities = network(batch)",
        "    probabilities = np.asarray(probabilities, dtype=np.float64)",
        '    masked = [labels.index(label) for label in info["removed"]]  # never named',
        "    if masked:",
        "        probabilities[:, masked] = 0.0",
        "        probabilities /= np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-12)",
        "    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)",
        '    top_k = min(info["top_k"], len(labels) - len(masked))',
        "    for (box, confidence), embedding, p in zip(found, embeddings, probabilities):",
        "        best = int(p.argmax())",
        "        score = float(np.linalg.norm(embedding - centroids[best]) * (2.0 - p[best]))",
        "        known = score <= threshold",
        "        if not known:  # the closest person: the one whose gallery face is closest",
        "            closeness = np.full(len(labels), -np.inf)",
        "            np.maximum.at(closeness, gallery_labels, gallery @ embedding)",
        "            closeness[masked] = -np.inf",
        "            best = int(np.argmax(closeness))",
        "        match = None  # how rarely strangers score as high: 1 - FAR",
        "        if len(strangers):",
        "            above = len(strangers) - np.searchsorted(strangers, -score, side='left')",
        "            match = round(1.0 - max(above, 0.5) / len(strangers), 6)",
        "        name = info['names'][labels[best]]",
        "        results.append({",
        '            "box": box,',
        '            "confidence": confidence,',
        '            "known": known,',
        '            "label": labels[best] if known else "unknown",',
        '            "name": name if known else None,',
        '            "nearest": labels[best],',
        '            "nearest_name": name,',
        '            "match_confidence": match,',
        '            "similarity": min(1.0, max(0.0, 1.0 - score**2 / 2.0)),',
        '            "score": score,',
        '            "probability": float(p[best]) if known else None,',
        '            "top_k": [',
        '                {"label": labels[j], "name": info["names"][labels[j]], '
        '"probability": float(p[j])}',
        "                for j in np.argsort(-p)[:top_k]",
        "            ] if known else [],",
        "        })",
        "answer = {",
        '    "image": photo_path,',
        '    "faces": results,',
        '    "error": None if results else "no face found",',
        "}",
        "print(json.dumps(answer, indent=2))",
    ]
    return "\n".join(lines)
