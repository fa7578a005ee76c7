"""The face stage on real faces that scikit-image ships: detection, alignment, embedding,
subject choice, caching and the unknown threshold."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import fill_disk_at
from PIL import Image, ImageEnhance
from skimage import data as skdata

from celebmodel import storage
from celebmodel.faces import cache as face_cache
from celebmodel.faces import detection as faces
from celebmodel.faces.detection import (
    Face,
    FaceStage,
    detect,
    face_chip,
    subject_index,
    with_landmarks,
)
from celebmodel.faces.network import FaceEmbedder


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def cameraman() -> np.ndarray:
    return np.stack([skdata.camera()] * 3, axis=-1)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def test_astronaut_detected_once_with_landmarks_inside_the_box(astronaut):
    found = detect(astronaut, "hog")
    assert len(found) == 1
    x, y, w, h = found[0].box
    for px, py in found[0].landmarks:
        assert x <= px <= x + w and y <= py <= y + h
    assert len(found[0].landmarks) == 5
    assert 0.5 < found[0].confidence <= 1.0


def test_detection_in_new_threads_reuses_the_warmed_detectors(astronaut, monkeypatch):
    """Streamlit runs every rerun in a new thread: detecting there must not build a HOG
    detector (a quarter of a second each), neither for a small photo nor for a large one's
    bands, even when photos are detected at the same time."""
    import dlib

    faces.warm_up()
    real, built = dlib.get_frontal_face_detector, []
    monkeypatch.setattr(dlib, "get_frontal_face_detector", lambda: built.append(1) or real())
    large = np.asarray(Image.fromarray(astronaut).resize((1600, 1600)))  # detected in bands
    found: list[int] = []
    threads = [
        threading.Thread(target=lambda photo=photo: found.append(len(detect(photo, "hog"))))
        for photo in (astronaut, large, astronaut, large)
    ]
    for thread in threads[:2]:  # one after the other
        thread.start()
        thread.join()
    for thread in threads[2:]:  # together
        thread.start()
    for thread in threads[2:]:
        thread.join()
    assert found == [1, 1, 1, 1]
    assert built == []


def test_mtcnn_finds_the_face_hog_misses_and_fallback_uses_it(cameraman):
    assert detect(cameraman, "hog", fallback=False) == []
    found = detect(cameraman, "hog", fallback=True)
    assert [f.detector for f in found] == ["mtcnn"]
    assert found[0].confidence >= faces.MTCNN_MIN_CONFIDENCE


def test_blank_image_has_no_face_and_is_skipped():
    blank = np.full((300, 300, 3), 127, np.uint8)
    assert detect(blank) == []
    crop, info = FaceStage().extract(blank)
    assert crop is None and info["route"] == "none"
    assert "no face" in faces.ROUTES["none"]


def test_small_photo_without_face_is_used_whole_as_a_tight_crop():
    crop, info = FaceStage(size=64).extract(np.full((100, 100, 3), 90, np.uint8))
    assert info["route"] == "tight" and crop.shape == (64, 64, 3)


def test_two_faces_side_by_side_give_two_boxes(astronaut):
    pair = np.concatenate([astronaut[:300, 100:400], astronaut[:300, 100:400][:, ::-1]], axis=1)
    found = detect(pair)
    assert len(found) == 2
    lefts = sorted(f.box[0] for f in found)
    assert lefts[0] < 300 <= lefts[1]


def test_mirrored_and_rotated_copies_embed_close_and_another_face_far(astronaut, cameraman):
    rotated = np.asarray(Image.fromarray(astronaut).rotate(15, resample=Image.Resampling.BILINEAR))
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    chips = [face_chip(img, detect(img)[0]) for img in (astronaut, mirrored, rotated, cameraman)]
    original, mirror, rotation, other = FaceEmbedder().embed(chips)
    assert _distance(original, mirror) < 0.3
    assert _distance(original, rotation) < 0.3
    assert _distance(original, other) > 0.5
    assert np.allclose(np.linalg.norm([original, other], axis=1), 1.0, atol=1e-5)


def test_eye_alignment_levels_the_eyes(astronaut):
    rotated = np.asarray(Image.fromarray(astronaut).rotate(20, resample=Image.Resampling.BILINEAR))
    face = detect(rotated)[0]
    crop = FaceStage(alignment="eyes", size=96).align(rotated, face)
    assert crop.shape == (96, 96, 3)
    bigger = np.asarray(Image.fromarray(crop).resize((288, 288)))
    realigned = detect(bigger, "mtcnn", False)
    assert realigned, "the aligned crop still holds a face"
    assert realigned[0].landmarks is None  # MTCNN's keypoints suffice until an alignment asks
    left, right = with_landmarks(bigger, realigned[0]).eyes
    assert abs(left[1] - right[1]) < 0.05 * 288


def _face(x: int, y: int, size: int, confidence: float) -> Face:
    return Face((x, y, size, size), confidence, ((0.0, 0.0),) * 5, "test")


def test_subject_is_the_central_face_not_the_most_confident_bystander():
    bystander = _face(5, 5, 40, 0.999)
    subject = _face(55, 55, 40, 0.90)
    assert subject_index([bystander, subject], (150, 150, 3)) == 1
    assert subject_index([], (150, 150, 3)) is None


def test_crops_and_embeddings_are_cached(tmp_path, astronaut, monkeypatch):
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(astronaut).save(root / "a.jpg")
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(root / "blank.jpg")
    calls = []
    real_detect = faces.detect
    monkeypatch.setattr(faces, "detect", lambda *a, **k: calls.append(1) or real_detect(*a, **k))
    stage = FaceStage(alignment="chip", size=150)
    first = face_cache.prepare(root, ["a.jpg", "blank.jpg"], stage, tmp_path / "cache")
    assert len(calls) == 2
    assert [r["route"] for r in first] == ["face", "none"]
    second = face_cache.prepare(root, ["a.jpg", "blank.jpg"], stage, tmp_path / "cache")
    assert len(calls) == 2, "a cached photo must not be detected again"
    assert [r["crop"] for r in second] == [r["crop"] for r in first]
    other = face_cache.prepare(
        root, ["a.jpg"], FaceStage(alignment="eyes", size=64), tmp_path / "cache"
    )
    assert len(calls) == 3, "other settings are another cache entry"
    assert Image.open(other[0]["crop"]).size == (64, 64)

    embedder = FaceEmbedder()
    vector = face_cache.embed_files([first[0]["crop"]], embedder)
    monkeypatch.setattr(FaceEmbedder, "embed", lambda *a: pytest.fail("embedded twice"))
    assert np.array_equal(face_cache.embed_files([first[0]["crop"]], embedder), vector)


def test_the_face_stage_of_a_folder_runs_on_every_core_with_the_same_results(
    tmp_path, astronaut, monkeypatch
):
    """Photos are prepared by one thread per core, in any order, into the same records as one
    thread gives; identical photos prepared at once leave one crop and no temporary file."""
    root = tmp_path / "photos"
    root.mkdir()
    names = []
    for i, angle in enumerate((0, 4, -4, 0)):  # the first and the last are identical
        photo = Image.fromarray(astronaut).resize((320, 320)).rotate(angle)
        photo.save(root / f"{i}.jpg", quality=95)
        names.append(f"{i}.jpg")
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(root / "blank.jpg")
    names.append("blank.jpg")
    threads = set()
    real_detect = faces.detect
    monkeypatch.setattr(
        faces, "detect", lambda *a, **k: threads.add(threading.get_ident()) or real_detect(*a, **k)
    )
    stage = FaceStage(alignment="chip", size=150)
    one = face_cache.prepare(root, names, stage, tmp_path / "one", workers=1)
    several = face_cache.prepare(root, names, stage, tmp_path / "several", workers=3)
    assert len(threads) >= 2  # the second call detected on worker threads
    strip = lambda r: {k: v for k, v in r.items() if k != "crop"}  # noqa: E731
    assert [strip(r) for r in several] == [strip(r) for r in one]
    routes = [r["route"] for r in several]
    assert set(routes[:-1]) <= {"face", "several"} and routes[-1] == "none", routes
    assert several[0]["crop"] == several[3]["crop"]
    for a, b in zip(one, several, strict=True):
        if a["crop"]:
            assert np.array_equal(
                np.asarray(Image.open(a["crop"])), np.asarray(Image.open(b["crop"]))
            )
    left = [p.name for p in (tmp_path / "several").rglob("*") if p.name.startswith(".")]
    assert not left, left


def _augmented_astronauts(astronaut: np.ndarray, n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(n):
        image = Image.fromarray(astronaut).rotate(rng.uniform(-12, 12))
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
        x, y = rng.integers(0, 60, 2)
        image = image.crop((x, y, x + 420, y + 420))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        photos.append(image)
    return photos


@pytest.fixture(scope="module")
def astronaut_run(tmp_path_factory, astronaut):
    """A dlib128 run whose only real face is the astronaut (the other class: small tight crops)."""
    import os

    from celebmodel.config import TrainConfig
    from celebmodel.learning.training import train_run

    base = tmp_path_factory.mktemp("astro")
    os.environ["CELEBMODEL_DATA"] = str(base / "appdata")
    dataset = base / "dataset"
    (dataset / "Astronaut").mkdir(parents=True)
    (dataset / "Cat").mkdir()
    for i, photo in enumerate(_augmented_astronauts(astronaut, 12, seed=1)):
        photo.save(dataset / "Astronaut" / f"{i}.jpg")
    cat = Image.fromarray(skdata.chelsea())
    for i in range(12):
        crop = cat.crop((100 + 5 * i, 20, 300 + 5 * i, 220)).resize((112, 112))
        crop.save(dataset / "Cat" / f"{i}.jpg")
    config = TrainConfig(data_dir=str(dataset), backbone="dlib128", max_epochs=50)
    return train_run(config, base / "run")


@pytest.mark.slow
def test_unknown_threshold_rejects_a_stranger_and_accepts_the_enrolled_face(
    astronaut_run, astronaut, cameraman
):
    from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(astronaut_run.path)
    fresh = _augmented_astronauts(astronaut, 1, seed=99)[0]
    known = recognizer.identify(fresh)
    assert len(known) == 1 and known[0]["label"] == "Astronaut" and known[0]["known"]
    stranger = recognizer.identify(cameraman)
    assert len(stranger) == 1
    assert stranger[0]["label"] == "unknown" and not stranger[0]["known"]
    assert stranger[0]["nearest"] in recognizer.labels
    assert stranger[0]["score"] > recognizer.threshold >= known[0]["score"]


@pytest.mark.slow
def test_identify_takes_path_bytes_pil_and_array(astronaut_run, astronaut, tmp_path: Path):
    from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(astronaut_run.path)
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    results = [
        recognizer.identify(source)
        for source in (str(path), path.read_bytes(), Image.fromarray(astronaut), astronaut)
    ]
    boxes = {tuple(r[0]["box"]) for r in results}
    assert len(boxes) == 1
    keys = {"box", "confidence", "label", "probability", "top_k", "known"}
    assert all(set(r[0]) >= keys for r in results)


@pytest.mark.slow
def test_enrolment_adds_a_celebrity_without_retraining(astronaut_run, cameraman, tmp_path):
    import shutil

    from celebmodel.recognition.people import enroll
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import Run

    run = Run(tmp_path / "run")
    shutil.copytree(astronaut_run.path, run.path)
    photos = []
    for i, angle in enumerate((0, 5, -5, 8)):
        image = Image.fromarray(cameraman).rotate(angle)
        image.save(tmp_path / f"cam{i}.png")
        photos.append(tmp_path / f"cam{i}.png")
    report = enroll(run, "Camera Man", photos)
    assert report["n_photos"] == 4 and report["name"] == "Camera_Man"
    assert run.labels()[-1] == "Camera_Man"
    assert run.read_json("enrolled.json")[0]["name"] == "Camera_Man"
    result = Recognizer.from_run(run.path).identify(cameraman)
    assert result[0]["nearest"] == "Camera_Man" and result[0]["known"]


@pytest.mark.slow
def test_enrolment_failing_while_saving_leaves_the_run_as_it_was(
    astronaut_run, cameraman, tmp_path, monkeypatch
):
    """Model, labels and gallery change together or not at all."""
    import shutil

    from celebmodel.recognition import people
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import Run

    run = Run(tmp_path / "run")
    shutil.copytree(astronaut_run.path, run.path)
    before = {f.name: f.read_bytes() for f in run.path.iterdir() if f.is_file()}
    Image.fromarray(cameraman).save(tmp_path / "cam.png")
    fill_disk_at(monkeypatch, storage)
    with pytest.raises(OSError, match="No space left"):
        people.enroll(run, "Camera Man", [tmp_path / "cam.png"])
    monkeypatch.undo()
    after = {f.name: f.read_bytes() for f in run.path.iterdir() if f.is_file()}
    assert after == before  # labels and gallery, renamed before the model failed, were put back
    Recognizer.from_run(run.path).identify(cameraman)  # still loads: labels match the model
