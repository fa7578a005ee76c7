"""Photos in, RGB arrays out: every decoding guard in one place.

Whatever a user hands over (a path, bytes, a PIL image, an array; JPEG, PNG, GIF, BMP, WebP;
alpha, 16-bit, CMYK, palette, EXIF-rotated) becomes an HxWx3 uint8 RGB array, and anything that
cannot (empty, truncated, not an image, too small, a decompression bomb) raises
:class:`~celebmodel.errors.ImageError` naming the file and the problem.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})

MAX_PIXELS: int = 40_000_000

MIN_SIDE: int = 8

_JPEG_DRAFT_SCALES = (1, 2, 4, 8)

_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)


def _check_image_file(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """Cheaply check that a file decodes; return the problem, or None when it is fine.

    JPEGs are decoded at 1/8 scale (fast, and catches truncation); other formats use PIL's
    ``verify`` (structure and checksums) so a scan stays quick on large folders.
    """
    label = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(img, label, max_pixels, may_draft=img.format == "JPEG")
                if img.format == "JPEG":
                    img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
                    img.load()
                else:
                    img.verify()
    except ImageError as exc:
        return exc.problem
    except UnidentifiedImageError:
        return "not an image (cannot identify image file)"
    except Image.DecompressionBombError as exc:
        return f"too large ({exc})"
    except _DECODE_ERRORS as exc:
        return f"cannot decode image ({exc})"
    return None


def _check_size(
    img: Image.Image,
    label: str | None,
    max_pixels: int,
    *,
    may_draft: bool,
    placeholder: str = "<bytes>",
) -> None:
    """Refuse tiny images; shrink huge JPEGs while decoding (draft) or refuse other huge images.

    Runs on the header only, before any pixel data is decoded, so a decompression bomb is caught
    without allocating its pixels.
    """
    width, height = img.size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(
            label,
            f"too small ({width}x{height} px; need at least {MIN_SIDE} px on each side)",
            placeholder,
        )
    if width * height <= max_pixels:
        return
    if may_draft:
        for scale in _JPEG_DRAFT_SCALES:
            if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
                img.draft(None, (max(1, width // scale), max(1, height // scale)))
                break
    if img.width * img.height > max_pixels:
        raise ImageError(
            label,
            f"too large ({width}x{height} = {width * height:,} px; the limit is {max_pixels:,} px)",
            placeholder,
        )


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map high-bit-depth or float pixels to 0..255 by scaling (never clipping) them.

    The source range is guessed from the data type and values: floats up to 1 are [0, 1],
    integers up to 255 are 8-bit, up to 65535 are 16-bit; anything wider is min-max scaled.
    """
    data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(data.min()), float(data.max())
    sixteen_bit = values.dtype.kind == "u" and values.dtype.itemsize == 2
    if values.dtype.kind == "f" and low >= 0 and high <= 1:
        data = data * 255
    elif low >= 0 and (sixteen_bit or 255 < high <= 65535):
        data = data / 257
    elif low >= 0 and high <= 255:
        pass
    elif high > low:
        data = (data - low) * (255 / (high - low))
    else:
        data = np.zeros_like(data)
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to an HxWx3 uint8 RGB array, alpha composited on white."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(img))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, label: str | None, max_pixels: int) -> np.ndarray:
    """Validate and convert a caller's numpy image (HxW, HxWx1/3/4, uint8 or float in [0, 1])."""
    placeholder = "<array>"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            label,
            f"unsupported array shape {array.shape} (need HxW, HxWx1, HxWx3 or HxWx4)",
            placeholder,
        )
    height, width = array.shape[:2]
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(
            label,
            f"too small ({width}x{height} px; need at least {MIN_SIDE} px on each side)",
            placeholder,
        )
    if width * height > max_pixels:
        raise ImageError(
            label,
            f"too large ({width}x{height} = {width * height:,} px; the limit is {max_pixels:,} px)",
            placeholder,
        )
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return np.array(array)  # already what every model reads: a copy, no conversion
    if array.dtype == np.bool_:
        data = array.astype(np.float64)
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(label, "float pixel values must be finite and in [0, 1]", placeholder)
        data = array.astype(np.float64)
    elif array.dtype == np.uint16:
        data = array.astype(np.float64) / 65535
    elif array.dtype.kind in "iu" and array.min() >= 0 and array.max() <= 255:
        data = array.astype(np.float64) / 255
    else:
        raise ImageError(
            label,
            f"unsupported pixel type {array.dtype} (use uint8, or float in [0, 1])",
            placeholder,
        )
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    elif data.shape[2] == 4:
        alpha = data[:, :, 3:]
        data = data[:, :, :3] * alpha + (1 - alpha)
    return np.rint(data * 255).astype(np.uint8)


