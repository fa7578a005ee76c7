"""Evaluate at thousands of people (issue 18, point 5) and its Strangers tab (issue 20, points
6 and 7): charts that show the ends of the ranking and what is searched, the most confused
pairs instead of a matrix beyond 40 people, nothing that grows with the square of the people,
metrics files that do not either, an even threshold control whose caption shows the threshold
in force, a chart that survives a perfect separation, and a run without metrics.

Runs come from ``generated_runs.py`` (written, not trained).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from conftest import METRIC_KEYS, app, open_page, texts
from generated_runs import generated_run, people_names
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

from celebmodel.learning.evaluation import OpenSetScores, predictions_metrics, subset_metrics
from celebmodel.progress import quiet_bar
from celebmodel.reports import figures
from celebmodel.reports.run_report import cell_photos, runs_table
from celebmodel.runs.run import Run, load_run
from celebmodel.scoring.metrics import (
    DENSE_UP_TO,
    compute_metrics,
    confusion_counts,
    intervals,
    learning_verdict,
    metrics_of,
    true_ranks,
)


def open_tab(at, title: str):
    at.session_state["evaluate-tab"] = title
    return open_page(at)


def charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


# The generated runs --------------------------------------------------------------------------


@pytest.mark.parametrize("people", [12, DENSE_UP_TO + 50])
def test_a_generated_run_holds_what_a_training_writes(tmp_path, people):
    run = generated_run(tmp_path / "runs", people, model="head")
    run = load_run(run.path)
    labels = run.labels()
    assert labels == sorted(labels) and len(set(labels)) == people
    assert run.state == "finished" and run.has_model()
    assert run.load_model().output.shape[-1] == people
    split = run.split()
    assert split["subset"].value_counts().to_dict() == {
        "train": 4 * people,
        "val": people,
        "test": people,
    }
    embeddings, gallery_labels = run.gallery()
    assert embeddings.shape == (4 * people, 128) and set(gallery_labels) == set(range(people))
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert 0 < run.read_json("calibration.json")["threshold"] < 2
    for subset in ("train", "val", "test"):
        metrics = run.metrics(subset)
        dense = people <= DENSE_UP_TO
        expected = METRIC_KEYS if dense else METRIC_KEYS - {"confusion_matrix"}
        assert set(metrics) >= expected | ({"skipped", "overfitting"})
        assert ("confusion_cells" in metrics) is not dense
        predictions = run.predictions(subset)
        assert len(predictions) == metrics["n"] == (split["subset"] == subset).sum()
        assert metrics["accuracy"] == pytest.approx(
            (predictions["true"] == predictions["predicted"]).mean()
        )
        assert predictions_metrics(predictions, subset, labels) == {
            k: v for k, v in metrics.items() if k not in ("skipped", "overfitting", "open_set")
        }
        assert ("p_" + labels[0] in predictions) is dense  # photos x people only when few
    assert 0.5 < run.metrics("test")["accuracy"] < 1.0  # mistakes to look at
    pooled = subset_metrics(run, "val+test")
    assert pooled["n"] == 2 * people and pooled["labels"] == labels
    photo = run.predictions("test")["path"].iloc[0]
    assert run.open_photo(photo).size == (48, 48)


def test_people_names_stay_distinct_past_the_name_list():
    names = people_names(6000)
    assert len(set(names)) == 6000 and all(" " not in name for name in names)


# Metrics files that grow with the photos, not with the square of the people ----------------


def test_beyond_the_dense_limit_metrics_keep_only_the_cells_with_photos():
    rng = np.random.default_rng(0)
    people = DENSE_UP_TO + 100
    labels = [f"p{i:03d}" for i in range(people)]
    y_true = rng.integers(0, people, 900)
    y_pred = np.where(rng.random(900) < 0.7, y_true, rng.integers(0, people, 900))
    ranks = np.where(y_pred == y_true, 1, rng.integers(2, 9, 900))
    sparse = metrics_of(y_true, y_pred, ranks, labels)
    assert "confusion_matrix" not in sparse
    assert len(sparse["confusion_cells"]) <= 900  # one triple per non-zero cell
    assert len(json.dumps(sparse)) < 60 * people + 40 * 900
    dense_counts = confusion_matrix(y_true, y_pred, labels=range(people))
    assert (confusion_counts(sparse) == dense_counts).all()
    dense = {**sparse, "confusion_matrix": dense_counts.tolist()}
    del dense["confusion_cells"]
    assert intervals(sparse) == intervals(dense)
    assert learning_verdict(sparse) == learning_verdict(dense)
    assert sparse["top5_accuracy"] == pytest.approx(np.mean(ranks <= 5))


def test_top5_from_the_true_rank_is_top5_from_the_probabilities():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(12), 80)
    y_true = rng.integers(0, 12, 80)
    labels = [f"c{i}" for i in range(12)]
    expected = top_k_accuracy_score(y_true, probabilities, k=5, labels=range(12))
    assert compute_metrics(y_true, probabilities, labels)["top5_accuracy"] == pytest.approx(
        expected
    )
    frame = pd.DataFrame(
        {
            "path": [f"{i}.jpg" for i in range(80)],
            "true": [labels[i] for i in y_true],
            "predicted": [labels[i] for i in probabilities.argmax(axis=1)],
            "true_rank": true_ranks(probabilities, y_true),
        }
    )
    assert predictions_metrics(frame, "test", labels)["top5_accuracy"] == pytest.approx(expected)
    old = frame.drop(columns="true_rank")  # a file from before true_rank: its p_ columns
    old[[f"p_{label}" for label in labels]] = probabilities
    assert predictions_metrics(old, "test")["top5_accuracy"] == pytest.approx(expected)


# Per person: the ends of the ranking, and a search -----------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """The test metrics of a generated 300-person run (no model, no photos)."""
    run = generated_run(tmp_path_factory.mktemp("many") / "runs", 300, photo_files=None)
    return run.metrics("test")


def test_the_per_person_chart_shows_the_ends_of_the_ranking(many):
    frame = figures.ranked(figures.per_class_frame(many), "f1")
    chart = figures.per_class_figure(many, "f1")
    shown = list(chart.data[0].x)
    ends = figures.AT_EACH_END
    assert shown == list(frame["celebrity"].head(ends)) + list(frame["celebrity"].tail(ends))
    assert all(list(trace.x) == shown for trace in chart.data)
    words = figures.people_shown(many, "f1").note
    assert words == (
        f"The {ends} strongest and the {ends} weakest of 300 people by F1; "
        "find anyone else by name."
    )
    assert any(
        f"{300 - 2 * ends} people between" in (a.text or "") for a in chart.layout.annotations
    )
    fewest = figures.per_class_figure(many, "support")
    assert len(fewest.data[0].x) == 2 * ends


def test_the_per_person_search_finds_people_and_stays_readable(many):
    name = many["labels"][7].split("_")[0]  # a first name: several people share it
    chart = figures.per_class_figure(many, "f1", f"  {name.upper()} ")
    found = list(chart.data[0].x)
    assert found and all(name.casefold() in person.casefold() for person in found)
    holders = [label for label in many["labels"] if name.casefold() in label.casefold()]
    assert len(found) == min(len(holders), figures.READABLE)
    note = figures.people_shown(many, "f1", name).note
    assert note.startswith(f"{len(holders)} of 300 people match “{name}”")
    broad = figures.people_shown(many, "recall", "a")  # most names hold an a
    assert len(broad.frame) == figures.READABLE
    assert "the first 40 by recall are shown; refine the search" in broad.note
    assert figures.people_shown(many, "f1", "no such person").frame.empty


def test_up_to_forty_people_every_one_is_charted():
    labels = [f"Person_{i:02d}" for i in range(figures.READABLE)]
    metrics = compute_metrics(np.arange(40), np.eye(40), labels)
    shown = figures.people_shown(metrics)
    assert len(shown.frame) == 40 and shown.note == "" and shown.gap is None
    assert len(figures.per_class_figure(metrics).data[0].x) == 40


# Confusion: the most confused pairs ------------------------------------------------------------


def test_the_most_confused_pairs_come_from_the_mistakes_only():
    labels = ["Ann_A", "Bob_B", "Cy_C"]
    # true Ann: 3 right, 2 as Bob; true Bob: 4 right, 1 as Cy; true Cy: 1 right, 2 as Ann
    counts = np.array([[3, 2, 0], [0, 4, 1], [2, 0, 1]])
    metrics = {"labels": labels, "confusion_matrix": counts.tolist()}
    pairs = figures.confused_pairs(metrics)
    assert pairs[["true", "predicted", "photos"]].values.tolist() == [
        ["Cy_C", "Ann_A", 2],
        ["Ann_A", "Bob_B", 2],
        ["Bob_B", "Cy_C", 1],
    ]
    assert pairs["share"].tolist() == pytest.approx([2 / 3, 2 / 5, 1 / 5])
    assert figures.largest_confusion(metrics) == ("Cy_C", "Ann_A")
    chart = figures.confused_pairs_figure(pairs)
    assert list(chart.data[0].y) == ["Cy C → Ann A", "Ann A → Bob B", "Bob B → Cy C"]
    assert [list(c[:2]) for c in chart.data[0].customdata] == pairs[
        ["true", "predicted"]
    ].values.tolist()
    sparse = {
        "labels": labels,
        "confusion_cells": [[0, 0, 3], [0, 1, 2], [1, 1, 4], [1, 2, 1], [2, 0, 2], [2, 2, 1]],
    }
    assert figures.confused_pairs(sparse).equals(pairs)


# Strangers: an even control, the threshold in force, a chart that survives separation -------


def test_the_threshold_chart_shows_a_perfect_separation_on_the_headline_scale():
    from celebmodel.scoring.open_set import similarity, threshold_scale

    known, strangers = np.array([0.21, 0.25, 0.3]), np.array([0.8, 0.9])
    scale = threshold_scale({"threshold": 0.5})  # calibrated before stranger scores: similarity
    assert scale.name == "similarity"
    low, high = figures.share_range(known, strangers, 0.5, scale)
    assert (low, high) == (round(similarity(0.9) - 0.0015, 3), round(similarity(0.21), 3))
    chart = figures.threshold_figure(known, strangers, 0.5, scale, similarity(0.6))
    assert chart.layout.xaxis.title.text.startswith("similarity needed")
    assert tuple(chart.layout.xaxis.range) == (low, high)
    for trace in chart.data:  # between the two sets nobody is wrong: the gap shows
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        gap = (x > similarity(0.8)) & (x < similarity(0.3))
        assert gap.any() and (y[gap] == 0).all()
        assert y.max() == 1  # and each rate reaches 100% at its end
    marks = [a.text for a in chart.layout.annotations]
    assert marks == [f"in force {similarity(0.5):.1%}", f"considered {similarity(0.6):.1%}"]


def test_the_match_confidence_scale_goes_both_ways():
    """A trained run's threshold as the match confidence it needs, and back: the share asked
    for is reached, by the loosest threshold that reaches it."""
    from celebmodel.scoring.open_set import threshold_scale

    strangers = np.linspace(0.5, 1.5, 40)  # distances of strangers to their nearest person
    scale = threshold_scale({"threshold": 0.6, "stranger_scores": strangers.tolist()})
    assert scale.name == "match confidence"
    for share in (0.5, 0.9, 0.97):
        threshold = scale.score(share)
        assert scale.shown(threshold) >= share
        assert scale.shown(threshold + 1e-6) < share  # any looser would fall short
    # closer than every stranger: the tail fitted past them keeps the number rising
    assert scale.shown(0.4) > scale.shown(0.45) > 1 - 1 / 40
    assert scale.score(0.99999) < 0.5
    assert scale.shown(scale.score(0.99999)) == pytest.approx(0.99999)


def test_the_strangers_tab_shows_progress_an_even_threshold_and_the_one_in_force(
    folders, tmp_path, monkeypatch
):
    runs, _ = folders
    run = generated_run(runs, 12, model="head", photo_files=None)
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    bars = []

    def scores(run, folder, subset="test", bar=quiet_bar):
        with bar(desc="faces", total=2, unit="photo") as progress:
            progress.update(2)
        bars.append(bar)
        return OpenSetScores(np.array([0.21, 0.25, 0.3]), np.array([0.8, 0.9]), 0.5, 2)

    monkeypatch.setattr("celebmodel.learning.evaluation.open_set_scores", scores)
    at = open_tab(open_page(app(), "pages/evaluate.py"), "Strangers")
    at.text_input(key="strangers-folder").set_value(str(strangers))
    open_page(at)
    assert len(bars) == 1 and bars[0] is not quiet_bar  # the page showed the test's progress
    from celebmodel.scoring.open_set import similarity

    before = run.read_json("calibration.json")["threshold"]
    slider = at.slider(key=f"strangers-threshold-{run.name}")
    assert slider.label == "Similarity needed to name a face (%)"  # a run with no strangers
    assert slider.proto.format == "%.1f%%" and slider.step == pytest.approx(0.1)
    assert slider.value == pytest.approx(round(similarity(before), 3) * 100)
    slider.set_value(round(similarity(0.5) * 100, 1))
    open_page(at)
    assert (f"Needing {similarity(0.5):.1%}: 0.0% of strangers accepted, 0.0% of known faces "
            "rejected.") in texts(at)
    at.button(key="set-threshold").click()
    open_page(at)
    assert run.read_json("calibration.json")["threshold"] == pytest.approx(0.5, abs=2e-3)
    assert f"{run.title} now calls a face unknown below similarity" in texts(at)
    assert f"In force now: {similarity(0.5):.1%}" in texts(at)
    assert not [b for b in at.button if b.key == "set-threshold"]  # nothing left to apply
    (chart,) = charts(at)
    assert [a["text"] for a in chart["layout"]["annotations"]] == [
        f"in force {similarity(0.5):.1%}"]
    assert len(bars) == 1  # the scores were kept, not computed again


def test_the_strangers_test_reports_each_stage(dlib_run, tmp_path):
    """What the tab's progress bar shows: the faces of the known test photos, then of the
    strangers' photos, then the network scoring both sets."""
    from conftest import make_dataset

    from celebmodel.learning.evaluation import open_set_scores

    strangers = make_dataset(tmp_path / "strangers", per_class=2, seed=5)
    stages = []

    def bar(**options):
        stages.append((options["desc"], options["total"]))
        return quiet_bar(**options)

    scores = open_set_scores(dlib_run, strangers, bar=bar)
    known = (dlib_run.split()["subset"] == "test").sum()
    assert stages == [("faces", known), ("faces", 6), ("evaluating", 2)]
    assert scores.n_stranger_photos == 6 and len(scores.known) == known


