"""Photos as the pages show them: annotated display copies, face thumbnails, face titles.

What goes to the browser is a display-sized JPEG, never the full-resolution photo: a
12-megapixel PNG is 20 MB and a second to encode.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .dataset import display_name
from .face_cache import cache_dir, prepare
from .images import load_image
from .pipeline import face_stage
from .runs import Run

KNOWN_COLOUR = (46, 160, 67)

UNKNOWN_COLOUR = (230, 126, 34)

DISPLAY_MAX_SIDE = 1460  # Streamlit's widest image: anything larger it decodes and re-encodes


def face_title(face: dict[str, Any]) -> str:
    """``George W Bush (87%)`` or ``unknown (nearest: George W Bush, 41%)``."""
    nearest = display_name(face["nearest"])
    if face["known"]:
        return f"{nearest} ({face['probability']:.0%})"
    return f"unknown (nearest: {nearest}, {face['probability']:.0%})"


def display_copy(pixels: np.ndarray) -> tuple[Image.Image, float]:
    """The photo at most :data:`DISPLAY_MAX_SIDE` long, and the scale from the original."""
    image = Image.fromarray(pixels)
    scale = min(1.0, DISPLAY_MAX_SIDE / max(image.size))
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        factor = int(1 / scale)  # box-average by a whole factor first: much cheaper
        small = image.reduce(factor) if factor > 1 else image
        image = small.resize(size, Image.Resampling.BILINEAR)
    return image.convert("RGB"), scale


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    """A photo encoded for the browser (a 12-megapixel PNG is 20 MB and a second to encode)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def annotate(pixels: np.ndarray, faces: list[dict[str, Any]]) -> Image.Image:
    """A display-sized copy of the photo with a box and a name on every face (orange for
    unknown faces)."""
    image, scale = display_copy(pixels)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 250))
    for number, face in enumerate(faces, start=1):
        x, y, w, h = (round(v * scale) for v in face["box"])
        font = ImageFont.load_default(size=max(12, min(round(w / 6), round(max(image.size) / 30))))
        colour = KNOWN_COLOUR if face["known"] else UNKNOWN_COLOUR
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        name = display_name(face["nearest"]) if face["known"] else "unknown"
        text = f"{number}. {name}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        label_y = y - (bottom - top) - 2 * width if y - (bottom - top) - 2 * width >= 0 else y
        draw.rectangle(
            [x, label_y, x + (right - left) + 2 * width, label_y + (bottom - top) + 2 * width],
            fill=colour,
        )
        draw.text((x + width, label_y + width - top), text, fill=(255, 255, 255), font=font)
    return image


def face_crop(pixels: np.ndarray, box: list[int]) -> Image.Image:
    """The face's box cut out of the photo, for a thumbnail beside its chart."""
    x, y, w, h = box
    return Image.fromarray(pixels[max(0, y) : y + h, max(0, x) : x + w])


def identify_photo(
    recognizer: Any, content: bytes, name: str, threshold: float | None = None
) -> dict[str, Any]:
    """Identify the faces of one uploaded photo, timed, with the annotated picture as JPEG.

    The upload is decoded once; the picture sent to the browser is a display-sized copy.
    Raises :class:`celebmodel.data.ImageError` naming ``name`` when the bytes are no image.
    """
    started = time.perf_counter()
    pixels = load_image(content, name=name)
    faces = recognizer.identify(pixels, threshold=threshold)
    seconds = time.perf_counter() - started
    faces.sort(key=lambda face: (face["box"][0], face["box"][1]))  # numbered left to right
    return {
        "pixels": pixels,
        "size": (pixels.shape[1], pixels.shape[0]),
        "annotated": jpeg(annotate(pixels, faces)),
        "faces": faces,
        "seconds": seconds,
    }


def crop_for(run: Run, path: str) -> Image.Image | None:
    """The aligned crop the model saw for a dataset photo, through the run's own face stage.

    Uses the face cache (what training wrote), detecting again only when it was cleared.
    """
    config = run.config()
    record = prepare(config.data_dir, [path], face_stage(config), cache_dir())[0]
    if not record.get("crop"):
        return None
    return Image.open(record["crop"]).convert("RGB")
