"""Dataset handling: scan a folder of celebrity photos, load images safely, split, deduplicate.

The dataset layout is one sub-folder per celebrity, the folder name being the label. Everything
here is defensive about user data: odd files are skipped and *reported*, never silently dropped
and never a crash, because a face-recognition studio is pointed at whatever folder a user has.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import stat
import struct
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif"})
MAX_PIXELS: int = 40_000_000
MIN_SIDE: int = 8
SUBSETS: tuple[str, str, str] = ("train", "val", "test")
SPLIT_COLUMNS: tuple[str, str, str] = ("path", "label", "subset")
DUPLICATE_COLUMNS: tuple[str, ...] = ("sha256", "path", "label", "subset", "leak", "cross_label")

_CHUNK = 1 << 20
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


class ImageError(ValueError):
    """An image that cannot be used, with a message that names the file and the problem.

    The message is shown to users as is, so it always reads ``"<file>: <problem>"``.

    Parameters
    ----------
    path
        The file name or path (or caller-supplied name); None for anonymous input.
    problem
        What is wrong, in plain words.
    placeholder
        Shown instead of the path when there is none (``"<bytes>"``, ``"<array>"`` ...).
    """

    def __init__(self, path: str | None, problem: str, placeholder: str = "<bytes>") -> None:
        super().__init__(path, problem, placeholder)
        self.path = path
        self.problem = problem
        self.placeholder = placeholder

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.placeholder}: {self.problem}"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the folder or celebrity and the problem."""


@dataclass(frozen=True)
class Skipped:
    """A file or folder left out of a scan, with the reason shown to the user."""

    path: str
    reason: str


@dataclass
class DatasetScan:
    """The usable photos of a dataset folder plus everything that was skipped and why.

    ``sizes`` (path -> bytes at scan time) is filled by :func:`scan_dataset`; when it is missing
    (a scan built by hand) :meth:`fingerprint` stats the files instead.
    """

    root: Path
    items: pd.DataFrame
    skipped: list[Skipped]
    sizes: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def labels(self) -> list[str]:
        """Sorted unique labels (celebrity folder names)."""
        return sorted(self.items["label"].unique())

    def counts(self) -> pd.Series:
        """Photos per celebrity, indexed by label in sorted order."""
        return self.items["label"].value_counts().sort_index()

    def fingerprint(self) -> str:
        """Identify the file list (paths and sizes) so a run can record which data it used."""
        digest = hashlib.sha256()
        for rel in sorted(self.items["path"]):
            size = self.sizes.get(rel)
            if size is None:
                size = (self.root / rel).stat().st_size
            digest.update(f"{rel}\t{size}\n".encode())
        return digest.hexdigest()

    def report(self) -> str:
        """Human summary: celebrities, photos per celebrity, and every skipped entry with why."""
        counts = self.counts()
        lines = [
            f"Dataset {self.root}: {len(counts)} celebrities, {len(self.items)} photos, "
            f"{len(self.skipped)} skipped"
        ]
        lines += [f"  {label}: {n} photos" for label, n in counts.items()]
        if self.skipped:
            lines.append("Skipped:")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def display_name(label: str) -> str:
    """Turn a folder label into a readable name: ``"George_W_Bush"`` -> ``"George W Bush"``."""
    return " ".join(label.replace("_", " ").split()) or label


