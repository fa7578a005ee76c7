"""Find, choose and align faces before any network sees a photo.

Three offline detectors stand behind one function, :func:`detect`: dlib's HOG frontal
detector, the ``mtcnn`` package (more small, turned and partly hidden faces) and SCRFD-500M
(:mod:`celebmodel.faces.scrfd`: small, turned and profile faces); when one finds nothing the
others are tried. dlib's 5 landmarks drive the ``chip`` alignment (dlib's own template,
what its face ResNet was trained on) and ``eyes`` (eyes level at fixed positions, for the
ImageNet CNNs); SCRFD and MTCNN give the 5 keypoints of ArcFace's ``arcface`` alignment
(:mod:`celebmodel.faces.alignment`) themselves, so their faces get dlib's landmarks only
when an alignment asks (:func:`with_landmarks`: a millisecond a face, under a lock).

In a training or evaluation photo the celebrity is the face chosen by :func:`subject_index`,
which weighs centrality over size and confidence: news photos hold bystanders, and the most
confident face is often one of them. :mod:`celebmodel.faces.cache` keeps the crops on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..backbones import get_backbone
from ..config import TrainConfig
from ..errors import FaceError
from .alignment import ARCFACE_SIZE, ARCFACE_TEMPLATE, arcface_aligned, similarity_transform
from .scrfd import detect_scrfd

# Per-model constants, kept as data.
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150  # dlib's face ResNet input
CHIP_PADDING = 0.25  # dlib's default template padding
EYE_LEVEL = 0.40  # "eyes" alignment: eye height as a fraction of the crop
EYE_DISTANCE = 0.36  # "eyes" alignment: eye distance as a fraction of the crop
MTCNN_MIN_CONFIDENCE = 0.90
HOG_MIN_SCORE = 0.2  # weaker HOG hits are mostly patterns, not faces (MTCNN still gets a try)
HOG_UPSAMPLE_BELOW = 400  # photos smaller than this (shorter side) are upsampled once for HOG
# Large photos (bench/face_network.py measures these): HOG finds faces down to about 65 px and
# costs about 70 ns per pixel on one core, so a 12-megapixel photo takes 0.85 s in one pass.
DETECT_MAX_PIXELS = 12_600_000  # larger photos are detected on a copy downscaled to this
BAND_ABOVE_PIXELS = 1_500_000  # above this, HOG runs in overlapping bands, one per core ...
COARSE_SIDE = 1024  # ... plus one pass on a copy this long, for faces taller than the overlap
MTCNN_MAX_SIDE = 1024  # MTCNN (the fallback) looks at a copy at most this long
TIGHT_CROP_MAX_SIDE = 128  # a photo this small with no face found is taken as a face crop
STAGE_VERSION = 2  # bump when a change alters crops, to invalidate caches

ROUTES = {
    "face": "one face found",
    "several": "several faces, the central one taken",
    "tight": "no face found, small photo used whole as a face crop",
    "whole": "face stage off, whole photo used",
    "none": "no face found, photo skipped",
}


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the photo it was found in."""

    box: tuple[int, int, int, int]  # x, y, width, height
    confidence: float  # 0..1
    landmarks: tuple[tuple[float, float], ...] | None  # dlib's 5: eye corners x4, nose
    detector: str
    keypoints: tuple[tuple[float, float], ...] | None = None  # the detector's own 5, if any

    def arcface_points(self) -> np.ndarray:
        """Eyes, nose tip and mouth corners in ArcFace's order: the detector's own keypoints
        (SCRFD, MTCNN), else placed from the eyes as the template has them (HOG)."""
        if self.keypoints is not None:
            return np.asarray(self.keypoints, dtype=np.float64)
        left, right = self.eyes
        template = ARCFACE_TEMPLATE
        matrix = similarity_transform(template[:2], np.stack([left, right]))
        return template @ matrix[:, :2].T + matrix[:, 2]

    @property
    def eyes(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the eye on the photo's left and on its right (from dlib's landmarks:
        see :func:`with_landmarks`)."""
        if self.landmarks is None:
            raise FaceError("a face without dlib's landmarks: with_landmarks(image, face) first")
        points = np.asarray(self.landmarks, dtype=np.float64)
        left, right = points[2:4].mean(axis=0), points[0:2].mean(axis=0)
        return (left, right) if left[0] <= right[0] else (right, left)

    def to_dict(self) -> dict[str, Any]:
        shown = {
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
            "detector": self.detector,
        }
        if self.landmarks is not None:
            shown["landmarks"] = [[round(x, 1), round(y, 1)] for x, y in self.landmarks]
        if self.keypoints is not None:
            shown["keypoints"] = [[round(x, 1), round(y, 1)] for x, y in self.keypoints]
        return shown


def models_dir() -> Path:
    """dlib's model files from the ``face_recognition_models`` wheel, found without importing it
    (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError(
            "the face models are not installed: pip install face-recognition-models dlib-bin"
        )
    return Path(spec.submodule_search_locations[0]) / "models"


_DLIB_LOCK = threading.Lock()  # the landmark model and chip extraction are shared objects
_IDLE_HOG: queue.SimpleQueue[Any] = queue.SimpleQueue()  # HOG detectors not in use right now


@cache
def _landmark_model() -> Any:
    import dlib

    return dlib.shape_predictor(str(models_dir() / LANDMARKS_FILE))


@contextlib.contextmanager
def _hog() -> Iterator[Any]:
    """A HOG detector for this caller alone while it detects.

    Building one takes a quarter of a second with the GIL held, and Streamlit runs every rerun
    in a new thread: detectors kept per thread were rebuilt for every photo identified on a
    page. They are pooled instead, one per detection running at the same time.
    """
    try:
        detector = _IDLE_HOG.get_nowait()
    except queue.Empty:
        import dlib

        detector = dlib.get_frontal_face_detector()
    try:
        yield detector
    finally:
        _IDLE_HOG.put(detector)


@cache
def _mtcnn() -> Any:
    from mtcnn import MTCNN

    return MTCNN()


@cache
def _band_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hog")


def warm_up(detector: str = "hog") -> None:
    """Load the landmark model and a HOG detector for each band thread and one caller now (and
    ``detector`` when it is another), so the first photo takes no longer than the next (each
    HOG detector costs a quarter of a second, SCRFD's session a little more)."""
    _landmark_model()
    with contextlib.ExitStack() as held:  # held at once, so each is a detector of its own
        for _ in range((os.cpu_count() or 1) + 1):
            held.enter_context(_hog())
    if detector == "scrfd":
        detect_scrfd(np.zeros((32, 32, 3), np.uint8))


def _landmarks(
    image: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[tuple[float, float], ...]:
    import dlib

    x, y, w, h = box
    shape = _landmark_model()(image, dlib.rectangle(x, y, x + w, y + h))
    return tuple((float(p.x), float(p.y)) for p in shape.parts())


def _clip_box(box: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    height, width = shape[:2]
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1 = min(width, int(round(box[0] + box[2])))
    y1 = min(height, int(round(box[1] + box[3])))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1 - x0, y1 - y0


Hit = tuple[tuple[float, float, float, float], float]  # box (x, y, w, h), score


def _hog_pass(image: np.ndarray, upsample: int, offset: tuple[int, int] = (0, 0)) -> list[Hit]:
    with _hog() as detector:
        rects, scores, _ = detector.run(image, upsample, HOG_MIN_SCORE)
    dx, dy = offset
    return [
        ((r.left() + dx, r.top() + dy, r.width(), r.height()), float(score))
        for r, score in zip(rects, scores, strict=True)
    ]


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _scaled(hits: list[Hit], factor: float) -> list[Hit]:
    return [(tuple(v * factor for v in box), score) for box, score in hits]  # type: ignore[misc]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _distinct(hits: list[Hit]) -> list[Hit]:
    """Drop hits that repeat a better-scoring one (bands overlap, and the coarse pass
    sees the same large faces)."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: -h[1]):
        if all(_overlap(hit[0], other[0]) < 0.3 for other in kept):
            kept.append(hit)
    return kept


def _detect_hog(image: np.ndarray) -> list[Hit]:
    """HOG faces of any photo, in its own coordinates.

    Small photos take one pass (upsampled once below :data:`HOG_UPSAMPLE_BELOW`). Larger ones
    run in horizontal bands, one per core (dlib releases the GIL), overlapping by twice the
    smallest face the extra coarse pass finds, so a face cut by a band edge is whole in the
    neighbouring band or big enough for the coarse pass. Every face one full-resolution pass
    finds is found, in about half its time on 2 cores.
    """
    height, width = image.shape[:2]
    if height * width <= BAND_ABOVE_PIXELS:
        upsample = 1 if min(height, width) < HOG_UPSAMPLE_BELOW else 0
        return _hog_pass(image, upsample)
    coarse_scale = COARSE_SIDE / max(height, width)
    overlap = math.ceil(2 * 80 / coarse_scale)  # HOG's window is 80 px
    bands = max(1, min(os.cpu_count() or 1, height // overlap))
    step = math.ceil(height / bands)
    jobs = [(_resized(image, coarse_scale), 0, (0, 0), 1 / coarse_scale)]
    for top in range(0, height, step):
        start, stop = max(0, top - overlap // 2), min(height, top + step + overlap // 2)
        jobs.append((image[start:stop], 0, (0, start), 1.0))
    futures = [_band_pool().submit(_hog_pass, part, up, offset) for part, up, offset, _ in jobs]
    hits = []
    for future, (_, _, _, factor) in zip(futures, jobs, strict=True):
        hits += _scaled(future.result(), factor)
    return _distinct(hits)


MTCNN_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # ArcFace's order


def _detect_mtcnn(image: np.ndarray) -> list[Hit]:
    """MTCNN faces (confidence as score) with their 5 keypoints, on a copy at most
    :data:`MTCNN_MAX_SIDE` long."""
    scale = min(1.0, MTCNN_MAX_SIDE / max(image.shape[:2]))
    small = _resized(image, scale) if scale < 1 else image
    return [
        (
            tuple(v / scale for v in result["box"]),
            float(result["confidence"]),
            np.array([result["keypoints"][k] for k in MTCNN_POINTS], np.float64) / scale,
        )
        for result in _mtcnn().detect_faces(small)
        if float(result["confidence"]) >= MTCNN_MIN_CONFIDENCE
    ]


DETECTORS = {"hog": _detect_hog, "mtcnn": _detect_mtcnn, "scrfd": detect_scrfd}
CONFIDENCE = {  # detector score -> 0..1
    "hog": lambda score: 1.0 / (1.0 + math.exp(-2.0 * score)),
    "mtcnn": lambda score: score,
    "scrfd": lambda score: score,
}


def detect(image: np.ndarray, detector: str = "hog", fallback: bool = True) -> list[Face]:
    """Every face in an RGB uint8 photo, most confident first, in the photo's coordinates.

    A photo over :data:`DETECT_MAX_PIXELS` is searched on a copy downscaled to that size; the
    boxes are mapped back and the landmarks found on the full-resolution pixels. When
    ``detector`` finds nothing and ``fallback`` is set, the other detector is tried.
    """
    order = [detector] + ([d for d in DETECTORS if d != detector] if fallback else [])
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    scale = min(1.0, math.sqrt(DETECT_MAX_PIXELS / (height * width)))
    view = _resized(image, scale) if scale < 1 else image
    for name in order:
        found = []
        for box, score, *points in DETECTORS[name](view):
            clipped = _clip_box([value / scale for value in box], image.shape)
            keypoints = tuple(map(tuple, points[0] / scale)) if points else None
            if clipped:
                found.append((clipped, CONFIDENCE[name](score), keypoints))
        if found:
            with _DLIB_LOCK:
                faces = [
                    Face(box, conf, None if keypoints else _landmarks(image, box), name, keypoints)
                    for box, conf, keypoints in found
                ]
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


def with_landmarks(image: np.ndarray, face: Face) -> Face:
    """``face``, with dlib's landmarks found in ``image`` if it came without them."""
    if face.landmarks is not None:
        return face
    with _DLIB_LOCK:
        return replace(face, landmarks=_landmarks(image, face.box))


def face_chip(image: np.ndarray, face: Face, size: int = CHIP_SIZE) -> np.ndarray:
    """dlib's aligned chip (the template its face ResNet was trained on)."""
    import dlib

    face = with_landmarks(image, face)
    x, y, w, h = face.box
    shape = dlib.full_object_detection(
        dlib.rectangle(x, y, x + w, y + h),
        [dlib.point(int(px), int(py)) for px, py in face.landmarks],
    )
    with _DLIB_LOCK:
        return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=CHIP_PADDING))


def eye_aligned(image: np.ndarray, face: Face, size: int) -> np.ndarray:
    """Rotate and scale so the eyes are level at fixed positions, with a margin around the face."""
    left, right = with_landmarks(image, face).eyes
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


def arcface_chip(image: np.ndarray, face: Face, size: int = ARCFACE_SIZE) -> np.ndarray:
    """ArcFace's 112×112 template from the face's 5 keypoints (ArcFace-trained networks)."""
    return arcface_aligned(image, face.arcface_points(), size)


ALIGNMENTS = {"chip": face_chip, "eyes": eye_aligned, "arcface": arcface_chip}


@dataclass(frozen=True)
class FaceStage:
    """Settings of the step between a photo and a network input.

    Parameters
    ----------
    enabled : bool
        Off: the whole photo, resized (the original recipe).
    detector : str
        ``"hog"``, ``"mtcnn"`` or ``"scrfd"``; the others are tried when it finds nothing.
    alignment : str
        ``"chip"`` for dlib's face ResNet, ``"arcface"`` for ArcFace-trained networks,
        ``"eyes"`` for the ImageNet CNNs.
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


def face_stage(config: TrainConfig) -> FaceStage:
    """The face stage a run's settings imply."""
    backbone = get_backbone(config.backbone)
    size = backbone.input_size if backbone.kind == "embedding" else config.image_size
    detector = config.detector or backbone.detector
    return FaceStage(
        enabled=config.faces, detector=detector, alignment=backbone.alignment, size=size
    )
