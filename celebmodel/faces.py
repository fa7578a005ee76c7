"""Find, choose and align faces before any network sees a photo.

Two offline detectors stand behind one function, :func:`detect`: dlib's HOG frontal detector
(fast) and the ``mtcnn`` package (finds more small, turned and partly hidden faces); when one
finds nothing the other is tried. Every face gets dlib's 5 landmarks, which drive both
alignments: ``chip`` (dlib's own template, what its face ResNet was trained on) and ``eyes``
(eyes level at fixed positions, for the ImageNet CNNs).

In a training or evaluation photo the celebrity is the face chosen by :func:`subject_index`,
which weighs centrality over size and confidence: news photos hold bystanders, and the most
confident face is often one of them. Crops and embeddings are cached on disk by file content
and settings, so a second training on the same dataset detects nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .backbones import l2_normalize

# Per-model constants, kept as data.
DLIB_MODELS = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}
CHIP_SIZE = 150  # dlib's face ResNet input
CHIP_PADDING = 0.25  # dlib's default template padding
EYE_LEVEL = 0.40  # "eyes" alignment: eye height as a fraction of the crop
EYE_DISTANCE = 0.36  # "eyes" alignment: eye distance as a fraction of the crop
MTCNN_MIN_CONFIDENCE = 0.90
HOG_MIN_SCORE = 0.2  # weaker HOG hits are mostly patterns, not faces (MTCNN still gets a try)
HOG_UPSAMPLE_BELOW = 400  # photos smaller than this (shorter side) are upsampled once for HOG
TIGHT_CROP_MAX_SIDE = 128  # a photo this small with no face found is taken as a face crop
STAGE_VERSION = 1  # bump when a change alters crops, to invalidate caches

ROUTES = {
    "face": "one face found",
    "several": "several faces, the central one taken",
    "tight": "no face found, small photo used whole as a face crop",
    "whole": "face stage off, whole photo used",
    "none": "no face found, photo skipped",
}


class FaceError(ValueError):
    """No usable face; the message says why."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the photo it was found in."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float  # 0..1
    landmarks: tuple[tuple[float, float], ...]  # dlib's 5 points: eye corners x4, nose
    detector: str

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the eye on the photo's left and on its right."""
        points = np.asarray(self.landmarks, dtype=np.float64)
        left, right = points[2:4].mean(axis=0), points[0:2].mean(axis=0)
        return (left, right) if left[0] <= right[0] else (right, left)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
            "detector": self.detector,
        }


def models_dir() -> Path:
    """dlib's model files from the ``face_recognition_models`` wheel, found without importing it
    (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError(
            "the face models are not installed: pip install face-recognition-models dlib-bin"
        )
    return Path(spec.submodule_search_locations[0]) / "models"


_DLIB_LOCK = threading.Lock()  # dlib's objects are not safe to share between threads


@cache
def _dlib() -> dict[str, Any]:
    import dlib

    return {
        "hog": dlib.get_frontal_face_detector(),
        "landmarks": dlib.shape_predictor(str(models_dir() / DLIB_MODELS["landmarks"])),
        "embedding": dlib.face_recognition_model_v1(str(models_dir() / DLIB_MODELS["embedding"])),
    }


@cache
def _mtcnn() -> Any:
    from mtcnn import MTCNN

    return MTCNN()


def _landmarks(
    image: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[tuple[float, float], ...]:
    import dlib

    x, y, w, h = box
    shape = _dlib()["landmarks"](image, dlib.rectangle(x, y, x + w, y + h))
    return tuple((float(p.x), float(p.y)) for p in shape.parts())


def _clip_box(box: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    height, width = shape[:2]
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1 = min(width, int(round(box[0] + box[2])))
    y1 = min(height, int(round(box[1] + box[3])))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _detect_hog(image: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
    upsample = 1 if min(image.shape[:2]) < HOG_UPSAMPLE_BELOW else 0
    rects, scores, _ = _dlib()["hog"].run(image, upsample, HOG_MIN_SCORE)
    found = []
    for rect, score in zip(rects, scores, strict=True):
        box = _clip_box((rect.left(), rect.top(), rect.width(), rect.height()), image.shape)
        if box:
            found.append((box, 1.0 / (1.0 + math.exp(-2.0 * score))))
    return found


def _detect_mtcnn(image: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
    found = []
    for result in _mtcnn().detect_faces(image):
        confidence = float(result["confidence"])
        box = _clip_box(result["box"], image.shape)
        if box and confidence >= MTCNN_MIN_CONFIDENCE:
            found.append((box, confidence))
    return found


DETECTORS = {"hog": _detect_hog, "mtcnn": _detect_mtcnn}


def detect(image: np.ndarray, detector: str = "hog", fallback: bool = True) -> list[Face]:
    """Every face in an RGB uint8 photo, most confident first.

    When ``detector`` finds nothing and ``fallback`` is set, the other detector is tried.
    """
    order = [detector] + ([d for d in DETECTORS if d != detector] if fallback else [])
    image = np.ascontiguousarray(image, dtype=np.uint8)
    for name in order:
        if name == "mtcnn":
            found = DETECTORS[name](image)
        else:
            with _DLIB_LOCK:
                found = DETECTORS[name](image)
        if found:
            with _DLIB_LOCK:
                faces = [Face(box, conf, _landmarks(image, box), name) for box, conf in found]
            return sorted(faces, key=lambda face: -face.confidence)
    return []


def subject_index(faces: Sequence[Face], shape: tuple[int, ...]) -> int | None:
    """The face a photo is about: central first, then large, then confident.

    In LFW-like news photos the most confident face is a bystander in a few percent of photos;
    the face nearest the centre almost never is.
    """
    if not faces:
        return None
    height, width = shape[:2]
    half_diagonal = math.hypot(width, height) / 2

    def weight(face: Face) -> float:
        x, y, w, h = face.box
        offset = math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2) / half_diagonal
        size = (w * h) / (width * height)
        return (1.0 - offset) ** 2 * size**0.25 * (0.5 + 0.5 * face.confidence)

    return max(range(len(faces)), key=lambda i: weight(faces[i]))


def face_chip(image: np.ndarray, face: Face, size: int = CHIP_SIZE) -> np.ndarray:
    """dlib's aligned chip (the template its face ResNet was trained on)."""
    import dlib

    x, y, w, h = face.box
    shape = dlib.full_object_detection(
        dlib.rectangle(x, y, x + w, y + h),
        [dlib.point(int(px), int(py)) for px, py in face.landmarks],
    )
    with _DLIB_LOCK:
        return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=CHIP_PADDING))


