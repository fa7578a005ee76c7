"""The Streamlit studio under ``AppTest``, and the modules behind it (jobs, sources, figures).

Runs are the session fixtures of ``conftest.py`` (tiny generated data) copied into a runs folder
per test, so a page never sees another test's runs. Each page is checked for the absence of
exceptions: a user must see messages, never a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    COLOURS,
    add_run,
    app,
    awkward_photos,
    broken_photos,
    make_dataset,
    open_page,
    texts,
)
from PIL import Image
from streamlit.testing.v1 import AppTest

from celebmodel.config import TrainConfig
from celebmodel.data.sources import Limits, extract_dataset
from celebmodel.errors import UploadError
from celebmodel.interfaces import export as exporting
from celebmodel.learning import jobs
from celebmodel.reports.figures import largest_confusion
from celebmodel.reports.run_report import cell_photos
from celebmodel.runs.run import Run, best_run, first_line, readable_log
from celebmodel.storage import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("pages/identify.py", "pages/train.py", "pages/evaluate.py")


# Helpers -------------------------------------------------------------------------------------


def add_failed_run(runs: Path, name: str = "20240101-000000-vgg16") -> Run:
    folder = runs / name
    folder.mkdir()
    atomic_write_json(
        folder / "status.json",
        {"state": "failed", "error": "data: dataset folder does not exist", "pid": 1},
    )
    atomic_write_json(folder / "config.json", {"data_dir": "/nowhere", "backbone": "vgg16"})
    return Run(folder)


def decode(value):
    """A plotly array as a list: plain JSON, or plotly's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array.tolist()
    return value


def figures(at: AppTest) -> list[dict]:
    """The plotly figure JSON of every chart on the page, read from the element's proto."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def open_tab(at: AppTest, title: str) -> AppTest:
    """Open a tab of Evaluate (its tabs run only the open one's content)."""
    at.session_state["evaluate-tab"] = title
    return open_page(at)


def photo_bytes(colour: tuple[int, int, int], fmt: str = "PNG", size: int = 48) -> bytes:
    rng = np.random.default_rng(1)
    pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def wait_for(condition, timeout: float, at: AppTest | None = None) -> None:
    """Poll (re-running the page, as the fragment does every 2 s) until ``condition()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if at is not None:
            open_page(at)
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s")


# Every page, in every state -----------------------------------------------------------------


def test_pages_render_without_a_model(folders):
    at = open_page(app())
    assert "no trained model yet" in texts(at).lower()
    open_page(at, "pages/identify.py")
    assert "No trained model yet" in texts(at)
    assert not at.file_uploader
    open_page(at, "pages/train.py")
    assert at.button(key="start").disabled  # no dataset chosen yet
    assert "No runs yet" in texts(at)
    open_page(at, "pages/evaluate.py")
    assert "No finished run" in texts(at)


def test_an_album_bar_shows_the_count_and_rate_and_ends_full():
    from pages import ui

    drawn = []

    class Progress:  # what st.progress is to the bar
        def progress(self, value: float, text: str) -> None:
            drawn.append((value, text))

    with ui.streamlit_bar(Progress())(desc="photos", total=3, unit="photo") as bar:
        for i in range(3):
            time.sleep(0.12)  # past tqdm's refresh interval, so each photo is drawn
            bar.set_postfix(faces=2 * i + 2, refresh=False)
            bar.update(1)
    assert [value for value, _ in drawn[:3]] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert re.fullmatch(r"1 of 3 photos · 2 faces · [\d.]+ photos/s · about 00:0\d left",
                        drawn[0][1]), drawn[0][1]
    assert drawn[-1][0] == 1.0 and drawn[-1][1].startswith("3 of 3 photos · 6 faces · ")
    assert drawn[-1][1].endswith(" photos/s")  # nothing left


def test_reruns_leave_the_keras_session_alone(folders, monkeypatch):
    """Streamlit clears Keras's session after each run unless the studio's workaround holds
    (the private hook it replaces must still exist, or the workaround silently does nothing)."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    assert callable(script_runner._clean_problem_modules)
    hook = script_runner._clean_problem_modules
    monkeypatch.setattr(script_runner, "_clean_problem_modules", hook)  # restored afterwards
    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *_, **__: cleared.append(1))
    at = open_page(app())
    at.run()
    assert "keras" in sys.modules and cleared == []


