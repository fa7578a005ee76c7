"""Finished runs of any number of people, written straight to disk, without training.

Pages and commands at thousands of people are tested on these: a real training of 2,000 or
5,749 people takes hours, writing their run takes seconds. Everything is vectorised numpy
(the people's faces, the nearest-mean predictions, chunk by chunk), and the files that carry
results go through the package's own writers (``evaluation.predictions_frame`` and
``write_subset``, ``open_set.calibrate``, ``Run.save_gallery``, ``TrainConfig.save``,
``write_split``), so they are exactly what a training writes.

How the numbers come about: every person has a unit "true face" in 128 dimensions, near a
face shared by everyone and nearer still to those of a "family" of about four look-alikes
(so mistakes fall on a few pairs, as with real look-alikes); each photo's embedding is that
face plus noise of a per-person size drawn from ``noise`` (some people are easy, some hard);
the gallery is the train photos' embeddings, and a photo's probabilities are a softmax over
``SCALE`` x its cosine similarity to each person's gallery mean: a nearest-mean classifier,
the head a dlib128 run ends up with. With the defaults a run is about 80% right on test at
any number of people, and the calibrated unknown threshold is about 0.75 (a trained dlib128
run's is 0.3 to 0.8).

    from generated_runs import generated_run

    run = generated_run(runs_folder, 2000)                       # files only, no model.keras
    run = generated_run(runs_folder, 2000, model="head")         # + a head-only model.keras
    run = generated_run(runs_folder, 5749, photos=(2, 1, 1), photo_files=None)

``model``: ``None`` writes no ``model.keras`` (the run is finished but has no model, so the
pages that list finished models leave it out); ``"head"`` writes a head-only model (input: a
128-d embedding, softmax whose weights are the gallery means times ``SCALE``; how dlib128 runs
were saved before the face network moved into Keras, and the package still identifies,
enrols and evaluates with it) in about a second for any number of people; ``"network"``
writes dlib's face network with that head, what a dlib128 training saves now (the network's
weights are converted once per data folder, tens of seconds the first time). Neither model
was fitted to photos: a real photo's face lands near no generated person, so the calibrated
threshold calls it unknown (a page or the API can still be driven end to end with it).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image

from celebmodel.config import TrainConfig
from celebmodel.data.dataset import write_split
from celebmodel.learning.evaluation import predictions_frame, write_subset
from celebmodel.runs.run import Run
from celebmodel.scoring.open_set import calibrate, centroids_of, unknown_scores
from celebmodel.storage import atomic_write_json
from celebmodel.vectors import l2_normalize

SCALE = 120.0  # softmax temperature on cosine similarities
FAMILY = 4  # people per family of look-alikes
SPREAD = 0.2  # how far a person's face lies from their family's
DIMENSIONS = 128
CHUNK = 2048  # photos scored at once: memory stays at CHUNK x people floats
SUBSETS = ("train", "val", "test")

FIRST_NAMES = (
    "Ada Alan Alice Amara Anna Ben Carla Chen Dara Diego Elena Emil Eva Farah Felix Grace "
    "Hana Hugo Ines Ivan Jana Jonas Kai Kenji Lara Leo Lina Luca Maya Mia Nadia Nils Noor "
    "Omar Paula Pedro Quinn Rafael Rosa Sami Sara Sofia Tariq Tomas Uma Vera Victor Wei "
    "Yara Yusuf Zoe Anton Bianca Cyrus Delia Ezra Flora Goran Helga Idris"
)
LAST_NAMES = (
    "Abara Baker Castro Dubois Eriksen Fischer Garcia Haddad Ivanova Jensen Kowalski "
    "Larsen Moreau Nakamura Okafor Petrov Quispe Rossi Schmidt Tanaka Ueda Varga Weber Xu "
    "Yilmaz Zhang Andersen Bauer Costa Dimitrov Esposito Ferreira Gallo Horvat Iqbal "
    "Jovanovic Kim Lindqvist Mendes Novak Oliveira Park Quiroga Romano Silva Torres "
    "Urquhart Vasquez Wong Yamada Zielinski Ahmed Bianchi Cohen Duarte Engel Fontaine "
    "Gruber Hansen Ito Jung Keller Lopez Meyer Nowak Ortiz Pereira Ramos Santos Teixeira "
    "Vogel Wagner Young Ziegler Adler Brandt Caruso Dahl Ekman Frank Gomez Hoffmann Ilic "
    "Janssen Klein Lang Marino Nilsen Olsen Popescu Richter Sato Thomsen Vidal Walsh Berg "
    "Conti"
)


def people_names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct folder labels such as ``Maya_Okafor`` (sorted, as training sorts them);
    past the first x last combinations a number keeps them apart."""
    pairs = [f"{first}_{last}" for first in FIRST_NAMES.split() for last in LAST_NAMES.split()]
    rng = np.random.default_rng(seed)
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[: min(n, len(pairs))]]
    chosen += [f"{pairs[i % len(pairs)]}_{i // len(pairs) + 1}" for i in range(len(pairs), n)]
    return sorted(chosen)


