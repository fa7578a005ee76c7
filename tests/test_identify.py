"""Identify that explains itself: the similarity scale and its presets, evidence for every
face, people managed, whole folders identified and their unknown faces grouped.

Faces are scikit-image's astronaut (the person the model knows) and cameraman (a stranger);
nothing here reads ``../shared``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    add_run,
    app,
    astronauts,
    cameramen,
    fill_disk_at,
    group_key,
    open_page,
    zip_bytes,
)
from PIL import Image
from skimage import data as skdata

from celebmodel import storage
from celebmodel.errors import RunError
from celebmodel.recognition import people
from celebmodel.recognition.recognize import Recognizer
from celebmodel.reports import display
from celebmodel.runs.run import Run
from celebmodel.scoring.open_set import (
    l2_normalize,
    presets,
    score_for,
    similarity,
    stranger_scores,
    threshold_for,
)

# --------------------------------------------------------------------------------------------
# the similarity scale


def test_similarity_is_a_monotonic_rescaling_of_the_score_with_an_exact_inverse():
    scores = np.array([0.0, 0.3, 0.6, 1.0, np.sqrt(2), 3.0])
    values = similarity(scores)
    assert values == pytest.approx([1.0, 0.955, 0.82, 0.5, 0.0, 0.0])
    assert all(np.diff(values) <= 0)  # a higher score is never more similar
    for score in (0.0, 0.25, 0.5, 1.2):
        assert score_for(similarity(score)) == pytest.approx(score)
    # for a confident prediction the score is the distance d to the person's mean face, and
    # the similarity is the cosine between the two unit vectors: 1 - d^2 / 2
    a, b = np.array([1.0, 0.0]), np.array([np.cos(0.7), np.sin(0.7)])
    assert similarity(np.linalg.norm(a - b)) == pytest.approx(np.cos(0.7))


def test_presets_say_what_they_accept_on_the_validation_faces():
    scores = np.linspace(0.1, 1.0, 100)  # validation faces of known people
    balanced = float(np.quantile(scores, 0.95, method="higher"))  # what calibrate() picks
    calibration = {"threshold": balanced, "target_accept": 0.95, "val_scores": scores.tolist()}
    found = presets(calibration)
    assert list(found) == ["Strict", "Balanced", "Lenient"]
    assert found["Balanced"]["threshold"] == balanced  # the calibrated value, unchanged
    # the "higher" quantile: the smallest observed score accepting at least that share
    assert found["Strict"]["known_named"] == pytest.approx(0.91)
    assert found["Lenient"]["known_named"] == pytest.approx(1.0)
    assert (
        found["Strict"]["threshold"]
        < found["Balanced"]["threshold"]
        < found["Lenient"]["threshold"]
    )
    assert found["Strict"]["similarity"] > found["Lenient"]["similarity"]
    # no stranger scores kept: what a preset does to strangers is not claimed
    assert found["Balanced"]["strangers_named"] is None
    assert found["Balanced"]["match_confidence"] is None
    assert list(presets({"threshold": 0.6, "target_accept": 0.95})) == ["Balanced"]  # old runs


def test_presets_of_a_trained_run_say_how_many_strangers_each_names():
    known = np.linspace(0.1, 1.0, 100)
    strangers = np.linspace(0.5, 2.0, 200)  # known faces scored with their person left out
    calibration = {
        "threshold": 0.9,
        "val_scores": known.tolist(),
        "stranger_scores": strangers.tolist(),
    }
    found = presets(calibration)
    for option in found.values():  # by hand: strangers at or under the threshold
        named = max(int(np.sum(strangers <= option["threshold"])), 0.5) / len(strangers)
        assert option["strangers_named"] == pytest.approx(named)
        assert option["match_confidence"] == pytest.approx(1 - named)
    assert found["Strict"]["strangers_named"] < found["Lenient"]["strangers_named"]
    # the threshold a confidence asks for names exactly that share of strangers
    wanted = threshold_for(calibration, 0.9)
    assert np.mean(strangers <= wanted) == pytest.approx(0.1, abs=1 / len(strangers))


def test_presets_beyond_every_measured_stranger_say_so_and_confidence_still_decides():
    """A small trained run whose strangers all score far: every preset names none of them, and
    the words say so; past the last stranger match confidence follows the fitted tail, so each
    preset still asks for its own confidence and the face's line reads on that scale."""
    from types import SimpleNamespace

    from celebmodel.scoring.matching import Confidence

    known = np.linspace(0.1, 0.6, 48)
    strangers = np.linspace(1.0, 2.0, 48)
    found = presets(
        {"threshold": 0.5, "val_scores": known.tolist(), "stranger_scores": strangers.tolist()}
    )
    words = [display.preset_words(name, option) for name, option in found.items()]
    assert all("none of the 48 strangers measured" in w for w in words), words
    assert len({w.split(",")[0] for w in words}) == 3  # they differ in the known faces named
    confidence = Confidence(np.sort(-strangers))
    recognizer = SimpleNamespace(
        strangers=confidence, match_confidence=lambda score: confidence(-np.asarray(score))
    )
    face = {
        "known": True,
        "match_confidence": float(confidence(-0.2)),
        "similarity": 0.95,
        "nearest_name": None,
    }
    lines = {
        name: display.face_details(face, recognizer, option["threshold"])
        for name, option in found.items()
    }
    assert all(line.startswith("match confidence ") for line in lines.values()), lines
    assert len(set(lines.values())) == 3  # each preset's own need
    needs = [display.needs_words(recognizer, o["threshold"]) for o in found.values()]
    assert all(n.startswith("match confidence at least") for n in needs)
    assert len(set(needs)) == 3, needs


