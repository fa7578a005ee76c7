"""The built-in public-figures model (issue 18): built by a command from an LFW-style tree,
shipped as numbers and names, named out of the box, read-only with a copy to change, its
protocol, and the numbers beside a face. Nothing here reads LFW or ``../shared``: the tree is
made by the tests (:func:`conftest.tiny_lfw`)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import (
    SHIPPED_BUILTIN,
    add_run,
    app,
    astronauts,
    cameramen,
    group_key,
    jpeg,
    open_page,
    texts,
    tiny_lfw,
    write_names,
)

from celebmodel.errors import DatasetError, RunError
from celebmodel.interfaces.cli import main
from celebmodel.recognition import people
from celebmodel.recognition.public_figures import lfw_photos
from celebmodel.reports import display
from celebmodel.reports.run_report import summary
from celebmodel.runs import builtin as builtin_model
from celebmodel.runs.run import BUILTIN, Run, active_run, choose_run, copy_run, load_run
from celebmodel.scoring.open_set import presets
from celebmodel.scoring.protocol import identification, make_trial, run_protocol, verification

# Building ------------------------------------------------------------------------------------


def test_an_incomplete_lfw_folder_is_named_and_nothing_is_written(tmp_path, capsys):
    people = tiny_lfw(tmp_path / "lfw")
    names = write_names({**people, "Ghost_Person": 2}, tmp_path / "names.txt")
    (tmp_path / "lfw" / "Chelsea_Cat" / "Chelsea_Cat_0002.jpg").unlink()
    (tmp_path / "lfw" / "Not_In_Lfw").mkdir()
    out = tmp_path / "model"
    code = main(["build-lfw-model", str(tmp_path / "lfw"), "--out", str(out), "--names",
                 str(names)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert "nothing was built" in err
    for named in ("Ghost_Person", "Chelsea_Cat/Chelsea_Cat_0002.jpg", "Not_In_Lfw"):
        assert named in err
    # people known to be missing from a copy can be stated, and are then left out
    (tmp_path / "lfw" / "Not_In_Lfw").rmdir()
    shutil.copy(tmp_path / "lfw" / "Chelsea_Cat" / "Chelsea_Cat_0001.jpg",
                tmp_path / "lfw" / "Chelsea_Cat" / "Chelsea_Cat_0002.jpg")
    photos = lfw_photos(tmp_path / "lfw", ("Ghost_Person",), {**people, "Ghost_Person": 2})
    assert len(photos) == sum(people.values())
    with pytest.raises(DatasetError, match="Nobody not in LFW's list"):
        lfw_photos(tmp_path / "lfw", ("Nobody",), people)


@pytest.mark.slow
def test_the_build_writes_numbers_and_names_only_and_a_rebuild_gives_the_same_files(
    tiny_builtin_files, tmp_path, monkeypatch
):
    built = tiny_builtin_files
    files = sorted(p.name for p in built.iterdir())
    assert files == sorted([*builtin_model.FILES, "provenance.json"])
    assert not [p for p in built.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".jpeg"}]
    provenance = json.loads((built / "provenance.json").read_text())
    assert provenance["source"]["people"] == 7 and provenance["source"]["photos_with_a_face"] == 18
    assert "for research" in provenance["licence"] and provenance["command"].startswith(
        "celebmodel build-lfw-model lfw"
    )
    with np.load(built / "gallery.npz") as gallery:
        faces = gallery["embeddings"]
        assert faces.dtype == np.float16 and faces.shape == (18, 512)  # mbf512, the default
        assert "Astro_Naut/Astro_Naut_0001.jpg" in list(gallery["paths"])
    # the same tree, elsewhere, with the date fixed: byte for byte the same model
    tree = tmp_path / "lfw"
    names = write_names(tiny_lfw(tree), tmp_path / "names.txt")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    again, once_more = tmp_path / "again", tmp_path / "once-more"
    for out in (again, once_more):
        assert main(["build-lfw-model", str(tree), "--out", str(out), "--names", str(names)]) == 0
    for name in files:
        assert (again / name).read_bytes() == (once_more / name).read_bytes(), name
    for name in builtin_model.FILES:  # the session's build: only the date differs
        assert (again / name).read_bytes() == (built / name).read_bytes(), name


def test_the_shipped_model_is_whole_and_holds_no_photo():
    shipped = SHIPPED_BUILTIN / builtin_model.NAME
    assert builtin_model.verify(shipped) == shipped
    provenance = builtin_model.provenance(shipped)
    source = provenance["source"]
    assert source["people"] >= 5700 and source["photos_with_a_face"] >= 13000
    assert sum(p.stat().st_size for p in shipped.iterdir()) < 15 * 1024**2
    assert not [p for p in shipped.rglob("*") if p.suffix.lower() in {".jpg", ".png"}]
    protocol = json.loads((shipped / "protocol.json").read_text())
    figures, baseline = protocol["figures"], protocol["baseline"]
    assert figures["dir_far_1"]["mean_minus_sd"] >= 0.98  # issue 25's targets, as shipped
    assert figures["tar_far_0.1"]["mean_minus_sd"] >= 0.99
    assert baseline["dir_far_1"]["mean_minus_sd"] >= 0.97  # plain cosine on its embeddings
    assert len(figures["rank1"]["trials"]) == 10
    assert provenance["network"]["name"] == "mbf512" and "non-commercial" in provenance[
        "network"]["licence"]
    errors = provenance["label_errors"]  # LFW's own: the same photo under two names, ...
    same = ["Bart_Hendricks/Bart_Hendricks_0001.jpg", "Ricky_Ray/Ricky_Ray_0001.jpg"]
    assert same in [pair[:2] for pair in errors["same_photo_two_names"]]
    assert ["Choi_Sung-hong", "Sung_Hong_Choi"] in errors["one_person_two_names"]  # one person
    assert "without_label_errors" in protocol
    # what users bring: photos of its people from elsewhere, named at the default preset
    calibration = json.loads((shipped / "calibration.json").read_text())
    assert calibration["known_source"]["photos"] >= 900
    balanced = presets(calibration)["Balanced"]
    assert balanced["known_elsewhere_named"] >= 0.90  # issue 25's target, as shipped
    assert balanced["known_elsewhere_wrong"] <= 0.01
    assert display.preset_words("Balanced", balanced).startswith(
        "Balanced: names 91% of its people's photos from elsewhere (0.8% under a wrong name; "
        "99.5% of LFW's own), 5.0% of strangers wrongly"
    )


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered"])
def test_a_damaged_builtin_file_is_one_clear_error_and_the_studio_still_starts(
    damage, tmp_path, monkeypatch, folders
):
    copy = tmp_path / BUILTIN
    shutil.copytree(SHIPPED_BUILTIN / BUILTIN, copy)
    target = copy / "calibration.json"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.write_text(target.read_text().replace('"threshold"', '"threshold" ', 1))
    monkeypatch.setattr(builtin_model, "folder", lambda: copy)
    with pytest.raises(RunError) as caught:
        load_run(BUILTIN)
    assert str(target) in str(caught.value) and "train your own" in str(caught.value)
    assert active_run() is None
    at = open_page(app(), "pages/identify.py")  # no traceback: the train-your-own path
    assert "calibration.json" in texts(at) and "Train your own" in texts(at)


# Out of the box --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fresh_install_names_a_face_and_calls_a_stranger_unknown(tiny_builtin, folders):
    runs, _ = folders
    assert not list(runs.iterdir())
    assert active_run().builtin  # nothing of the user's: the built-in model is in use
    at = open_page(app(), "pages/identify.py")
    assert "knows 7 people" in texts(at)
    at.file_uploader(key="photos").set_value(
        [("astro.jpg", jpeg(astronauts(1, seed=42)[0]), "image/jpeg"),
         ("stranger.jpg", jpeg(cameramen(1, seed=7)[0]), "image/jpeg")]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert re.search(r"\*\*\d\. Astro Naut\*\*", shown) and "**1. Unknown**" in shown
    assert "match confidence" in shown and "Astro_Naut_000" in shown  # evidence: LFW names
    assert not list(runs.iterdir()), "identifying writes nothing"
    home = open_page(app())
    assert "Model in use: LFW public figures" in texts(home) and "7 public figures" in texts(home)


@pytest.mark.slow
def test_the_builtin_is_read_only_and_my_copy_takes_a_new_person(tiny_builtin, folders):
    builtin = load_run(BUILTIN)
    assert builtin.builtin and builtin.scoring == "gallery"
    for change in (
        lambda: people.rename(builtin, "Astro_Naut", "Eileen"),
        lambda: people.remove(builtin, "Astro_Naut"),
        lambda: builtin.set_threshold(0.0, "test"),
        lambda: builtin.set_meta(name="mine"),
    ):
        with pytest.raises(RunError, match="read-only; make your own copy"):
            change()
    at = open_page(app(), "pages/people.py")
    assert "read-only" in texts(at)
    next(b for b in at.button if b.label == "Make my own copy").click().run()
    assert not at.exception
    mine = active_run()
    assert not mine.builtin and mine.title == "My LFW public figures"
    assert "is ready and in use" in texts(at)
    enrol = next(u for u in at.file_uploader if u.label == "Photos of this person")
    enrol.set_value([(f"cam{i}.jpg", jpeg(p), "image/jpeg") for i, p in
                     enumerate(cameramen(3, seed=11))])
    at.text_input(key="new-name").set_value("Camera Man")
    at.form_submit_button[-1].click()
    open_page(at)
    assert "Added Camera Man from 3 photo(s)" in texts(at)
    assert "knows 8 people" in texts(at)  # the page shows the change at once
    shown = next(d.value for d in at.dataframe if "name" in d.value.columns)
    assert list(shown["name"]) == ["Camera Man"]  # found for the user, among any number
    assert at.text_input(key="people-search").value == "Camera Man"
    from celebmodel.recognition.recognize import Recognizer

    face = Recognizer.from_run(mine).identify(np.asarray(cameramen(1, seed=99)[0]))[0]
    assert face["known"] and face["name"] == "Camera Man"
    assert load_run(BUILTIN).people() == 7  # the built-in model itself is unchanged
    # the copy says what it is wherever runs are described, and counts its people now
    assert mine.copied_from and mine.meta()["notes"].startswith("A copy of LFW public figures")
    assert display.finished_words(mine).startswith("A copy of another model, not trained here")
    assert summary(mine)["people"] == 8 and mine.lfw_gallery
    at = open_page(app(), "pages/train.py")
    assert "Training finished" not in texts(at)
    at = open_page(app(), "pages/people.py")
    table = next(d.value for d in at.dataframe if "name" in d.value.columns)
    assert "face" not in table.columns  # no LFW photo to show, no column of "None"
    assert "LFW page" in table.columns and "removed" not in table.columns
    assert set(table["kind"]) == {"LFW", "added"}  # the LFW people were not trained here
    assert table["LFW page"].notna().all()  # an added person's link is blank, not "None"


def test_an_album_grouped_with_the_builtin_is_kept_in_the_user_s_data_folder(tiny_builtin):
    """Grouping an album with the read-only built-in model writes nothing inside the package:
    its groups go to the user's data folder, keyed by the model."""
    from celebmodel.albums.groups import AlbumGroups, kept_with
    from celebmodel.storage import data_root

    before = {p: p.stat().st_mtime_ns for p in tiny_builtin.rglob("*")}
    builtin = load_run(BUILTIN)
    path = kept_with(builtin, "zip:trip.zip")
    assert path.is_relative_to(data_root() / "models" / BUILTIN)
    book = AlbumGroups(path, builtin.name)
    book.photos, book.faces = ["a.jpg"], np.array([0])
    book.groups, book.embeddings = np.array([1]), np.ones((1, 4), np.float32)
    book.next_id = 2
    book.save()
    assert AlbumGroups.open(path, builtin.name).ids() == [1]
    assert {p: p.stat().st_mtime_ns for p in tiny_builtin.rglob("*")} == before