def test_pages_render_with_finished_runs(folders, cnn_run, dlib_run):
    runs, _ = folders
    add_run(runs, cnn_run, "20240102-000000-vgg16")
    add_run(runs, dlib_run, "20240103-000000-dlib128")
    best = best_run()
    accuracy = best.metrics("test")["accuracy"]
    at = open_page(app())
    assert at.sidebar.selectbox[0].value == best.name  # none chosen yet: the best, once
    card = next(m for m in at.metric if m.label == "Test accuracy")
    assert card.value == f"{accuracy:.1%}"
    assert "original 53%" in card.delta
    open_page(at, "pages/identify.py")
    preset = at.radio(key=f"preset-{best.name}")
    assert preset.value == "Balanced"  # the calibrated threshold, with what it means here
    known = best.read_json("calibration.json")
    assert len(known["stranger_scores"]) == best.metrics("val")["n"]
    balanced = next(o for o in preset.options if o.startswith("Balanced: "))
    assert "of known faces" in balanced and "of strangers wrongly" in balanced
    open_page(at, "pages/train.py")
    table = at.dataframe[0].value
    names = ("20240102-000000-vgg16", "20240103-000000-dlib128")
    titles = {Run(runs / name).title for name in names}
    assert set(table["name"]) == titles  # unnamed runs are called after what they are
    open_page(at, "pages/evaluate.py")
    assert at.selectbox(key="evaluate_run").value == best.name
    assert at.get("plotly_chart")  # the open tab's chart (only the open tab is drawn)

    other = next(r for r in ("20240102-000000-vgg16", "20240103-000000-dlib128") if r != best.name)
    at.sidebar.selectbox[0].set_value(other)
    open_page(at, "pages/identify.py")  # the sidebar's choice is every page's model
    assert at.caption[0].value.startswith(f"Model **{Run(runs / other).title}** ")
    open_page(at, "pages/evaluate.py")  # and Evaluate follows it, not the run it showed before
    assert at.selectbox(key="evaluate_run").value == other
    at.selectbox(key="evaluate_run").set_value(best.name)  # one looked at on purpose stays
    open_page(at, "pages/evaluate.py")
    assert at.selectbox(key="evaluate_run").value == best.name
    at.sidebar.selectbox[0].set_value(best.name)  # another model chosen on Evaluate itself
    open_page(at)
    at.sidebar.selectbox[0].set_value(other)
    open_page(at)
    assert at.selectbox(key="evaluate_run").value == other  # the box follows, not stale



def test_pages_render_with_failed_runs(folders, cnn_run):
    runs, _ = folders
    failed = add_failed_run(runs)
    dead = runs / "20240104-000000-dlib128"  # "running" but its process is gone
    dead.mkdir()
    atomic_write_json(dead / "status.json", {"state": "running", "pid": 2**22 + 12345})
    at = open_page(app())
    assert "no trained model yet" in texts(at).lower()
    for page in PAGES:
        open_page(at, page)
    open_page(at, "pages/train.py")
    table = at.dataframe[0].value.set_index("name")
    assert table.loc[failed.title, "state"] == "failed"
    assert table.loc[dead.name, "state"] == "failed"
    assert "dataset folder does not exist" in table.loc[failed.title, "error"]
    add_run(runs, cnn_run, "20240102-000000-vgg16")  # a finished run beside the failed ones
    for page in (None, *PAGES):
        open_page(at, page)
    assert at.selectbox(key="evaluate_run").value == "20240102-000000-vgg16"


# Identify ------------------------------------------------------------------------------------


def test_identify_upload_camera_and_unreadable_file(folders, cnn_run):
    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    labels = run.labels()
    at = open_page(app(), "pages/identify.py")
    at.toggle(key="custom-threshold").set_value(True)
    open_page(at)
    at.number_input(key=f"custom-{run.name}").set_value(0.0)  # everyone is close enough
    at.file_uploader(key="photos").set_value(
        [
            ("red.png", photo_bytes(COLOURS[0]), "image/png"),
            ("broken.jpg", b"this is not a photo", "image/jpeg"),
        ]
    )
    open_page(at)
    assert any("Looser than Balanced" in w.value for w in at.warning)
    assert "red.png" in [s.value for s in at.subheader]
    caption = next(c.value for c in at.caption if "face(s) found in" in c.value)
    seconds = float(caption.split(" in ")[1].split(" s")[0])
    assert caption.startswith("1 face(s)") and seconds < 30
    errors = [e.value for e in at.error]
    assert any(e.startswith("broken.jpg:") for e in errors), errors
    top = next(c.value for c in at.caption if c.value.startswith("likely (probability): "))
    shares = [entry.rsplit(" ", 1)
              for entry in top.removeprefix("likely (probability): ").split(" · ")]
    assert [float(share.rstrip("%")) for _, share in shares] == sorted(
        (float(share.rstrip("%")) for _, share in shares), reverse=True)
    assert {name for name, _ in shares} == {label.replace("_", " ") for label in labels}
    total = sum(float(share.rstrip("%")) for _, share in shares)
    assert total == pytest.approx(100, abs=len(labels))  # each rounded to a whole percent
    names = [m.value for m in at.markdown if m.value.startswith("**1. ")]
    assert names and any(label.replace("_", " ") in names[0] for label in labels)
    assert any(c.value.startswith("match confidence ") for c in at.caption)
    evidence = next(c.value for c in at.caption if c.value.startswith("Looks most like these"))
    person = evidence.split(" photos of ")[1].split(" (similarity")[0]
    runner_up = evidence.split("; next: ")[1].rsplit(" ", 1)[0]
    strip = [img.caption for element in at.get("image") for img in element.proto.imgs]
    strip = [caption.rsplit(" ", 1)[0] for caption in strip if caption]  # the gallery faces
    assert strip == [person] * 3 + [runner_up]  # the faces behind the sentence, shown

    at.number_input(key=f"custom-{run.name}").set_value(99.99)  # no stranger is that close
    open_page(at)
    assert [m.value for m in at.markdown if m.value.startswith("**1. ")] == ["**1. Unknown**"]
    closest = next(c.value for c in at.caption if c.value.startswith("closest: "))
    value, needed = (float(x.split("%")[0]) for x in closest.split("match confidence ")[1]
                     .split(" (needs "))
    assert value < needed  # the numbers shown read the way the decision went
    assert not [c for c in at.caption if c.value.startswith("likely")]  # known faces only

    at.file_uploader(key="photos").set_value(None)
    at.radio(key="source").set_value("camera")
    open_page(at)
    at.camera_input(key="camera").upload("shot.jpg", photo_bytes(COLOURS[1], "JPEG"))
    open_page(at)
    assert "webcam photo" in [s.value for s in at.subheader]
    assert any(c.value.startswith("1 face(s) found in") for c in at.caption)