def generated_run(
    root: str | Path,
    n_people: int,
    *,
    name: str | None = None,
    photos: tuple[int, int, int] = (4, 1, 1),
    noise: tuple[float, float] = (0.2, 0.5),
    seed: int = 0,
    photo_files: Literal["held-out", "all"] | None = "held-out",
    data_dir: str | Path | None = None,
    model: Literal["head", "network"] | None = None,
) -> Run:
    """A finished dlib128 run of ``n_people`` people in ``root/name``.

    ``photos``: train, val and test photos per person. ``noise``: the range each person's
    noise size is drawn from (larger is harder). ``photo_files``: write a small JPEG for every
    val and test photo (``"held-out"``: what Evaluate opens, mistakes and confused pairs), or
    for every photo (``"all"``: gallery faces too), under ``data_dir`` (default
    ``root/../<name>-photos``); a file costs about half a millisecond to create. ``model``:
    see the module's docstring.
    Files written: ``config.json``, ``labels.json``, ``split.csv``, ``faces.csv``,
    ``gallery.npz``, ``calibration.json``, ``metrics_<subset>.json`` and
    ``predictions_<subset>.csv`` for train, val and test, ``history.csv``, ``meta.json``,
    ``status.json`` (last, as training does) and, when asked, ``model.keras``.
    """
    if n_people < 2:
        raise ValueError("a run needs at least 2 people")
    root = Path(root)
    name = name or f"20240101-000000-dlib128-generated-{n_people}"
    path = root / name
    path.mkdir(parents=True)
    data = Path(data_dir) if data_dir else root.parent / f"{name}-photos"
    run = Run(path)
    rng = np.random.default_rng(seed)
    labels = people_names(n_people, seed)

    split = _split(labels, photos)
    write_split(split, run.file("split.csv"))
    atomic_write_json(run.file("labels.json"), labels)
    config = TrainConfig(data_dir=str(data.resolve()), backbone="dlib128", max_epochs=20)
    config.save(
        run.file("config.json"),
        extra={
            "dataset_fingerprint": f"generated-{n_people}-{seed}",
            "n_photos": len(split),
            "n_celebrities": n_people,
            "versions": {"generated": "tests/generated_runs.py"},
            "leaking_duplicates": 0,
        },
    )
    if photo_files:
        chosen = split if photo_files == "all" else split[split["subset"] != "train"]
        _write_photos(data, labels, chosen, rng)
    faces = split.assign(route="face", n_faces=1, error="")
    faces[["path", "label", "subset", "route", "n_faces", "error"]].to_csv(
        run.file("faces.csv"), index=False
    )

    truth = _true_faces(n_people, rng)
    sizes = rng.uniform(*noise, n_people)
    index = {label: i for i, label in enumerate(labels)}
    embeddings = {}
    for subset in SUBSETS:
        people = split.loc[split["subset"] == subset, "label"].map(index).to_numpy()
        jitter = rng.standard_normal((len(people), DIMENSIONS), dtype=np.float32)
        embeddings[subset] = l2_normalize(
            truth[people] + sizes[people, None] * jitter / np.sqrt(DIMENSIONS)
        )
    train_people = split.loc[split["subset"] == "train", "label"].map(index).to_numpy()
    run.save_gallery(
        embeddings["train"], train_people, list(split.loc[split["subset"] == "train", "path"])
    )
    centroids = centroids_of(embeddings["train"], train_people, n_people)

    scores = {}
    for subset in SUBSETS:
        usable = split[split["subset"] == subset].assign(route="face").reset_index(drop=True)
        parts, subset_scores = [], []
        for start in range(0, len(usable), CHUNK):
            chosen = embeddings[subset][start : start + CHUNK]
            probabilities = _softmax(SCALE * chosen @ centroids.T)
            parts.append(
                predictions_frame(usable.iloc[start : start + CHUNK], probabilities, labels)
            )
            subset_scores.append(unknown_scores(chosen, probabilities, centroids))
        scores[subset] = np.concatenate(subset_scores)
        write_subset(run, subset, pd.concat(parts, ignore_index=True), labels, [])
        if subset == "val":
            atomic_write_json(run.file("calibration.json"), calibrate(scores["val"], 0.95))

    _write_history(run, rng)
    atomic_write_json(run.file("meta.json"), {"name": f"Generated, {n_people:,} people"})
    if model:
        _write_model(run, config, centroids, model)
    atomic_write_json(
        run.file("status.json"),
        {
            "state": "finished",
            "pid": None,
            "started": "2024-01-01T00:00:00+00:00",
            "ended": "2024-01-01T00:10:00+00:00",
            "error": None,
            "epochs": 8,
            "phases": {"head": 0.9},
            "updated": "2024-01-01T00:10:00+00:00",
        },
    )
    return run