@pytest.mark.slow
def test_the_cli_names_with_the_builtin_and_a_user_run_of_that_name_does_not_clash(
    tiny_builtin, folders, tmp_path, capsys, astro
):
    photo = tmp_path / "astro.jpg"
    photo.write_bytes(jpeg(astronauts(1, seed=5)[0]))
    stranger = tmp_path / "cam.jpg"
    stranger.write_bytes(jpeg(cameramen(1, seed=8)[0]))
    assert main(["predict", BUILTIN, str(photo), str(stranger), "--json"]) == 0
    found = {r["image"]: r["faces"][0] for r in json.loads(capsys.readouterr().out)}
    known, unknown = found[str(photo)], found[str(stranger)]
    assert known["label"] == "Astro_Naut" and known["name"] == "Astro Naut"
    assert known["evidence"][0]["link"].endswith("/person/Astro_Naut.html")
    # an unknown face never carries a person's name outside the fields named for the nearest
    assert unknown["label"] == "unknown" and unknown["name"] is None
    assert unknown["nearest_name"] and unknown["top_k"] == []
    assert 0 <= unknown["match_confidence"] < known["match_confidence"] <= 1
    # a folder of the user's called lfw-public-figures is reached by its path; the bare name
    # is the built-in model wherever the command runs
    runs, _ = folders
    mine = add_run(runs, astro, BUILTIN)
    assert load_run(runs / BUILTIN).path == mine.path and not load_run(runs / BUILTIN).builtin
    os.chdir(runs)
    assert load_run(BUILTIN).builtin
    assert main(["people", BUILTIN, "list"]) == 0
    listing = capsys.readouterr().out
    assert "Astro_Naut" in listing and "Chelsea_Cat" in listing
    assert main(["copy", BUILTIN, "--name", "Mine"]) == 0
    assert "Mine" in capsys.readouterr().out


