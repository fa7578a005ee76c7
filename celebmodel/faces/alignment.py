"""ArcFace's 5-point alignment: a face's eyes, nose tip and mouth corners mapped by one
similarity transform (rotation, uniform scale, shift) onto the template every ArcFace-trained
network (InsightFace's models among them) was trained on, 112×112 pixels.

The transform is the least-squares one (Umeyama's method), the crop is resampled bilinearly
from the full-resolution photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array(  # left eye, right eye, nose tip, left and right mouth corners
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 matrix of the similarity transform taking ``source`` points closest to
    ``target`` points (least squares, no reflection)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mean_s, target - mean_t
    covariance = t.T @ s / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = (singular * sign).sum() / max(s.var(axis=0).sum(), 1e-12)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mean_t - scale * rotation @ mean_s
    return matrix


def arcface_aligned(
    image: np.ndarray, keypoints: np.ndarray, size: int = ARCFACE_SIZE
) -> np.ndarray:
    """The face whose 5 ``keypoints`` (photo pixels, in :data:`ARCFACE_TEMPLATE`'s order)
    are given, aligned to the template and scaled to ``size`` pixels."""
    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    matrix = similarity_transform(keypoints, template)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]  # crop px -> photo px
    crop = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).transform(
        (size, size),
        Image.Transform.AFFINE,
        tuple(inverse.ravel()),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(crop)
