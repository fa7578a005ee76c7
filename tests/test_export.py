"""``celebmodel export``: the run's network in Keras, SavedModel and TFLite gives the run's own
numbers on the same chips, the README's example reproduces ``predict`` on a photo, and a
failed export leaves nothing behind.

Tolerances (largest absolute difference from ``Recognizer._predict`` on the same inputs):
Keras and SavedModel 1e-5 (the same graph; eager Keras differs by about 7e-7 on LFW faces),
TFLite float32 1e-4 (another runtime's kernels; about 8e-7 measured on LFW faces).
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import astronauts, cameramen

from celebmodel.errors import ExportError
from celebmodel.interfaces import export as exporting
from celebmodel.interfaces.cli import main
from celebmodel.interfaces.export import FORMATS, check_format, export, export_zip, format_choices
from celebmodel.recognition.recognize import Recognizer

TOLERANCE = {"keras": 1e-5, "savedmodel": 1e-5, "tflite": 1e-4}
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


@pytest.fixture(scope="module")
def recognizer(astro) -> Recognizer:
    return Recognizer.from_run(astro)


@pytest.fixture(scope="module")
def exports(recognizer, tmp_path_factory) -> dict[str, Path]:
    """The astronaut run exported once in each format that needs no extra package."""
    base = tmp_path_factory.mktemp("exports")
    return {fmt: export(recognizer, fmt, base / fmt) for fmt in TOLERANCE}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A known face (a new astronaut photo), a stranger, and a photo with no face."""
    base = tmp_path_factory.mktemp("export-photos")
    paths = {"astronaut": base / "astronaut.jpg", "stranger": base / "cameraman.png"}
    astronauts(1, seed=99)[0].save(paths["astronaut"])
    cameramen(1, seed=5)[0].save(paths["stranger"])
    paths["blank"] = base / "blank.png"
    from PIL import Image

    Image.new("RGB", (300, 200), (128, 128, 128)).save(paths["blank"])
    return paths


def chips(recognizer: Recognizer, photos: dict[str, Path]) -> np.ndarray:
    """Network inputs as the Recognizer makes them: real aligned faces plus random chips."""
    from celebmodel.data.images import load_image

    stage = recognizer.stage
    crops = []
    for name in ("astronaut", "stranger"):
        pixels = load_image(photos[name])
        crops += [stage.align(pixels, face) for face in stage.faces(pixels)]
    rng = np.random.default_rng(0)
    crops += list(rng.integers(0, 256, (3, stage.size, stage.size, 3), dtype=np.uint8))
    return recognizer._inputs(crops)


def run_exported(fmt: str, folder: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exported file's outputs, loaded the way its README says."""
    if fmt == "keras":
        import keras

        model = keras.models.load_model(folder / "model.keras", compile=False)
        out = model(batch, training=False)
    elif fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(folder / "savedmodel"))  # kept: serve() needs it alive
        out = loaded.serve(tf.constant(batch))
    else:
        import tensorflow as tf

        runner = tf.lite.Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner()
        (name,) = runner.get_input_details()
        out = runner(**{name: batch})
    return np.asarray(out["embedding"]), np.asarray(out["probabilities"])


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_exported_model_gives_the_runs_numbers_on_the_same_chips(recognizer, exports, photos, fmt):
    batch = chips(recognizer, photos)
    assert len(batch) >= 4  # at least one real face each, plus the random chips
    embeddings, probabilities = recognizer._predict(batch)
    got_embeddings, got_probabilities = run_exported(fmt, exports[fmt], batch)
    assert got_probabilities.shape == (len(batch), len(recognizer.labels))
    np.testing.assert_allclose(got_probabilities, probabilities, rtol=0, atol=TOLERANCE[fmt])
    np.testing.assert_allclose(got_embeddings, embeddings, rtol=0, atol=TOLERANCE[fmt])


def test_export_folder_holds_labels_threshold_centroids_and_the_input_spec(recognizer, exports):
    folder = exports["tflite"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "calibration.json",
        "centroids.npy",
        "export.json",
        "gallery.npy",
        "gallery_labels.npy",
        "labels.json",
        "model.tflite",
    ]
    assert json.loads((folder / "labels.json").read_text()) == recognizer.labels
    assert json.loads((folder / "calibration.json").read_text())["threshold"] == pytest.approx(
        recognizer.threshold
    )
    np.testing.assert_allclose(np.load(folder / "centroids.npy"), recognizer.centroids)
    info = json.loads((folder / "export.json").read_text())
    assert info["input"]["shape"] == [None, 150, 150, 3] and info["input"]["kind"] == "chip"
    assert info["face_stage"] == {
        "enabled": True,
        "detector": "hog",
        "alignment": "chip",
        "size": 150,
    }
    readme = (folder / "README.md").read_text()
    for phrase in ("150x150", "padding=0.25", "0..255", "(pixel - mean) / 256", "threshold"):
        assert phrase in readme, phrase
    assert not list(folder.parent.glob(".*"))  # no partial folder left beside the exports


def readme_example(folder: Path) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    return code