@pytest.mark.slow
def test_choosing_the_builtin_is_remembered_and_a_first_training_does_not_take_over_then(
    tiny_builtin, folders, astro
):
    runs, _ = folders
    builtin = load_run(BUILTIN)
    choose_run(builtin)
    assert json.loads((runs / "active.json").read_text())["builtin"] is True
    add_run(runs, astro, "20240101-000000-dlib128")
    assert active_run().builtin  # the user's choice stands
    choose_run(Run(runs / "20240101-000000-dlib128"))
    assert not active_run().builtin
    copy = copy_run(builtin)
    assert copy.path.parent == runs and copy.scoring == "gallery"


# The protocol, by hand ----------------------------------------------------------------------


def test_the_protocol_split_keeps_learning_people_out_of_every_test():
    labels = np.repeat(np.arange(60), np.r_[np.full(30, 1), np.full(30, 3)])
    trial = make_trial(labels, seed=0, learn_people=20, gallery_people=15)
    learn = set(labels[trial.learn])
    assert len(learn) == 20
    assert not learn & set(labels[np.r_[trial.gallery, trial.genuine, trial.impostor]])
    gallery = labels[trial.gallery]
    assert len(set(gallery)) == 15 == len(gallery)  # one photo per gallery person
    assert set(labels[trial.genuine]) <= set(gallery)
    assert not set(labels[trial.impostor]) & set(gallery)
    # every photo of a gallery person but the gallery one is a genuine probe
    assert len(trial.genuine) == sum((labels == p).sum() - 1 for p in gallery)
    assert make_trial(labels, 0, 20, 15).gallery.tolist() == trial.gallery.tolist()