def test_identify_reads_awkward_photos_and_names_each_broken_one(folders, cnn_run, tmp_path):
    """Every awkward encoding is identified; every broken file, uploaded or as a webcam shot,
    gets one error naming it and its problem, and the other photos are still identified.
    Eleven photos make an album: one table row per face."""
    runs, _ = folders
    add_run(runs, cnn_run, "20240102-000000-vgg16")
    awkward, broken = awkward_photos(), broken_photos(tmp_path)
    uploads = [(name, content, "image/png") for name, content in awkward.items()]
    uploads += [(name, content, "image/jpeg") for name, (content, _) in broken.items()]
    at = open_page(app(), "pages/identify.py")
    at.file_uploader(key="photos").set_value(uploads)
    open_page(at)
    table = next(d.value for d in at.dataframe if "thumbnail" in d.value.columns)
    assert list(table["photo"]) == list(awkward) and set(table["face"]) == {1}
    errors = [e.value for e in at.error]
    assert len(errors) == len(broken), errors
    for (name, (_, problem)), error in zip(broken.items(), errors, strict=True):
        assert error.startswith(f"{name}: ") and problem in error, (name, error)

    at.file_uploader(key="photos").set_value(None)
    at.radio(key="source").set_value("camera")
    open_page(at)
    at.camera_input(key="camera").upload("shot.jpg", broken["truncated.jpg"][0])
    open_page(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("webcam photo: cannot decode"), errors


def test_a_photo_without_a_face_and_a_new_person_on_the_people_page(folders, dlib_run):
    runs, data = folders
    run = add_run(runs, dlib_run, "20240103-000000-dlib128")
    at = open_page(app(), "pages/identify.py")
    at.file_uploader(key="photos").set_value(
        ("wall.png", photo_bytes((90, 90, 90), size=300), "image/png")
    )
    open_page(at)  # a large photo without a face: a message, not an exception
    assert any(w.value.startswith("wall.png: no face found") for w in at.warning)
    at = open_page(app(), "pages/people.py")
    at.text_input(key="new-name").set_value("Ada Lovelace")
    photos = [(f"ada{i}.png", photo_bytes((200, 200, 40 * i)), "image/png") for i in range(3)]
    enrol = next(u for u in at.file_uploader if u.label == "Photos of this person")
    enrol.set_value(photos)
    at.form_submit_button[-1].click()
    open_page(at)
    assert any("Added Ada Lovelace from 3 photo(s)" in s.value for s in at.success), texts(at)
    assert "Ada_Lovelace" in run.labels()
    assert not list(data.glob(".enrol-*")), "uploaded photos must be deleted"
    assert "Ada Lovelace" in set(at.dataframe[0].value["name"])  # at once, no reload
    assert "knows 4 people" in texts(at)
    identify = open_page(app(), "pages/identify.py")
    assert any("knows 4 people" in c.value for c in identify.caption)
    identify.text_input(key=f"who-{run.name}").set_value("ada").run()  # a search, not a list
    assert any(c.value == "Known: Ada Lovelace" for c in identify.caption), texts(identify)


# Train ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_page_starts_a_training_and_shows_its_curves(folders, tmp_path):
    runs, _ = folders
    dataset = make_dataset(tmp_path / "dataset", per_class=6, size=32)
    at = open_page(app(), "pages/train.py")
    at.text_input(key="dataset-folder").set_value(str(dataset))
    open_page(at)
    cards = {m.label: m.value for m in at.metric}
    assert cards["Celebrities"] == "3" and cards["Photos"] == "18"
    at.selectbox(key="backbone").set_value("vgg16")
    open_page(at)
    assert "not in Keras's cache" in texts(at)  # offline: no ImageNet weights
    at.radio(key="weights-vgg16").set_value("none")
    at.checkbox(key="faces").set_value(False)
    at.number_input(key="image-size-vgg16").set_value(32)
    at.number_input(key="max-epochs").set_value(2)
    at.number_input(key="per-class").set_value(0)
    at.button(key="start").click()
    open_page(at)
    started = [Run(p) for p in runs.iterdir() if p.is_dir()]
    assert len(started) == 1, texts(at)
    run = started[0]
    assert at.button(key="start").disabled  # one training at a time
    with pytest.raises(jobs.JobError, match="still"):
        jobs.start(TrainConfig(data_dir=str(dataset), backbone="dlib128"))

    wait_for(lambda: run.state not in ("queued", "running"), 240, at)
    open_page(at)
    assert run.state == "finished", run.log_tail() + jobs.output_tail(run)
    assert run.has_model() and run.metrics("test")
    curves = figures(at)[-1]
    epochs = {x for trace in curves["data"] for x in decode(trace["x"])}
    assert epochs == set(range(1, len(run.history()) + 1))
    assert {trace["name"] for trace in curves["data"]} == {"train", "validation"}
    losses = [decode(t["y"]) for t in curves["data"] if t["name"] == "train" and t["xaxis"] == "x"]
    assert losses[0] == pytest.approx(run.history()["loss"].tolist())
    assert any("Training finished" in s.value for s in at.success)
    assert not at.button(key="start").disabled


def test_an_unusable_runs_folder_is_a_message_on_the_train_page(folders, tmp_path, monkeypatch):
    """A runs "folder" that is a file cannot be written to, even by root."""
    _, data = folders
    blocked = tmp_path / "runs-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CELEBMODEL_RUNS", str(blocked))
    dataset = make_dataset(tmp_path / "dataset", per_class=6, size=32)
    at = open_page(app(), "pages/train.py")
    at.text_input(key="dataset-folder").set_value(str(dataset))
    open_page(at)
    at.button(key="start").click()
    open_page(at)
    errors = [e.value for e in at.error]
    assert any(f"{blocked}: cannot be the runs folder" in e for e in errors), errors
    assert blocked.read_text() == "not a folder"


