"""A dataset folder: scan it, split it per celebrity, find duplicate photos.

The layout is one sub-folder per celebrity, the folder name being the label. Everything here is
defensive about user data: odd files are skipped and *reported*, never silently dropped and
never a crash, because a face-recognition studio is pointed at whatever folder a user has.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import DatasetError
from .images import IMAGE_EXTENSIONS, _check_image_file
from ..storage import atomic_write_text, file_sha256

SUBSETS: tuple[str, str, str] = ("train", "val", "test")

SPLIT_COLUMNS: tuple[str, str, str] = ("path", "label", "subset")

DUPLICATE_COLUMNS: tuple[str, ...] = ("sha256", "path", "label", "subset", "leak", "cross_label")


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


def name_matches(query: str, names: Sequence[str], labels: Sequence[str] = ()) -> list[bool]:
    """Which of ``names`` (or the folder labels beside them) hold every word of ``query``, in
    any case and any order ("blair tony" finds Tony Blair): the one name search of every page
    and the HTTP API. An empty query matches everyone."""
    words = query.casefold().split()
    texts = [
        f"{name} {display_name(label)}".casefold()
        for name, label in zip(names, labels or [""] * len(names), strict=True)
    ]
    return [all(word in text for word in words) for text in texts]


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
        raise DatasetError(
            f"{walk.root}: no celebrity folder with a usable image (expected one sub-folder per "
            f"celebrity holding {', '.join(sorted(IMAGE_EXTENSIONS))} files)"
            + "".join(f"\n  {line}" for line in reasons_once(skipped))
        )
    items = pd.DataFrame(
        {"path": [r[0] for r in rows], "label": [r[1] for r in rows]}, dtype="str"
    ).sort_values(["label", "path"], ignore_index=True)
    return DatasetScan(walk.root, items, skipped, sizes={r[0]: r[2] for r in rows})


def reasons_once(skipped: list[Skipped], shown: int = 10) -> list[str]:
    """Each reason once, after the entries it applies to (``shown`` of them at most): a
    dataset of symlinked folders is refused in one line naming its people, not the same
    sentence for each."""
    groups: dict[str, list[str]] = {}
    for item in skipped:
        groups.setdefault(item.reason, []).append(item.path)
    lines = []
    for reason, paths in groups.items():
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        lines.append(f"{', '.join(paths[:shown])}{more}: {reason}")
    return lines


def folder_signature(root: str | Path) -> str:
    """A digest of what a scan of ``root`` would see: every entry's path, type, size, time
    and link target. Previews are cached under it, so a dataset fixed (or broken) on disk is
    seen at the next look, and an unchanged one is not scanned again. Symlinks are not
    followed: the ones a scan follows point inside the root, which is walked anyway."""
    digest = hashlib.sha256()
    folders = [str(Path(root).expanduser())]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            digest.update(f"{folder}\t{exc.errno}\n".encode("utf-8", "surrogateescape"))
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                target = os.readlink(entry.path) if entry.is_symlink() else ""
                alive = os.path.exists(entry.path) if target else True
            except OSError as exc:
                info, target, alive = None, str(exc.errno), False
            line = f"{entry.path}\t{target}\t{alive}"
            if info is not None:
                line += f"\t{info.st_mode}\t{info.st_size}\t{info.st_mtime_ns}"
                if stat.S_ISDIR(info.st_mode):
                    folders.append(entry.path)
            digest.update(f"{line}\n".encode("utf-8", "surrogateescape"))
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
