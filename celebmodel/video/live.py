"""Live video: each frame's faces identified and drawn on it, at the rate the machine allows.

Frames arrive faster than a slow machine can identify them; the caller (``streamlit-webrtc``
with asynchronous processing) drops the frames that pile up, so the picture never lags, and
the achieved rate is measured here and drawn in the corner.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..recognition.recognize import Recognizer
from ..reports.display import draw_faces, face_title


class LiveAnnotator:
    """Identify and draw on video frames (RGB arrays), measuring frames per second."""

    def __init__(self, recognizer: Recognizer, threshold: float | None = None) -> None:
        self.recognizer = recognizer
        self.threshold = threshold
        self._times: deque[float] = deque(maxlen=30)
        self.names: list[str] = []  # who the last frame showed, for the page

    @property
    def rate(self) -> float:
        """Frames identified per second, over the last 30."""
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-6)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        faces = self.recognizer.identify(pixels, threshold=self.threshold)
        faces.sort(key=lambda face: (face["box"][0], face["box"][1]))
        self.names = [face_title(face) for face in faces]
        self._times.append(time.monotonic())
        image = draw_faces(Image.fromarray(pixels), faces)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=16)
        draw.text(
            (8, 8),
            f"{self.rate:.1f} fps",
            fill=(255, 255, 255),
            font=font,
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
        return np.asarray(image)