def eye_aligned(image: np.ndarray, face: Face, size: int) -> np.ndarray:
    """Rotate and scale so the eyes are level at fixed positions, with a margin around the face."""
    left, right = face.eyes
    dx, dy = right - left
    angle = math.atan2(dy, dx)
    scale = max(math.hypot(dx, dy), 1.0) / (EYE_DISTANCE * size)  # photo px per crop px
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    ox, oy = (0.5 - EYE_DISTANCE / 2) * size, EYE_LEVEL * size
    # PIL's affine maps each crop pixel back to the photo.
    coefficients = (
        cos,
        -sin,
        left[0] - cos * ox + sin * oy,
        sin,
        cos,
        left[1] - sin * ox - cos * oy,
    )
    crop = Image.fromarray(image).transform(
        (size, size), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(crop)


def resize_whole(image: np.ndarray, size: int) -> np.ndarray:
    """The whole photo squeezed to a square, as the original recipe's loader did."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


ALIGNMENTS = {"chip": face_chip, "eyes": eye_aligned}


@dataclass(frozen=True)
class FaceStage:
    """Settings of the step between a photo and a network input.

    Parameters
    ----------
    enabled : bool
        Off: the whole photo, resized (the original recipe).
    detector : str
        ``"hog"`` or ``"mtcnn"``; the other is tried when it finds nothing.
    alignment : str
        ``"chip"`` for dlib's face ResNet, ``"eyes"`` for the ImageNet CNNs.
    size : int
        Side of the square crop in pixels.
    """

    enabled: bool = True
    detector: str = "hog"
    alignment: str = "eyes"
    size: int = 224

    def key(self) -> str:
        """Cache key part: changes whenever a setting that alters the crop changes."""
        text = json.dumps({**asdict(self), "version": STAGE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return ALIGNMENTS[self.alignment](image, face, self.size)

    def faces(self, image: np.ndarray) -> list[Face]:
        """All faces of a photo (identification), or none when the stage is off."""
        return detect(image, self.detector) if self.enabled else []

    def extract(self, image: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The subject's crop of a training or evaluation photo, and how it was obtained."""
        if not self.enabled:
            return resize_whole(image, self.size), {"route": "whole", "n_faces": 0}
        faces = detect(image, self.detector)
        index = subject_index(faces, image.shape)
        if index is None:
            if max(image.shape[:2]) <= TIGHT_CROP_MAX_SIDE:
                return resize_whole(image, self.size), {"route": "tight", "n_faces": 0}
            return None, {"route": "none", "n_faces": 0}
        face = faces[index]
        route = "several" if len(faces) > 1 else "face"
        info = {
            "route": route,
            "n_faces": len(faces),
            "box": list(face.box),
            "detector": face.detector,
        }
        return self.align(image, face), info


class FaceEmbedder:
    """dlib's 128-d face ResNet on aligned chips, unit length.

    Parameters
    ----------
    flip : bool
        Average the embedding of the chip and its mirror image (test-time augmentation).
    """

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip

    def key(self) -> str:
        return f"dlib128-flip{int(self.flip)}"

    def embed(self, chips: Iterable[np.ndarray]) -> np.ndarray:
        batch = [np.ascontiguousarray(chip, dtype=np.uint8) for chip in chips]
        if not batch:
            return np.zeros((0, 128), dtype=np.float32)
        if self.flip:
            batch += [np.ascontiguousarray(chip[:, ::-1]) for chip in batch]
        with _DLIB_LOCK:
            vectors = np.asarray(_dlib()["embedding"].compute_face_descriptor(batch), np.float32)
        if self.flip:
            half = len(batch) // 2
            vectors = vectors[:half] + vectors[half:]
        return l2_normalize(vectors)


def _crop_dir(cache_dir: Path, stage: FaceStage, sha: str) -> Path:
    return cache_dir / "crops" / stage.key() / sha[:2]


def prepare(
    root: str | Path,
    paths: Sequence[str],
    stage: FaceStage,
    cache_dir: str | Path,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The network input of each photo, as a cached PNG crop, with how it was obtained.

    Returns one record per photo: ``path``, ``sha256``, ``route`` (a key of :data:`ROUTES`, or
    ``"error"``), ``n_faces``, ``crop`` (the cached file, ``None`` when skipped) and ``error``.
    A photo seen before with the same stage settings is not read or detected again.
    """
    from tqdm.auto import tqdm

    from .data import ImageError, file_sha256, load_image
    from .runs import atomic_write_json

    root, cache_dir = Path(root), Path(cache_dir)
    records = []
    for rel in tqdm(paths, desc="faces", unit="photo", disable=not progress):
        source = root / rel
        record: dict[str, Any] = {"path": rel, "crop": None, "error": None, "n_faces": 0}
        try:
            sha = file_sha256(source)
        except OSError as exc:
            records.append({**record, "route": "error", "error": f"{rel}: unreadable ({exc})"})
            continue
        folder = _crop_dir(cache_dir, stage, sha)
        meta_file, crop_file = folder / f"{sha}.json", folder / f"{sha}.png"
        record["sha256"] = sha
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if meta["route"] == "none" or crop_file.is_file():
                crop = str(crop_file) if meta["route"] != "none" else None
                records.append({**record, **meta, "crop": crop})
                continue
        try:
            image = load_image(source, name=rel)
        except ImageError as exc:
            records.append({**record, "route": "error", "error": str(exc)})
            continue
        crop, meta = stage.extract(image)
        folder.mkdir(parents=True, exist_ok=True)
        if crop is not None:
            tmp = folder / f".{sha}.tmp.png"
            Image.fromarray(crop).save(tmp)
            tmp.replace(crop_file)
        atomic_write_json(meta_file, meta)
        records.append({**record, **meta, "crop": str(crop_file) if crop is not None else None})
    return records


def embed_files(
    crops: Sequence[str | Path], embedder: FaceEmbedder, progress: bool = False, batch: int = 16
) -> np.ndarray:
    """Embeddings of cached chip files, themselves cached beside each chip."""
    from tqdm.auto import tqdm

    vectors: list[np.ndarray | None] = []
    missing: list[int] = []
    for i, crop in enumerate(crops):
        cached = Path(crop).with_suffix(f".{embedder.key()}.npy")
        if cached.is_file():
            vectors.append(np.load(cached, allow_pickle=False))
        else:
            vectors.append(None)
            missing.append(i)
    with tqdm(total=len(missing), desc="embeddings", unit="face", disable=not progress) as bar:
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            chips = [np.asarray(Image.open(crops[i]).convert("RGB")) for i in chunk]
            for i, vector in zip(chunk, embedder.embed(chips), strict=True):
                target = Path(crops[i]).with_suffix(f".{embedder.key()}.npy")
                tmp = target.with_name(f".{target.name}.tmp.npy")
                np.save(tmp, vector)
                tmp.replace(target)
                vectors[i] = vector
            bar.update(len(chunk))
    if not vectors:
        return np.zeros((0, 128), dtype=np.float32)
    return np.stack(vectors).astype(np.float32)
