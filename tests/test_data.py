"""Datasets and photos: scanning, image loading, splits, duplicates and the LFW fetch
(``celebmodel.data.dataset``, ``celebmodel.data.images``, ``celebmodel.data.sources``)."""

from __future__ import annotations

import hashlib
import io
import os
import resource
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_blank_bilevel_png
from PIL import Image

from celebmodel.data.dataset import (
    DatasetScan,
    Skipped,
    display_name,
    find_duplicates,
    folder_signature,
    make_split,
    read_split,
    scan_dataset,
    write_split,
)
from celebmodel.data.images import load_image
from celebmodel.data.sources import fetch_lfw
from celebmodel.errors import DatasetError, ImageError
from celebmodel.storage import file_sha256

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def save_image(
    path: Path, size: tuple[int, int] = (16, 16), color=RED, mode: str = "RGB", **save_args
) -> Path:
    """Write a small solid-colour image; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save_args)
    return path


def make_photos(root: Path, counts: dict[str, int]) -> DatasetScan:
    """A dataset of tiny distinct files (content is irrelevant to splitting) and its scan."""
    for label, n in counts.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{label}_{i:04d}.jpg").write_bytes(f"{label}-{i}".encode())
    return scan_dataset(root)


def subset_counts(split: pd.DataFrame) -> pd.DataFrame:
    return split.groupby(["label", "subset"]).size().unstack(fill_value=0)


# ---------------------------------------------------------------- splits


def test_split_60_per_celebrity_is_48_6_6(tmp_path: Path) -> None:
    scan = make_photos(tmp_path, {"Alice": 60, "Bob": 60, "Carol_Day": 60})
    split, notes = make_split(scan)
    assert notes == []
    assert list(split.columns) == ["path", "label", "subset"]
    counts = subset_counts(split)
    assert (counts["train"] == 48).all() and (counts["val"] == 6).all()
    assert (counts["test"] == 6).all()
    assert not split["path"].duplicated().any()
    assert set(split["path"]) == set(scan.items["path"])
    order = split["subset"].map({"train": 0, "val": 1, "test": 2})
    assert order.is_monotonic_increasing
    for _, part in split.groupby("subset", sort=False):
        assert list(part["label"] + part["path"]) == sorted(part["label"] + part["path"])


def test_split_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    scan = make_photos(tmp_path, {"Alice": 30, "Bob": 30})
    first, _ = make_split(scan, seed=7)
    pd.testing.assert_frame_equal(first, make_split(scan, seed=7)[0])
    assert not first.equals(make_split(scan, seed=8)[0])


def test_adding_a_celebrity_does_not_reshuffle_the_others(tmp_path: Path) -> None:
    before, _ = make_split(make_photos(tmp_path, {"Alice": 20, "Bob": 20}), seed=3)
    after, _ = make_split(make_photos(tmp_path, {"Carol": 20}), seed=3)
    kept = after[after["label"] != "Carol"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        before.sort_values("path", ignore_index=True), kept.sort_values("path", ignore_index=True)
    )


def test_per_class_samples_and_warns_when_short(tmp_path: Path) -> None:
    scan = make_photos(tmp_path, {"Alice": 80, "Bob": 60, "Carol": 40})
    split, notes = make_split(scan, per_class=60, seed=1)
    counts = subset_counts(split)
    assert counts.loc["Alice"].to_dict() == {"test": 6, "train": 48, "val": 6}
    assert counts.loc["Bob"].sum() == 60 and counts.loc["Carol"].sum() == 40
    assert len(notes) == 1 and "Carol" in notes[0] and "40" in notes[0]
    again, _ = make_split(scan, per_class=60, seed=1)
    pd.testing.assert_frame_equal(split, again)


def test_small_celebrities_are_named_or_dropped(tmp_path: Path) -> None:
    scan = make_photos(tmp_path, {"Alice": 10, "Bob": 10, "Tiny_Tim": 2, "Solo": 1})
    with pytest.raises(DatasetError, match="Tiny_Tim") as info:
        make_split(scan)
    assert "2 photos" in str(info.value) and "Solo (1 photo)" in str(info.value)
    split, notes = make_split(scan, drop_small=True)
    assert set(split["label"]) == {"Alice", "Bob"}
    assert any("Tiny_Tim" in n and "Solo" in n for n in notes)


def test_three_photos_is_enough_for_every_subset(tmp_path: Path) -> None:
    split, _ = make_split(make_photos(tmp_path, {"Alice": 3, "Bob": 4}))
    counts = subset_counts(split)
    assert (counts > 0).all().all()


def test_one_celebrity_is_not_enough(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least two celebrities"):
        make_split(make_photos(tmp_path, {"Alice": 20}))
    with pytest.raises(DatasetError, match="at least two celebrities"):
        make_split(make_photos(tmp_path / "b", {"Alice": 20, "Bob": 2}), drop_small=True)


def test_bad_split_arguments(tmp_path: Path) -> None:
    scan = make_photos(tmp_path, {"Alice": 10, "Bob": 10})
    with pytest.raises(ValueError, match="fractions"):
        make_split(scan, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="per_class"):
        make_split(scan, per_class=0)


def test_write_read_split_round_trip(tmp_path: Path) -> None:
    split, _ = make_split(make_photos(tmp_path / "data", {"NA": 10, "Bob_Jones": 10}))
    target = tmp_path / "out" / "split.csv"
    write_split(split, target)
    pd.testing.assert_frame_equal(read_split(target), split)
    assert sorted(p.name for p in target.parent.iterdir()) == ["split.csv"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"path,label\na.jpg,A\n", "missing column"),
        (b"path,label,subset\na.jpg,A,holdout\n", "holdout"),
        (b"path,label,subset\na.jpg,,train\n", "empty"),
        (b"path,label,subset\na.jpg,A,train\na.jpg,A,test\n", "more than once"),
        (b"", "cannot read"),
        (b"\xff\xfe\x00garbage\x81", "cannot read|missing column"),
    ],
)
def test_read_split_rejects_bad_files(tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    with pytest.raises(DatasetError, match=match) as info:
        read_split(bad)
    assert "bad.csv" in str(info.value)


def test_read_split_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.csv"):
        read_split(tmp_path / "nope.csv")


# ---------------------------------------------------------------- scanning


@pytest.fixture
def odd_dataset(tmp_path: Path) -> Path:
    """A dataset with every kind of awkward entry a user folder can hold."""
    root = tmp_path / "data"
    alice = root / "Alice_Smith"
    save_image(alice / "a1.jpg")
    save_image(alice / "a2.JPG")
    save_image(alice / "a3.PNG")
    save_image(alice / "a4.webp")
    save_image(alice / "a5.bmp")
    save_image(alice / "a6.gif")
    save_image(alice / "nested" / "deeper" / "n1.jpg")
    (alice / "empty.jpg").write_bytes(b"")
    (alice / "fake.jpg").write_text("I am not a picture")
    (alice / "notes.txt").write_text("notes")
    (alice / "README").write_text("no extension")
    save_image(alice / ".hidden.jpg")
    save_image(root / "Bob" / "b1.jpg", color=BLUE)
    (root / "Empty_Person").mkdir()
    (root / "Only_Text").mkdir()
    (root / "Only_Text" / "about.txt").write_text("x")
    save_image(root / ".cache" / "c.jpg")
    save_image(root / "loose.jpg")
    outside = save_image(tmp_path / "outside.jpg")
    (alice / "outside_link.jpg").symlink_to(outside)
    (alice / "inside_link.jpg").symlink_to(root / "Bob" / "b1.jpg")
    (alice / "broken_link.jpg").symlink_to(root / "missing.jpg")
    (alice / "loop").symlink_to(alice)
    (root / "Outside_Folder").symlink_to(tmp_path, target_is_directory=True)
    return root


def reasons(scan: DatasetScan) -> dict[str, str]:
    return {s.path: s.reason for s in scan.skipped}


KEPT = {
    "Alice_Smith/a1.jpg",
    "Alice_Smith/a2.JPG",
    "Alice_Smith/a3.PNG",
    "Alice_Smith/a4.webp",
    "Alice_Smith/a5.bmp",
    "Alice_Smith/a6.gif",
    "Alice_Smith/inside_link.jpg",
    "Alice_Smith/nested/deeper/n1.jpg",
    "Bob/b1.jpg",
}


def test_scan_keeps_images_and_reports_the_rest(odd_dataset: Path) -> None:
    scan = scan_dataset(odd_dataset)
    assert scan.root == odd_dataset.resolve()
    assert set(scan.items["path"]) == KEPT | {"Alice_Smith/fake.jpg"}
    assert list(scan.items.columns) == ["path", "label"]
    assert scan.items.equals(scan.items.sort_values(["label", "path"], ignore_index=True))
    assert scan.labels == ["Alice_Smith", "Bob"]
    assert scan.counts().to_dict() == {"Alice_Smith": 9, "Bob": 1}
    why = reasons(scan)
    assert why["Alice_Smith/empty.jpg"] == "empty file (0 bytes)"
    assert why["Alice_Smith/notes.txt"] == "not an image file (.txt)"
    assert why["Alice_Smith/README"] == "not an image file (no extension)"
    assert why["Alice_Smith/.hidden.jpg"] == "hidden file"
    assert why[".cache"] == "hidden folder"
    assert why["loose.jpg"] == "loose file at the dataset root"
    assert why["Alice_Smith/outside_link.jpg"] == "symlink pointing outside the dataset"
    assert why["Outside_Folder"] == "symlink pointing outside the dataset"
    assert why["Alice_Smith/broken_link.jpg"] == "broken symlink"
    assert "symlink loop" in why["Alice_Smith/loop"]
    assert why["Empty_Person"] == "empty celebrity folder"
    assert why["Only_Text"] == "empty celebrity folder"
    report = scan.report()
    assert "2 celebrities, 10 photos" in report
    for skipped in scan.skipped:
        assert f"{skipped.path}: {skipped.reason}" in report


def test_scan_verify_skips_unreadable_images(odd_dataset: Path) -> None:
    save_image(odd_dataset / "Bob" / "dot.png", size=(1, 1))
    good = (odd_dataset / "Bob" / "b1.jpg").read_bytes()
    (odd_dataset / "Bob" / "cut.jpg").write_bytes(good[: len(good) // 2])
    scan = scan_dataset(odd_dataset, verify=True)
    assert set(scan.items["path"]) == KEPT
    why = reasons(scan)
    assert why["Alice_Smith/fake.jpg"] == "unreadable: not an image (cannot identify image file)"
    assert why["Bob/dot.png"].startswith("unreadable: too small")
    assert why["Bob/cut.jpg"].startswith("unreadable: cannot decode image")


def test_unverified_fake_image_fails_at_load_naming_the_file(odd_dataset: Path) -> None:
    scan = scan_dataset(odd_dataset)
    assert "Alice_Smith/fake.jpg" in set(scan.items["path"])
    with pytest.raises(ImageError, match=r"fake\.jpg: not an image"):
        load_image(scan.root / "Alice_Smith/fake.jpg")


def test_celebrity_whose_images_are_all_unreadable_is_reported_empty(tmp_path: Path) -> None:
    save_image(tmp_path / "Good" / "g.jpg")
    (tmp_path / "Bad").mkdir()
    (tmp_path / "Bad" / "x.png").write_text("text")
    scan = scan_dataset(tmp_path, verify=True)
    assert scan.labels == ["Good"]
    assert reasons(scan)["Bad"] == "empty celebrity folder"


def test_scan_survives_non_utf8_and_long_names(tmp_path: Path) -> None:
    save_image(tmp_path / "Alice" / "ok.jpg")
    long_name = "x" * 240 + ".jpg"
    save_image(tmp_path / "Alice" / long_name)
    folder = os.fsencode(tmp_path / "Alice")
    try:
        fd = os.open(os.path.join(folder, b"caf\xe9.jpg"), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 file names")
    os.write(fd, b"data")
    os.close(fd)
    scan = scan_dataset(tmp_path)
    assert set(scan.items["path"]) == {"Alice/ok.jpg", f"Alice/{long_name}"}
    why = reasons(scan)
    assert "UTF-8" in why["Alice/caf\\xe9.jpg"]
    scan.report().encode("utf-8")
    split_target = tmp_path / "split.csv"
    items = scan.items.assign(subset="train")
    write_split(items, split_target)
    assert read_split(split_target)["path"].tolist() == items["path"].tolist()


def test_fingerprint_tracks_the_file_list(tmp_path: Path) -> None:
    save_image(tmp_path / "Alice" / "a.jpg")
    first = scan_dataset(tmp_path).fingerprint()
    assert len(first) == 64 and first == scan_dataset(tmp_path).fingerprint()
    save_image(tmp_path / "Alice" / "b.jpg")
    assert scan_dataset(tmp_path).fingerprint() != first
    scan = scan_dataset(tmp_path)
    by_hand = DatasetScan(scan.root, scan.items, [])
    assert by_hand.fingerprint() == scan.fingerprint()


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "missing")
    save_image(tmp_path / "loose.jpg")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_dataset(tmp_path / "loose.jpg")
    with pytest.raises(DatasetError, match="no celebrity folder") as info:
        scan_dataset(tmp_path)
    assert "loose.jpg: loose file at the dataset root" in str(info.value)


def test_a_dataset_of_symlinks_to_elsewhere_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """Every person a symlink pointing outside: one line names the reason and the people."""
    elsewhere, dataset = tmp_path / "elsewhere", tmp_path / "dataset"
    for name in ("Ada_Lovelace", "Alan_Turing", "Grace_Hopper"):
        save_image(elsewhere / name / "a.jpg")
        dataset.mkdir(exist_ok=True)
        (dataset / name).symlink_to(elsewhere / name)
    with pytest.raises(DatasetError) as info:
        scan_dataset(dataset)
    message = str(info.value)
    assert message.count("symlink pointing outside the dataset") == 1, message
    assert (
        "Ada_Lovelace, Alan_Turing, Grace_Hopper: symlink pointing outside the dataset" in message
    )


def test_the_folder_signature_changes_with_what_a_scan_sees(tmp_path: Path) -> None:
    save_image(tmp_path / "Alice" / "a.jpg")
    first = folder_signature(tmp_path)
    assert folder_signature(tmp_path) == first
    (tmp_path / "Alice" / "a.jpg").write_bytes(b"")  # emptied in place: same names
    emptied = folder_signature(tmp_path)
    assert emptied != first
    save_image(tmp_path / "Alice" / "a.jpg")
    (tmp_path / "Bob").symlink_to(tmp_path / "elsewhere")  # broken, then mended
    broken = folder_signature(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    assert folder_signature(tmp_path) != broken


def test_display_name() -> None:
    assert display_name("George_W_Bush") == "George W Bush"
    assert display_name("  Ana__Maria ") == "Ana Maria"
    assert display_name("Cher") == "Cher"


# ---------------------------------------------------------------- load_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), RED)
    img.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    array = load_image(path)
    assert array.shape == (40, 20, 3)
    assert array[3, 10, 0] > 150 > array[3, 10, 2]
    assert array[-4, 10, 2] > 150 > array[-4, 10, 0]


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[:5] = (0, 0, 255, 255)
    pixels[5:] = (255, 0, 0, 0)
    path = tmp_path / "alpha.png"
    Image.fromarray(pixels, "RGBA").save(path)
    array = load_image(path)
    assert array.dtype == np.uint8 and array.shape == (10, 10, 3)
    assert tuple(array[0, 0]) == (0, 0, 255)
    assert tuple(array[9, 9]) == (255, 255, 255)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.zeros((8, 8), dtype=np.uint16)
    values[0, 0], values[0, 1], values[0, 2] = 65535, 32768, 257
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    array = load_image(path)
    assert tuple(array[0, :4, 0]) == (255, 128, 1, 0)
    assert (array[..., 0] == array[..., 2]).all()


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = save_image(tmp_path / "cmyk.jpg", mode="CMYK", color=(0, 255, 255, 0))
    pixel = load_image(path)[4, 4]
    assert pixel[0] > 200 and pixel[1] < 50 and pixel[2] < 50


def test_palette_images(tmp_path: Path) -> None:
    gif = save_image(tmp_path / "pal.gif", mode="RGB", color=BLUE)
    with Image.open(gif) as img:
        assert img.mode == "P"
    assert tuple(load_image(gif)[0, 0]) == BLUE
    img = Image.new("P", (10, 10), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(0, (0, 0, 10, 5))
    transparent = tmp_path / "pal.png"
    img.save(transparent, transparency=0)
    array = load_image(transparent)
    assert tuple(array[0, 0]) == (255, 255, 255) and tuple(array[9, 9]) == (255, 0, 0)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as img:
        assert img.n_frames == 2
    assert tuple(load_image(path)[0, 0]) == RED


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file (0 bytes)"),
        (b"just some text", "not an image"),
        ("truncated", "truncated"),
        ("tiny", "too small (1x1 px"),
    ],
)
def test_unusable_files_raise_image_error_naming_them(tmp_path: Path, content, problem) -> None:
    path = tmp_path / "photo.jpg"
    if content == "truncated":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "tiny":
        save_image(path, size=(1, 1))
    else:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)
    assert info.value.path == str(path) and problem in info.value.problem
    with pytest.raises(ImageError, match=f"^upload.jpg: .*{problem[:8]}"):
        load_image(path.read_bytes(), name="upload.jpg")


def test_missing_file_and_anonymous_bytes() -> None:
    with pytest.raises(ImageError, match="nowhere.jpg: cannot open file"):
        load_image("nowhere.jpg")
    with pytest.raises(ImageError, match="^<bytes>: not an image") as info:
        load_image(b"plain text")
    assert info.value.path is None
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_bytes_and_pil_input(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), BLUE).save(buffer, "PNG")
    array = load_image(buffer.getvalue())
    assert array.shape == (10, 12, 3) and tuple(array[0, 0]) == BLUE
    pil = Image.new("LA", (12, 10), (100, 255))
    array = load_image(pil)
    assert tuple(array[0, 0]) == (100, 100, 100)
    array[0, 0] = 0
    assert pil.getpixel((0, 0)) == (100, 255)


def test_numpy_input() -> None:
    grey = np.full((10, 12), 0.5)
    out = load_image(grey)
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8 and (out == 128).all()
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    out = load_image(rgb)
    assert not np.shares_memory(out, rgb)
    assert load_image(np.zeros((10, 12, 1), dtype=np.uint8)).shape == (10, 12, 3)
    rgba = np.zeros((10, 12, 4), dtype=np.float32)
    assert (load_image(rgba) == 255).all()
    with pytest.raises(ImageError, match=r"^face: float pixel values"):
        load_image(np.full((10, 12, 3), 2.0), name="face")
    with pytest.raises(ImageError, match="^<array>: unsupported array shape"):
        load_image(np.zeros((10, 12, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((4, 12, 3), dtype=np.uint8))


def test_large_jpeg_is_downscaled_while_decoding(tmp_path: Path) -> None:
    path = save_image(tmp_path / "big.jpg", size=(2000, 1600), color=RED)
    assert load_image(path, max_pixels=1_000_000).shape == (800, 1000, 3)
    assert load_image(path, max_pixels=100_000).shape == (200, 250, 3)
    with pytest.raises(ImageError, match="big.jpg: too large"):
        load_image(path, max_pixels=10_000)


def test_large_png_is_refused(tmp_path: Path) -> None:
    path = write_blank_bilevel_png(tmp_path / "big.png", 2000, 2000)
    assert load_image(path).shape == (2000, 2000, 3)
    with pytest.raises(ImageError, match=r"big.png: too large \(2000x2000"):
        load_image(path, max_pixels=1_000_000)


def test_decompression_bomb_png_is_refused_without_allocating(tmp_path: Path) -> None:
    path = write_blank_bilevel_png(tmp_path / "bomb.png", 20_000, 20_000)
    assert path.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="bomb.png: too large"):
        load_image(path)
    with pytest.raises(ImageError, match="too large"):
        load_image(path.read_bytes())
    scan_root = tmp_path / "data"
    (scan_root / "Alice").mkdir(parents=True)
    os.replace(path, scan_root / "Alice" / "bomb.png")
    save_image(scan_root / "Alice" / "ok.png")
    scan = scan_dataset(scan_root, verify=True)
    assert reasons(scan)["Alice/bomb.png"].startswith("unreadable: too large")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000


# ---------------------------------------------------------------- duplicates


def test_find_duplicates_flags_leaks_and_cross_labels(tmp_path: Path) -> None:
    original = save_image(tmp_path / "Alice" / "a.png", color=RED)
    (tmp_path / "Bob").mkdir()
    (tmp_path / "Bob" / "copy.png").write_bytes(original.read_bytes())
    save_image(tmp_path / "Alice" / "other.png", color=BLUE)
    (tmp_path / "Alice" / "same_size.png").write_bytes(bytes(reversed(original.read_bytes())))
    split = pd.DataFrame(
        {
            "path": ["Alice/a.png", "Alice/other.png", "Alice/same_size.png", "Bob/copy.png"],
            "label": ["Alice", "Alice", "Alice", "Bob"],
            "subset": ["train", "train", "val", "test"],
        }
    )
    dupes = find_duplicates(tmp_path, split)
    assert list(dupes.columns) == ["sha256", "path", "label", "subset", "leak", "cross_label"]
    assert dupes["path"].tolist() == ["Alice/a.png", "Bob/copy.png"]
    assert dupes["leak"].all() and dupes["cross_label"].all()
    assert (dupes["sha256"] == file_sha256(original)).all()


def test_find_duplicates_same_subset_and_none(tmp_path: Path) -> None:
    first = save_image(tmp_path / "Alice" / "a.png")
    (tmp_path / "Alice" / "b.png").write_bytes(first.read_bytes())
    save_image(tmp_path / "Bob" / "c.png", color=BLUE)
    split = pd.DataFrame(
        {
            "path": ["Alice/a.png", "Alice/b.png", "Bob/c.png"],
            "label": ["Alice", "Alice", "Bob"],
            "subset": ["train"] * 3,
        }
    )
    dupes = find_duplicates(tmp_path, split)
    assert len(dupes) == 2 and not dupes["leak"].any() and not dupes["cross_label"].any()
    none = find_duplicates(tmp_path, split.iloc[1:])
    assert none.empty
    assert list(none.columns) == list(dupes.columns)
    assert none["leak"].dtype == bool


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


# ---------------------------------------------------------------- fetch_lfw


def lfw_archive(path: Path, monkeypatch, people: dict[str, int] | None = None) -> Path:
    """A small archive in the layout of LFW's lfw.tgz (``lfw/<Person>/<Person>_0001.jpg``),
    made the one ``fetch_lfw`` downloads (a file:// address and its sha256)."""
    import hashlib
    import tarfile

    from celebmodel.data import sources

    colours = {"Alice_Smith": RED, "Bob_Jones": BLUE}
    with tarfile.open(path, "w:gz") as tar:
        for person, count in (people or {"Alice_Smith": 3, "Bob_Jones": 2}).items():
            for i in range(1, count + 1):
                buffer = io.BytesIO()
                Image.new("RGB", (20, 24), colours[person]).save(buffer, "JPEG", quality=95)
                info = tarfile.TarInfo(f"lfw/{person}/{person}_{i:04d}.jpg")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    monkeypatch.setitem(sources.LFW_ARCHIVE, "url", path.as_uri())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(sources.LFW_ARCHIVE, "sha256", digest)
    return path


def test_fetch_lfw_offline_raises_clear_error(tmp_path: Path, monkeypatch) -> None:
    from celebmodel.data import sources

    monkeypatch.setitem(sources.LFW_ARCHIVE, "url", "http://127.0.0.1:9/lfw.tgz")
    dest = tmp_path / "lfw"
    with pytest.raises(DatasetError, match="cannot download LFW") as info:
        fetch_lfw(dest)
    assert "internet" in str(info.value) and "folder" in str(info.value)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_fetch_lfw_writes_the_folder_layout(tmp_path: Path, monkeypatch) -> None:
    lfw_archive(tmp_path.parent / f"{tmp_path.name}-lfw.tgz", monkeypatch)
    dest = tmp_path / "lfw"
    scan = fetch_lfw(dest, min_faces=2)
    assert scan.labels == ["Alice_Smith", "Bob_Jones"]
    assert scan.counts().to_dict() == {"Alice_Smith": 3, "Bob_Jones": 2}
    assert "Alice_Smith/Alice_Smith_0003.jpg" in set(scan.items["path"])
    pixel = load_image(dest / "Bob_Jones" / "Bob_Jones_0001.jpg")[5, 5]
    assert np.abs(pixel.astype(int) - BLUE).max() < 10
    assert [p.name for p in tmp_path.iterdir()] == ["lfw"]
    assert fetch_lfw(tmp_path / "most", min_faces=3).labels == ["Alice_Smith"]
    from celebmodel.data import sources

    monkeypatch.setitem(sources.LFW_ARCHIVE, "url", "http://127.0.0.1:9/must-not-download")
    assert fetch_lfw(dest).fingerprint() == scan.fingerprint()  # a complete dataset is reused


def test_interrupted_fetch_leaves_no_complete_looking_dataset(tmp_path: Path, monkeypatch) -> None:
    import shutil as shutil_module

    lfw_archive(tmp_path.parent / f"{tmp_path.name}-lfw.tgz", monkeypatch)
    real_copy = shutil_module.copyfileobj
    copied: list[object] = []

    def flaky_copy(source, target, *args, **kwargs):
        if len(copied) == 2:
            raise KeyboardInterrupt
        copied.append(target)
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(shutil_module, "copyfileobj", flaky_copy)
    dest = tmp_path / "lfw"
    with pytest.raises(KeyboardInterrupt):
        fetch_lfw(dest, min_faces=1)
    with pytest.raises(DatasetError):
        scan_dataset(dest)
    assert [p.name for p in tmp_path.iterdir()] == []  # no partial folder, no archive left
    monkeypatch.setattr(shutil_module, "copyfileobj", real_copy)
    assert fetch_lfw(dest, min_faces=1).counts().sum() == 5


def test_image_error_and_skipped_are_plain_values() -> None:
    error = ImageError("x.jpg", "broken")
    assert isinstance(error, ValueError) and str(error) == "x.jpg: broken"
    assert Skipped("a", "b") == Skipped("a", "b")