def _printable(name: str) -> str:
    """Show a file name that may hold undecodable bytes (surrogate escapes) without crashing."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Walk:
    """State of one dataset scan: kept files, skipped entries, folders on the current path."""

    root: Path
    rows: list[tuple[str, str, int]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    def skip(self, rel: str, reason: str) -> None:
        self.skipped.append(Skipped(rel, reason))

    def entries(self, folder: str, rel: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(rel, f"cannot open folder ({exc.strerror or exc})")
            return []

    def classify(self, entry: os.DirEntry[str], rel: str) -> tuple[str, int] | None:
        """Return ("dir"|"file", size) for an entry to use, else record why it is skipped."""
        if not _is_utf8(entry.name):
            self.skip(rel, "file name is not valid UTF-8 (rename it)")
            return None
        if entry.name.startswith("."):
            self.skip(rel, "hidden folder" if entry.is_dir() else "hidden file")
            return None
        try:
            if entry.is_symlink():
                try:
                    target = Path(entry.path).resolve(strict=True)
                except (OSError, RuntimeError):
                    self.skip(rel, "broken symlink")
                    return None
                if not target.is_relative_to(self.root):
                    self.skip(rel, "symlink pointing outside the dataset")
                    return None
            info = entry.stat()
        except OSError as exc:
            self.skip(rel, f"cannot read ({exc.strerror or exc})")
            return None
        if stat.S_ISDIR(info.st_mode):
            return "dir", 0
        if stat.S_ISREG(info.st_mode):
            return "file", info.st_size
        self.skip(rel, "not a regular file")
        return None

    def walk_celebrity(
        self, folder: str, rel: str, label: str, ancestors: tuple[Path, ...]
    ) -> None:
        """Collect image files below a celebrity folder, nested folders included."""
        real = Path(folder).resolve()
        if real in ancestors:
            self.skip(rel, "symlink loop (folder already being scanned)")
            return
        for entry in self.entries(folder, rel):
            child = f"{rel}/{_printable(entry.name)}"
            kind = self.classify(entry, child)
            if kind is None:
                continue
            what, size = kind
            if what == "dir":
                self.walk_celebrity(entry.path, child, label, (*ancestors, real))
                continue
            suffix = Path(entry.name).suffix.lower()
            if suffix not in IMAGE_EXTENSIONS:
                self.skip(child, f"not an image file ({suffix or 'no extension'})")
            elif size == 0:
                self.skip(child, "empty file (0 bytes)")
            else:
                self.rows.append((child, label, size))


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


def scan_dataset(root: str | Path, verify: bool = False) -> DatasetScan:
    """List the usable photos of a dataset folder and report everything left out.

    Layout: one sub-folder per celebrity, the sub-folder name being the label. Image files are
    recognised by extension (:data:`IMAGE_EXTENSIONS`, any case). Files in nested folders of a
    celebrity folder are *included* under that celebrity's label (people sort photos into
    sub-folders such as ``2019/``; dropping them would surprise). Symlinks resolving inside the
    root are followed; symlink loops are cut.

    Skipped and listed in ``skipped`` (never an exception): hidden files and folders, non-image
    extensions, loose files at the root, 0-byte files, symlinks pointing outside the root,
    broken symlinks, names that are not valid UTF-8 (they cannot be written to a CSV split or
    shown reliably), unreadable folders, and celebrity folders left without a usable image
    ("empty celebrity folder"). With ``verify=True`` each image is also opened with PIL and
    cheaply decoded; failures are skipped as ``"unreadable: <problem>"``.

    Raises
    ------
    DatasetError
        When the root does not exist, is not a folder, or holds no celebrity folder with an image.
    """
    given = Path(root).expanduser()
    if not given.exists():
        raise DatasetError(f"{given}: dataset folder does not exist")
    if not given.is_dir():
        raise DatasetError(f"{given}: not a folder (expected one sub-folder per celebrity)")
    walk = _Walk(given.resolve())
    for entry in walk.entries(str(walk.root), "."):
        rel = _printable(entry.name)
        kind = walk.classify(entry, rel)
        if kind is None:
            continue
        if kind[0] == "file":
            walk.skip(rel, "loose file at the dataset root")
            continue
        walk.folders.append(entry.name)
        walk.walk_celebrity(entry.path, rel, entry.name, ())

    rows = walk.rows
    if verify and rows:
        kept = []
        for row in tqdm(rows, desc="Checking images", unit="file", disable=None, leave=False):
            problem = _check_image_file(walk.root / row[0])
            if problem is None:
                kept.append(row)
            else:
                walk.skip(row[0], f"unreadable: {problem}")
        rows = kept
    used = {label for _, label, _ in rows}
    walk.skipped += [Skipped(f, "empty celebrity folder") for f in walk.folders if f not in used]
    skipped = sorted(walk.skipped, key=lambda s: s.path)

    if not rows:
        details = "".join(f"\n  {s.path}: {s.reason}" for s in skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        raise DatasetError(
            f"{walk.root}: no celebrity folder with a usable image (expected one sub-folder per "
            f"celebrity holding {', '.join(sorted(IMAGE_EXTENSIONS))} files){details}{more}"
        )
    items = pd.DataFrame(
        {"path": [r[0] for r in rows], "label": [r[1] for r in rows]}, dtype="str"
    ).sort_values(["label", "path"], ignore_index=True)
    return DatasetScan(walk.root, items, skipped, sizes={r[0]: r[2] for r in rows})


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, streamed in 1 MiB chunks so large files stay cheap."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(partial(handle.read, _CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _label_rng(seed: int, label: str) -> np.random.Generator:
    """A random stream per celebrity, so adding one celebrity does not reshuffle the others."""
    label_key = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng([seed, label_key])


def _subset_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Train/val/test sizes for ``n`` photos: val and test get at least one photo each."""
    n_val = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    while n - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _validate_split_args(
    per_class: int | None, seed: int, fractions: tuple[float, float, float]
) -> None:
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )


