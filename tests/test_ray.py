"""``--engine ray`` (issue 14): folder identification and a dataset's face stage on a local
Ray cluster of 2 CPUs give what the local engine gives; a worker that dies loses nothing and
repeats nothing; a stopped job resumes with the blocks it lacks.

One cluster for the module (starting one costs seconds); every photo is generated here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import astronauts, cameramen
from PIL import Image

from celebmodel.albums import ray_album
from celebmodel.albums.album import identify_album
from celebmodel.cluster import engine as cluster_engine
from celebmodel.config import TrainConfig
from celebmodel.data.images import photo_files
from celebmodel.errors import EngineError
from celebmodel.interfaces import cli
from celebmodel.recognition.recognize import Recognizer

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

BLOCK = 4  # photos per block: a 20-photo folder is 5 blocks, spread over 2 actors


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    """The 2-CPU cluster every Ray job of the module joins (the engine reuses a connection
    it finds and leaves it up)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    cluster_engine._quiet(ray)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(cluster_engine, "BLOCK_PHOTOS", BLOCK)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """20 files: astronauts (known), cameramen (a stranger), one without a face, two that
    are no photo at all."""
    root = tmp_path_factory.mktemp("album")
    (root / "strangers").mkdir()
    for i, photo in enumerate(astronauts(8, seed=5)):
        photo.save(root / f"astro_{i:02d}.jpg")
    for i, photo in enumerate(cameramen(9, seed=1, turn=2, light=0.05)):
        photo.resize((256, 256)).save(root / "strangers" / f"cam_{i:02d}.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    (root / "broken.jpg").write_bytes(b"not a photo at all")
    (root / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A video (the astronaut from 0.5 s to 3 s, a cut at 3 s, then the cameraman to 5 s;
    a key frame every half second, so segment readers seek) and a file that is no video."""
    from conftest import write_video

    root = tmp_path_factory.mktemp("videos")
    grey, red = (40, 40, 40), (200, 40, 40)
    write_video(root / "talk.mp4", [(0.5, grey, None), (2.5, grey, astronauts(1, seed=5)[0]),
                                    (2, red, cameramen(1, seed=2, turn=2, light=0.05)[0])],
                gop=5)
    (root / "bad.mov").write_bytes(b"not a video at all" * 10)
    return root


@pytest.fixture(scope="module")
def local_csv(astro, folder, videos, tmp_path_factory) -> Path:
    """The local engine's CSV of the folder, unknown faces grouped, and of the videos (beside
    it, ``faces-videos.csv``): what Ray must give."""
    out = tmp_path_factory.mktemp("local") / "faces.csv"
    cli.main(["predict", str(astro.path), str(folder), str(videos), "--csv", str(out), "--group",
              "--fps", "5"])
    return out


def rounded(rows_: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """CSV rows with their numbers to 3 decimals: a worker's TensorFlow may add in another
    order (embeddings 1e-7 apart)."""
    def cell(text: str) -> str:
        try:
            return f"{float(text):.3f}"
        except ValueError:
            return text
    return [tuple(map(cell, row)) for row in rows_]


def rows(path: Path) -> list[tuple[str, ...]]:
    return [tuple(row) for row in csv.reader(io.StringIO(path.read_text()))]


def photos_of(folder: Path) -> list[tuple[str, Path]]:
    return [(str(path), path) for path in photo_files([folder])]


def test_ray_csv_equals_the_local_engines(astro, folder, videos, local_csv, tmp_path, capsys,
                                          monkeypatch):
    """``predict --engine ray`` through the command line: the same rows (and the same errors
    said) as the local engine, the parts folder gone once the CSV is written; the video read
    in 1-second segments by the two workers gives the local engine's occurrences, its
    astronaut one track across the boundaries at 1 s and 2 s, the cut right on the boundary
    at 3 s; the file that is no video is named and the rest goes on."""
    from celebmodel.video import ray_video

    monkeypatch.setattr(ray_video, "SEGMENT_SECONDS", 1.0)
    out = tmp_path / "faces.csv"
    capsys.readouterr()
    argv = ["predict", str(astro.path), str(folder), str(videos), "--csv", str(out), "--group",
            "--fps", "5"]
    assert cli.main([*argv, "--engine", "ray", "--workers", "2"]) == 0
    said = capsys.readouterr().err
    local_videos = local_csv.with_name("faces-videos.csv")
    assert rounded(rows(out.with_name("faces-videos.csv"))) == rounded(rows(local_videos))
    assert f"{videos / 'bad.mov'}: not a video FFmpeg can read" in said
    astro_rows = [row for row in rows(local_videos) if row[1] == "Astronaut"]
    assert [(float(r[4]), float(r[5]), r[8]) for r in astro_rows] == [
        (pytest.approx(0.6, abs=0.11), pytest.approx(3.0, abs=0.01), "1")]  # one track
    assert any(float(row[4]) == pytest.approx(3.0) for row in rows(local_videos)[1:]
               if row[1] != "Astronaut")  # the cameraman, from the cut
    assert set(rows(out)) == set(rows(local_csv))
    assert len(rows(out)) == len(rows(local_csv)) == len(set(rows(out)))
    assert out.read_text() == local_csv.read_text()  # same order too: blocks merged in order
    assert not ray_album.parts_dir(out).exists()
    assert "broken.jpg" in said and "empty.jpg" in said and "20 photo(s)" in said
    photos = {row[0] for row in rows(out)[1:]}
    assert any("cam_" in p for p in photos) and any("astro_" in p for p in photos)
    assert any(row[7] for row in rows(out)[1:])  # the cameramen grouped, on the driver


def test_a_killed_worker_still_gives_every_row_once(
    astro, folder, local_csv, tmp_path, monkeypatch
):
    """The first actor to reach a block kills its own process (``os._exit``): Ray starts it
    again and retries the block; the CSV holds every row exactly once."""
    marker = tmp_path / "die"
    marker.touch()
    monkeypatch.setenv(cluster_engine.DIE_HOOK, str(marker))
    out = tmp_path / "faces.csv"
    ray_album.identify_folder(astro.path, photos_of(folder), out, group=True, workers=2)
    assert not marker.exists()  # one actor did die
    assert sorted(rows(out)) == sorted(rows(local_csv))
    assert not ray_album.parts_dir(out).exists()


class Recorder:
    """A bar factory that remembers the totals and steps it was given."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.steps: list[int] = []

    def __call__(self, **options):
        recorder = self

        class Bar:
            def __enter__(self):
                recorder.totals.append(options["total"])
                return self

            def __exit__(self, *exc):
                return None

            def update(self, n=1):
                recorder.steps.append(n)

        return Bar()


def test_a_resumed_job_does_not_redo_finished_blocks(astro, folder, local_csv, tmp_path):
    """Two blocks finished before a stop (their parts on disk, no CSV yet): the rerun sends
    only the other blocks to Ray and merges the parts it found, untouched."""
    photos = photos_of(folder)
    out = tmp_path / "faces.csv"
    blocks = ray_album.folder_blocks(astro, photos, None, 5)
    assert len(blocks) == 5
    parts = ray_album.parts_dir(out)
    parts.mkdir()
    recognizer = Recognizer.from_run(astro.path)
    for block in blocks[:2]:
        album = identify_album(recognizer, [(n, Path(p)) for n, p in block.items])
        part = json.loads(ray_album._part(album))
        part["rows"][0]["nearest"] = "from the part on disk"  # to see it was not redone
        (parts / f"{block.id}.json").write_text(json.dumps(part))
    assert not out.exists()  # a stopped job leaves parts, never a CSV
    bar = Recorder()
    ray_album.identify_folder(astro.path, photos, out, group=True, workers=2, bar=bar)
    assert bar.totals == [sum(len(b.items) for b in blocks[2:])] == [sum(bar.steps)]
    got = rows(out)
    assert sum(row[4] == "from the part on disk" for row in got) == 2
    assert len(got) == len(rows(local_csv))
    assert not parts.exists()


def test_the_face_stage_through_ray_fills_the_cache_as_locally(tmp_path, monkeypatch):
    """``train --engine ray``: crops, their records and embeddings written by Ray actors
    under the local engine's keys (the same files, the same contents), and the training
    goes on from the cache to a finished run."""
    import pandas as pd

    from celebmodel.learning.pipeline import prepare_inputs
    from celebmodel.learning.training import train_run

    dataset = tmp_path / "dataset"
    (dataset / "Astronaut").mkdir(parents=True)
    (dataset / "Cameraman").mkdir()
    for i, photo in enumerate(astronauts(5, seed=7)):
        photo.save(dataset / "Astronaut" / f"{i}.jpg")
    for i, photo in enumerate(cameramen(4, seed=8)):
        photo.resize((256, 256)).save(dataset / "Cameraman" / f"{i}.png")
    (dataset / "Cameraman" / "broken.jpg").write_bytes(b"not a photo at all")
    paths = sorted(str(p.relative_to(dataset)) for p in photo_files([dataset]))
    assert len(paths) == 10
    config = TrainConfig(data_dir=str(dataset), backbone="dlib128", max_epochs=3)
    trees = {}
    for engine in ("ray", "local"):
        monkeypatch.setenv("CELEBMODEL_DATA", str(tmp_path / engine))
        if engine == "ray":  # a whole training, its face stage on Ray
            run = train_run(config, tmp_path / "run", engine="ray", workers=2)
            assert run.state == "finished"
            faces = pd.read_csv(run.file("faces.csv"))
            assert len(faces) == 10 and (faces["route"] == "error").sum() == 1
        else:
            prepare_inputs(config, pd.DataFrame({"path": paths, "label": "x"}))
        crops_dir = tmp_path / engine / "cache" / "crops"
        trees[engine] = {
            str(f.relative_to(crops_dir)): f.read_bytes()
            for f in crops_dir.rglob("*")
            if f.is_file()
        }
    assert trees["ray"].keys() == trees["local"].keys()
    assert sum(name.endswith(".npy") for name in trees["ray"]) == 9
    for name, content in trees["ray"].items():
        if name.endswith(".npy"):
            ray_vector = np.load(io.BytesIO(content))
            local_vector = np.load(io.BytesIO(trees["local"][name]))
            # byte-equal on this machine; a tolerance in case batch size alters the last bits
            np.testing.assert_allclose(ray_vector, local_vector, atol=1e-6)
        else:
            assert content == trees["local"][name], name


def test_train_hands_the_engine_to_the_trainer(tmp_path, monkeypatch):
    """``train --engine ray --ray-address A --workers 3`` reaches ``train_run``; without it
    the trainer is called as before (no engine arguments)."""
    from celebmodel.learning import training

    calls = []
    monkeypatch.setattr(training, "train_run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(cli, "_print_metrics", lambda run: None)
    base = ["train", str(tmp_path), "--backbone", "dlib128", "--run-dir", str(tmp_path / "r")]
    assert cli.main(base) == 0
    assert cli.main([*base, "--engine", "ray", "--ray-address", "h:6379", "--workers", "3"]) == 0
    assert calls == [
        {"progress": True},
        {"progress": True, "engine": "ray", "ray_address": "h:6379", "workers": 3},
    ]


def test_without_ray_the_engine_says_how_to_install_it(
    astro, folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(EngineError, match=r"pip install -e '\.\[ray\]'"):
        ray_album.identify_folder(astro.path, photos_of(folder), tmp_path / "x.csv")
    out = tmp_path / "faces.csv"
    argv = ["predict", str(astro.path), str(folder), "--csv", str(out), "--engine", "ray"]
    assert cli.main(argv) == 1
    assert "Ray is not installed" in capsys.readouterr().err
    assert not out.exists() and not ray_album.parts_dir(out).exists()


def test_the_identify_page_uses_the_cluster_of_ray_address(astro, folder, monkeypatch):
    """With ``$RAY_ADDRESS`` (the app started with a cluster), the page's album of files is
    identified on the cluster: the same album as on this machine."""
    recognizer = Recognizer.from_run(astro.path)
    photos = [(str(p.relative_to(folder)), p) for p in photo_files([folder])][:8]
    here = ray_album.identify_photos(recognizer, photos)  # no address: this machine
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    bar = Recorder()
    there = ray_album.identify_photos(recognizer, photos, bar=bar)
    assert bar.totals == [8] and sum(bar.steps) == 8
    assert there.csv() == here.csv() and there.errors == here.errors
    # the same faces through the same network; LiteRT may split the work across another
    # number of threads on a worker (float32 sums in another order: 1e-7 apart)
    np.testing.assert_allclose(there.embeddings, here.embeddings, atol=1e-6)


def test_an_address_nobody_answers_on_is_a_message_not_a_wait(astro, folder, tmp_path, capsys):
    """Ray would retry an unreachable head for minutes; the engine says so at once, and
    leaves neither a CSV nor a parts folder."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "faces.csv"
    argv = ["predict", str(astro.path), str(folder), "--csv", str(out), "--engine", "ray"]
    assert cli.main([*argv, "--ray-address", f"127.0.0.1:{port}"]) == 1
    assert f"127.0.0.1:{port}: no Ray cluster answers there" in capsys.readouterr().err
    assert not out.exists() and not ray_album.parts_dir(out).exists()

