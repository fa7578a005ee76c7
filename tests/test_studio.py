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
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import add_run, app, make_dataset, open_page, texts

from celebmodel import figures
from celebmodel.metrics import (
    intervals,
    learning_verdict,
    one_error_note,
    overfitting_verdict,
    wilson_interval,
)
from celebmodel.runs import Run, active_run, choose_run, runs_table, runs_view
from celebmodel.storage import atomic_write_json

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
    )
    run.set_status("running", stage=stage)
    open_page(at)
    assert at.progress[0].text == (
        "Phase 1: training the head · 3 of at most 100 epochs · batch 5 of 30 · at most 12 s left"
    )


@pytest.mark.slow
def test_the_trainer_records_every_stage_with_counts(tmp_path, monkeypatch):
    """A real training: the stages it writes, in order, each face counted, throttled writes."""
    from celebmodel import progress
    from celebmodel.config import TrainConfig
    from celebmodel.training import train_run

    monkeypatch.setattr(progress, "REPORT_EVERY", 0.0)  # record every refresh in this test
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
    assert keys == ["scanning", "faces", "embeddings", "phase 1", "evaluating", "saving"]
    faces = [stage for stage in seen if stage["key"] == "faces"]
    assert faces[-1]["done"] == faces[-1]["total"] == 18 and faces[-1]["unit"] == "photo"
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
    assert f"Active model: {first.title}" in texts(at)
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
    run.set_meta("Tiny colours", "random weights, 32 px")
    failed = Run(runs / "20240103-000000-vgg16")
    failed.path.mkdir()
    atomic_write_json(failed.file("status.json"), {"state": "failed", "error": "boom\nframes"})
    view = runs_view(runs_table())
    assert list(view.columns) == [
        "name",
        "dataset folder",
        "people",
        "photos",
        "backbone",
        "recipe",
        "duration",
        "finished",
        "val loss",
        "test accuracy",
        "state",
        "error",
    ]
    cells = view.to_numpy().ravel().tolist()
    assert not {"None", "nan", "NaN"} & {str(c) for c in cells}
    row = view[view["name"] == "Tiny colours"].iloc[0]
    assert (
        row["people"] == "3" and row["state"] == "finished" and row["test accuracy"].endswith("%")
    )
    assert row["duration"].endswith(" s") and len(row["finished"]) == 16  # 2024-01-02 12:00
    empty = view[view["name"] == failed.name].iloc[0]
    assert (empty["people"], empty["test accuracy"], empty["error"]) == ("", "", "boom")
    at = open_page(app(), "pages/train.py")
    at.selectbox(key="past-pick").set_value(run.name)
    open_page(at)
    at.text_input(key="meta-name").set_value("Colours, renamed")
    at.text_area(key="meta-notes").set_value("second try")
    at.button[[b.label for b in at.button].index("Save name and notes")].click()
    open_page(at)
    assert run.title == "Colours, renamed" and run.meta()["notes"] == "second try"
    assert [h["name"] for h in run.meta()["history"]] == ["Tiny colours", "Colours, renamed"]
    assert "Colours, renamed · vgg16 · 3 people" in open_page(at).sidebar.selectbox[0].options


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

    from celebmodel.archives import import_run, run_zip
    from celebmodel.errors import UploadError

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


# --------------------------------------------------------------------------------------------
# strangers on Evaluate


def test_the_strangers_tab_computes_what_the_cli_computes_and_sets_the_threshold(
    folders, dlib_run, tmp_path
):
    from celebmodel.evaluation import evaluate_run, open_set_scores

    runs, _ = folders
    run = add_run(runs, dlib_run, "20240102-000000-dlib128")
    strangers = make_dataset(tmp_path / "strangers", per_class=4, seed=7)
    expected = evaluate_run(Run(run.path), "test", unknown_dir=strangers)["test"]["open_set"]
    at = open_page(app(), "pages/evaluate.py")
    at.text_input(key="strangers-folder").set_value(str(strangers))
    open_page(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Strangers rejected"] == f"{expected['unknown_rejected']:.1%}"
    assert shown["Known faces accepted"] == f"{expected['known_accepted']:.1%}"
    assert shown["ROC AUC"] == f"{expected['auc']:.3f}"
    before = run.read_json("calibration.json")["threshold"]
    scores = open_set_scores(Run(run.path), strangers)
    chosen = float(
        figures.threshold_tradeoff(scores.known, scores.strangers, before)["threshold"].min()
    )
    at.select_slider(key=f"strangers-threshold-{run.name}").set_value(chosen)
    open_page(at)
    at.button(key="set-threshold").click()
    open_page(at)
    calibration = run.read_json("calibration.json")
    assert calibration["threshold"] == pytest.approx(float(chosen))
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
    from celebmodel.metrics import ORIGINAL

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
