"""Train and Evaluate as users live in them: stages with counts, a model the user chooses,
numbers with their uncertainty, strangers tested, settings that fit, run zips.

Pages run under ``AppTest``; runs are the session fixtures of ``conftest.py`` copied into a
runs folder per test. Nothing here reads ``../shared``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import add_run, app, make_dataset, open_page, texts

from celebmodel.reports import figures
from celebmodel.reports.run_report import runs_table, runs_view
from celebmodel.runs.run import Run, active_run, choose_run
from celebmodel.scoring.metrics import (
    intervals,
    learning_verdict,
    one_error_note,
    overfitting_verdict,
    wilson_interval,
)
from celebmodel.storage import atomic_write_json, now_iso

# --------------------------------------------------------------------------------------------
# stages with progress


def running_run(runs: Path, stage: dict, warnings: list[dict] | None = None) -> Run:
    """A run whose training (this test process) is finding faces: no epoch yet."""
    run = Run(runs / "20250301-000000-dlib128")
    run.path.mkdir(parents=True)
    atomic_write_json(run.file("config.json"), {"data_dir": str(runs), "backbone": "dlib128"})
    atomic_write_json(
        run.file("status.json"),
        {
            "state": "running",
            "pid": os.getpid(),
            "started": "2025-03-01T00:00:00+00:00",
            "stage": stage,
        },
    )
    if warnings is not None:
        atomic_write_json(run.file("warnings.json"), warnings)
    return run


def test_the_stage_and_its_counts_show_before_the_first_epoch(folders):
    runs, _ = folders
    stage = {
        "key": "faces",
        "name": "Finding faces",
        "done": 120,
        "total": 480,
        "unit": "photo",
        "seconds_left": 31.0,
    }
    warnings = [
        {"title": "2 photo(s) with no face found: left out", "files": ["A/x.jpg", "B/y.jpg"]}
    ]
    run = running_run(runs, stage, warnings)
    at = open_page(app(), "pages/train.py")
    (bar,) = at.progress
    assert bar.value == 25
    assert bar.text == "Finding faces · 120 of 480 photos · about 31 s left"
    assert "epoch 0" not in texts(at)  # nothing sits at "epoch 0"
    assert any(w.value == warnings[0]["title"] for w in at.warning)
    assert "A/x.jpg\nB/y.jpg" in [c.value for c in at.code]

    stage.update(
        key="phase 1",
        name="Phase 1: training the head",
        done=3,
        total=100,
        unit="epoch",
        seconds_left=12.0,
        batch=5,
        batches=30,
        patience=5,
        waited=1,
        least=4,
    )
    run.set_status("running", stage=stage)
    open_page(at)
    assert at.progress[0].text == (
        "Phase 1: training the head · 3 of at most 100 epochs · batch 5 of 30 · "
        "1 of 5 epochs without improvement · at least 12 s left in this phase"
    )
    assert at.progress[0].value == 42  # 3 epochs of the 7 early stopping allows at the least
    stage.update(done=7, waited=4, least=0, seconds_left=0.0)  # it may stop after this one
    run.set_status("running", stage=stage)
    open_page(at)
    assert at.progress[0].text.endswith("early stopping may end this phase after this epoch")
    stage.update(done=28, waited=0, least=5, seconds_left=0.4)  # quick epochs, improving
    run.set_status("running", stage=stage)
    open_page(at)  # not "0 of 5 … may end this phase after this epoch" (seen on a real run)
    assert at.progress[0].text.endswith(
        "0 of 5 epochs without improvement · at least 5 more epochs in this phase"
    )


def test_one_epoch_counter_per_phase_and_the_run_summed_up_after(folders):
    """Phase 2 of a run: the page counts phase 2's epochs once, with "estimating" for a time
    it cannot know yet (it showed "7 of at most 100 epochs" beside "epoch 76 of at most 200
    (fine-tune)"); once finished, each phase's epochs and the time it took."""
    runs, _ = folders
    stage = {
        "key": "phase 2",
        "name": "Phase 2: fine-tuning",
        "done": 7,
        "total": 100,
        "unit": "epoch",
        "patience": 5,
        "waited": 2,
        "least": 3,
    }
    run = running_run(runs, stage)
    history = pd.DataFrame({"epoch": range(76), "loss": 1.0, "val_loss": 1.0})
    history["phase"] = ["head"] * 69 + ["fine-tune"] * 7
    history.to_csv(run.file("history.csv"), index=False)
    at = open_page(app(), "pages/train.py")
    shown = "\n".join([at.progress[0].text, texts(at)])
    assert at.progress[0].text == (
        "Phase 2: fine-tuning · 7 of at most 100 epochs · 2 of 5 epochs without improvement · "
        "time left: estimating"
    )
    assert shown.count("of at most") == 1 and "76" not in shown
    assert any(c.value.endswith(" since Start") for c in at.caption)

    run.set_status("finished", ended="2025-03-01T00:03:05+00:00")
    open_page(at)
    assert "76 epochs (phase 1: 69, phase 2: 7) in 3 min 05 s" in [c.value for c in at.caption]
    assert "of at most" not in texts(at)


def test_time_left_in_a_phase_is_a_lower_bound_never_the_most_epochs(monkeypatch):
    """100 epochs at most, patience 5, 10 s an epoch: the time left is what early stopping
    needs at the least (never 100 epochs' worth: "at most 30 min" 2.5 min before the end),
    and none at all until an epoch's time is known."""
    from celebmodel.learning import estimator

    clock = [0.0]
    monkeypatch.setattr(estimator.time, "monotonic", lambda: clock[0])
    reports: list[dict] = []

    class Recorder:  # what Stages is to the reporter
        def enter(self, key, done, total, **extra):
            reports.append({"done": done, "left": None, **extra})

        def report(self, key, done, total, left, force=False, **extra):
            reports.append({"done": done, "left": left, **extra})

    early = estimator.keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    early.set_model(estimator.keras.Sequential())  # the reporter reads early stopping's count
    reporter = estimator.EpochReporter(Recorder(), "phase 1", max_epochs=100, early=early)
    reporter.params = {"steps": 10}
    early.on_train_begin()
    reporter.on_train_begin()
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.96]):
        reporter.on_epoch_begin(epoch)
        for batch in range(10):
            clock[0] += 1.0
            reporter.on_train_batch_end(batch)
        early.on_epoch_end(epoch, {"val_loss": val_loss})  # Keras calls it first (listed first)
        reporter.on_epoch_end(epoch, {"val_loss": val_loss})
    first = reports[1]  # batch 1 of the first epoch: too early to tell
    assert first["left"] is None and first["batch"] == 1
    assert reports[5]["left"] == pytest.approx(10.0 * 6 - 5)  # 5 s into epoch 1 of 6 at least
    ends = [r for r in reports if "batch" not in r and r["done"]]
    assert [r["waited"] for r in ends] == [0, 0, 1, 2, 3, 4, 5]
    assert [r["left"] for r in ends] == pytest.approx([50.0, 50.0, 40.0, 30.0, 20.0, 10.0, 0.0])
    assert max(r["left"] or 0 for r in reports) <= 10.0 * 6


