"""MobileFaceNet (w600k_mbf) in Keras against its source, SCRFD's keypoints and ArcFace's
alignment, and a run of the network end to end (no ../shared: faces from scikit-image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata

from celebmodel.faces.alignment import ARCFACE_TEMPLATE, arcface_aligned, similarity_transform
from celebmodel.faces.network import NETWORKS, FaceEmbedder
from celebmodel.faces.scrfd import detect_scrfd

REFERENCE = Path(__file__).parent / "data" / "mbf512_reference.npz"
FACE_BOX = (165, 35, 265, 155)  # the astronaut's face in scikit-image's photo (x0, y0, x1, y1)


def reference_chips() -> np.ndarray:
    """Eight 112×112 chips of the astronaut's face: shifted, scaled, mirrored, brightened.
    ``tests/data/mbf512_reference.npz`` holds the source network's embeddings of exactly
    these (the int8 TFLite file as InsightFace's converter ran it, and the same graph with its
    weights as floats), made once outside the repository with the file's own interpreter."""
    photo = Image.fromarray(skdata.astronaut())
    x0, y0, x1, y1 = FACE_BOX
    chips = []
    for dx, dy, grow in [(0, 0, 0), (6, -4, 0), (-5, 5, 8), (0, 0, -10), (3, 3, 16)]:
        box = (x0 + dx - grow, y0 + dy - grow, x1 + dx + grow, y1 + dy + grow)
        chips.append(photo.crop(box).resize((112, 112), Image.Resampling.BILINEAR))
    chips.append(chips[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    chips.append(ImageEnhance.Brightness(chips[1]).enhance(1.3))
    chips.append(ImageEnhance.Contrast(chips[2]).enhance(0.7))
    return np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_the_network_gives_the_source_s_embeddings():
    """Both forms the package ships: the Keras network (training fine-tunes it) and its LiteRT
    flatbuffer (what embeds faces)."""
    reference = np.load(REFERENCE)
    keras_network = _keras_embeddings("mbf512", reference_chips())
    ours = FaceEmbedder("mbf512").embed(reference_chips())
    assert ours.shape == (8, 512)
    for embeddings in (keras_network, ours):
        # the same graph, weights as floats: the port itself, layer for layer
        assert _cosine(embeddings, reference["tflite_float"]).min() >= 0.9999
        # the int8 file as its runtime runs it (it rounds activations to int8 on the fly)
        int8 = _cosine(embeddings, reference["tflite_int8"])
        assert int8.min() >= 0.995 and int8.mean() >= 0.998
    mirrored = FaceEmbedder("mbf512", flip=True).embed(reference_chips()[:1])
    assert _cosine(mirrored, ours[:1] + ours[5:6])[0] == pytest.approx(1.0, abs=1e-4)


def _keras_embeddings(network: str, chips: np.ndarray) -> np.ndarray:
    from celebmodel.faces.graph import compiled

    (vectors,) = compiled(NETWORKS[network].load())(chips.astype(np.float32))
    return vectors


@pytest.mark.parametrize(
    "network", ["mbf512", pytest.param("dlib128", marks=pytest.mark.slow)]  # converts dlib's
)
def test_litert_gives_the_keras_network_s_embeddings(network):
    """A photo's faces (LiteRT, shipped or converted on this machine) and a folder's (LiteRT
    for MobileFaceNet, the traced graph for dlib's) are the Keras network's embeddings."""
    size = NETWORKS[network].input_size
    chips = np.stack([np.asarray(Image.fromarray(chip).resize((size, size))) for chip in
                      reference_chips()[:3]])  # an odd count: the last pair is padded
    mirrors = chips[:, :, ::-1]
    keras_network = _keras_embeddings(network, np.concatenate([chips, mirrors]))
    expected = keras_network[:3] + keras_network[3:]
    embedder = FaceEmbedder(network, flip=True)
    assert _cosine(embedder.embed_photo(chips), expected).min() >= 0.99999
    assert _cosine(embedder.embed(chips), expected).min() >= 0.99999
    assert embedder.embed_photo(chips[:0]).shape == (0, NETWORKS[network].embedding_size)


def test_the_shipped_flatbuffer_is_made_from_the_shipped_weights():
    """Its provenance names the weights it was converted from by digest: new weights without a
    new flatbuffer (``python -m celebmodel.faces.network mbf512 TARGET``) fail here."""
    import json

    from celebmodel.storage import file_sha256

    flatbuffer = NETWORKS["mbf512"].flatbuffer
    provenance = json.loads((flatbuffer.parent / "PROVENANCE.json").read_text())
    entry = provenance[flatbuffer.name]
    assert entry["sha256"] == file_sha256(flatbuffer)
    assert entry["made_from"]["sha256"] == NETWORKS["mbf512"].digest()


def test_detected_and_aligned_the_network_tells_one_face_from_another():
    """The astronaut found by SCRFD and aligned to ArcFace's template in five other versions of
    her photo (smaller, brighter, mirrored, turned, flatter) stays herself; the cameraman is
    someone else."""
    base = Image.fromarray(skdata.astronaut())
    versions = [
        base,
        base.resize((300, 300)),
        ImageEnhance.Brightness(base).enhance(1.4),
        base.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        base.rotate(12, resample=Image.Resampling.BILINEAR),
        ImageEnhance.Contrast(base).enhance(0.6),
        Image.fromarray(skdata.camera()).convert("RGB"),
    ]
    chips = []
    for version in versions:
        pixels = np.asarray(version)
        _, _, points = detect_scrfd(pixels)[0]
        chips.append(arcface_aligned(pixels, points))
    embeddings = FaceEmbedder("mbf512").embed(np.stack(chips))
    similarity = embeddings @ embeddings.T
    assert similarity[:6, :6].min() > 0.8
    assert np.abs(similarity[6, :6]).max() < 0.2


def test_scrfd_finds_the_face_with_its_keypoints_where_they_are():
    photo = skdata.astronaut()
    hits = detect_scrfd(photo)
    assert len(hits) >= 1
    (x, y, w, h), score, points = hits[0]
    assert score > 0.6 and 150 < x + w / 2 < 270 and 60 < y + h / 2 < 160
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 15
    assert left_eye[1] < nose[1] < mouth_left[1] and mouth_left[0] < mouth_right[0]
    assert x <= points[:, 0].min() and points[:, 0].max() <= x + w  # inside the box
    big = np.asarray(Image.fromarray(photo).resize((2048, 2048)))  # searched on a copy
    (bx, by, bw, bh), _, big_points = detect_scrfd(big)[0]
    assert np.allclose(big_points / 4, points, atol=4)


def test_arcface_alignment_puts_the_keypoints_on_the_template():
    rng = np.random.default_rng(3)
    angle, scale, shift = 0.3, 1.8, np.array([40.0, 25.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE @ (scale * rotation).T + shift
    matrix = similarity_transform(points, ARCFACE_TEMPLATE)
    assert np.allclose(points @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE, atol=1e-9)
    photo = (rng.uniform(0, 255, (300, 300, 3))).astype(np.uint8)
    for (px, py) in points.astype(int):  # a white dot on each keypoint of the photo
        photo[py - 2 : py + 3, px - 2 : px + 3] = 255
    chip = arcface_aligned(photo, points)
    assert chip.shape == (112, 112, 3)
    for tx, ty in ARCFACE_TEMPLATE.astype(int):
        assert chip[ty, tx].min() > 200  # each dot lands on its template point


def test_the_networks_table_agrees_with_the_backbones():
    from celebmodel.backbones import BACKBONES

    for name, network in NETWORKS.items():
        backbone = BACKBONES[name]
        assert backbone.kind == "embedding"
        assert (backbone.input_size, backbone.alignment, backbone.embedding_size) == (
            network.input_size, network.alignment, network.embedding_size
        )
        assert backbone.detector == network.detector
    assert FaceEmbedder("mbf512").key() != FaceEmbedder("dlib128").key()


@pytest.mark.slow
def test_a_run_of_the_arcface_network_names_the_astronaut_and_not_the_cameraman(tmp_path):
    """A training with ``--backbone mbf512``: SCRFD's faces, ArcFace alignment, MobileFaceNet's
    embeddings; the run says its network and detector, identifies, and keeps its embeddings
    apart from dlib's in the cache."""
    from conftest import astronauts, cameramen

    from celebmodel.config import TrainConfig
    from celebmodel.learning.training import train_run
    from celebmodel.recognition.recognize import Recognizer

    dataset = tmp_path / "dataset"
    for person, photos in {
        "Astronaut": astronauts(8, seed=1),
        "Cameraman": cameramen(8, seed=2),
    }.items():
        (dataset / person).mkdir(parents=True)
        for i, photo in enumerate(photos):
            photo.convert("RGB").save(dataset / person / f"{i}.jpg")
    run = train_run(
        TrainConfig(data_dir=str(dataset), backbone="mbf512", max_epochs=40), tmp_path / "run"
    )
    config = run.config()
    assert (config.backbone, config.detector) == ("mbf512", "scrfd")
    assert run.metrics("test")["accuracy"] == 1.0
    recognizer = Recognizer.from_run(run)
    face = recognizer.identify(np.asarray(astronauts(1, seed=9, mirrored=True)[0]))[0]
    assert face["known"] and face["label"] == "Astronaut"
    assert recognizer.gallery.shape[1] == 512
    assert run.embeddings_id == f"{run.name} (mbf512)"  # an album's groups are kept apart
    cached = {p.name.split(".")[1] for p in (tmp_path.parent).rglob("*.npy")}
    assert not cached or all(not key.startswith("dlib128k") for key in cached if "mbf" in key)


def test_a_gallery_of_one_network_is_refused_by_another(tmp_path, tiny_builtin_files):
    """A copy of an mbf512 gallery model (512-d faces) that says it is a dlib128 model: one
    clear error naming the file, never a face named from mixed embeddings."""
    import json
    import shutil

    from celebmodel.errors import RunError
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import Run

    shutil.copytree(tiny_builtin_files, tmp_path / "copy")
    run = Run(tmp_path / "copy")
    config = run.read_json("config.json")
    assert Recognizer.from_run(run).gallery.shape[1] == 512
    assert run.embeddings_id == f"{run.name} (mbf512)"  # an album's groups are kept apart
    run.file("config.json").write_text(json.dumps({**config, "backbone": "dlib128"}))
    assert run.embeddings_id == run.name  # dlib128's, as before networks were chosen
    with pytest.raises(RunError, match="gallery.npz: its faces are 512-d.*never mix"):
        Recognizer.from_run(run)


def test_albums_group_on_the_network_s_own_cuts_where_it_has_them(tiny_builtin_files, dlib_run):
    """mbf512 puts everyone on one scale: its albums' cuts are the networks table's, whatever
    its gallery; dlib128's are learnt from each model's gallery."""
    from celebmodel.recognition.recognize import Recognizer, album_cuts
    from celebmodel.runs.run import Run

    builtin = Recognizer.from_run(Run(tiny_builtin_files))
    assert builtin.cuts.values() == list(NETWORKS["mbf512"].grouping)
    dlib = Recognizer.from_run(dlib_run)
    assert NETWORKS["dlib128"].grouping is None
    assert dlib.cuts.values() != list(NETWORKS["mbf512"].grouping)
    assert 0 < dlib.cuts.pair <= dlib.cuts.group <= dlib.cuts.loose
    assert album_cuts(dlib_run, dlib.gallery, dlib.gallery_labels) == dlib.cuts
