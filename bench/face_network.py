"""dlib's face ResNet in Keras against dlib-bin: parity, speed, flip averaging, large photos.

Every figure is printed beside the old path's, measured in the same run. The old path is the
package as it was before the network moved into Keras (the parent of the commit that added
``celebmodel/face_network.py``), checked out in a temporary git worktree and run in its own
process with the same measuring code (``--measure``), which uses only the API both have.

    python bench/face_network.py                 # about 10 minutes on 2 cores
    python bench/face_network.py --skip-old      # the new path only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, flat_layout, git, old_options, one_face_photo, python_json, table, trees  # noqa: E402


def chips_of(folder: Path, per_class: int, cache: Path) -> np.ndarray:
    """Aligned chips of the protocol's photos through the package's face stage."""
    from celebmodel.data.dataset import make_split, scan_dataset
    from celebmodel.faces.cache import prepare
    from celebmodel.faces.detection import FaceStage

    split, _ = make_split(scan_dataset(folder), per_class=per_class, seed=0)
    stage = FaceStage(alignment="chip", size=150)
    records = prepare(folder, list(split["path"]), stage, cache)
    crops = [r["crop"] for r in records if r["crop"]]
    return np.stack([np.asarray(Image.open(c).convert("RGB")) for c in crops])


def parity_and_speed(chips: np.ndarray) -> None:
    import dlib

    from celebmodel.faces.dlib_resnet import source_path
    from celebmodel.faces.graph import compiled
    from celebmodel.faces.network import FaceEmbedder

    reference = dlib.face_recognition_model_v1(str(source_path()))
    old = np.asarray(reference.compute_face_descriptor(list(chips)), dtype=np.float64)
    new = FaceEmbedder().embed(chips).astype(np.float64)
    cosine = (old * new).sum(axis=1) / np.linalg.norm(old, axis=1)
    table(
        [
            {
                "faces": len(chips),
                "min cosine": f"{cosine.min():.8f}",
                "mean cosine": f"{cosine.mean():.8f}",
                "faces below 0.99999": int((cosine < 0.99999).sum()),
            }
        ],
        "parity: Keras network against dlib.face_recognition_model_v1 on the same chips",
    )

    from celebmodel.faces.dlib_resnet import load_network

    graph = compiled(load_network())
    batch1, batch32 = chips[:1].astype(np.float32), chips[:32].astype(np.float32)
    graph(batch1), graph(batch32)  # trace once
    rows = []
    for size, batch in ((1, batch1), (32, batch32)):
        repeats = 60 if size == 1 else 10
        start = time.perf_counter()
        for _ in range(repeats):
            graph(batch)
        keras_ms = (time.perf_counter() - start) / repeats / size * 1000
        repeats = 10 if size == 1 else 2
        faces = list(chips[:size])
        start = time.perf_counter()
        for _ in range(repeats):
            reference.compute_face_descriptor(faces)
        dlib_ms = (time.perf_counter() - start) / repeats / size * 1000
        rows.append(
            {
                "batch": size,
                "keras ms/face": keras_ms,
                "keras faces/s": 1000 / keras_ms,
                "dlib-bin ms/face (old)": dlib_ms,
                "dlib-bin faces/s (old)": 1000 / dlib_ms,
                "speed-up": dlib_ms / keras_ms,
            }
        )
    table(rows, "embedding speed (targets: >= 100 faces/s at batch 32, <= 20 ms at batch 1)")


def flip_averaging(cache: Path) -> None:
    """Phase-1-like head (logistic regression) on embeddings with and without the mirror
    image averaged in, on lfw_10to19 (80/10/10, seeds 0-4); strangers: every lfw photo."""
    from sklearn.linear_model import LogisticRegression

    from celebmodel.data.dataset import make_split, scan_dataset
    from celebmodel.faces.cache import prepare
    from celebmodel.faces.detection import FaceStage
    from celebmodel.faces.network import FaceEmbedder
    from celebmodel.scoring.metrics import open_set_metrics
    from celebmodel.scoring.open_set import calibrate, centroids_of, unknown_scores

    stage = FaceStage(alignment="chip", size=150)

    def chips(folder: Path) -> tuple[pd.DataFrame, np.ndarray]:
        scan = scan_dataset(folder)
        frame = pd.DataFrame(prepare(folder, list(scan.items["path"]), stage, cache))
        frame["label"] = scan.items["label"].to_numpy()
        frame = frame[frame["crop"].notna()].reset_index(drop=True)
        return frame, np.stack([np.asarray(Image.open(c).convert("RGB")) for c in frame["crop"]])

    known_frame, known_chips = chips(SHARED / "lfw_10to19")
    _, stranger_chips = chips(SHARED / "lfw")
    scan = scan_dataset(SHARED / "lfw_10to19")
    rows = []
    for flip in (False, True):
        embedder = FaceEmbedder(flip=flip)
        start = time.perf_counter()
        vectors = embedder.embed(known_chips)
        seconds = time.perf_counter() - start
        strangers = embedder.embed(stranger_chips)
        for seed in range(5):
            split, _ = make_split(scan, seed=seed)
            subset = known_frame["path"].map(dict(zip(split["path"], split["subset"], strict=True)))
            classes = sorted(known_frame["label"].unique())
            index = {label: i for i, label in enumerate(classes)}
            y = known_frame["label"].map(index).to_numpy()
            parts = {s: (subset == s).to_numpy() for s in ("train", "val", "test")}
            head = LogisticRegression(C=100, max_iter=3000).fit(
                vectors[parts["train"]], y[parts["train"]]
            )
            outputs = {s: (vectors[m], head.predict_proba(vectors[m])) for s, m in parts.items()}
            centroids = centroids_of(vectors[parts["train"]], y[parts["train"]], len(classes))
            threshold = calibrate(unknown_scores(*outputs["val"], centroids), 0.95)["threshold"]
            known = unknown_scores(*outputs["test"], centroids)
            unknown = unknown_scores(strangers, head.predict_proba(strangers), centroids)
            metrics = open_set_metrics(known, unknown, threshold)
            accuracy = float((outputs["test"][1].argmax(1) == y[parts["test"]]).mean())
            rows.append(
                {
                    "flip": flip,
                    "seed": seed,
                    "accuracy": accuracy,
                    "strangers rejected": metrics["unknown_rejected"],
                    "known accepted": metrics["known_accepted"],
                    "auc": metrics["auc"],
                    "embed ms/face": seconds / len(known_chips) * 1000,
                }
            )
    frame = pd.DataFrame(rows)
    table(
        frame.groupby("flip")
        .mean(numeric_only=True)
        .drop(columns="seed")
        .reset_index()
        .to_dict("records"),
        "flip averaging on lfw_10to19 (mean of seeds 0-4; strangers: all of lfw)",
    )


def large_photos() -> None:
    """Faces of several sizes pasted on 4000x3000 photos: what ``detect`` finds against one
    HOG pass over the full-resolution photo, and how long each takes."""
    import dlib

    from celebmodel.faces.detection import detect

    photos = sorted((SHARED / "lfw_10to19").rglob("*.jpg"))[::50][:24]
    hog = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(0)
    rows = []
    for face in (60, 70, 80, 100, 150, 300, 600, 1200):
        side = int(face / 0.45)  # an LFW photo's face box is about 0.45 of its side
        per_row = max(1, min(6, 3800 // (side + 20)))
        count = min(len(photos), per_row * max(1, 2800 // (side + 20)))
        canvas = Image.fromarray(rng.integers(60, 140, (3000, 4000, 3), dtype=np.uint8))
        for i, path in enumerate(photos[:count]):
            photo = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
            canvas.paste(
                photo, (100 + (i % per_row) * (side + 20), 100 + (i // per_row) * (side + 20))
            )
        pixels = np.asarray(canvas)
        start = time.perf_counter()
        full = len(hog.run(pixels, 0, 0.2)[0])
        full_seconds = time.perf_counter() - start
        start = time.perf_counter()
        found = len(detect(pixels, fallback=False))
        seconds = time.perf_counter() - start
        rows.append(
            {
                "face px": face,
                "faces": count,
                "one full-res HOG pass: found": full,
                "ms": full_seconds * 1000,
                "detect(): found": found,
                "detect() ms": seconds * 1000,
            }
        )
    table(rows, "12-megapixel photos (4000x3000): faces found and time")


def measure(data: Path, work: Path, per_class: int) -> dict:
    """Face stage cold and cached, then identify() on 640x480 photos, with whatever
    ``celebmodel`` is importable (the old tree's or this one)."""
    os.environ["CELEBMODEL_DATA"] = str(work / "appdata")
    import celebmodel
    from celebmodel.config import TrainConfig

    # The layout is told by the files of the package imported (the old tree's, first on the
    # path), not by trying imports: this package's editable install supplies what it lacks.
    if not flat_layout():
        from celebmodel.data.dataset import make_split, scan_dataset
        from celebmodel.learning.pipeline import prepare_inputs
        from celebmodel.learning.training import train_run
        from celebmodel.recognition.recognize import Recognizer
    elif (Path(celebmodel.__file__).parent / "dataset.py").is_file():  # the flat package
        from celebmodel.dataset import make_split, scan_dataset
        from celebmodel.pipeline import prepare_inputs
        from celebmodel.recognize import Recognizer
        from celebmodel.training import train_run
    else:  # the old path's module names
        from celebmodel.pipeline import prepare_inputs
        from celebmodel.recognize import Recognizer
        from celebmodel.train import train_run

        from celebmodel.data import make_split, scan_dataset

    split, _ = make_split(scan_dataset(data), per_class=per_class, seed=0)
    config = TrainConfig(data_dir=str(data), backbone="dlib128").resolved()
    result = {}
    for label in ("cold", "cached"):
        start = time.perf_counter()
        prepare_inputs(config, split)
        result[f"faces + embeddings {len(split)} photos, {label} (s)"] = time.perf_counter() - start
    config = TrainConfig(data_dir=str(data), backbone="dlib128", per_class=per_class)
    run = train_run(config, work / "runs" / "dlib128")
    recognizer = Recognizer.from_run(run.path)
    test = split[split["subset"] == "test"]["path"][:24]
    photos = [one_face_photo(data / path) for path in test]
    recognizer.identify(photos[0])
    times = []
    for photo in photos:
        start = time.perf_counter()
        found = recognizer.identify(photo)
        times.append(time.perf_counter() - start)
        assert len(found) >= 1
    result["identify one 640x480 photo, one face, median (ms)"] = statistics.median(times) * 1000
    return result


def before_keras_network() -> str:
    """The old path: the parent of the commit that added ``celebmodel/face_network.py``."""
    added = git("log", "--diff-filter=A", "--format=%H", "--", "celebmodel/face_network.py").split()
    return f"{added[-1]}^" if added else "HEAD"


def measured_in(tree: Path, data: Path, per_class: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="celebbench-"))
    try:
        return python_json(
            __file__,
            "--measure",
            "--data",
            data,
            "--work",
            work,
            "--per-class",
            str(per_class),
            env={**os.environ, "PYTHONPATH": str(tree)},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    parser.add_argument("--per-class", type=int, default=60)
    old_options(parser, None, "git ref of the old path (default: before face_network.py)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if args.measure:
        print(json.dumps(measure(data, Path(args.work), args.per_class)))
        return

    cache = Path(tempfile.mkdtemp(prefix="celebbench-cache-"))
    os.environ["CELEBMODEL_DATA"] = str(cache)
    chips = chips_of(data, args.per_class, cache / "cache")
    parity_and_speed(chips)
    flip_averaging(cache / "cache")
    large_photos()
    with trees(args.old or before_keras_network(), args.skip_old) as measured:
        found = {name: measured_in(tree, data, args.per_class) for name, tree in measured}
    rows = [
        {"what": key, **{name: got[key] for name, got in found.items()}} for key in found["new"]
    ]
    table(rows, "face stage and identify (targets: cold <= 25 s, cached < 3 s, identify <= 60 ms)")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