def make_split(
    scan: DatasetScan,
    *,
    per_class: int | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    drop_small: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Split every celebrity's photos into train/val/test, reproducibly.

    Each celebrity gets its own seeded stream (seed + a SHA-256 of the label), so the split is
    identical for the same scan and seed, and adding a celebrity leaves the others unchanged.
    ``per_class`` first samples that many photos per celebrity (all are kept, with a warning,
    when there are fewer). Then ``n_val = max(1, round(n * fractions[1]))``, likewise
    ``n_test``, and the rest is train (60 photos -> 48/6/6).

    Returns
    -------
    split
        Columns path, label, subset; sorted by subset (train, val, test), label, path.
    warnings
        Human-readable notes about sampling and dropped celebrities.

    Raises
    ------
    DatasetError
        When a celebrity has fewer than 3 photos (unless ``drop_small``), or fewer than two
        celebrities remain.
    """
    _validate_split_args(per_class, seed, fractions)
    notes: list[str] = []
    small: list[str] = []
    parts: list[pd.DataFrame] = []
    for label, group in scan.items.groupby("label", sort=True):
        paths = sorted(group["path"])
        rng = _label_rng(seed, str(label))
        order = rng.permutation(len(paths))
        if per_class is not None:
            if len(paths) < per_class:
                notes.append(
                    f"{label} has only {len(paths)} photos (fewer than "
                    f"per_class={per_class}): all are used"
                )
            order = order[:per_class]
        n = len(order)
        if n < 3:
            small.append(f"{label} ({n} photo{'s' if n != 1 else ''})")
            continue
        n_train, n_val, n_test = _subset_sizes(n, fractions)
        subsets = ["val"] * n_val + ["test"] * n_test + ["train"] * n_train
        parts.append(
            pd.DataFrame(
                {"path": [paths[i] for i in order], "label": str(label), "subset": subsets}
            )
        )
    if small:
        listed = ", ".join(small)
        if not drop_small:
            raise DatasetError(
                f"celebrities with fewer than 3 photos cannot appear in train, "
                f"val and test: {listed} (add photos, or drop them)"
            )
        notes.append(f"dropped celebrities with fewer than 3 photos: {listed}")
    if len(parts) < 2:
        raise DatasetError(
            f"training needs at least two celebrities with 3 or more photos, found {len(parts)}"
        )
    split = pd.concat(parts, ignore_index=True).astype("str")
    order_key = split["subset"].map({s: i for i, s in enumerate(SUBSETS)})
    split = (
        split.assign(_order=order_key)
        .sort_values(["_order", "label", "path"], ignore_index=True)
        .drop(columns="_order")
    )
    return split, notes


def write_split(split: pd.DataFrame, path: str | Path) -> None:
    """Write a split as CSV (path, label, subset) atomically, so readers never see half a file."""
    from .runs import atomic_write_text

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        target, split.loc[:, list(SPLIT_COLUMNS)].to_csv(index=False, lineterminator="\n")
    )


def read_split(path: str | Path) -> pd.DataFrame:
    """Read a split CSV written by :func:`write_split`, validating it.

    Raises
    ------
    DatasetError
        Naming the file, when it cannot be read, lacks a column, has empty cells, unknown
        subsets or a path listed twice.
    """
    source = Path(path)
    try:
        frame = pd.read_csv(source, dtype="str", keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{source}: cannot read split file ({exc})") from exc
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{source}: not a split file, missing column(s) {', '.join(missing)}")
    frame = frame.loc[:, list(SPLIT_COLUMNS)]
    if (frame == "").to_numpy().any():
        raise DatasetError(f"{source}: split file has empty cells")
    bad = sorted(set(frame["subset"]) - set(SUBSETS))
    if bad:
        raise DatasetError(
            f"{source}: unknown subset value(s) {', '.join(bad)} (expected {', '.join(SUBSETS)})"
        )
    repeated = frame["path"][frame["path"].duplicated()]
    if not repeated.empty:
        raise DatasetError(f"{source}: path listed more than once: {repeated.iloc[0]}")
    return frame.reset_index(drop=True)


def _empty_duplicates() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="str") for c in DUPLICATE_COLUMNS[:4]})
    return frame.assign(leak=pd.Series(dtype=bool), cross_label=pd.Series(dtype=bool))


def find_duplicates(root: str | Path, split: pd.DataFrame) -> pd.DataFrame:
    """Find byte-identical files across a split (train/test leaks, mislabelled copies).

    Only files sharing a size are hashed, which keeps this fast on large datasets.

    Returns
    -------
    pandas.DataFrame
        Columns sha256, path, label, subset, leak, cross_label: one row per file whose hash occurs
        more than once; ``leak`` marks groups spanning several subsets, ``cross_label`` groups
        with several labels. Empty (same columns) when there are no duplicates.

    Raises
    ------
    DatasetError
        When a file of the split is missing.
    """
    base = Path(root)
    frame = split.loc[:, list(SPLIT_COLUMNS)].reset_index(drop=True)
    try:
        sizes = pd.Series([(base / p).stat().st_size for p in frame["path"]], index=frame.index)
    except OSError as exc:
        raise DatasetError(f"{base}: split file missing from the dataset ({exc})") from exc
    candidates = frame[sizes.duplicated(keep=False)]
    if candidates.empty:
        return _empty_duplicates()
    hashes = [
        file_sha256(base / p)
        for p in tqdm(candidates["path"], desc="Hashing", unit="file", disable=None, leave=False)
    ]
    hashed = candidates.assign(sha256=hashes)
    dupes = hashed[hashed["sha256"].duplicated(keep=False)]
    if dupes.empty:
        return _empty_duplicates()
    groups = dupes.groupby("sha256")
    dupes = dupes.assign(
        leak=groups["subset"].transform("nunique") > 1,
        cross_label=groups["label"].transform("nunique") > 1,
    )
    return (
        dupes.loc[:, list(DUPLICATE_COLUMNS)]
        .sort_values(["sha256", "path"], ignore_index=True)
        .astype({"sha256": "str", "leak": bool, "cross_label": bool})
    )


def describe_duplicates(duplicates: pd.DataFrame) -> list[str]:
    """One line per group of identical files from :func:`find_duplicates`, naming each copy
    with its celebrity and subset and saying why it matters."""
    lines = []
    for _, group in duplicates.groupby("sha256", sort=False):
        copies = " = ".join(f"{r.path} ({r.label}, {r.subset})" for r in group.itertuples())
        why = []
        if group["cross_label"].iloc[0]:
            why.append("filed under different celebrities")
        if group["leak"].iloc[0]:
            why.append("in different subsets, so evaluation sees a training photo")
        lines.append(f"identical files: {copies}" + (f": {'; '.join(why)}" if why else ""))
    return lines


def _has_celebrity_folder(folder: Path) -> bool:
    """Whether a folder already holds a (visible) dataset, i.e. a finished fetch."""
    if not folder.is_dir():
        return False
    return any(not p.name.startswith(".") and p.is_dir() for p in folder.iterdir())


def _iter_lfw_jpegs(
    images: np.ndarray, target: np.ndarray, names: np.ndarray
) -> Iterator[tuple[str, str, Image.Image]]:
    """Yield (folder, file name, image) for sklearn's LFW arrays, numbered per person."""
    scale = 255.0 if float(np.max(images)) <= 1.0 else 1.0
    counters: dict[str, int] = {}
    for pixels, index in zip(images, target, strict=True):
        folder = "_".join(str(names[int(index)]).split())
        counters[folder] = counters.get(folder, 0) + 1
        rgb = np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * scale), 0, 255)
        yield folder, f"{folder}_{counters[folder]:04d}.jpg", Image.fromarray(rgb.astype(np.uint8))


