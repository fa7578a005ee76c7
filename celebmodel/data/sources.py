"""Where datasets come from besides a folder: an uploaded zip, or Labeled Faces in the Wild.

A zip is checked as a whole before a byte is written (entry count, declared sizes, names that
would escape the target, links, encryption), then extracted into a hidden sibling folder that
is renamed into place only when complete; an LFW download is written the same way. The data
folder never holds half a dataset.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import DatasetError, UploadError
from ..storage import atomic_folder, data_root
from .dataset import DatasetScan, scan_dataset
from .images import IMAGE_EXTENSIONS
from .videos import VIDEO_EXTENSIONS, is_video

MAX_ENTRIES = 20_000

MAX_TOTAL_BYTES = 2 * 1024**3

MAX_FILE_BYTES = 50 * 1024**2

MAX_RATIO = 200  # uncompressed / compressed size of one entry above this looks like a zip bomb

JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db")


@dataclass(frozen=True)
class Limits:
    entries: int = MAX_ENTRIES
    total_bytes: int = MAX_TOTAL_BYTES
    file_bytes: int = MAX_FILE_BYTES
    ratio: int = MAX_RATIO


def datasets_dir() -> Path:
    """Where uploaded and fetched datasets live inside the app's data folder."""
    return data_root() / "datasets"


def safe_name(filename: str, default: str = "dataset") -> str:
    """A folder name from an upload's file name: letters, digits, ``_.-`` only, never hidden."""
    stem = Path(filename.replace("\\", "/")).name
    stem = stem[: -len(".zip")] if stem.lower().endswith(".zip") else stem
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-")
    return cleaned[:80] or default