def test_a_stage_bar_on_a_page_says_which_stage():
    from pages import ui

    class Progress:
        def progress(self, fraction, text):
            self.shown = (fraction, text)

    shown = Progress()
    with ui.streamlit_bar(shown)(desc="faces", total=4, unit="photo") as bar:
        bar.update(1)
        bar.refresh()
    assert shown.shown[0] == 0.25 and shown.shown[1].startswith("Finding faces · 1 of 4 photos")


# The page at scale ---------------------------------------------------------------------------


def tab_weights(runs_folder, people) -> dict[str, int]:
    """Bytes of chart each tab of Evaluate sends, for a generated run of ``people``."""
    run = generated_run(runs_folder, people, model="head", photo_files=None, name=f"r{people}")
    at = open_page(app(), "pages/evaluate.py")
    at.selectbox(key="evaluate_run").set_value(run.name)
    open_page(at)
    weights = {}
    for tab in ("Per person", "Confusion"):
        weights[tab] = sum(
            chart.proto.ByteSize() for chart in open_tab(at, tab).get("plotly_chart")
        )
    return weights


def test_nothing_on_the_page_grows_with_the_square_of_the_people(folders):
    runs, _ = folders
    few, many = tab_weights(runs, 60), tab_weights(runs, 240)  # 16 times the cells
    for tab in few:
        assert many[tab] < 1.5 * few[tab], (tab, few[tab], many[tab])