@pytest.mark.slow
def test_stop_cancels_a_running_training(folders, tmp_path):
    runs, _ = folders
    dataset = make_dataset(tmp_path / "dataset", per_class=6, size=32)
    config = TrainConfig(
        data_dir=str(dataset), backbone="vgg16", weights="none", image_size=32, faces=False
    )
    run = jobs.start(config)
    assert jobs.active() == run
    wait_for(lambda: run.state == "running", 120)
    assert jobs.stop(run) == "cancelled"
    assert run.status()["state"] == "cancelled" and not run.has_model()
    assert jobs.active() is None


def test_a_stop_the_trainer_reported_as_a_failure_reads_cancelled(folders):
    runs, _ = folders
    run = Run(runs / "20240105-000000-vgg16")
    run.path.mkdir()
    wrapped = "RuntimeError: pybind11 ... REPLACED BY Cancelled: stopped by signal SIGTERM\nAt: ..."
    atomic_write_json(run.file("status.json"), {"state": "failed", "error": wrapped})
    jobs._settle(run, 1)  # not asked to stop: a real failure stays one
    assert run.status()["state"] == "failed"
    jobs._settle(run, 1, stopped=True)
    status = run.status()
    assert status["state"] == "cancelled" and status["error"].startswith("stopped on request")
    dead = Run(runs / "20240106-000000-vgg16")  # died while running, without a word
    dead.path.mkdir()
    atomic_write_json(dead.file("status.json"), {"state": "running", "pid": 2**22 + 1})
    (dead.path / jobs.OUTPUT_NAME).write_text("error: out of disk space\n")
    jobs._settle(dead, 1)
    assert (dead.status()["state"], dead.status()["error"]) == (
        "failed",
        "error: out of disk space",
    )


def test_the_page_log_names_the_error_without_the_traceback():
    log = (
        "12:00:01 INFO epoch 1 (head): loss 1.0\n"
        "faces:  50%|##  | 1/2\rfaces: 100%|####| 2/2\n"
        "12:00:02 ERROR failed: RuntimeError: boom\n"
        "Traceback (most recent call last):\n"
        '  File "/work/main/celebmodel/train.py", line 264, in train_run\n'
        "    _train(config, run, progress)\n"
        "RuntimeError: boom\n"
        "At:\n"
        "  /work/main/celebmodel/train.py(247): _raise_cancelled\n"
    )
    shown = readable_log(log)
    assert "Traceback" not in shown and "File " not in shown and "At:" not in shown
    assert shown.splitlines() == [
        "12:00:01 INFO epoch 1 (head): loss 1.0",
        "faces: 100%|####| 2/2",
        "12:00:02 ERROR failed: RuntimeError: boom",
        "RuntimeError: boom",
    ]
    assert first_line("RuntimeError: boom\n\nAt:\n  frame") == "RuntimeError: boom"