def _entry_parts(name: str, label: str) -> tuple[str, ...]:
    """The path parts of a zip entry, refusing anything that could land outside the target."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UploadError(f"{label}: entry {name!r} has an absolute path")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if ".." in parts:
        raise UploadError(f"{label}: entry {name!r} points outside the archive (..)")
    if any("\x00" in p for p in parts):
        raise UploadError(f"{label}: entry {name!r} has a NUL byte in its name")
    return parts


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def is_photo(parts: tuple[str, ...]) -> bool:
    return Path(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS


def plan_zip(
    archive: zipfile.ZipFile,
    label: str,
    limits: Limits,
    keep: Callable[[tuple[str, ...]], bool] = is_photo,
    noun: str = "photo",
) -> list[tuple[Any, tuple]]:
    """Check every entry and return ``(info, target parts)`` of the files ``keep`` accepts.

    Every entry is checked, kept or not (count, names escaping the target, links,
    encryption); kept files also for their size and compression ratio. Raises
    :class:`UploadError` before anything is written when the archive breaks a rule.
    """
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise UploadError(
            f"{label}: {len(infos):,} entries, more than the {limits.entries:,} allowed"
        )
    kept, total = [], 0
    for info in infos:
        parts = _entry_parts(info.filename, label)
        if info.flag_bits & 0x1:
            raise UploadError(
                f"{label}: {info.filename} is encrypted; upload a zip without a password"
            )
        if _is_link(info):
            raise UploadError(f"{label}: {info.filename} is a symbolic link, which is not allowed")
        if info.is_dir() or not parts or any(p in JUNK or p.startswith(".") for p in parts):
            continue
        if not keep(parts):
            continue
        if info.file_size > limits.file_bytes:
            raise UploadError(
                f"{label}: {info.filename} is {info.file_size:,} bytes, more than the "
                f"{limits.file_bytes:,} allowed per {noun}"
            )
        if info.file_size > limits.ratio * max(info.compress_size, 1) and info.file_size > 1 << 20:
            raise UploadError(
                f"{label}: {info.filename} is compressed suspiciously well (zip bomb?)"
            )
        total += info.file_size
        kept.append((info, parts))
    if total > limits.total_bytes:
        raise UploadError(
            f"{label}: the {noun}s unpack to {total:,} bytes, more than the "
            f"{limits.total_bytes:,} allowed"
        )
    return kept


def plan_dataset(archive: zipfile.ZipFile, label: str, limits: Limits) -> list[tuple[Any, tuple]]:
    """The photos of a zipped dataset, one folder per celebrity (a shared top folder dropped)."""
    return _strip_common_folder(plan_zip(archive, label, limits), label)


def _strip_common_folder(photos: list[tuple[Any, tuple]], label: str) -> list[tuple[Any, tuple]]:
    """Accept ``dataset/Person/x.jpg`` as well as ``Person/x.jpg``: drop shared top folders."""
    while photos and all(len(parts) >= 3 for _, parts in photos):
        tops = {parts[0] for _, parts in photos}
        if len(tops) != 1:
            break
        photos = [(info, parts[1:]) for info, parts in photos]
    photos = [(info, parts) for info, parts in photos if len(parts) >= 2]
    if not photos:
        raise UploadError(
            f"{label}: no celebrity folders found; the zip must hold one folder per celebrity "
            f"with photos inside (Person_Name/photo.jpg; {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return photos


def unpack(
    source: bytes | str | Path | IO[bytes],
    filename: str,
    root: Path,
    plan: Callable[[zipfile.ZipFile, str, Limits], list[tuple[Any, tuple]]],
    limits: Limits | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Check a zip with ``plan``, then unpack the planned files into a new folder of ``root``
    named after ``filename``: first into a hidden folder, renamed into place when complete
    (and, with ``check``, only once ``check(hidden folder)`` returned without raising)."""
    limits = limits or Limits()
    label = Path(filename).name or "upload.zip"
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with zipfile.ZipFile(stream) as archive:
            files = plan(archive, label, limits)
            root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(root).free
            needed = sum(info.file_size for info, _ in files)
            if needed > free:
                raise UploadError(f"{label}: needs {needed:,} bytes but {root} has {free:,} free")
            target = _free_target(root, safe_name(label))
            with atomic_folder(target) as partial:
                _write_photos(archive, files, partial, label)
                if check is not None:
                    check(partial)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{label}: not a zip archive, or a damaged one ({exc})") from exc
    except (OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise UploadError(f"{label}: cannot extract ({exc})") from exc
    return target


def extract_dataset(
    source: bytes | str | Path | IO[bytes],
    filename: str,
    dest_root: str | Path | None = None,
    limits: Limits | None = None,
) -> DatasetScan:
    """Safely unpack a zipped dataset into ``<data>/datasets/<name>`` and scan it.

    ``filename`` is the upload's name, used for the folder and in messages. An existing
    dataset of that name is kept; the new one gets a numbered name beside it.
    """
    root = Path(dest_root) if dest_root else datasets_dir()
    return scan_dataset(unpack(source, filename, root, plan_dataset, limits))


def extract_photos(
    source: bytes | str | Path | IO[bytes], filename: str, dest_root: str | Path | None = None
) -> Path:
    """Safely unpack a zip of photos in any layout (people the model does not know) into
    ``<data>/strangers/<name>``; the folder is returned."""
    root = Path(dest_root) if dest_root else data_root() / "strangers"

    def photos(archive: zipfile.ZipFile, label: str, limits: Limits) -> list:
        found = plan_zip(archive, label, limits)
        if not found:
            raise UploadError(f"{label}: no photos inside ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return found

    return unpack(source, filename, root, photos)


def extract_videos(
    source: bytes | str | Path | IO[bytes], filename: str, dest_root: str | Path | None = None
) -> Path:
    """Safely unpack a zip of videos (the guards of a zip of photos; a video may be as large
    as the whole archive) into ``<data>/videos/<name>``; the folder is returned."""
    root = Path(dest_root) if dest_root else data_root() / "videos"

    def videos(archive: zipfile.ZipFile, label: str, limits: Limits) -> list:
        found = plan_zip(archive, label, limits, keep=lambda parts: is_video(parts[-1]),
                         noun="video")
        if not found:
            raise UploadError(f"{label}: no videos inside ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        return found

    return unpack(source, filename, root, videos, Limits(file_bytes=MAX_TOTAL_BYTES))


def _free_target(root: Path, name: str) -> Path:
    for attempt in range(1, 1000):
        target = root / (name if attempt == 1 else f"{name}-{attempt}")
        if not target.exists():
            return target
    raise UploadError(f"{root}: no free folder name for {name}")


def _write_photos(
    archive: zipfile.ZipFile, photos: list[tuple[Any, tuple]], folder: Path, label: str
) -> None:
    """Copy each checked entry, never more bytes than it declared (zipfile stops there)."""
    base = folder.resolve()
    for info, parts in photos:
        target = base.joinpath(*parts)
        if not target.resolve().is_relative_to(base):
            raise UploadError(f"{label}: entry {info.filename!r} points outside the archive")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _has_celebrity_folder(folder: Path) -> bool:
    """Whether a folder already holds a (visible) dataset, i.e. a finished fetch."""
    if not folder.is_dir():
        return False
    return any(not p.name.startswith(".") and p.is_dir() for p in folder.iterdir())


LFW_ARCHIVE = {  # LFW's official archive, at the address scikit-learn also fetches it from
    "url": "https://ndownloader.figshare.com/files/5976018",
    "sha256": "055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0",
    "name": "lfw.tgz",
}
LFW_PHOTO = re.compile(r"^lfw/(?P<person>[^/]+)/(?P=person)_\d{4}\.jpg$")


def fetch_lfw(dest: str | Path, min_faces: int = 60) -> DatasetScan:
    """Download Labeled Faces in the Wild's official archive (``lfw.tgz``, 173 MB) into
    ``dest`` in its own layout, ``<Person_Name>/<Person_Name>_0001.jpg ...`` (the photos
    byte for byte as LFW publishes them), keeping people with at least ``min_faces`` photos
    (``1``: everyone, what ``celebmodel build-lfw-model`` needs).

    The archive is checked against its sha256 and read entry by entry (only LFW's own photo
    names are taken, so nothing in it can write elsewhere); the photos go to a hidden sibling
    folder renamed into place only when complete, so an interrupted fetch never leaves a
    folder that looks like a finished dataset. A dest that already holds celebrity folders
    is reused as is.

    Raises
    ------
    DatasetError
        When LFW cannot be downloaded (no internet), or the download is not LFW's archive.
    """
    target = Path(dest).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target}: not a folder, cannot write LFW there")
    if _has_celebrity_folder(target):
        return scan_dataset(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create {target.parent}: {exc}") from exc
    archive = target.parent / f".{target.name}.{LFW_ARCHIVE['name']}"
    try:
        _download(LFW_ARCHIVE["url"], archive, LFW_ARCHIVE["sha256"], target)
        with atomic_folder(target) as partial:  # an empty folder there is replaced
            _extract_lfw(archive, partial, min_faces)
    except OSError as exc:
        raise DatasetError(f"cannot write LFW into {target}: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)
    return scan_dataset(target)


def _download(url: str, path: Path, sha256: str, target: Path) -> None:
    """``url`` into ``path``, checked against ``sha256``; offline is a clear message."""
    import hashlib
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(path, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        path.unlink(missing_ok=True)
        raise DatasetError(
            f"cannot download LFW into {target} ({getattr(exc, 'reason', exc)}): there seems "
            "to be no internet access. Point the tool at a folder of photos instead (one "
            "sub-folder per celebrity), or copy LFW's lfw.tgz contents there."
        ) from exc
    if digest.hexdigest() != sha256:
        path.unlink(missing_ok=True)
        raise DatasetError(f"{url}: the download is not LFW's archive (its sha256 differs); "
                           "try again later")


def _extract_lfw(archive: Path, folder: Path, min_faces: int) -> None:
    """LFW's photos from its archive into ``folder``: only entries named as LFW names its
    photos (``lfw/<Person>/<Person>_0001.jpg``), regular files, for people with at least
    ``min_faces`` photos."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and LFW_PHOTO.match(m.name)]
            counts: dict[str, int] = {}
            for member in members:
                person = LFW_PHOTO.match(member.name)["person"]
                counts[person] = counts.get(person, 0) + 1
            for member in members:
                person = LFW_PHOTO.match(member.name)["person"]
                if counts[person] < min_faces:
                    continue
                (folder / person).mkdir(exist_ok=True)
                source = tar.extractfile(member)
                with open(folder / person / Path(member.name).name, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"{archive.name}: not a readable LFW archive ({exc})") from exc
    if not any(folder.iterdir()):
        raise DatasetError(f"LFW: no person has {min_faces} or more photos")