def test_the_first_seconds_of_a_training_say_what_is_happening(folders, tmp_path, monkeypatch):
    """Before TensorFlow is imported (seconds), the run already says it is running and what
    it does, and the page counts the seconds: no silent "queued · Starting…" for 15 s."""
    import subprocess
    import sys

    from celebmodel.config import TrainConfig
    from celebmodel.learning import training

    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, celebmodel.learning.training; print('tensorflow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "False"  # the trainer's own module loads in a blink

    seen: list[dict] = []
    monkeypatch.setattr(training, "_train", lambda config, run, *rest: seen.append(run.status()))
    runs, _ = folders
    training.train_run(TrainConfig(data_dir=str(tmp_path)), tmp_path / "run")
    assert seen[0]["state"] == "running" and seen[0]["stage"]["name"] == "Importing TensorFlow"

    run = running_run(runs, seen[0]["stage"])
    run.set_status("running", started=now_iso())
    at = open_page(app(), "pages/train.py")
    assert at.progress[0].text == "Importing TensorFlow"
    assert any(re.fullmatch(r"\d+ s since Start", c.value) for c in at.caption), texts(at)
    atomic_write_json(
        run.file("status.json"), {"state": "queued", "pid": os.getpid(), "queued": now_iso()}
    )
    open_page(at)
    assert at.progress[0].text == "Starting the training process…"
    assert any(re.fullmatch(r"\d+ s since Start", c.value) for c in at.caption)


@pytest.mark.slow
def test_the_trainer_records_every_stage_with_counts(tmp_path, monkeypatch):
    """A real training: the stages it writes, in order, each face counted, throttled writes."""
    from celebmodel.config import TrainConfig
    from celebmodel.learning import stages
    from celebmodel.learning.training import train_run

    monkeypatch.setattr(stages, "REPORT_EVERY", 0.0)  # record every refresh in this test
    seen: list[dict] = []
    original = Run.set_status

    def recording(self, state, **fields):
        if "stage" in fields:
            seen.append(dict(fields["stage"]))
        return original(self, state, **fields)

    monkeypatch.setattr(Run, "set_status", recording)
    dataset = make_dataset(tmp_path / "dataset", per_class=6)
    config = TrainConfig(data_dir=str(dataset), backbone="dlib128", max_epochs=3)
    run = train_run(config, tmp_path / "run")
    keys = list(dict.fromkeys(stage["key"] for stage in seen))
    assert keys == [
        "starting",
        "scanning",
        "faces",
        "embeddings",
        "phase 1",
        "evaluating",
        "mirroring",
        "saving",
    ]
    scanning = [stage for stage in seen if stage["key"] == "scanning"]
    assert (scanning[-1]["done"], scanning[-1]["people"]) == (18, 3)
    faces = [stage for stage in seen if stage["key"] == "faces"]
    assert faces[-1]["done"] == faces[-1]["total"] == 18 and faces[-1]["unit"] == "photo"
    evaluating = [stage for stage in seen if stage["key"] == "evaluating"]
    usable = sum(len(run.predictions(subset)) for subset in ("train", "val", "test"))
    assert {stage["unit"] for stage in evaluating} == {"photo"}
    assert evaluating[-1]["done"] == evaluating[-1]["total"] == usable
    mirroring = [stage for stage in seen if stage["key"] == "mirroring"]
    assert mirroring[-1]["done"] == mirroring[-1]["total"] == len(run.predictions("train"))
    assert any(0 < stage["done"] < usable for stage in evaluating)  # batch by batch
    epochs = [stage for stage in seen if stage["key"] == "phase 1"]
    assert epochs[-1]["total"] == 3 and epochs[-1]["done"] == len(run.history())
    assert run.state == "finished"


# --------------------------------------------------------------------------------------------
# a model the user chooses


def test_the_first_model_becomes_active_and_later_ones_never_replace_it(folders, cnn_run):
    runs, _ = folders
    first = add_run(runs, cnn_run, "20240101-000000-vgg16")
    assert active_run() == first  # none was ever chosen: the only model is chosen, once
    assert json.loads((runs / "active.json").read_text())["run"] == first.name
    second = add_run(runs, cnn_run, "20240102-000000-vgg16")
    atomic_write_json(second.file("metrics_test.json"), {**second.metrics("test"), "accuracy": 1.0})
    at = open_page(app(), "pages/home.py")
    assert active_run() == first  # a newer, better run did not take over
    assert f"Model in use: {first.title}" in texts(at)
    (selector,) = at.sidebar.selectbox
    assert selector.value == first.name
    selector.set_value(second.name)
    open_page(at)  # the user's pick, through the sidebar, is kept for everyone
    assert active_run() == second
    assert open_page(app(), "pages/home.py").sidebar.selectbox[0].value == second.name


def test_use_this_model_on_train_and_evaluate(folders, cnn_run):
    runs, _ = folders
    older = add_run(runs, cnn_run, "20240101-000000-vgg16")
    newer = add_run(runs, cnn_run, "20240102-000000-vgg16")
    choose_run(older)
    at = open_page(app(), "pages/train.py")  # the live view shows the newest run, finished
    assert active_run() == older
    at.button(key=f"use-{newer.name}").click()
    open_page(at)
    assert active_run() == newer
    assert any("is the active model" in c.value for c in at.caption)
    ev = open_page(app(), "pages/evaluate.py")
    ev.selectbox(key="evaluate_run").set_value(older.name)
    open_page(ev)
    ev.button(key="use-evaluated").click()
    open_page(ev)
    assert active_run() == older


def test_runs_get_names_and_notes_and_the_table_reads_well(folders, cnn_run):
    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    backbone = run.config().backbone  # unnamed, a run is called after what it is
    assert run.title == f"{Path(run.config().data_dir).name} · 3 people · {backbone} · 2 Jan 00:00"
    run.set_meta("Tiny colours", "random weights, 32 px")
    failed = Run(runs / "20240103-000000-vgg16")
    failed.path.mkdir()
    atomic_write_json(failed.file("status.json"), {"state": "failed", "error": "boom\nframes"})
    view = runs_view(runs_table())
    assert list(view.columns) == [
        "name",
        "state",
        "dataset folder",
        "people",
        "photos",
        "backbone",
        "recipe",
        "duration",
        "finished",
        "val loss",
        "test accuracy",
        "error",
    ]
    text = view.select_dtypes(include=object).to_numpy().ravel().tolist()
    assert not {"None", "nan", "NaN"} & {str(c) for c in text}
    row = view[view["name"] == "Tiny colours"].iloc[0]
    assert row["people"] == 3 and row["state"] == "finished" and 0 <= row["test accuracy"] <= 1
    assert row["duration"] >= 0 and isinstance(row["finished"], pd.Timestamp)
    empty = view[view["name"] == failed.name].iloc[0]
    assert pd.isna(empty["people"]) and pd.isna(empty["test accuracy"]) and empty["error"] == "boom"
    # typed values sort by value: 100% above 53%, 8 photos below 1,234, 42 s below 3 min
    typed = runs_view(pd.DataFrame({
        "name": ["a", "b"], "test_accuracy": [0.53, 1.0], "photos": [1234, 8],
        "seconds": [180, 42], "ended": ["2024-01-02T12:00:00+00:00"] * 2,
    }))
    assert list(typed.sort_values("test accuracy")["name"]) == ["a", "b"]
    assert list(typed.sort_values("photos")["name"]) == ["b", "a"]
    assert list(typed.sort_values("duration")["name"]) == ["b", "a"]
    at = open_page(app(), "pages/train.py")
    at.selectbox(key="past-pick").set_value(run.name)
    open_page(at)
    at.text_input(key="meta-name").set_value("Colours, renamed")
    at.text_area(key="meta-notes").set_value("second try")
    at.button[[b.label for b in at.button].index("Save name and notes")].click()
    open_page(at)
    assert run.title == "Colours, renamed" and run.meta()["notes"] == "second try"
    assert [h["name"] for h in run.meta()["history"]] == ["Tiny colours", "Colours, renamed"]
    at = open_page(at)
    assert "Colours, renamed" in at.sidebar.selectbox[0].options  # short: the box cuts the rest
    assert "Colours, renamed · vgg16 · 3 people" in at.selectbox(key="past-pick").options


# --------------------------------------------------------------------------------------------
# run zips


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_run_zip_round_trips_and_hostile_ones_are_refused(folders, cnn_run, tmp_path):
    import keras

    from celebmodel.errors import UploadError
    from celebmodel.runs.archives import import_run, run_zip

    runs, _ = folders
    exported = run_zip(cnn_run)
    imported = import_run(exported, f"{cnn_run.name}.zip")
    assert imported.path.parent == runs and imported.state == "finished"
    assert imported.labels() == cnn_run.labels()
    assert imported.file("model.keras").read_bytes() == cnn_run.file("model.keras").read_bytes()

    files = {f"run/{p.name}": p.read_bytes() for p in cnn_run.path.iterdir() if p.is_file()}
    escaping = {**files, "../evil.json": b"{}"}
    with pytest.raises(UploadError, match=r"evil.zip: entry '../evil.json' points outside"):
        import_run(_zip(escaping), "evil.zip")
    inputs = keras.Input((4,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    lam.save(tmp_path / "lambda.keras")
    unsafe = {**files, "run/model.keras": (tmp_path / "lambda.keras").read_bytes()}
    with pytest.raises(UploadError, match=r"lambda.zip: not a usable run .*model.keras"):
        import_run(_zip(unsafe), "lambda.zip")
    pickled = {**files, "run/status.json": json.dumps({"state": "running", "pid": 1}).encode()}
    with pytest.raises(UploadError, match="not finished"):
        import_run(_zip(pickled), "running.zip")
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [imported.name]  # no leftover

    at = open_page(app(), "pages/train.py")
    at.file_uploader(key="import-zip").set_value(("evil.zip", _zip(escaping), "application/zip"))
    open_page(at)
    at.button(key="import").click()
    open_page(at)
    assert any("points outside the archive" in e.value for e in at.error)
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [imported.name]


# --------------------------------------------------------------------------------------------
# numbers with their uncertainty


def test_wilson_intervals_match_the_formula_by_hand():
    z = 1.959963984540054
    for k, n in ((5, 6), (6, 6), (0, 6), (47, 60)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = wilson_interval(k, n)
        assert low == pytest.approx(centre - half, abs=1e-9)
        assert high == pytest.approx(centre + half, abs=1e-9)
    metrics = {"labels": ["a", "b"], "confusion_matrix": [[5, 1], [0, 6]]}
    found = intervals(metrics)
    assert found["accuracy"] == pytest.approx(wilson_interval(11, 12))
    assert found["recall"]["a"] == pytest.approx(wilson_interval(5, 6))


def test_the_cards_and_charts_carry_intervals_and_the_one_error_note(folders, cnn_run):
    runs, _ = folders
    run = add_run(runs, cnn_run, "20240102-000000-vgg16")
    test = run.metrics("test")
    counts = np.asarray(test["confusion_matrix"])
    low, high = wilson_interval(int(np.trace(counts)), int(counts.sum()))
    at = open_page(app(), "pages/evaluate.py")
    assert f"95% CI {low:.0%}–{high:.0%}" in [c.value for c in at.caption]
    per_person = min(c["support"] for c in test["per_class"].values())
    assert per_person < 10
    note = one_error_note(test)
    assert note in [i.value for i in at.info]
    typical = int(np.median([c["support"] for c in test["per_class"].values()]))
    photos = "photo" if typical == 1 else "photos"
    assert note.startswith(f"{typical} {photos} per person: one mistake moves that person's")
    assert f"by {100 / typical:.0f} points" in note
    chart = figures.per_class_figure(test)
    recall = next(trace for trace in chart.data if trace.name == "recall")
    assert recall.error_y.array is not None and recall.marker.color == "#009E73"
    assert any("chance" in (a.text or "") for a in chart.layout.annotations)


def test_a_model_at_chance_is_called_so():
    """Eight people, one label predicted for everyone: 12.5% right."""
    labels = [f"p{i}" for i in range(8)]
    counts = np.zeros((8, 8), int)
    counts[:, 3] = 6
    metrics = {"labels": labels, "confusion_matrix": counts.tolist(), "accuracy": 6 / 48}
    verdict = learning_verdict(metrics)
    assert verdict.startswith("Near chance: the model learned little")
    assert "100% of the photos are predicted as p3" in verdict
    words = overfitting_verdict({"train": 0.13, "val": 0.125, "test": 0.125}, chance=1 / 8)
    assert words.startswith("Near chance") and "No marked overfitting" not in words
    fine = {
        "labels": labels,
        "confusion_matrix": (np.eye(8, dtype=int) * 6).tolist(),
        "accuracy": 1.0,
    }
    assert learning_verdict(fine) is None


def test_compare_evaluates_both_runs_on_the_photos_they_both_held_out(folders, cnn_run):
    runs, _ = folders
    first = add_run(runs, cnn_run, "20240102-000000-vgg16")
    second = add_run(runs, cnn_run, "20240103-000000-vgg16")
    predictions = second.predictions("test")
    moved = predictions.iloc[:2].assign(path=lambda f: "elsewhere/" + f["path"])
    pd.concat([moved, predictions.iloc[2:]]).to_csv(
        second.file("predictions_test.csv"), index=False
    )
    common = len(predictions) - 2
    at = open_page(app(), "pages/evaluate.py")
    at.selectbox(key="evaluate_run").set_value(first.name)
    open_page(at)
    at.selectbox(key="compare-run").set_value(second.name)
    open_page(at)
    warning = next(w.value for w in at.warning if "Tested on different photos" in w.value)
    assert f"{common} in common" in warning
    table = at.dataframe[0].value
    assert list(table.columns) == [first.title, second.title, "original recipe"]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [trace["name"] for trace in chart["data"]] == list(table.columns)  # one order


def test_compare_without_photos_in_common_identifies_the_photos_both_can_answer(
    folders, dlib_run
):
    """Two runs of one folder split differently share no held-out photo: the page says so and
    offers to identify again the held-out photos of the people both know that neither learnt
    from; both models then answer the same photos, and the page says how many."""
    from celebmodel.recognition.comparison import reidentified, shared_photos

    runs, _ = folders
    first = add_run(runs, dlib_run, "20240102-000000-dlib128")
    second = add_run(runs, dlib_run, "20240103-000000-dlib128")
    held_out = first.predictions("test")
    split = second.split()  # as if the second run's folder had held out other photos
    split[~split["path"].isin(held_out["path"])].to_csv(second.file("split.csv"), index=False)
    held_out.iloc[:0].to_csv(second.file("predictions_test.csv"), index=False)
    shared = shared_photos([first, second])
    assert len(shared) == len(held_out) > 0
    expected = reidentified([first, second])
    assert expected.common == len(held_out) and expected.method == "re-identified"

    at = open_page(app(), "pages/evaluate.py")
    at.selectbox(key="evaluate_run").set_value(first.name)
    open_page(at)
    at.selectbox(key="compare-run").set_value(second.name)
    open_page(at)
    assert "0 in common" in next(w.value for w in at.warning if "different photos" in w.value)
    def compared() -> list[pd.DataFrame]:
        tables = [frame.value for frame in at.dataframe]
        return [t for t in tables if first.title in getattr(t, "columns", [])]

    assert not compared()  # nothing compared yet
    at.button(key="reidentify").click()
    open_page(at)
    assert f"identified the same {len(held_out)} test photos again" in " ".join(
        c.value for c in at.caption
    )
    (table,) = compared()
    assert list(table.columns) == [first.title, second.title, "original recipe"]
    accuracy = expected.metrics[0]["accuracy"]
    assert table.loc["Accuracy", first.title] == pytest.approx(accuracy)
    assert table.loc["Accuracy", second.title] == pytest.approx(accuracy)  # the same model


def test_a_photo_the_built_in_model_learnt_from_is_never_compared_on():
    """The built-in gallery holds LFW's photos: a run of an LFW folder that held one out
    cannot be compared with it on that photo, only on its others."""
    from types import SimpleNamespace

    from celebmodel.recognition.comparison import shared_photos

    builtin = SimpleNamespace(
        scoring="gallery",
        labels=lambda: ["George_W_Bush", "Tony_Blair"],
        gallery_paths=lambda: ["George_W_Bush/George_W_Bush_0001.jpg"],
    )
    held_out = pd.DataFrame(
        {
            "path": ["George_W_Bush/George_W_Bush_0001.jpg", "George_W_Bush/mine.jpg",
                     "Someone_Else/x.jpg"],
            "true": ["George_W_Bush", "George_W_Bush", "Someone_Else"],
        }
    )
    split = pd.DataFrame(
        {"path": ["George_W_Bush/trained.jpg", *held_out["path"]],
         "subset": ["train", "test", "test", "test"]}
    )
    trained = SimpleNamespace(
        scoring="classifier",
        labels=lambda: ["George_W_Bush", "Someone_Else"],
        split=lambda: split,
        predictions=lambda subset: held_out,
        config_dict=lambda: {"data_dir": "/photos"},
    )
    shared = shared_photos([trained, builtin])
    assert shared.to_dict("records") == [
        {"path": "/photos/George_W_Bush/mine.jpg", "true": "George_W_Bush"}
    ]


# --------------------------------------------------------------------------------------------
# strangers on Evaluate


def test_the_strangers_tab_computes_what_the_cli_computes_and_sets_the_threshold(
    folders, dlib_run, tmp_path
):
    from celebmodel.learning.evaluation import evaluate_run
    from celebmodel.scoring.open_set import threshold_scale

    runs, _ = folders
    run = add_run(runs, dlib_run, "20240102-000000-dlib128")
    strangers = make_dataset(tmp_path / "strangers", per_class=4, seed=7)
    expected = evaluate_run(Run(run.path), "test", unknown_dir=strangers)["test"]["open_set"]
    at = open_page(app(), "pages/evaluate.py")
    at.session_state["evaluate-tab"] = "Strangers"
    open_page(at)
    at.text_input(key="strangers-folder").set_value(str(strangers))
    open_page(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Strangers rejected"] == f"{expected['unknown_rejected']:.1%}"
    assert shown["Known faces accepted"] == f"{expected['known_accepted']:.1%}"
    assert shown["ROC AUC"] == f"{expected['auc']:.3f}"
    before = run.read_json("calibration.json")["threshold"]
    scale = threshold_scale(run.read_json("calibration.json"))
    assert scale.name == "match confidence"  # a run of this version: its strangers kept
    slider = at.slider(key=f"strangers-threshold-{run.name}")
    assert slider.label == "Match confidence needed to name a face (%)"
    chosen = slider.min / 100  # the loosest the control offers
    slider.set_value(slider.min)
    open_page(at)
    at.button(key="set-threshold").click()
    open_page(at)
    calibration = run.read_json("calibration.json")
    assert calibration["threshold"] == pytest.approx(scale.score(chosen))
    assert scale.shown(calibration["threshold"]) >= chosen
    (entry,) = calibration["history"]
    assert entry["previous"] == before and entry["source"] == f"strangers test on {strangers}"
    assert entry["by"] and entry["when"]


# --------------------------------------------------------------------------------------------
# settings that fit, chart polish


def test_the_train_form_shows_only_the_settings_that_apply(folders):
    at = open_page(app(), "pages/train.py")
    at.selectbox(key="backbone").set_value("dlib128")
    open_page(at)
    labels = {w.label for kind in ("radio", "number_input", "checkbox") for w in at.get(kind)}
    assert "Weights" not in labels and "Image size (px)" not in labels
    assert "Find and align the face first" not in labels
    assert "Phase 2: fine-tune the top of the network" in labels
    assert at.checkbox(key="fine-tune-dlib128").value is False  # the backbone table's default
    hidden = next(c.value for c in at.caption if c.value.startswith("Not shown"))
    assert "weights (dlib128 uses its own pretrained face weights" in hidden
    at.radio(key="recipe").set_value("classic")
    open_page(at)
    labels = {w.label for kind in ("radio", "number_input", "checkbox") for w in at.get(kind)}
    assert "Phase 2: fine-tune the top of the network" not in labels
    assert "Augment the training photos" not in labels
    at.selectbox(key="backbone").set_value("vgg16")
    open_page(at)
    labels = {w.label for kind in ("radio", "number_input", "checkbox") for w in at.get(kind)}
    assert {"Weights", "Image size (px)", "Find and align the face first"} <= labels


def test_chart_polish(cnn_run):
    from celebmodel.scoring.metrics import ORIGINAL

    curves = figures.learning_curves(cnn_run.history())
    colours = {trace.name: trace.line.color for trace in curves.data}
    assert colours["train"] != colours["validation"]
    assert colours == {"train": "#0072B2", "validation": "#E69F00"}
    per_class = figures.per_class_figure(cnn_run.metrics("test"))
    used = {trace.marker.color for trace in per_class.data}
    assert not any(c.lower() in ("red", "#d62728", "#ef553b", "#ff0000") for c in used)
    hover = per_class.data[0].hovertemplate
    assert "celebrity=" in hover and "photos=" in hover and "label=" not in hover
    confusion = figures.confusion_figure(cnn_run.metrics("test"))
    assert confusion.layout.coloraxis.colorbar.tickformat == "d"
    accuracy = figures.accuracy_figure(cnn_run)
    assert not accuracy.layout.annotations  # no label lying across a bar
    assert "original recipe (test)" in list(accuracy.data[-1].x)
    assert list(accuracy.data[-1].y) == [ORIGINAL["accuracy"]]
    assert [figures.human_size(n) for n in (32_768, 4_600_000, 512)] == [
        "33 KB",
        "4.6 MB",
        "512 bytes",
    ]