def test_dataset_from_a_zip_and_lfw_offline(folders, tmp_path, monkeypatch):
    runs, data = folders
    dataset = make_dataset(tmp_path / "dataset", per_class=4, size=16)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for photo in dataset.rglob("*.jpg"):
            zf.write(photo, f"stars/{photo.relative_to(dataset)}")
    at = open_page(app(), "pages/train.py")
    at.radio(key="dataset-source").set_value("zip")
    open_page(at)
    at.file_uploader(key="dataset-zip").set_value(
        ("stars.zip", archive.getvalue(), "application/zip")
    )
    open_page(at)
    at.button(key="extract").click()
    open_page(at)
    assert any("Extracted 12 photos" in s.value for s in at.success), texts(at)
    assert (data / "datasets" / "stars" / "Celebrity_A").is_dir()
    assert {m.label: m.value for m in at.metric}["Celebrities"] == "3"

    at.file_uploader(key="dataset-zip").set_value(("junk.zip", b"not a zip", "application/zip"))
    open_page(at)
    at.button(key="extract").click()
    open_page(at)
    assert any("junk.zip: not a zip archive" in e.value for e in at.error)

    def offline(dest, min_faces=60):
        from celebmodel.errors import DatasetError

        raise DatasetError(f"cannot download LFW into {dest}: there seems to be no internet")

    monkeypatch.setattr("celebmodel.data.sources.fetch_lfw", offline)
    at.radio(key="dataset-source").set_value("lfw")
    open_page(at)
    at.button(key="fetch-lfw").click()
    open_page(at)
    assert any("no internet" in e.value for e in at.error)


def test_delete_a_run_after_confirmation(folders, cnn_run):
    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    at = open_page(app(), "pages/train.py")
    at.selectbox(key="past-pick").set_value(run.name)
    open_page(at)
    at.button(key="delete").click()
    open_page(at)
    assert any("cannot be undone" in w.value for w in at.warning)
    assert run.path.is_dir()
    at.button(key="delete-yes").click()
    open_page(at)
    assert not run.path.exists()
    assert "No runs yet" in texts(at)


def test_photos_with_several_faces_can_be_left_out(folders, cnn_run, monkeypatch):
    """The gallery boxes the face training took (from ``faces.csv``), and a photo ticked
    there is left out of the next training."""
    from celebmodel.reports import display

    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    faces = run.file("faces.csv")
    table = faces.read_text().splitlines()
    assert table[0] == "path,label,subset,route,n_faces,box,error"
    first = table[1].split(",")
    table[1] = ",".join([first[0], first[1], first[2], "several", "2", '"[4, 6, 20, 24]"', ""])
    faces.write_text("\n".join(table) + "\n")
    drawn: list[tuple] = []
    taken = display.taken_face
    monkeypatch.setattr(display, "taken_face", lambda *a: drawn.append(a) or taken(*a))
    at = open_page(app(), "pages/train.py")
    at.text_input(key="dataset-folder").set_value(run.config_dict()["data_dir"])
    open_page(at)
    assert drawn[-1][1:] == (first[0], [4, 6, 20, 24])
    pixels = np.asarray(taken(run, first[0], [4, 6, 20, 24]))
    assert tuple(pixels[6, 12]) == display.KNOWN_COLOUR  # the top edge of the box taken
    at.multiselect(key="exclude").set_value([first[0]])
    open_page(at)
    assert at.multiselect(key="exclude").value == [first[0]]
    asked: list[TrainConfig] = []
    monkeypatch.setattr(jobs, "start", lambda config, **about: asked.append(config) or run)
    at.button(key="start").click()
    open_page(at)
    assert [config.exclude for config in asked] == [(first[0],)]


def train_preview(at: AppTest) -> dict[str, str]:
    """The Train page's dataset cards and whether Start can be pressed."""
    cards = {m.label: m.value for m in at.metric}
    return {**cards, "start": "disabled" if at.button(key="start").disabled else "enabled"}


def test_a_refused_zip_leaves_nothing_of_the_previous_dataset(folders, tmp_path):
    """A zip with a ``../`` entry is refused: the dataset shown before goes with it, and
    Start cannot train on it as if it were this zip's."""
    dataset = make_dataset(tmp_path / "dataset", per_class=4, size=16)
    at = open_page(app(), "pages/train.py")
    at.text_input(key="dataset-folder").set_value(str(dataset))
    open_page(at)
    assert train_preview(at) == {
        "Celebrities": "3",
        "Photos": "12",
        "Skipped files": "0",
        "start": "enabled",
    }
    at.radio(key="dataset-source").set_value("zip")
    open_page(at)
    hostile = _zip({"../evil/x.jpg": PHOTO, "A/a.jpg": PHOTO})
    at.file_uploader(key="dataset-zip").set_value(("evil.zip", hostile, "application/zip"))
    open_page(at)
    at.button(key="extract").click()
    open_page(at)
    assert any("outside the archive" in e.value for e in at.error)
    assert train_preview(at) == {"start": "disabled"}
    assert "Choose a dataset to see its celebrities and photo counts." in texts(at)


def test_the_preview_shows_the_folder_as_it_is_on_disk(folders, tmp_path):
    """A dataset broken on disk (its folders become symlinks to elsewhere) is refused at the
    next look, with one sentence naming the people; fixed again, it is shown again: nothing
    comes back from a cache keyed on time."""
    dataset = make_dataset(tmp_path / "dataset", per_class=4, size=16)
    elsewhere = tmp_path / "elsewhere"
    at = open_page(app(), "pages/train.py")
    at.text_input(key="dataset-folder").set_value(str(dataset))
    open_page(at)
    assert train_preview(at)["Celebrities"] == "3"

    shutil.move(dataset, elsewhere)
    dataset.mkdir()
    for person in sorted(elsewhere.iterdir()):
        (dataset / person.name).symlink_to(person)
    open_page(at)
    (error,) = [e.value for e in at.error]
    assert error.count("symlink pointing outside the dataset") == 1, error
    assert "Celebrity_A, Celebrity_B, Celebrity_C" in error
    assert train_preview(at) == {"start": "disabled"}

    for link in dataset.iterdir():
        link.unlink()
        shutil.copytree(elsewhere / link.name, link)
    shutil.rmtree(elsewhere / "Celebrity_C")
    shutil.rmtree(dataset / "Celebrity_C")
    open_page(at)
    assert not at.error
    assert train_preview(at) == {
        "Celebrities": "2",
        "Photos": "8",
        "Skipped files": "0",
        "start": "enabled",
    }