def test_rank1_dir_and_tar_by_hand():
    truth = np.array([0, 1, 2, 3])
    best = np.array([0, 1, 2, 9])  # the fourth genuine probe is named wrongly
    genuine = np.array([0.9, 0.5, 0.3, 0.95])
    impostor = np.linspace(0, 0.6, 101)  # FAR 1% threshold: 0.594; 0.1%: 0.5994
    found = identification(best, truth, genuine, impostor)
    assert found["rank1"] == 0.75
    assert found["dir_far_1"] == 0.25  # only 0.9 is right AND above the threshold
    assert found["dir_far_0.1"] == 0.25
    # verification: two people, unit vectors; every pair counted once
    faces = np.array([[1, 0], [0.96, 0.28], [0, 1], [0.28, 0.96]], float)
    labels = np.array([0, 0, 1, 1])
    assert verification(faces, labels, far=0.5) == 1.0  # both genuine pairs at 0.96
    assert verification(np.array([[1, 0], [0, 1], [1, 0], [0, 1]], float),
                        np.array([0, 0, 1, 1]), far=0.5) == 0.0


def test_the_protocol_scores_separated_people_perfectly_and_plain_noise_at_chance():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(300, 32))
    labels = np.repeat(np.arange(300), 3)
    tight = centres[labels] + 0.01 * rng.normal(size=(900, 32))
    found = run_protocol(tight, labels, seeds=range(2), learn_people=80, gallery_people=100)
    assert found["rank1"]["mean"] == 1.0 and found["tar_far_0.1"]["mean"] == 1.0
    assert found["dir_far_1"]["mean"] > 0.95
    noise = rng.normal(size=(900, 32))
    found = run_protocol(noise, labels, seeds=range(2), learn_people=80, gallery_people=100)
    assert found["rank1"]["mean"] < 0.1 and found["dir_far_1"]["mean"] < 0.1
    assert found["rank1"]["mean_minus_sd"] == pytest.approx(
        found["rank1"]["mean"] - found["rank1"]["sd"]
    )


