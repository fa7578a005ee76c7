"""Hostile datasets, models, runs and photos: clear errors naming the file, nothing loaded
unsafely, and the rest of the work goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import awkward_photos, broken_photos, make_dataset
from PIL import Image
from skimage import data as skdata

from celebmodel.errors import ConfigError, RunError
from celebmodel.recognition.recognize import Recognizer
from celebmodel.runs.run import Run, load_run

PACKAGE = Path(__file__).resolve().parent.parent / "celebmodel"


def hostile_dataset(root: Path, outside: Path) -> dict[str, str]:
    """Three learnable celebrities plus every awkward file of issue 4; returns, per awkward
    path, the words its report line must hold (the photo is named, and so is the problem)."""
    make_dataset(root, per_class=6, size=32)
    a = root / "Celebrity_A"
    good = (a / "photo_00.jpg").read_bytes()
    broken = broken_photos(root.parent)
    for name, content in awkward_photos().items():
        (a / name).write_bytes(content)
    for name, (content, _) in broken.items():
        (a / name).write_bytes(content)
    (a / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(a / "photo_01.jpg", a / "nested" / "deeper" / "inside.jpg")
    (a / ("l" * 200 + ".jpg")).write_bytes((a / "photo_02.jpg").read_bytes())
    (a / ".hidden.jpg").write_bytes(good)
    (a / "link_inside.jpg").symlink_to(a / "photo_03.jpg")
    shutil.copy(a / "photo_04.jpg", outside)
    (a / "link_outside.jpg").symlink_to(outside)
    os.makedirs(root / "Nobody")
    two = root / "Two_Photos"
    two.mkdir()
    for i in range(2):
        shutil.copy(root / "Celebrity_B" / f"photo_0{i}.jpg", two / f"t{i}.jpg")
    shutil.copy(root / "Celebrity_C" / "photo_05.jpg", root / "Celebrity_B" / "twin.jpg")
    with open(os.fsencode(a) + b"/caf\xe9.jpg", "wb") as handle:
        handle.write((a / "photo_05.jpg").read_bytes())
    return {f"Celebrity_A/{name}": problem for name, (_, problem) in broken.items()} | {
        "Celebrity_A/.hidden.jpg": "hidden file",
        "Celebrity_A/link_outside.jpg": "outside the dataset",
        "Celebrity_A/caf\\xe9.jpg": "not valid UTF-8",
        "Nobody": "empty celebrity folder",
        "Two_Photos": "Two_Photos",
        "Celebrity_B/twin.jpg": "filed under different celebrities",
    }


@pytest.mark.slow
def test_a_hostile_dataset_trains_and_reports_each_bad_file(tmp_path: Path):
    """``celebmodel train`` on a dataset holding every awkward file: each is reported by name
    and problem in the run's log, the odd-but-valid ones are used, and the model is saved."""
    data = tmp_path / "data"
    expected = hostile_dataset(data, tmp_path / "elsewhere.jpg")
    args = [sys.executable, "-m", "celebmodel", "train", str(data), "--weights", "none"]
    args += ["--image-size", "32", "--no-faces", "--recipe", "classic", "--max-epochs", "1"]

    refused = subprocess.run([*args, "--run-dir", str(tmp_path / "strict")], capture_output=True)
    assert refused.returncode == 1
    assert b"Two_Photos" in refused.stderr and b"Traceback" not in refused.stderr
    assert not (tmp_path / "strict" / "model.keras").exists()

    done = subprocess.run(
        [*args, "--run-dir", str(tmp_path / "run"), "--drop-small"], capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    run = Run(tmp_path / "run")
    assert run.state == "finished" and run.has_model()
    log = run.file("log.txt").read_text(encoding="utf-8", errors="replace")
    lines = log.splitlines()
    for path, problem in expected.items():
        assert any(path in line and problem in line for line in lines), (path, problem)
    [twins] = [line for line in lines if "Celebrity_B/twin.jpg" in line]
    assert "Celebrity_C/photo_05.jpg (Celebrity_C," in twins
    assert run.labels() == ["Celebrity_A", "Celebrity_B", "Celebrity_C"]
    faces = pd.read_csv(run.file("faces.csv"))
    used = set(faces.loc[faces["error"].isna(), "path"])
    valid = {*awkward_photos(), "nested/deeper/inside.jpg", "l" * 200 + ".jpg", "link_inside.jpg"}
    assert {f"Celebrity_A/{name}" for name in valid} <= used
    assert not {path for path in expected if path.startswith("Celebrity_A/")} & used


@pytest.fixture
def run_copy(dlib_run: Run, tmp_path: Path) -> Run:
    shutil.copytree(dlib_run.path, tmp_path / "run")
    return Run(tmp_path / "run")


def test_model_with_another_label_count_is_refused(run_copy: Run):
    labels = run_copy.labels()
    run_copy.file("labels.json").write_text(json.dumps([*labels, "Someone_Else"]))
    with pytest.raises(RunError, match="has 3 classes but labels.json names 4"):
        Recognizer.from_run(run_copy.path)


def test_corrupted_model_file_is_a_clear_error(run_copy: Run):
    run_copy.file("model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunError, match=r"model\.keras: cannot load the model"):
        Recognizer.from_run(run_copy.path)


def test_run_directory_missing_files(run_copy: Run, tmp_path: Path):
    run_copy.file("labels.json").unlink()
    with pytest.raises(RunError, match="missing labels.json"):
        load_run(run_copy.path)
    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"learning_rat": 0.1}, "unknown setting"),
        ({"batch_size": "eight"}, "batch_size must be int"),
        ({"faces": "yes"}, "faces must be bool"),
        ({"backbone": "alexnet"}, "unknown 'alexnet'"),
    ],
)
def test_hand_edited_config_is_refused_with_the_key_named(run_copy: Run, edit, message):
    config = json.loads(run_copy.file("config.json").read_text())
    config.update(edit)
    run_copy.file("config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        Recognizer.from_run(run_copy.path)


def test_models_load_in_safe_mode(run_copy: Run, monkeypatch):
    import keras

    seen = {}
    real = keras.models.load_model

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.models, "load_model", spy)
    run_copy.load_model()
    assert seen.get("safe_mode") is True