def test_an_alert_counts_what_it_lists(folders):
    """An alert about 150 celebrities lists "The 150 celebrities", not "The 150 file(s)"."""
    runs, _ = folders
    run = Run(runs / "20250301-000000-dlib128")
    run.path.mkdir()
    atomic_write_json(run.file("status.json"), {"state": "failed", "error": "stopped"})
    people = [f"Person_{i} has only 20 photos" for i in range(150)]
    atomic_write_json(
        run.file("warnings.json"),
        [
            {
                "title": "150 celebrities have fewer than 60 photos",
                "files": people,
                "what": ["celebrity", "celebrities"],
            },
            {
                "title": "1 photo(s) with no face found",
                "files": ["A/x.jpg"],
                "what": ["photo", "photos"],
            },
            {"title": "2 file(s) left out", "files": ["A/.x", "B/.y"]},
        ],
    )
    at = open_page(app(), "pages/train.py")
    labels = [e.label for e in at.expander]
    assert {"The 150 celebrities", "The 1 photo", "The 2 files"} <= set(labels), labels


# Evaluate ------------------------------------------------------------------------------------


def test_evaluate_charts_carry_the_run_numbers(folders, cnn_run, dlib_run):
    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    other = add_run(runs, dlib_run, "20240103-000000-dlib128")
    test = run.metrics("test")
    at = open_page(app(), "pages/evaluate.py")
    at.selectbox(key="evaluate_run").set_value(run.name)
    open_page(at)
    cards = {m.label: m for m in at.metric}
    assert cards["Accuracy"].value == f"{test['accuracy']:.1%}"
    assert cards["F1 (weighted)"].value == f"{test['f1_weighted']:.1%}"
    assert "vs original 52.9%" in cards["F1 (weighted)"].delta

    (per_class,) = figures(at)  # only the open tab is drawn
    for trace in per_class["data"]:
        metric = trace["legendgroup"]
        by_name = dict(zip(trace["x"], decode(trace["y"]), strict=True))
        for label, values in test["per_class"].items():
            assert by_name[label.replace("_", " ")] == pytest.approx(values[metric])
        assert "photos=%{customdata" in trace["hovertemplate"]  # each bar's photo count
    (confusion,) = figures(open_tab(at, "Confusion"))
    heat, cells = confusion["data"]
    assert decode(heat["z"]) == test["confusion_matrix"]
    assert "true: %{y}" in cells["hovertemplate"]  # the clickable layer over the cells
    assert np.array(decode(cells["customdata"]))[:, 0].tolist() == sum(test["confusion_matrix"], [])
    true, predicted = largest_confusion(test)
    cell = cell_photos(run, "test", true, predicted)
    assert at.selectbox(key="cell-true").value == true
    assert len(at.get("image")) >= len(cell)

    accuracy, _ = figures(open_tab(at, "Overfitting"))
    bars = dict(zip(accuracy["data"][0]["x"], decode(accuracy["data"][0]["y"]), strict=True))
    assert bars["test"] == pytest.approx(test["accuracy"])
    assert bars["validation"] == pytest.approx(run.metrics("val")["accuracy"])
    assert bars["train"] == pytest.approx(run.metrics("train")["accuracy"])
    open_tab(at, "Downloads")
    assert len(at.download_button) == 6  # metrics x2, predictions, model, run, export

    open_tab(at, "Confusion")
    at.toggle(key="normalise").set_value(True)
    at.radio(key="subset").set_value("val")
    at.selectbox(key="compare-run").set_value(other.name)
    open_page(at)
    val = run.metrics("val")
    assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{val['accuracy']:.1%}"
    compare, confusion = figures(at)
    assert [t["name"] for t in compare["data"]] == [run.title, other.title, "original recipe"]
    shares = np.array(decode(confusion["data"][0]["z"]))
    assert shares.sum(axis=1) == pytest.approx(np.ones(len(val["labels"])))