def test_a_run_without_metrics_says_so_and_keeps_what_still_works(folders):
    runs, _ = folders
    run = generated_run(runs, 12, model="head", photo_files=None)
    run.file("metrics_val.json").unlink()
    at = open_page(app(), "pages/evaluate.py")
    at.radio(key="subset").set_value("val")
    open_page(at)
    assert "no metrics for these photos (metrics_val.json missing or empty)" in texts(at)
    assert f"python -m celebmodel evaluate {run.path} --subset all" in texts(at)
    for subset in ("train", "val", "test"):
        run.file(f"metrics_{subset}.json").unlink(missing_ok=True)
    open_page(at)
    assert f"{run.title} has no metrics: it was never evaluated" in texts(at)
    assert [tab.label for tab in at.tabs] == ["Strangers", "Downloads"]
    assert not at.metric
    labels = [button.label for button in open_tab(at, "Downloads").get("download_button")]
    assert labels[0].startswith("Model file") and "Metrics (CSV)" not in labels


@pytest.mark.slow
def test_evaluate_of_2000_people_draws_every_tab_within_a_bound(folders):
    """Each tab of a 2,000-person run within 20 s of script time on 2 shared cores (the
    bench, ``bench/evaluate_speed.py``, measures the browser against 3 s)."""
    runs, _ = folders
    run = generated_run(runs, 2000, model="head")
    started = time.perf_counter()
    at = open_page(app(), "pages/evaluate.py")
    times = {"open": time.perf_counter() - started}
    (per_person,) = charts(at)
    assert len(per_person["data"][0]["x"]) == 2 * figures.AT_EACH_END
    assert "of 2,000 people by F1" in texts(at)
    for tab in ("Confusion", "Overfitting", "Mistakes", "Strangers", "Downloads", "Per person"):
        started = time.perf_counter()
        open_tab(at, tab)
        times[tab] = time.perf_counter() - started
        if tab == "Confusion":
            (pairs,) = charts(at)
            assert pairs["data"][0]["orientation"] == "h"
            assert len(pairs["data"][0]["y"]) == figures.TOP_PAIRS
            assert "2,000 people are too many for a matrix" in texts(at)
            true, predicted = figures.largest_confusion(run.metrics("test"))
            assert at.selectbox(key="cell-true").value == true
            assert len(at.get("image")) == len(cell_photos(run, "test", true, predicted))
        if tab == "Mistakes":
            assert len(at.get("image")) >= 12
    assert max(times.values()) < 20, times
    at.text_input(key="find-person").set_value("maya")
    open_page(at)
    (found,) = charts(at)
    assert found["data"][0]["x"] and all("Maya" in name for name in found["data"][0]["x"])
    assert all("Maya" in name for name in at.dataframe[0].value["celebrity"])


