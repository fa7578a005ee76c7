"""Nothing of a user's is ever written inside the installed package: every CLI verb that reads
the built-in model, and the pages' actions with it, leave the package's files exactly as they
were. (The tests run as root in CI, where a read-only folder would not stop a write: so the
package's files are compared, every name, size and modification time, before and after.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import app, astronauts, cameramen, jpeg, open_page, texts

import celebmodel
from celebmodel.runs.run import BUILTIN, active_run

PACKAGE = Path(celebmodel.__file__).resolve().parent


def package_files() -> dict[str, tuple[int, int]]:
    """Every file and folder of the package (bytecode caches aside): size and mtime."""
    return {
        str(path.relative_to(PACKAGE)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in PACKAGE.rglob("*")
        if "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_no_verb_or_page_action_writes_inside_the_package(shipped_builtin, folders, tmp_path):
    before = package_files()
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, photo in enumerate([*astronauts(2, seed=4), *cameramen(2, seed=6)]):
        photo.save(photos / f"p{i}.jpg")
    env = {**os.environ, "CELEBMODEL_DATA": str(tmp_path / "data"),
           "CELEBMODEL_RUNS": str(tmp_path / "runs"), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def celebmodel_cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "celebmodel", *args], env=env,
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == code, (args, done.stderr[-2000:])
        return done.stdout + done.stderr

    at = open_page(app(), "pages/identify.py")  # the pages, with the shipped built-in model
    assert active_run().builtin
    at.file_uploader(key="photos").set_value(
        [(p.name, p.read_bytes(), "image/jpeg") for p in sorted(photos.iterdir())]
        + [("again.jpg", jpeg(cameramen(1, seed=9)[0]), "image/jpeg")] * 4  # an album
    )
    open_page(at)
    assert not at.exception and "**Group 1**" in texts(at)  # an album, grouped
    open_page(at, "pages/people.py")
    next(b for b in at.button if b.label == "Make my own copy").click().run()
    assert not at.exception and not active_run().builtin
    open_page(at, "pages/evaluate.py")
    assert not at.exception

    album = tmp_path / "album.csv"
    celebmodel_cli("predict", BUILTIN, str(photos), "--csv", str(album), "--group")
    listed = celebmodel_cli("groups", str(album), "list")
    if "group 1" in listed:  # the cameraman's two photos, when they group
        celebmodel_cli("groups", str(album), "rename", "1", "Camera Man")
    assert "George W Bush" in celebmodel_cli("people", BUILTIN, "list")
    assert "In plain words" in celebmodel_cli("evaluate", BUILTIN)  # its figures, as built
    refused = celebmodel_cli("export", BUILTIN, str(tmp_path / "export"), code=1)
    assert "uses the mbf512 face network as shipped" in refused
    celebmodel_cli("copy", BUILTIN)

    after = package_files()
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:10]
