"""Atomic writes: one file helper and one folder helper, used by every writer of the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from celebmodel.storage import atomic_file, atomic_files, atomic_folder, atomic_write_text

SIZE = 200_000  # large enough that a write takes several system calls


WRITER = """
import sys
from celebmodel.storage import atomic_write_text
for _ in range(150):
    atomic_write_text(sys.argv[1], sys.argv[2] * {size})
"""


def test_two_writers_at_once_never_show_a_reader_half_a_file(tmp_path: Path) -> None:
    target = tmp_path / "faces.csv"
    atomic_write_text(target, "a" * SIZE)
    code = WRITER.format(size=SIZE)
    writers = [subprocess.Popen([sys.executable, "-c", code, str(target), c]) for c in "bc"]
    while any(writer.poll() is None for writer in writers):
        text = target.read_text()
        assert len(text) == SIZE and len(set(text)) == 1, "a reader saw a mixed or partial file"
    assert [writer.wait() for writer in writers] == [0, 0]
    assert target.read_text() in ("b" * SIZE, "c" * SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["faces.csv"], "a temporary file was left"


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "gallery.npz"
    with atomic_file(target) as temp:
        np.savez(temp, embeddings=np.ones(3))
    with pytest.raises(RuntimeError), atomic_file(target) as temp:
        np.savez(temp, embeddings=np.zeros(3))
        raise RuntimeError("the model failed to save")
    assert np.load(target)["embeddings"].tolist() == [1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.npz"]


def test_temporary_names_keep_the_suffixes_writers_choose_a_format_by(tmp_path: Path) -> None:
    with atomic_files(tmp_path / "dlib128.weights.h5", tmp_path / "model.keras") as temps:
        assert temps[0].name.endswith(".weights.h5") and temps[1].name.endswith(".keras")
        assert temps[0] != tmp_path / "dlib128.weights.h5"
        for temp in temps:
            temp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dlib128.weights.h5", "model.keras"]


def test_files_written_together_change_together(tmp_path: Path) -> None:
    a, b = tmp_path / "labels.json", tmp_path / "model.keras"
    atomic_write_text(a, "old labels")
    atomic_write_text(b, "old model")
    with pytest.raises(OSError), atomic_files(a, b) as (ta, tb):
        ta.write_text("new labels")
        tb.unlink()  # the second file cannot be renamed into place
    assert (a.read_text(), b.read_text()) == ("old labels", "old model")


def test_a_folder_is_swapped_in_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "lfw-public-figures"
    with atomic_folder(target) as partial:
        (partial / "gallery.npz").write_text("v1")
    with pytest.raises(ValueError), atomic_folder(target) as partial:
        (partial / "gallery.npz").write_text("v2")
        raise ValueError("the build failed")
    assert (target / "gallery.npz").read_text() == "v1"
    with atomic_folder(target) as partial:
        (partial / "gallery.npz").write_text("v2")
    assert (target / "gallery.npz").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["lfw-public-figures"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)