def fetch_lfw(dest: str | Path, min_faces: int = 60) -> DatasetScan:
    """Download Labeled Faces in the Wild (via scikit-learn) into the folder layout.

    Writes ``dest/<Person_Name>/<Person_Name>_0001.jpg ...`` for people with at least
    ``min_faces`` photos. scikit-learn's cache lives in ``dest/.sklearn`` (a hidden folder, so
    scans skip it). The photos are written to a temporary sibling folder which is moved into
    place only when complete: an interrupted fetch never leaves a folder that looks like a
    finished dataset. A dest that already holds celebrity folders is reused as is.

    Raises
    ------
    DatasetError
        When LFW cannot be downloaded (no internet) or scikit-learn rejects the request.
    """
    from sklearn.datasets import fetch_lfw_people

    target = Path(dest).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target}: not a folder, cannot write LFW there")
    if _has_celebrity_folder(target):
        return scan_dataset(target)
    cache = target / ".sklearn"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create {cache}: {exc}") from exc
    try:
        lfw = fetch_lfw_people(
            min_faces_per_person=min_faces,
            color=True,
            resize=1.0,
            slice_=None,
            download_if_missing=True,
            data_home=str(cache),
        )
    except OSError as exc:
        _remove_empty(cache, target)
        raise DatasetError(
            f"cannot download LFW into {target} ({exc}): there seems to be no internet "
            "access. Point the tool at a folder of photos instead (one sub-folder per "
            "celebrity)."
        ) from exc
    except tarfile.TarError as exc:
        raise DatasetError(
            f"the LFW download in {cache} is corrupt ({exc}): delete that folder and retry"
        ) from exc
    except ValueError as exc:
        _remove_empty(cache, target)
        raise DatasetError(f"cannot fetch LFW with min_faces={min_faces}: {exc}") from exc

    partial_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        for folder, filename, img in _iter_lfw_jpegs(lfw.images, lfw.target, lfw.target_names):
            (partial_dir / folder).mkdir(exist_ok=True)
            img.save(partial_dir / folder / filename, "JPEG", quality=95)
        os.replace(cache, partial_dir / ".sklearn")
        try:
            target.rmdir()
            os.replace(partial_dir, target)
        except OSError:
            os.replace(partial_dir / ".sklearn", cache)
            raise
    except OSError as exc:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise DatasetError(f"cannot write LFW into {target}: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    return scan_dataset(target)


def _remove_empty(*folders: Path) -> None:
    """Remove folders created for a fetch that failed, if nothing was written into them."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