def test_a_known_face_scored_without_its_person_is_a_stranger():
    centroids = l2_normalize(np.eye(3, 4))
    embeddings = centroids.copy()  # each face exactly on its own person's centroid
    probabilities = np.array([[0.9, 0.08, 0.02], [0.05, 0.9, 0.05], [0.01, 0.09, 0.9]])
    found = stranger_scores(embeddings, probabilities, centroids, np.array([0, 1, 2]))
    # with its own class masked, each face is judged against the runner-up's centroid:
    # distance sqrt(2) (orthogonal) times 2 - p of the renormalised runner-up
    p = np.array([0.8, 0.5, 0.9])
    assert found == pytest.approx(np.sort(np.sqrt(2) * (2 - p)))


# --------------------------------------------------------------------------------------------
# a model that knows the astronaut (and a cat), for which the cameraman is a stranger


@pytest.fixture
def run(astro, folders) -> Run:
    runs, _ = folders
    return add_run(runs, astro, "20250101-000000-dlib128")


@pytest.mark.slow
def test_evidence_names_the_training_photos_the_face_resembles(run):
    from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(run)
    photo = Path(run.config_dict()["data_dir"]) / "Astronaut" / "0.jpg"
    (face,), embeddings = recognizer.analyse(photo)
    assert face["known"] and face["label"] == "Astronaut" and face["name"] == "Astronaut"
    assert face["similarity"] == pytest.approx(similarity(face["score"]))
    same = [e for e in face["evidence"] if not e["runner_up"]]
    other = [e for e in face["evidence"] if e["runner_up"]]
    assert len(same) == 3 and len(other) == 1
    assert same[0]["path"] == "Astronaut/0.jpg" and same[0]["similarity"] > 0.999  # itself
    assert all(e["path"].startswith("Astronaut/") for e in same)
    assert other[0]["label"] == "Cat" and other[0]["path"].startswith("Cat/")
    gallery, labels = run.gallery()
    paths = run.gallery_paths()
    cosine = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)) @ embeddings[0]
    mine = np.flatnonzero(labels == 0)
    best = mine[np.argsort(-cosine[mine])][:3]
    assert [paths[i] for i in best] == [e["path"] for e in same]
    assert [e["similarity"] for e in same] == pytest.approx(cosine[best], abs=1e-4)