@pytest.mark.parametrize("fmt", list(TOLERANCE))
def test_the_readme_example_reproduces_predict(
    recognizer, exports, photos, fmt, monkeypatch, capsys
):
    """The README's code, run as written, names the same faces as ``Recognizer.identify``
    (so the README cannot drift from the export)."""
    code = compile(readme_example(exports[fmt]), f"{fmt}/README.md", "exec")
    for name, photo in photos.items():
        monkeypatch.setattr(sys, "argv", ["predict.py", str(exports[fmt]), str(photo)])
        capsys.readouterr()
        exec(code, {"__name__": "__main__"})
        answer = json.loads(capsys.readouterr().out)
        expected = sorted(recognizer.identify(photo), key=lambda face: face["box"][:2])
        assert answer["image"] == str(photo)
        assert len(answer["faces"]) == len(expected), name
        assert answer["error"] == (None if expected else "no face found")
        for got, want in zip(answer["faces"], expected, strict=True):
            assert set(got) == set(want) - {"evidence"}
            for key in ("box", "confidence", "label", "nearest", "name", "known"):
                assert got[key] == want[key], (name, key)
            for key in ("probability", "score", "similarity"):
                assert got[key] == pytest.approx(want[key], abs=TOLERANCE[fmt] * 10), (name, key)
            assert [t["label"] for t in got["top_k"]] == [t["label"] for t in want["top_k"]]
    assert any(face["known"] for face in recognizer.identify(photos["astronaut"]))


def test_the_readme_example_of_a_cnn_run_without_the_face_stage(cnn_run, tmp_path, monkeypatch):
    """The other branches of the example: preprocessing outside the model, whole photos."""
    recognizer = Recognizer.from_run(cnn_run)
    folder = export(recognizer, "keras", tmp_path / "cnn")
    code = readme_example(folder)
    assert "keras.applications.vgg16.preprocess_input" in code
    assert "'caffe' mode" in (folder / "README.md").read_text()
    photo = sorted(Path(cnn_run.config().data_dir).rglob("*.jpg"))[0]
    monkeypatch.setattr(sys, "argv", ["predict.py", str(folder), str(photo)])
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    exec(compile(code, "cnn/README.md", "exec"), {"__name__": "__main__"})
    (got,) = json.loads(printed.getvalue())["faces"]
    (want,) = recognizer.identify(photo)
    assert got["box"] == want["box"] == [0, 0, 48, 48] and got["confidence"] == 1.0
    assert got["nearest"] == want["nearest"] and got["known"] == want["known"]
    assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)


def test_tfjs_without_tensorflowjs_is_a_clear_error_before_any_work(astro, tmp_path, capsys):
    if importlib.util.find_spec("tensorflowjs") is not None:
        pytest.skip("tensorflowjs is installed here")
    assert format_choices()["tfjs"] and "pip install tensorflowjs" in format_choices()["tfjs"]
    with pytest.raises(ExportError, match=r"pip install tensorflowjs"):
        export(astro.path, "tfjs", tmp_path / "web")
    code = main(["export", str(astro.path), str(tmp_path / "web"), "--format", "tfjs"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: --format tfjs: needs the tensorflowjs package")
    assert "Traceback" not in err and not (tmp_path / "web").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_or_interrupted_export_leaves_nothing(recognizer, tmp_path, monkeypatch):
    def broken(saved: Path) -> bytes:
        raise RuntimeError("converter crashed\nwith a long story")

    monkeypatch.setattr(exporting, "_tflite", broken)
    with pytest.raises(ExportError, match=r"tflite conversion failed \(RuntimeError: converter"):
        export(recognizer, "tflite", tmp_path / "out")

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(exporting, "atomic_write_text", interrupted)  # the README, written last
    with pytest.raises(KeyboardInterrupt):
        export(recognizer, "keras", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a hidden partial one


def test_existing_folders_and_unknown_formats_are_refused(astro, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="already exists"):
        export(astro.path, "keras", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    with pytest.raises(ExportError, match="--format onnx: unknown"):
        check_format("onnx")
    parser_choices = ["keras", "savedmodel", "tflite", "tfjs"]  # cli.py lists them by hand
    assert list(FORMATS) == parser_choices


def test_cli_export_and_the_zip_the_page_offers(astro, tmp_path, capsys):
    (tmp_path / "empty").mkdir()  # an empty folder is taken over
    assert main(["export", str(astro.path), str(tmp_path / "empty"), "--format", "keras"]) == 0
    assert f"wrote {tmp_path / 'empty'}" in capsys.readouterr().out
    assert (tmp_path / "empty" / "model.keras").is_file()
    archive = zipfile.ZipFile(io.BytesIO(export_zip(astro, "keras")))
    top = f"{astro.name}-keras"
    assert sorted(archive.namelist()) == sorted(
        f"{top}/{name}"
        for name in (
            "README.md",
            "calibration.json",
            "centroids.npy",
            "export.json",
            "gallery.npy",
            "gallery_labels.npy",
            "labels.json",
            "model.keras",
        )
    )
    assert json.loads(archive.read(f"{top}/labels.json")) == astro.labels()