# The runs table ------------------------------------------------------------------------------


def test_the_runs_table_reads_a_run_s_results_once_per_version(folders, monkeypatch):
    runs, _ = folders
    run = generated_run(runs, 12, photo_files=None)
    reads = []
    real = Run.metrics
    monkeypatch.setattr(
        Run, "metrics", lambda self, subset="test": reads.append(subset) or real(self, subset)
    )
    first = runs_table(runs)
    assert first.loc[0, "test_accuracy"] == run.metrics("test")["accuracy"] and reads
    reads.clear()
    assert runs_table(runs).equals(first) and not reads  # nothing re-read on a rerun
    metrics = {**run.metrics("test"), "accuracy": 0.123}
    run.file("metrics_test.json").write_text(json.dumps(metrics))
    assert runs_table(runs).loc[0, "test_accuracy"] == 0.123


def test_a_run_without_a_single_mistake_says_so_on_the_confusion_tab(folders):
    """Beyond a matrix's size a run whose test photos all went to their person (a real
    158-person LFW run) says so; the tab raised a numpy error adding to an empty table."""
    runs, _ = folders
    run = generated_run(runs, 60, noise=(0.001, 0.002), model="head")
    assert run.metrics("test")["accuracy"] == 1.0
    at = open_page(app(), "pages/evaluate.py")
    open_tab(at, "Confusion")
    assert "No one was taken for anyone else on these photos" in texts(at)
    assert not charts(at) and not at.error