# LFW's archive ------------------------------------------------------------------------------


def _lfw_archive(path, extra: dict[str, bytes] | None = None) -> str:
    """A small .tgz in the layout of LFW's lfw.tgz (and any ``extra`` entries); its sha256."""
    import hashlib
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        entries = {f"lfw/Ada_Lovelace/Ada_Lovelace_{i:04d}.jpg": jpeg(p)
                   for i, p in enumerate(astronauts(3, seed=1), start=1)}
        entries["lfw/Bob_Only/Bob_Only_0001.jpg"] = jpeg(cameramen(1, seed=1)[0])
        for name, data in {**entries, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_lfw_takes_the_official_archive_byte_for_byte_and_only_its_photos(
    tmp_path, monkeypatch
):
    from celebmodel.data import sources

    archive = tmp_path / "lfw.tgz"
    digest = _lfw_archive(archive, {"lfw/../../evil.jpg": b"x", "lfw/README": b"hi"})
    monkeypatch.setitem(sources.LFW_ARCHIVE, "url", archive.as_uri())
    monkeypatch.setitem(sources.LFW_ARCHIVE, "sha256", digest)
    scan = sources.fetch_lfw(tmp_path / "everyone", min_faces=1)
    assert sorted(scan.labels) == ["Ada_Lovelace", "Bob_Only"]
    assert not (tmp_path / "evil.jpg").exists() and not list(tmp_path.glob(".everyone*"))
    first = (tmp_path / "everyone" / "Ada_Lovelace" / "Ada_Lovelace_0001.jpg").read_bytes()
    assert first == jpeg(astronauts(3, seed=1)[0])
    assert sources.fetch_lfw(tmp_path / "most", min_faces=2).labels == ["Ada_Lovelace"]
    monkeypatch.setitem(sources.LFW_ARCHIVE, "sha256", "0" * 64)
    with pytest.raises(DatasetError, match="not LFW's archive"):
        sources.fetch_lfw(tmp_path / "tampered", min_faces=1)
    assert not (tmp_path / "tampered").exists()
    monkeypatch.setitem(sources.LFW_ARCHIVE, "url", "http://127.0.0.1:9/lfw.tgz")
    with pytest.raises(DatasetError, match="no internet"):
        sources.fetch_lfw(tmp_path / "offline", min_faces=1)


def test_evaluate_shows_the_builtin_models_protocol(shipped_builtin, folders):
    at = open_page(app(), "pages/evaluate.py")
    assert at.selectbox(key="evaluate_run").value == BUILTIN
    shown = texts(at)
    assert "Open-set identification on Labeled Faces in the Wild" in shown
    assert "no held-out metrics per person" in shown
    plain = next(m.value for m in at.markdown if m.value.startswith("**In plain words:**"))
    assert "of 100 photos of people it knows, it names about 99 right" in plain
    assert "about 5 in 100 photos of strangers taken elsewhere get a name" in plain
    assert "3,238 photos of 40 people not in LFW" in plain  # the shipped model's strangers
    table = at.dataframe[0].value
    dir_row = table[table["measure"].str.startswith("DIR at FAR 1%")].iloc[0]
    protocol = json.loads((shipped_builtin / "protocol.json").read_text())
    assert dir_row["mean − sd"] == f"{protocol['figures']['dir_far_1']['mean_minus_sd']:.3f}"
    assert not [t for t in at.tabs if t.label in ("Strangers", "Downloads", "Per person")]


# Pages at thousands of people ----------------------------------------------------------------


@pytest.mark.slow
def test_people_and_identify_at_2000_people_search_and_page_instead_of_listing(folders):
    import time

    from generated_runs import generated_run

    runs, _ = folders
    run = generated_run(runs, 2000, photos=(2, 1, 1), photo_files=None, model="head")
    choose_run(run)
    started = time.perf_counter()
    at = open_page(app(), "pages/people.py")
    seconds = time.perf_counter() - started
    assert seconds < 20, seconds  # generous on a loaded CI machine; the bench measures 1 s
    assert "knows 2,000 people" in texts(at)
    rows = at.dataframe[0].value
    assert len(rows) == 24  # one page, never every person
    assert "page 1 of 84" in texts(at)
    name = rows["name"].iloc[3]
    at.text_input(key="people-search").set_value(name).run()
    assert name in set(at.dataframe[0].value["name"])
    assert at.selectbox(key="person").value in set(run.labels())
    identify = open_page(app(), "pages/identify.py")
    caption = next(c.value for c in identify.caption if "knows 2,000 people" in c.value)
    assert len(caption) < 200  # the count, not 2,000 names
    identify.text_input(key=f"who-{run.name}").set_value(name).run()
    assert any(c.value.startswith("Known") and name in c.value for c in identify.caption)


def test_the_api_lists_people_a_page_at_a_time(folders):
    from fastapi.testclient import TestClient
    from generated_runs import generated_run

    from celebmodel.interfaces.serve import create_app

    runs, _ = folders
    run = generated_run(runs, 300, photos=(2, 1, 1), photo_files=None, model="head")
    with TestClient(create_app(run.path)) as client:
        first = client.get("/people", params={"limit": 100}).json()
        assert first["total"] == 300 and len(first["people"]) == 100 and first["offset"] == 0
        last = client.get("/people", params={"offset": 250, "limit": 100}).json()
        assert len(last["people"]) == 50
        everyone = [p["label"] for p in first["people"]] + [
            p["label"]
            for offset in (100, 200)
            for p in client.get("/people", params={"offset": offset}).json()["people"]
        ]
        assert everyone == run.labels()
        name = first["people"][7]["name"]
        found = client.get("/people", params={"q": name}).json()
        assert found["total"] >= 1 and name in [p["name"] for p in found["people"]]
        assert client.get("/people", params={"limit": 5000}).status_code == 422


def test_the_api_calls_the_builtin_model_s_people_lfw_as_the_studio_does(tiny_builtin):
    from fastapi.testclient import TestClient

    from celebmodel.interfaces.serve import create_app

    with TestClient(create_app(BUILTIN)) as client:
        people = client.get("/people").json()["people"]
    assert people and {p["kind"] for p in people} == {"LFW"}


def test_strangers_from_elsewhere_set_the_confidence_and_the_presets(tmp_path, capsys):
    """Photos of people not in LFW (``--strangers``) define the match confidence and the
    presets; LFW's own people left out in turn stay beside them as look-alikes. A folder named
    after an LFW person is refused and nothing is written."""
    os.environ["CELEBMODEL_DATA"] = str(tmp_path / "appdata")
    names = write_names(tiny_lfw(tmp_path / "lfw"), tmp_path / "names.txt")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "Camera_Man").mkdir(parents=True)
    for i, photo in enumerate(cameramen(4, seed=5)):
        photo.save(elsewhere / "Camera_Man" / f"{i}.jpg")
    out = tmp_path / "model"
    args = ["build-lfw-model", str(tmp_path / "lfw"), "--names", str(names), "--out", str(out)]
    assert main([*args, "--strangers", str(elsewhere)]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    source = calibration["strangers_source"]
    assert (source["people"], source["photos"] + source["photos_without_a_face"]) == (1, 4)
    assert len(calibration["strangers"]) == source["photos"]
    assert len(calibration["lookalikes"]) > len(calibration["strangers"])
    balanced = calibration["presets"]["Balanced"]
    assert balanced["threshold"] == pytest.approx(
        np.quantile(calibration["strangers"], 0.95, method="higher"), abs=1e-5)
    assert 0 <= balanced["lookalikes_named"] <= 1
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"].endswith("--strangers elsewhere")
    assert "Strangers: 4 photos of 1 person from other sources" in display.preset_help(
        "gallery", {**calibration, "strangers_source": {**source, "photos": 4}})

    (elsewhere / "Astro_Naut").mkdir()
    shutil.copy(tmp_path / "lfw" / "Astro_Naut" / "Astro_Naut_0001.jpg", elsewhere / "Astro_Naut")
    again = tmp_path / "again"
    capsys.readouterr()
    assert main([*args[:-1], str(again), "--strangers", str(elsewhere)]) != 0
    assert "Astro_Naut: in LFW, so not strangers" in capsys.readouterr().err
    assert not again.exists()


def test_photos_of_its_people_from_elsewhere_say_what_each_preset_names(tmp_path, capsys):
    """``--known-elsewhere``: photos of LFW people taken elsewhere are identified at each
    preset's threshold; the shares named right and wrong are kept with the presets and said in
    their words. A folder of someone the model does not know is refused, nothing written."""
    os.environ["CELEBMODEL_DATA"] = str(tmp_path / "appdata")
    names = write_names(tiny_lfw(tmp_path / "lfw"), tmp_path / "names.txt")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "Astro_Naut").mkdir(parents=True)
    for i, photo in enumerate(astronauts(4, seed=9, mirrored=True)):
        photo.save(elsewhere / "Astro_Naut" / f"{i}.jpg")
    out = tmp_path / "model"
    args = ["build-lfw-model", str(tmp_path / "lfw"), "--names", str(names), "--out", str(out)]
    assert main([*args, "--known-elsewhere", str(elsewhere)]) == 0
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["known_source"]["people"] == 1
    assert calibration["known_source"]["photos"] == 4  # the astronaut is found in every one
    shares = {name: (p["known_elsewhere_named"], p["known_elsewhere_wrong"])
              for name, p in calibration["presets"].items()}
    assert all(0 <= right + wrong <= 1 for right, wrong in shares.values())
    assert shares["Strict"][0] <= shares["Balanced"][0] <= shares["Lenient"][0]
    assert shares["Lenient"][0] == 1.0  # the same face, mirrored: named right
    words = display.preset_words("Lenient", calibration["presets"]["Lenient"])
    assert words.startswith("Lenient: names 100.0% of its people's photos from elsewhere (0.0% "
                            "under a wrong name; "), words
    assert json.loads((out / "provenance.json").read_text())["command"].endswith(
        "--known-elsewhere elsewhere")

    (elsewhere / "Camera_Man").mkdir()
    cameramen(1, seed=3)[0].save(elsewhere / "Camera_Man" / "0.jpg")
    again = tmp_path / "again"
    capsys.readouterr()
    assert main([*args[:-1], str(again), "--known-elsewhere", str(elsewhere)]) != 0
    assert "Camera_Man: not in the model" in capsys.readouterr().err
    assert not again.exists()