def test_evaluate_offers_the_model_for_use_elsewhere(folders, dlib_run, monkeypatch):
    """The Downloads tab's "for use elsewhere": a format, then the same export as
    ``celebmodel export`` as a zip; a format whose package is missing says how to install it
    and cannot be chosen."""
    runs, _ = folders
    run = add_run(runs, dlib_run, "20240103-000000-dlib128")
    tfjs = dataclasses.replace(exporting.FORMATS["tfjs"], extra="surely_not_installed_tfjs")
    monkeypatch.setitem(exporting.FORMATS, "tfjs", tfjs)
    at = open_tab(open_page(app(), "pages/evaluate.py"), "Downloads")
    assert "Download for use elsewhere" in texts(at)
    chosen = at.selectbox(key="export-format")
    assert chosen.options == [
        "Keras 3 (.keras)",
        "TensorFlow SavedModel (folder)",
        "TensorFlow Lite, float32 (.tflite)",
        "TensorFlow.js (model.json + shards) (needs pip install surely_not_installed_tfjs)",
    ]
    button = at.get("download_button")[-1]
    assert button.label == "Download for use elsewhere (.zip)" and not button.proto.disabled
    chosen.set_value("tfjs")
    open_page(at)
    assert "pip install surely_not_installed_tfjs" in texts(at)
    assert at.get("download_button")[-1].proto.disabled
    archive = zipfile.ZipFile(io.BytesIO(exporting.export_zip(run, "keras")))
    assert f"{run.name}-keras/model.keras" in archive.namelist()
    assert f"{run.name}-keras/README.md" in archive.namelist()


# The modules behind the pages ----------------------------------------------------------------


def test_every_setting_survives_the_trip_to_the_trainer(tmp_path, monkeypatch):
    """The app hands its trainer the config file itself: every field, read back by the CLI's
    own ``train --config``, equals what the page asked for. (Settings used to be turned into
    command-line words, and learning rates and dropout were dropped on the way.)"""
    import dataclasses

    from celebmodel.interfaces import cli
    from celebmodel.learning import training

    config = TrainConfig(
        data_dir=str(tmp_path),
        backbone="resnet50",
        weights="none",
        recipe="classic",
        per_class=12,
        seed=3,
        batch_size=4,
        patience=2,
        max_epochs=3,
        image_size=64,
        faces=False,
        detector="mtcnn",
        augment=False,
        learning_rate=0.02,
        fine_tune_learning_rate=2e-6,
        dropout=0.15,
        fine_tune=False,
        drop_small=True,
        precision="mixed_bfloat16",
        exclude=("A/x.jpg", "B/y.jpg"),
    )
    defaults = TrainConfig(data_dir="elsewhere")
    for field in dataclasses.fields(TrainConfig):  # the test covers every field
        assert getattr(config, field.name) != getattr(defaults, field.name), field.name
    started: list[list[str]] = []

    class Process:  # what subprocess.Popen gives, for a process that ends at once
        pid, returncode = 2**22 + 7, 0

        def __init__(self, command, **options):
            started.append(command)

        def wait(self):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(jobs.subprocess, "Popen", Process)
    run = jobs.start(config, tmp_path / "runs")
    (command,) = started
    expected = ["train", "--config", str(run.file("config.json")), "--run-dir", str(run.path)]
    assert command[1:3] == ["-m", "celebmodel"] and command[3:] == expected
    trained: list[TrainConfig] = []
    monkeypatch.setattr(
        training, "train_run", lambda config, run_dir, progress: trained.append(config)
    )
    monkeypatch.setattr(cli, "_print_metrics", lambda run: None)
    assert cli.main(command[3:]) == 0
    assert trained == [config]


def test_two_simultaneous_starts_launch_one_training(folders, tmp_path, monkeypatch):
    runs, _ = folders
    launched: list[Run] = []

    def fake_launch(config, run):  # a live "training": this test process
        time.sleep(0.2)
        atomic_write_json(run.file("status.json"), {"state": "running", "pid": os.getpid()})
        launched.append(run)

    monkeypatch.setattr(jobs, "_launch", fake_launch)
    config = TrainConfig(data_dir=str(tmp_path), backbone="dlib128")
    barrier, outcomes = threading.Barrier(2), []

    def click() -> None:
        barrier.wait()
        try:
            outcomes.append(jobs.start(config))
        except jobs.JobError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(launched) == 1
    assert sum(isinstance(o, jobs.JobError) for o in outcomes) == 1
    assert jobs.active() == launched[0]
    atomic_write_json(launched[0].file("status.json"), {"state": "finished"})
    assert jobs.active() is None