def _split(labels: list[str], photos: tuple[int, int, int]) -> pd.DataFrame:
    """Each person's photos ``<label>/<label>_0001.jpg``…, train first, then val, then test."""
    per_person = sum(photos)
    people = np.repeat(np.asarray(labels, dtype=object), per_person)
    number = np.tile(np.arange(1, per_person + 1), len(labels))
    subsets = np.tile(np.repeat(np.array(SUBSETS, dtype=object), photos), len(labels))
    paths = [f"{label}/{label}_{k:04d}.jpg" for label, k in zip(people, number, strict=True)]
    return pd.DataFrame({"path": paths, "label": people, "subset": subsets})


def _true_faces(n_people: int, rng: np.random.Generator) -> np.ndarray:
    """A unit vector per person: a face everyone shares, their family's offset and their own."""

    def spread(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) / np.sqrt(DIMENSIONS)

    shared = l2_normalize(spread(1, DIMENSIONS))
    family = rng.integers(0, n_people // FAMILY + 1, n_people)
    offsets = 0.9 * spread(n_people // FAMILY + 1, DIMENSIONS)
    return l2_normalize(shared + offsets[family] + SPREAD * spread(n_people, DIMENSIONS))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _write_photos(
    folder: Path, labels: list[str], split: pd.DataFrame, rng: np.random.Generator
) -> None:
    """One small JPEG per photo, a colour per person (encoded once per person)."""
    colours = rng.integers(40, 216, (len(labels), 3))
    encoded = {}
    for label, colour in zip(labels, colours, strict=True):
        (folder / label).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(colour + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        encoded[label] = buffer.getvalue()
    for path, label in zip(split["path"], split["label"], strict=True):
        (folder / path).write_bytes(encoded[label])


def _write_history(run: Run, rng: np.random.Generator, epochs: int = 8) -> None:
    """Eight epochs of falling loss, as ``CSVLogger`` writes them (phase 1 only)."""
    steps = np.arange(epochs)
    loss = 3.0 * np.exp(-steps / 3) + 0.1
    frame = pd.DataFrame(
        {
            "epoch": steps,
            "accuracy": 1 - loss / 3.2,
            "learning_rate": 0.001,
            "loss": loss,
            "phase": "head",
            "seconds": rng.uniform(1, 2, epochs).round(2),
            "val_accuracy": 1 - loss / 2.8 - 0.1,
            "val_loss": loss + 0.3,
        }
    )
    frame.to_csv(run.file("history.csv"), index=False)


def _write_model(
    run: Run, config: TrainConfig, centroids: np.ndarray, kind: Literal["head", "network"]
) -> None:
    """``model.keras`` whose softmax is ``SCALE`` x the cosine to each gallery mean."""
    import keras

    if kind == "network":
        from celebmodel.learning.model import build_model

        model, _ = build_model(config, len(centroids))
    else:
        inputs = keras.Input((DIMENSIONS,), name="embedding")
        x = keras.layers.Dropout(0.3, name="dropout")(inputs)
        outputs = keras.layers.Dense(len(centroids), activation="softmax", name="classifier")(x)
        model = keras.Model(inputs, outputs, name="celebmodel_dlib128")
    kernel = centroids.T.astype(np.float32) * SCALE
    model.get_layer("classifier").set_weights([kernel, np.zeros(len(centroids), np.float32)])
    partial = run.file(".model.tmp.keras")
    model.save(partial)
    os.replace(partial, run.file("model.keras"))
