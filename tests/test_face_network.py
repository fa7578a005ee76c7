"""dlib's face ResNet rebuilt in Keras: the file reader, parity with dlib, the weights cache,
fine-tuning, runs made before the network moved into Keras, and large photos.

Faces come from scikit-image's own photos; nothing here reads ``../shared``.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata

from celebmodel.errors import CelebmodelError
from celebmodel.faces import dlib_resnet as face_network
from celebmodel.faces.detection import detect, face_chip
from celebmodel.faces.dlib_format import DlibFormatError, read_network
from celebmodel.faces.dlib_resnet import build_network, load_network, set_dlib_weights
from celebmodel.faces.network import FaceEmbedder, set_trainable


@pytest.fixture(scope="module")
def source() -> Path:
    return face_network.source_path()


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """Six chips: the astronaut as is, mirrored, turned, darker and noisier, and the
    cameraman (found by MTCNN), all aligned by dlib as in the product."""
    astronaut = skdata.astronaut()
    turned = np.asarray(Image.fromarray(astronaut).rotate(12, resample=Image.Resampling.BILINEAR))
    darker = np.asarray(ImageEnhance.Brightness(Image.fromarray(astronaut)).enhance(0.6))
    noise = np.random.default_rng(0).normal(0, 12, astronaut.shape)
    noisy = np.clip(astronaut + noise, 0, 255).astype(np.uint8)
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    cameraman = np.stack([skdata.camera()] * 3, axis=-1)
    photos = (astronaut, mirrored, turned, darker, noisy, cameraman)
    return np.stack([face_chip(photo, detect(photo)[0]) for photo in photos])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# --------------------------------------------------------------------------------------------
# the reader


def test_the_reader_consumes_dlibs_file_and_finds_its_29_convolutions(source):
    network = read_network(source)
    kinds = [layer.spec.kind for layer in network.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds[-1] == "fc"
    assert network.layers[0].arrays["kernel"].shape == (32, 3, 7, 7)
    assert network.layers[-1].arrays["kernel"].shape == (256, 128)
    assert network.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda raw: raw[: len(raw) // 2], "truncated"),
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw + b"\x00\x00", "bytes left after the last layer"),
        (lambda raw: raw.replace(b"relu_", b"relu?", 1), "expected relu_"),
        (lambda raw: raw.replace(b"con_4", b"con_9", 1), "expected con_4"),
        (lambda raw: b"", "truncated"),
        (lambda raw: b"not a dlib network at all", "not an integer"),
    ],
)
def test_a_damaged_or_different_file_is_a_clear_error(source, tmp_path, damage, problem):
    broken = tmp_path / "net.dat"
    broken.write_bytes(damage(source.read_bytes()))
    with pytest.raises(DlibFormatError, match=problem) as caught:
        read_network(broken)
    assert str(caught.value).startswith(f"{broken}: ")
    assert isinstance(caught.value, CelebmodelError)


def test_another_dlib_model_or_a_missing_file_is_refused(source, tmp_path):
    landmarks = source.with_name("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(DlibFormatError, match=str(landmarks)):
        read_network(landmarks)
    with pytest.raises(DlibFormatError, match="cannot read dlib's face network"):
        read_network(tmp_path / "missing.dat")


def test_a_damaged_source_file_stops_training_and_identify_with_its_name(
    source, tmp_path, monkeypatch
):
    """With no converted weights cached, the damaged file is read and named."""
    broken = tmp_path / face_network.SOURCE_FILE
    broken.write_bytes(source.read_bytes()[:100_000])
    monkeypatch.setattr(face_network, "source_path", lambda: broken)
    face_network.source_sha256.cache_clear()
    try:
        with pytest.raises(DlibFormatError, match=f"{broken}: .*truncated"):
            load_network()
    finally:
        face_network.source_sha256.cache_clear()


# --------------------------------------------------------------------------------------------
# the Keras network


def test_descriptors_match_dlib_on_every_chip(chips, source):
    import dlib

    reference = dlib.face_recognition_model_v1(str(source))
    expected = np.asarray(reference.compute_face_descriptor(list(chips)))
    assert _cosine(FaceEmbedder().embed(chips), expected).min() >= 0.99999
    raw = load_network().predict(chips.astype(np.float32), verbose=0)
    assert _cosine(raw, expected).min() >= 0.99999
    assert np.abs(raw - expected).max() < 1e-4  # not only the direction: the same numbers
    flipped = FaceEmbedder(flip=True).embed(chips[:1])
    mirror = np.asarray(reference.compute_face_descriptor([chips[0][:, ::-1].copy()]))
    assert _cosine(flipped, expected[:1] + mirror).min() >= 0.99999


def test_conversion_is_deterministic_and_cached_by_the_sources_sha256(source, monkeypatch):
    first, second = build_network(), build_network()
    network = read_network(source)
    set_dlib_weights(first, network)
    set_dlib_weights(second, read_network(source))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        assert np.array_equal(a, b)
    cached = load_network()  # the autouse fixture gives this test its own data folder
    path = face_network.weights_path()
    assert path.is_file() and face_network.source_sha256() in path.name
    assert path.name == f"dlib128-{face_network.file_sha256(source)}.weights.h5"

    def must_not_read(*args):
        raise AssertionError("the cached weights must be used")

    monkeypatch.setattr(face_network, "read_network", must_not_read)
    again = load_network()
    for a, b, c in zip(first.get_weights(), cached.get_weights(), again.get_weights(), strict=True):
        assert np.array_equal(a, b) and np.array_equal(b, c)
    assert again is not cached  # independent copies: fine-tuning one never changes another


def test_affine_layers_never_train_and_never_use_batch_statistics(chips):
    network = load_network()
    set_trainable(network, None)
    affine = [layer for layer in network.layers if isinstance(layer, face_network.Affine)]
    assert len(affine) == 30  # 29 after convolutions, 1 input scaling
    assert all(not layer.trainable_weights for layer in affine)
    batch = chips.astype(np.float32)
    training, inference = network(batch, training=True), network(batch, training=False)
    assert np.allclose(keras.ops.convert_to_numpy(training), keras.ops.convert_to_numpy(inference))
    set_trainable(network, "s5u1_conv1")
    trainable = {w.path.split("/")[0] for w in network.trainable_weights}
    assert trainable == {"s5u1_conv1", "s5u1_conv2", "projection"}


# --------------------------------------------------------------------------------------------
# training and runs


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """A dlib128 run that keeps its phase 2 (the rule forced, so the test does not depend on
    whether tiny generated photos lower the validation loss)."""
    import os

    from conftest import make_dataset

    from celebmodel.config import TrainConfig
    from celebmodel.learning.estimator import CelebrityClassifier
    from celebmodel.learning.training import train_run

    base = tmp_path_factory.mktemp("finetune")
    os.environ["CELEBMODEL_DATA"] = str(base / "appdata")
    dataset = make_dataset(base / "dataset", per_class=8, size=96)
    original = CelebrityClassifier._keep_fine_tune
    CelebrityClassifier._keep_fine_tune = lambda self: True
    try:
        config = TrainConfig(
            data_dir=str(dataset), backbone="dlib128", max_epochs=2, fine_tune=True
        )
        return train_run(config, base / "run")
    finally:
        CelebrityClassifier._keep_fine_tune = original


@pytest.mark.slow
def test_phase_two_fine_tunes_the_last_stage_only_and_the_run_says_so(fine_tuned):
    history = fine_tuned.history()
    assert list(dict.fromkeys(history["phase"])) == ["head", "fine-tune"]
    phases = fine_tuned.status()["phases"]
    assert phases["kept"] == "fine-tune" and {"head", "fine-tune"} <= set(phases)
    assert "phase 2 (fine-tune) kept" in fine_tuned.file("log.txt").read_text()
    model = fine_tuned.load_model()
    network = model.get_layer(face_network.NETWORK_NAME)
    pretrained = load_network()
    changed = {
        layer.name
        for layer in network.layers
        if layer.weights
        and not all(
            np.array_equal(a, b)
            for a, b in zip(
                layer.get_weights(), pretrained.get_layer(layer.name).get_weights(), strict=True
            )
        )
    }
    assert changed and changed <= {"s5u1_conv1", "s5u1_conv2", "projection"}


@pytest.mark.slow
def test_a_saved_fine_tuned_run_reloads_with_identical_embeddings(fine_tuned):
    """The gallery was computed by the model in memory; the reloaded model gives the same."""
    from celebmodel.learning.inference import predict_inputs
    from celebmodel.learning.pipeline import prepare_inputs

    config = fine_tuned.config()
    split = fine_tuned.split()
    inputs = prepare_inputs(config, split[split["subset"] == "train"], embed=False)
    embeddings, _ = predict_inputs(fine_tuned.load_model(), config, inputs)
    gallery, _ = fine_tuned.gallery()
    assert embeddings.shape == gallery.shape == (len(inputs.usable), 128)
    assert np.allclose(embeddings, gallery, atol=1e-5)


@pytest.mark.slow
def test_the_classic_recipe_trains_the_whole_face_network(tmp_path, monkeypatch):
    from conftest import make_dataset

    from celebmodel.config import TrainConfig
    from celebmodel.learning.training import train_run

    dataset = make_dataset(tmp_path / "dataset", per_class=5, size=96)
    config = TrainConfig(data_dir=str(dataset), backbone="dlib128", recipe="classic", max_epochs=1)
    run = train_run(config, tmp_path / "run")
    assert set(run.history()["phase"]) == {"full"}
    network = run.load_model().get_layer(face_network.NETWORK_NAME)
    pretrained = load_network()
    first = network.get_layer("stem_conv1").get_weights()[0]
    assert not np.array_equal(first, pretrained.get_layer("stem_conv1").get_weights()[0])
    scale = network.get_layer("stem_affine1").get_weights()
    assert all(
        np.array_equal(a, b)
        for a, b in zip(scale, pretrained.get_layer("stem_affine1").get_weights(), strict=True)
    )


@pytest.fixture
def old_run(tmp_path, chips):
    """A dlib128 run as the code before this change wrote it: its model is the head alone
    (input: a 128-d embedding named ``embedding``), its gallery dlib's flip-averaged
    descriptors."""
    from celebmodel.runs.run import Run

    path = tmp_path / "20250101-000000-dlib128"
    path.mkdir()
    inputs = keras.Input((128,), name="embedding")
    x = keras.layers.Dropout(0.3, name="dropout")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="celebmodel_dlib128")
    gallery = FaceEmbedder(flip=True).embed(chips)
    labels = np.array([0, 0, 0, 0, 0, 1])  # the astronaut five times, the cameraman once
    centre = np.stack([gallery[:5].mean(0), gallery[5]])
    kernel = (centre / np.linalg.norm(centre, axis=1, keepdims=True)).T * 20
    model.get_layer("classifier").set_weights([kernel, np.zeros(2)])
    model.save(path / "model.keras")
    np.savez(path / "gallery.npz", embeddings=gallery, labels=labels)
    config = {
        "data_dir": str(tmp_path / "photos"),
        "backbone": "dlib128",
        "weights": "pretrained",
        "recipe": "improved",
        "image_size": 150,
        "augment": True,
        "learning_rate": 0.01,
        "fine_tune_learning_rate": 1e-05,
        "dropout": 0.3,
        "run": {"n_celebrities": 2},
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "labels.json").write_text(json.dumps(["Astronaut", "Camera_Man"]))
    (path / "calibration.json").write_text(json.dumps({"threshold": 0.6}))
    (path / "status.json").write_text(json.dumps({"state": "finished"}))
    photos = tmp_path / "photos"
    for label, photo in (("Astronaut", skdata.astronaut()), ("Camera_Man", skdata.camera())):
        (photos / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(photo).save(photos / label / f"{i}.png")
    split = pd.DataFrame(
        {
            "path": [f"{label}/{i}.png" for label in ("Astronaut", "Camera_Man") for i in range(3)],
            "label": ["Astronaut"] * 3 + ["Camera_Man"] * 3,
            "subset": ["train", "val", "test"] * 2,
        }
    )
    split.to_csv(path / "split.csv", index=False)
    return Run(path)


@pytest.mark.slow
def test_a_run_from_before_the_keras_network_loads_identifies_evaluates_and_enrols(
    old_run, tmp_path
):
    from celebmodel.learning.evaluation import evaluate_run
    from celebmodel.recognition.people import enroll
    from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(old_run.path)
    assert recognizer.takes_embeddings
    faces = recognizer.identify(skdata.astronaut())
    assert len(faces) == 1 and faces[0]["label"] == "Astronaut" and faces[0]["known"]
    assert faces[0]["score"] < 0.2  # its flip-averaged embedding sits on the gallery's centroid
    metrics = evaluate_run(old_run, "test")["test"]
    assert metrics["n"] == 2 and metrics["accuracy"] == 1.0
    twin = Image.fromarray(np.ascontiguousarray(skdata.astronaut()[:, ::-1]))
    for i in range(2):
        twin.rotate(4 * i).save(tmp_path / f"{i}.png")
    before, _ = old_run.gallery()
    report = enroll(old_run, "Twin", [tmp_path / "0.png", tmp_path / "1.png"])
    assert report["n_photos"] == 2 and old_run.labels() == ["Astronaut", "Camera_Man", "Twin"]
    after, labels = old_run.gallery()
    assert len(after) == len(before) + 2 and list(labels[-2:]) == [2, 2]
    chips = [face_chip(np.asarray(p), detect(np.asarray(p))[0]) for p in (twin, twin.rotate(4))]
    assert np.allclose(after[-2:], FaceEmbedder(flip=True).embed(chips), atol=1e-5)
    assert Recognizer.from_run(old_run.path).takes_embeddings  # still the head-only kind


# --------------------------------------------------------------------------------------------
# large photos


def test_faces_in_a_12_megapixel_photo_are_found_as_one_full_resolution_pass_finds_them():
    """Three faces of about 80, 190 and 340 px on a 4000x3000 photo, the middle one across
    the row where the detection bands meet: the same boxes as one HOG pass over the photo."""
    import dlib

    astronaut = Image.fromarray(skdata.astronaut())
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(60, 140, (3000, 4000, 3), dtype=np.uint8))
    placed = [(100, 100, 480), (300, 1225, 1100), (1800, 500, 2000)]  # x, y, photo side
    for x, y, side in placed:
        canvas.paste(astronaut.resize((side, side)), (x, y))
    pixels = np.asarray(canvas)
    full = dlib.get_frontal_face_detector().run(pixels, 0, 0.2)[0]
    expected = sorted((r.left(), r.top(), r.width(), r.height()) for r in full)
    found = detect(pixels, fallback=False)
    assert len(found) == len(expected) == 3
    for face, box in zip(sorted(found, key=lambda f: f.box), expected, strict=True):
        overlap = _iou(face.box, box)
        assert overlap > 0.6, (face.box, box)
        x, y, w, h = face.box
        assert all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_a_photo_larger_than_the_detection_size_is_searched_on_a_copy(monkeypatch):
    from celebmodel.faces import detection as faces

    seen = []
    real = faces.DETECTORS["hog"]
    monkeypatch.setitem(
        faces.DETECTORS, "hog", lambda image: seen.append(image.shape) or real(image)
    )
    monkeypatch.setattr(faces, "DETECT_MAX_PIXELS", 1_000_000)
    astronaut = Image.fromarray(skdata.astronaut()).resize((2000, 2000))
    found = detect(np.asarray(astronaut), fallback=False)
    assert seen == [(1000, 1000, 3)]
    assert len(found) == 1 and found[0].box[2] > 300  # mapped back: about 180 px on the copy
    chip = face_chip(np.asarray(astronaut), found[0])
    assert chip.shape == (150, 150, 3)