def _zip(entries: dict[str, bytes], **flags) -> bytes:
    """A zip of ``entries``; ``flags[name]`` sets ZipInfo fields, ``encrypt`` the flag bit."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)
            for key, value in flags.get(name, {}).items():
                setattr(info, key, value)
            zf.writestr(info, content)
    data = bytearray(buffer.getvalue())
    if flags.get("encrypt"):  # zipfile cannot write encrypted entries: set the bit by hand
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature)
            data[at + offset] |= 0x1
    return bytes(data)


PHOTO = photo_bytes(COLOURS[0], "JPEG", 16)


@pytest.mark.parametrize(
    ("entries", "flags", "message"),
    [
        ({"../evil/x.jpg": PHOTO, "A/a.jpg": PHOTO}, {}, "outside the archive"),
        ({"/etc/A/x.jpg": PHOTO}, {}, "absolute path"),
        ({"C:/A/x.jpg": PHOTO}, {}, "absolute path"),
        ({"A/x.jpg": PHOTO}, {"encrypt": True}, "encrypted"),
        ({"A/x.jpg": b"B/y.jpg"}, {"A/x.jpg": {"external_attr": 0o120777 << 16}}, "symbolic"),
        ({"a.jpg": PHOTO, "notes.txt": b"hi"}, {}, "no celebrity folders"),
        ({"A/b/c.txt": b"hi"}, {}, "no celebrity folders"),
    ],
)
def test_unsafe_or_unusable_zips_are_refused_before_writing(folders, entries, flags, message):
    _, data = folders
    with pytest.raises(UploadError, match=message):
        extract_dataset(_zip(entries, **flags), "set.zip")
    assert not (data / "datasets").exists() or not any((data / "datasets").iterdir())


def test_zip_limits_and_damage(folders):
    _, data = folders
    entries = {f"A/{i}.jpg": PHOTO for i in range(4)} | {f"B/{i}.jpg": PHOTO for i in range(4)}
    with pytest.raises(UploadError, match="more than the 5 allowed"):
        extract_dataset(_zip(entries), "set.zip", limits=Limits(entries=5))
    with pytest.raises(UploadError, match="unpack to"):
        extract_dataset(_zip(entries), "set.zip", limits=Limits(total_bytes=len(PHOTO) * 3))
    with pytest.raises(UploadError, match="per photo"):
        extract_dataset(_zip(entries), "set.zip", limits=Limits(file_bytes=10))
    damaged = bytearray(_zip(entries))
    damaged[40:60] = b"\0" * 20
    with pytest.raises(UploadError, match="set.zip"):
        extract_dataset(bytes(damaged), "set.zip")
    with pytest.raises(UploadError, match="not a zip"):
        extract_dataset(b"PK\x03\x04 truncated", "set.zip")
    datasets = data / "datasets"
    assert not datasets.exists() or not [p for p in datasets.iterdir()]

    first = extract_dataset(_zip({"top/" + k: v for k, v in entries.items()}), "My Set.zip")
    second = extract_dataset(_zip(entries), "My Set.zip")
    assert first.root.name == "My_Set" and second.root.name == "My_Set-2"
    assert first.labels == ["A", "B"] and len(second.items) == 8
    assert sorted(p.name for p in datasets.iterdir()) == ["My_Set", "My_Set-2"]  # no partials


def test_an_interrupted_extraction_leaves_nothing_and_the_next_one_works(folders, monkeypatch):
    """Ctrl+C or a server stop in the middle of unpacking: no half dataset, no leftover."""
    from celebmodel.data import sources

    _, data = folders
    entries = {f"A/{i}.jpg": PHOTO for i in range(4)} | {f"B/{i}.jpg": PHOTO for i in range(4)}
    real_copy = shutil.copyfileobj
    copied: list[object] = []

    def interrupted_copy(src, dst, length=0):
        if len(copied) == 3:
            raise KeyboardInterrupt
        copied.append(dst)
        return real_copy(src, dst, length)

    monkeypatch.setattr(sources.shutil, "copyfileobj", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        extract_dataset(_zip(entries), "My Set.zip")
    assert len(copied) == 3  # it was stopped part-way through
    assert list((data / "datasets").iterdir()) == []

    monkeypatch.setattr(sources.shutil, "copyfileobj", real_copy)
    scan = extract_dataset(_zip(entries), "My Set.zip")
    assert scan.root.name == "My_Set" and scan.counts().to_dict() == {"A": 4, "B": 4}
    assert [p.name for p in (data / "datasets").iterdir()] == ["My_Set"]


def _deflated(entries: dict[str, bytes]) -> bytearray:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return bytearray(buffer.getvalue())


def test_zip_bombs_are_refused_and_lying_sizes_never_overrun(folders, monkeypatch):
    from celebmodel.data import sources

    _, data = folders
    bomb = _deflated({"A/x.jpg": b"\0" * (40 * 2**20), "B/y.jpg": PHOTO})
    assert len(bomb) < 200_000  # 40 MiB in a few tens of kilobytes
    with pytest.raises(UploadError, match=r"bomb.zip: A/x.jpg is compressed suspiciously well"):
        extract_dataset(bytes(bomb), "bomb.zip")

    # Headers claiming 1,000 bytes for 5 MiB of zeros: extraction stops at the declared size.
    liar = _deflated({"A/x.jpg": b"\0" * (5 * 2**20), "A/y.jpg": PHOTO, "B/z.jpg": PHOTO})
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = liar.find(signature) + offset  # the first entry's uncompressed size
        liar[at : at + 4] = (1000).to_bytes(4, "little")
    written: dict[str, int] = {}
    real_copy = shutil.copyfileobj

    def counting_copy(src, dst, length=0):
        try:
            real_copy(src, dst, length)
        finally:
            written[Path(dst.name).name] = dst.tell()

    monkeypatch.setattr(sources.shutil, "copyfileobj", counting_copy)
    with pytest.raises(UploadError, match=r"liar.zip: .*damaged.*Bad CRC-32 for file 'A/x.jpg'"):
        extract_dataset(bytes(liar), "liar.zip")
    assert written["x.jpg"] <= 1000  # never more than the declared size, then refused
    datasets = data / "datasets"
    assert not datasets.exists() or list(datasets.iterdir()) == []
