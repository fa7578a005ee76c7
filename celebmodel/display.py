"""Photos as the pages show them: annotated display copies, face thumbnails, face titles.

What goes to the browser is a display-sized JPEG, never the full-resolution photo: a
12-megapixel PNG is 20 MB and a second to encode.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .albums import Album
from .face_cache import cache_dir, prepare
from .images import load_image
from .people import ADDED, face_thumbnail
from .pipeline import face_stage
from .runs import Run

KNOWN_COLOUR = (46, 160, 67)
UNKNOWN_COLOUR = (230, 126, 34)
SELECTED_COLOUR = (0, 114, 178)
DISPLAY_MAX_SIDE = 1460  # Streamlit's widest image: anything larger it decodes and re-encodes
DISPLAY_MIN_SIDE = 640  # smaller photos are enlarged for display, so faces and labels read


def face_title(face: dict[str, Any]) -> str:
    """The headline of a face: the person's name, or ``Unknown``."""
    return face["name"] if face["known"] else "Unknown"


def face_details(face: dict[str, Any], threshold_similarity: float) -> str:
    """The line under the headline: how close the face is, and to whom when unknown."""
    if face["known"]:
        return f"similarity {face['similarity']:.0%} (needs {threshold_similarity:.0%})"
    return (
        f"closest: {face['name']}, similarity {face['similarity']:.0%} "
        f"(needs {threshold_similarity:.0%})"
    )


def top_k_line(face: dict[str, Any]) -> str:
    """The most likely people of a known face with their class probabilities, on one line
    (text: a grid per face costs the browser more than the rest of the result)."""
    return "likely: " + " · ".join(f"{t['name']} {t['probability']:.0%}" for t in face["top_k"])


def display_copy(pixels: np.ndarray) -> tuple[Image.Image, float]:
    """The photo sized for the page: at most :data:`DISPLAY_MAX_SIDE` long, small ones
    enlarged to :data:`DISPLAY_MIN_SIDE`; and the scale from the original."""
    image = Image.fromarray(pixels)
    longest = max(image.size)
    scale = min(1.0, DISPLAY_MAX_SIDE / longest)
    if longest < DISPLAY_MIN_SIDE:
        scale = DISPLAY_MIN_SIDE / longest
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        factor = int(1 / scale) if scale < 1 else 1  # shrink by a whole factor first: cheap
        small = image.reduce(factor) if factor > 1 else image
        image = small.resize(size, Image.Resampling.BILINEAR)
    return image.convert("RGB"), scale


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    """A photo encoded for the browser (a 12-megapixel PNG is 20 MB and a second to encode)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def draw_faces(
    image: Image.Image, faces: list[dict[str, Any]], scale: float = 1.0, selected: int | None = None
) -> Image.Image:
    """Numbered boxes with the name inside each (green known, orange unknown, blue and thicker
    the selected one), drawn on ``image`` in place; ``scale`` maps boxes to its pixels."""
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    for number, face in enumerate(faces, start=1):
        x, y, w, h = (round(v * scale) for v in face["box"])
        colour = KNOWN_COLOUR if face["known"] else UNKNOWN_COLOUR
        thick = width
        if selected == number:
            colour, thick = SELECTED_COLOUR, 2 * width
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=thick)
        text = f"{number}. {face_title(face)}"
        size = max(11, min(round(w / 7), round(max(image.size) / 40)))
        font = ImageFont.load_default(size=size)
        while size > 9 and draw.textlength(text, font=font) > max(w - 2 * thick, 40):
            size -= 1  # the label fits inside the box (or at least 40 px of it)
            font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        inside_y = y + thick
        draw.rectangle(
            [x, inside_y, x + min(w, right - left + 2 * thick), inside_y + bottom - top + thick],
            fill=colour,
        )
        draw.text((x + thick, inside_y + thick // 2 - top), text, fill=(255, 255, 255), font=font)
    return image


def annotate(
    pixels: np.ndarray, faces: list[dict[str, Any]], selected: int | None = None
) -> Image.Image:
    """A display-sized copy of the photo with every face boxed, numbered and named."""
    image, scale = display_copy(pixels)
    return draw_faces(image, faces, scale, selected)


def face_crop(pixels: np.ndarray, box: list[int]) -> Image.Image:
    """The face's box cut out of the photo, for a thumbnail beside its chart."""
    x, y, w, h = box
    return Image.fromarray(pixels[max(0, y) : y + h, max(0, x) : x + w])


def identify_photo(
    recognizer: Any, content: bytes, name: str, threshold: float | None = None
) -> dict[str, Any]:
    """Identify the faces of one uploaded photo, timed, with the annotated picture as JPEG.

    The upload is decoded once; the picture sent to the browser is a display-sized copy.
    Raises :class:`celebmodel.errors.ImageError` naming ``name`` when the bytes are no image.
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


def photo_size(content: bytes) -> str:
    """``4000×3000, 3.9 MB`` from the header alone (for the spinner while it works)."""
    megabytes = f"{len(content) / 1e6:.1f} MB"
    try:
        with Image.open(io.BytesIO(content)) as image:
            return f"{image.width}×{image.height}, {megabytes}"
    except Exception:  # noqa: BLE001 (only a label: the real decode names the problem)
        return megabytes


def thumbnail(image: Image.Image, side: int = 96) -> Image.Image:
    """A square-ish small copy for tables and strips."""
    small = image.copy()
    small.thumbnail((side, side))
    return small


def album_thumbnails(
    album: Album, photos: Sequence[tuple[str, Any]], side: int = 64
) -> list[Image.Image]:
    """One small face per row of ``album``, in its row order: each photo decoded once for
    all its faces (photos without a face, or unreadable, are not opened again)."""
    sources = dict(photos)
    thumbs = []
    for name, boxes in album.rows.groupby("photo", sort=False)["box"]:
        pixels = load_image(sources[name], name=name)
        thumbs += [thumbnail(face_crop(pixels, box), side) for box in boxes]
    return thumbs


def album_table(album: Album, thumbs: list[Image.Image]) -> pd.DataFrame:
    """The album as the Identify page's table, one row per face: its thumbnail (inlined), the
    name shown (or Unknown), the closest person, the similarity and the group."""
    table = album.rows[["photo", "face", "name", "similarity", "known", "group"]].copy()
    table.insert(0, "thumbnail", [data_uri(thumb) for thumb in thumbs])
    table.insert(4, "closest", album.rows["name"])
    table["name"] = [face_title(face) for face in album.faces]
    return table


def data_uri(image: Image.Image) -> str:
    """A small image inlined for a table cell (``st.column_config.ImageColumn``)."""
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(jpeg(image, 80)).decode()


def evidence_image(run: Run, path: str) -> Image.Image | None:
    """The face behind a piece of evidence: the aligned crop of a training photo, or the kept
    face of a person added later; ``None`` when the photo was not kept."""
    if not path:
        return None
    if path.startswith(ADDED):
        return face_thumbnail(run, path)
    return crop_for(run, path)


def crop_for(run: Run, path: str) -> Image.Image | None:
    """The aligned crop the model saw for a dataset photo, through the run's own face stage.

    Uses the face cache (what training wrote), detecting again only when it was cleared.
    """
    config = run.config()
    record = prepare(config.data_dir, [path], face_stage(config), cache_dir())[0]
    if not record.get("crop"):
        return None
    return Image.open(record["crop"]).convert("RGB")
