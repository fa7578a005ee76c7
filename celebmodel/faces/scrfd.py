"""SCRFD-500M: InsightFace's small face detector, with 5 keypoints per face (eyes, nose tip,
mouth corners: what ArcFace alignment needs), run by onnxruntime.

The network file ships in the package (``weights/scrfd_500m.onnx``, InsightFace's
``buffalo_sc/det_500m.onnx``; ``weights/PROVENANCE.json``). A photo is searched at its own
size, padded to a multiple of 32, when its longer side is at most :data:`MAX_SIDE` (scaling
a 150-pixel portrait up to 640 pushes its face past the largest anchors), else on a copy
scaled down to that. Decoding is InsightFace's: at strides 8, 16 and 32, two anchors per
location, distances to the box sides and to the keypoints, a score threshold, then
non-maximum suppression.
"""

from __future__ import annotations

import os
import threading
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import FaceError

MODEL_FILE = Path(__file__).parent / "weights" / "scrfd_500m.onnx"
STRIDES = (8, 16, 32)
ANCHORS = 2  # per location
MEAN, STD = 127.5, 128.0  # InsightFace's input scaling for SCRFD
MAX_SIDE = 640
MIN_SCORE = 0.5
NMS_OVERLAP = 0.4

Hit = tuple[tuple[float, float, float, float], float, np.ndarray]  # x, y, w, h; score; 5x2


@cache
def _session() -> tuple[Any, str, list[str]]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise FaceError("the scrfd detector needs onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    # Its threads would spin on after each photo, taking the cores the face network needs next
    # (identify: 67 ms with spinning, see bench/public_figures.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(MODEL_FILE), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise FaceError(f"{MODEL_FILE}: cannot load SCRFD ({exc}); reinstall celebmodel") from exc
    return session, session.get_inputs()[0].name, [o.name for o in session.get_outputs()]


_RUN_LOCK = threading.Lock()  # one session, already multi-threaded inside


@lru_cache(maxsize=32)
def _centres(rows: int, columns: int, stride: int) -> np.ndarray:
    """Anchor centres of one stride, location by location, each repeated per anchor."""
    ys, xs = np.mgrid[:rows, :columns]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centres, ANCHORS, axis=0)


def _blob(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The network input (NCHW, scaled) and the photo-to-input scale."""
    height, width = image.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    rows, columns = image.shape[:2]
    canvas = np.zeros((-(-rows // 32) * 32, -(-columns // 32) * 32, 3), np.uint8)
    canvas[:rows, :columns] = image
    blob = ((canvas.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(blob), scale


def _suppressed(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(-scores), []
    while order.size:
        i, rest = int(order[0]), order[1:]
        keep.append(i)
        width = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = width * height / (areas[i] + areas[rest] - width * height)
        order = rest[overlap <= NMS_OVERLAP]
    return np.asarray(keep, np.int64)


def detect_scrfd(image: np.ndarray) -> list[Hit]:
    """Every face in an RGB uint8 photo: box (x, y, w, h), score and 5 keypoints (photo pixels,
    in ArcFace's order: the photo's left eye, right eye, nose tip, left and right mouth corner),
    most confident first."""
    blob, scale = _blob(np.ascontiguousarray(image, dtype=np.uint8))
    session, name, outputs = _session()
    with _RUN_LOCK:
        maps = session.run(outputs, {name: blob})
    height, width = blob.shape[2:]
    scores, boxes, points = [], [], []
    for k, stride in enumerate(STRIDES):  # outputs: 3 score maps, 3 box maps, 3 keypoint maps
        score = maps[k].reshape(-1)
        chosen = np.flatnonzero(score >= MIN_SCORE)
        if not chosen.size:
            continue
        centres = _centres(height // stride, width // stride, stride)[chosen]
        sides = maps[k + 3].reshape(-1, 4)[chosen] * stride
        scores.append(score[chosen])
        boxes.append(np.concatenate([centres - sides[:, :2], centres + sides[:, 2:]], axis=1))
        offsets = maps[k + 6].reshape(-1, 5, 2)[chosen] * stride
        points.append(offsets + centres[:, None, :])
    if not scores:
        return []
    score = np.concatenate(scores)
    box = np.concatenate(boxes) / scale
    point = np.concatenate(points) / scale
    return [
        (
            (float(box[i, 0]), float(box[i, 1]), float(box[i, 2] - box[i, 0]),
             float(box[i, 3] - box[i, 1])),
            float(score[i]),
            point[i].astype(np.float64),
        )
        for i in _suppressed(box, score)
    ]