def _decode(
    img: Image.Image, label: str | None, max_pixels: int, *, may_draft: bool, placeholder: str
) -> np.ndarray:
    """Size-check, decode the first frame, apply EXIF orientation and convert to RGB."""
    _check_size(img, label, max_pixels, may_draft=may_draft, placeholder=placeholder)
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise ImageError(label, f"cannot decode image ({exc})", placeholder) from exc
    try:
        upright = ImageOps.exif_transpose(img)
    except (ValueError, OSError, SyntaxError, struct.error, KeyError, TypeError):
        upright = img
    try:
        return _pil_to_rgb(upright)
    except (ValueError, OSError) as exc:
        raise ImageError(label, f"unsupported colour mode {img.mode} ({exc})", placeholder) from exc


def load_image(
    source: str | Path | bytes | Image.Image | np.ndarray,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Load any supported photo as an HxWx3 uint8 RGB array (a fresh copy the caller owns).

    Applies the EXIF orientation, takes the first frame of animations, converts greyscale,
    palette, CMYK and 16-bit/float modes (16-bit is scaled, not clipped) and composites alpha on
    white, so every model sees the same kind of input whatever the user uploads.

    Decompression-bomb guard: the size is read from the header before decoding. A JPEG over
    ``max_pixels`` is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``) to fit; any other image
    over the limit is refused. PIL's own bomb limit (``Image.MAX_IMAGE_PIXELS`` x 2) still applies
    first, so a larger ``max_pixels`` cannot lift it.

    Parameters
    ----------
    source
        A file path, the encoded file bytes, a PIL image, or an array (HxW, HxWx1, HxWx3 or HxWx4;
        uint8, or float in [0, 1]).
    name
        Name used in error messages (e.g. an upload's file name); defaults to the path.
    max_pixels
        Largest accepted width x height.

    Raises
    ------
    ImageError
        For empty, truncated, non-image, too small (under 8 px a side) or too large input.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name, max_pixels)
    if isinstance(source, Image.Image):
        return _decode(source, name, max_pixels, may_draft=False, placeholder="<image>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(name, "empty file (0 bytes)")
        return _open_and_decode(io.BytesIO(data), name, max_pixels)
    if isinstance(source, (str, Path)):
        label = name if name is not None else str(source)
        try:
            with open(source, "rb") as handle:
                if os.fstat(handle.fileno()).st_size == 0:
                    raise ImageError(label, "empty file (0 bytes)")
                return _open_and_decode(handle, label, max_pixels)
        except OSError as exc:
            raise ImageError(label, f"cannot open file ({exc.strerror or exc})") from exc
    raise TypeError(f"load_image() cannot read a {type(source).__name__}")


def _open_and_decode(handle: io.IOBase, label: str | None, max_pixels: int) -> np.ndarray:
    """Open an encoded image from a binary file object and decode it with the size guard."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(handle)
        except UnidentifiedImageError as exc:
            raise ImageError(label, "not an image (cannot identify image file)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageError(label, f"too large ({exc})") from exc
        except _DECODE_ERRORS as exc:
            raise ImageError(label, f"cannot read image header ({exc})") from exc
        with img:
            return _decode(
                img, label, max_pixels, may_draft=img.format == "JPEG", placeholder="<bytes>"
            )


def photos_under(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` in any layout (hidden files left out), sorted."""
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def photo_files(paths: Iterable[str | Path]) -> list[Path]:
    """Photos of the given files and folders (folders searched recursively, hidden files
    left out), in the order given."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += photos_under(path) if path.is_dir() else [path]
    return found