def test_nothing_in_a_run_is_unpickled():
    source = "\n".join(p.read_text() for p in PACKAGE.glob("*.py"))
    assert "allow_pickle=True" not in source
    assert "import pickle" not in source and "joblib" not in source


def _grid_of_faces(n_rows: int, n_cols: int) -> np.ndarray:
    face = Image.fromarray(skdata.astronaut()).crop((150, 50, 300, 200)).resize((110, 110))
    canvas = Image.new("RGB", (n_cols * 120, n_rows * 120), (128, 128, 128))
    for r in range(n_rows):
        for c in range(n_cols):
            canvas.paste(face, (c * 120 + 5, r * 120 + 5))
    return np.asarray(canvas)


def test_a_photo_with_thirty_faces_returns_each(dlib_run: Run):
    results = Recognizer.from_run(dlib_run.path).identify(_grid_of_faces(5, 6))
    assert len(results) >= 27
    assert all(r["label"] for r in results)
    assert len({tuple(r["box"]) for r in results}) == len(results)


def test_tiny_face_and_face_cut_by_the_border_do_not_crash(dlib_run: Run):
    recognizer = Recognizer.from_run(dlib_run.path)
    tiny = Image.new("RGB", (640, 480), (120, 120, 120))
    tiny.paste(Image.fromarray(skdata.astronaut()).resize((48, 48)), (300, 200))
    assert isinstance(recognizer.identify(tiny), list)
    cut = skdata.astronaut()[:, 215:]  # the face's left half is outside the photo
    for face in recognizer.identify(cut):
        x, y, w, h = face["box"]
        assert x >= 0 and y >= 0 and x + w <= cut.shape[1] and y + h <= cut.shape[0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"hello, not a photo", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 30, "not an image"),  # a JPEG header and nothing else
    ],
)
def test_unreadable_uploads_raise_image_error_naming_the_problem(dlib_run: Run, content, problem):
    from celebmodel.errors import ImageError

    with pytest.raises(ImageError, match=f"<bytes>: {problem}"):
        Recognizer.from_run(dlib_run.path).identify(content)