@pytest.mark.slow
def test_people_rename_add_remove_restore_and_every_page_sees_it(run, tmp_path):
    from celebmodel.recognition.recognize import Recognizer

    stranger = np.stack([skdata.camera()] * 3, axis=-1)
    assert not Recognizer.from_run(run).identify(stranger)[0]["known"]
    trained_faces = len(run.gallery_paths())

    people.rename(run, "Astronaut", "Buzz Aldrin")
    twins = []
    for i, photo in enumerate(astronauts(3, seed=5, mirrored=True)):
        photo.save(tmp_path / f"twin{i}.jpg")
        twins.append(tmp_path / f"twin{i}.jpg")
    cams = []
    for i, photo in enumerate(cameramen(4, seed=2)):
        photo.save(tmp_path / f"cam{i}.png")
        cams.append(tmp_path / f"cam{i}.png")
    report = people.enroll(run, "Camera Man", cams, keep_faces=True)
    assert report["name"] == "Camera_Man" and report["n_photos"] == 4
    kept = sorted((run.path / "faces" / "Camera_Man").glob("*.png"))
    assert len(kept) == 4 and Image.open(kept[0]).size == (150, 150)
    more = people.enroll(run, "Camera Man", cams[:2])  # photos of someone the run knows
    assert more["name"] == "Camera_Man" and run.labels() == ["Astronaut", "Cat", "Camera_Man"]
    roster = people.roster(run).set_index("label")
    assert roster.loc["Camera_Man", "photos"] == 6 and roster.loc["Camera_Man", "kind"] == "added"
    assert roster.loc["Astronaut", "name"] == "Buzz Aldrin"
    assert roster.loc["Camera_Man", "face"] == "added:faces/Camera_Man/0000.png"

    face = Recognizer.from_run(run).identify(stranger)[0]
    assert face["known"] and (face["label"], face["name"]) == ("Camera_Man", "Camera Man")
    assert face["evidence"][0]["path"].startswith("added:")

    people.remove(run, "Cat")  # a trained person: masked, recorded
    assert people.removed(run) == {"Cat"}
    masked = Recognizer.from_run(run)
    assert "Cat" not in [t["label"] for f in masked.identify(stranger) for t in f["top_k"]]
    people.restore(run, "Cat")
    assert people.removed(run) == set()

    people.remove(run, "Camera_Man")  # added later: deleted from gallery, head and disk
    assert run.labels() == ["Astronaut", "Cat"]
    assert int((run.gallery()[1] == 2).sum()) == 0 and len(run.gallery_paths()) == trained_faces
    assert not (run.path / "faces" / "Camera_Man").exists()
    assert not Recognizer.from_run(run).identify(stranger)[0]["known"]
    with pytest.raises(RunError, match="at least two people"):
        people.remove(run, "Cat")
    actions = [entry["action"] for entry in people.people_file(run)["history"]]
    assert actions == ["rename", "remove", "restore", "remove"]