@pytest.mark.slow
def test_naming_a_group_with_the_builtin_makes_a_copy_that_knows_them_and_undo_takes_them_out(
    tiny_builtin, folders
):
    """Naming means knowing: on the read-only built-in model, adding a group makes the user's
    own copy (the model in use from then on) and enrols the faces there; the album then names
    them; Undo takes the new person out again. The built-in model itself is unchanged."""
    at = open_page(app(), "pages/identify.py")
    assert active_run().builtin
    cams = [(f"cam{i}.jpg", jpeg(p), "image/jpeg") for i, p in
            enumerate(cameramen(6, seed=21, turn=2, light=0.05))]
    at.file_uploader(key="photos").set_value([*cams, ("astro.jpg", jpeg(astronauts(1, 5)[0]),
                                                      "image/jpeg")])
    open_page(at)
    assert "read-only: adding makes your own copy" in texts(at)
    add = at.button(key=group_key(at, "add", 1))
    assert add.label == "Make my copy and add"
    at.text_input(key=group_key(at, "name", 1)).set_value("Camera Man")
    add.click()
    open_page(at)
    mine = active_run()
    assert not mine.builtin and mine.copied_from  # the user's copy, now in use
    assert "Camera_Man" in mine.labels() and "Camera_Man" not in load_run(BUILTIN).labels()
    table = next(d.value for d in at.dataframe if "thumbnail" in d.value.columns)
    cams_named = table[table["photo"].str.startswith("cam")]
    assert (cams_named["name"] == "Camera Man").sum() >= 4  # the album knows them at once
    undo = next(b for b in at.button if b.key == "added-undo")
    assert undo.label == "Undo: take Camera Man out of the model again"
    undo.click()
    open_page(at)
    assert not at.error, [e.value for e in at.error]
    assert "Camera_Man" not in active_run().labels()
    assert not [b for b in at.button if b.key == "added-undo"]