def test_the_people_verbs_on_the_command_line(run, tmp_path, capsys):
    from celebmodel.interfaces.cli import main

    for i, photo in enumerate(cameramen(3, seed=3)):
        photo.save(tmp_path / f"cam{i}.png")
    cams = [str(tmp_path / f"cam{i}.png") for i in range(3)]
    assert main(["people", str(run.path), "add", "Camera_Man", *cams]) == 0
    assert "added 3 photo(s) of Camera_Man" in capsys.readouterr().out
    assert main(["people", str(run.path), "rename", "Astronaut", "Buzz Aldrin"]) == 0
    assert main(["people", str(run.path), "remove", "Cat"]) == 0
    capsys.readouterr()
    assert main(["people", str(run.path), "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in listed[1:]}
    assert "Buzz Aldrin" in row["Astronaut"] and "trained" in row["Astronaut"]
    assert "removed" in row["Cat"] and "added" in row["Camera_Man"]
    assert main(["people", str(run.path), "restore", "Cat"]) == 0
    assert people.removed(run) == set()
    assert main(["people", str(run.path), "remove", "Nobody"]) == 1
    assert "Nobody" in capsys.readouterr().err


@pytest.mark.slow
def test_a_people_change_that_fails_while_saving_leaves_the_run_as_it_was(
    run, tmp_path, monkeypatch
):
    cams = []
    for i, photo in enumerate(cameramen(2, seed=3)):
        photo.save(tmp_path / f"cam{i}.png")
        cams.append(tmp_path / f"cam{i}.png")
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    fill_disk_at(monkeypatch, storage)
    with pytest.raises(OSError, match="No space left"):
        people.enroll(run, "Camera Man", cams, keep_faces=True)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    assert after == before  # gallery and labels, renamed before the model failed, put back
    assert not list((run.path / "faces").rglob("*.png"))  # no kept face of a failed change


# --------------------------------------------------------------------------------------------
# whole folders, from the command line and on the page


@pytest.mark.slow
def test_predict_a_folder_to_csv_with_groups_and_a_broken_file(run, tmp_path, capsys):
    from celebmodel.interfaces.cli import main

    folder = tmp_path / "album" / "nested"
    folder.mkdir(parents=True)
    for i, photo in enumerate(cameramen(3, seed=1, turn=2, light=0.05)):
        photo.save(folder / f"cam{i}.png")
    astronauts(1, seed=9)[0].save(tmp_path / "album" / "astro.jpg")
    (folder / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "faces.csv"
    code = main(["predict", str(run.path), str(tmp_path / "album"), "--csv", str(out), "--group"])
    err = capsys.readouterr().err
    assert code == 0
    assert f"error: {folder / 'broken.jpg'}: not an image" in err
    rows = pd.read_csv(out, keep_default_na=False)
    assert list(rows.columns) == [
        "photo",
        "face",
        "box",
        "label",
        "nearest",
        "match_confidence",
        "similarity",
        "known",
        "group",
    ]
    astro = rows[rows["photo"] == str(tmp_path / "album" / "astro.jpg")]
    (buzz,) = astro[astro["label"] == "Astronaut"].itertuples()
    assert buzz.known and buzz.group == "" and buzz.nearest == "Astronaut"
    # the headline number: how rarely strangers score as high, known faces above the rest
    assert 0 < float(buzz.match_confidence) <= 1
    cams_confidence = rows[rows["photo"].str.contains("cam")]["match_confidence"].astype(float)
    assert (cams_confidence < float(buzz.match_confidence)).all()
    cams = rows[rows["photo"].str.contains("cam")]
    grouped = cams[cams["group"] == "1"]
    assert not grouped["known"].any() and set(grouped["label"]) == {"unknown"}
    assert sorted(grouped["photo"]) == sorted(str(folder / f"cam{i}.png") for i in range(3))
    assert all(len(str(box).split()) == 4 for box in rows["box"])
    assert rows["similarity"].between(0, 1).all()


def test_album_thumbnails_follow_the_rows_and_open_each_photo_once(run, monkeypatch):
    from celebmodel.albums.album import identify_album
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.reports import display

    pixels = {
        "astro.png": np.asarray(astronauts(1, seed=8)[0]),
        "cam.png": np.asarray(cameramen(1, seed=6)[0]),
    }
    photos = [("astro.png", pixels["astro.png"]), ("broken.jpg", b"not a photo")]
    photos += [("cam.png", pixels["cam.png"]), ("blank.png", np.zeros((64, 64, 3), np.uint8))]
    album = identify_album(Recognizer.from_run(run.path), photos)
    opened = []
    real = display.load_image
    monkeypatch.setattr(
        display, "load_image", lambda source, name: opened.append(name) or real(source, name=name)
    )
    thumbs = display.album_thumbnails(album, photos)
    assert opened == ["astro.png", "cam.png"]  # once each; no face or unreadable: not opened
    assert len(thumbs) == len(album.rows) == 2
    for thumb, (name, box) in zip(thumbs, album.rows[["photo", "box"]].values, strict=True):
        expected = display.thumbnail(display.face_crop(pixels[name], box), 64)
        assert np.array_equal(np.asarray(thumb), np.asarray(expected))


@pytest.mark.slow
def test_an_album_zip_is_grouped_and_a_group_is_named_in_one_step(run):
    photos = {f"trip/cam{i}.png": p for i, p in enumerate(cameramen(3, 1, turn=2, light=0.05))}
    photos["trip/astro.png"] = astronauts(1, seed=8)[0]
    photos["trip/broken.jpg"] = b"not a photo"
    at = open_page(app(), "pages/identify.py")
    at.radio(key="source").set_value("zip")
    open_page(at)
    at.file_uploader(key="album-zip").set_value(("trip.zip", zip_bytes(photos), "application/zip"))
    open_page(at)
    table = next(d.value for d in at.dataframe if "thumbnail" in d.value.columns)
    assert len(table) == 4 and sorted(table["name"]) == [
        "Astronaut",
        "Unknown",
        "Unknown",
        "Unknown",
    ]
    assert {m.label: m.value for m in at.metric}["Groups of unknown faces"] == "1"
    assert any(e.value.startswith("trip/broken.jpg: not an image") for e in at.error), [
        e.value for e in at.error
    ]
    at.text_input(key=group_key(at, "name", 1)).set_value("Ada Lovelace")
    at.button(key=group_key(at, "add", 1)).click()
    open_page(at)
    assert run.labels()[-1] == "Ada_Lovelace"
    assert people.names(run)["Ada_Lovelace"] == "Ada Lovelace"
    open_page(at)
    table = next(d.value for d in at.dataframe if "thumbnail" in d.value.columns)
    cams = table[table["photo"].str.contains("cam")]
    assert list(cams["closest"]) == ["Ada Lovelace"] * 3  # the new person, at once
    assert (cams["name"] == "Ada Lovelace").sum() >= 2  # named where the threshold allows


def test_percentages_read_the_way_the_decision_went():
    # 91.99% against 92%: shown with the decimals that tell them apart, never "92% (needs 92%)"
    assert display.percent_pair(0.9199, 0.92, reached=False) == ("91.99%", "92.00%")
    assert display.percent_pair(0.95, 0.92, reached=True) == ("95%", "92%")
    assert display.percent_pair(0.92, 0.92, reached=True) == ("92%", "92%")  # reached exactly
    value, needed = display.percent_pair(0.99995, 0.99996, reached=False)
    assert float(value.rstrip("%")) < float(needed.rstrip("%"))


@pytest.mark.slow
def test_an_unknown_face_names_its_real_closest_person_and_the_presets_say_what_they_change(
    run,
):
    recognizer = Recognizer.from_run(run)
    stranger = np.stack([skdata.camera()] * 3, axis=-1)
    (face,) = [f for f in recognizer.identify(stranger) if not f["known"]][:1]
    assert face["name"] is None and face["label"] == "unknown"
    same = [e for e in face["evidence"] if not e["runner_up"]]
    other = [e for e in face["evidence"] if e["runner_up"]]
    # the closest person shown is the one whose gallery face is closest to the face
    assert same[0]["label"] == face["nearest"] and same[0]["name"] == face["nearest_name"]
    assert not other or same[0]["similarity"] >= other[0]["similarity"]
    options = presets(run.read_json("calibration.json"))
    words = display.preset_effect([face], recognizer, options)
    named = {n: recognizer.is_known(face["score"], o["threshold"]) for n, o in options.items()}
    if len(set(named.values())) == 1:
        assert words == "Every preset gives the same answers on this face."
    else:
        assert words.startswith("Faces named under each preset here:")


def test_a_small_photo_is_shown_at_its_own_size_with_numbers_on_its_faces():
    """A 112-pixel photo enlarged would only blur: it is shown as it is, each face boxed and
    numbered (its name is on the card under the photo, not over the face)."""
    import io

    small = np.full((112, 96, 3), 120, np.uint8)
    image, scale = display.display_copy(small)
    assert image.size == (96, 112) and scale == 1.0
    face = {"box": [20, 30, 50, 60], "known": True, "name": "A Rather Long Name Indeed",
            "label": "x"}
    numbered = display.annotate(small, [face])
    assert numbered.size == (96, 112)
    painted = np.asarray(numbered)[30:90, 20:70] != 120
    assert painted.any(axis=2).mean() < 0.5  # the face still shows: no name across it
    big = np.full((600, 800, 3), 120, np.uint8)
    labelled = np.asarray(display.annotate(big, [{**face, "box": [200, 200, 200, 240]}]))
    assert (labelled[200:440, 200:400] != 120).any(axis=2).mean() > 0.02  # the name, drawn
    assert Image.open(io.BytesIO(display.jpeg(numbered))).size == (96, 112)
