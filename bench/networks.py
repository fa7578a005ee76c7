"""The face networks side by side, measured in one run: dlib128 (dlib's ResNet, HOG) beside
mbf512 (MobileFaceNet with ArcFace's loss, SCRFD, ArcFace alignment).

Parts (``--parts``):

* ``trained``: ``celebmodel train FOLDER --backbone B`` exactly as a user runs it, on LFW's 8
  people (60 per person, the original protocol) over ``--seeds`` seeds, and on ``lfw_10to19``
  (all photos): test accuracy, weighted F1, the face stage's routes, the time it took.
* ``recall``: the share of photos in which each network's detector finds a face near the
  centre, at the photos' own size and shrunk to 112 px (small faces).
* ``grouping`` (``--lfw``: every LFW photo, one folder per person): album grouping on each
  network's faces (mirror-averaged, as albums group them), with the cuts a model of LFW's 8 most
  photographed people learns from its gallery (or the network's own, where the networks table
  has them): all of LFW and its people with 10 to 19 photos, BCubed precision, recall and F.
* ``profiles`` (``--profiles``: CFP's layout, ``<Person>/frontal/*`` and ``<Person>/profile/*``,
  kept outside the repository): the share of frontal and of profile photos in which each
  detector finds a face; then a run of each network trained on the frontal photos of
  ``--profile-people`` people (``celebmodel train``, as a user runs it) names their profile
  photos (``celebmodel predict --csv``, largest face): named right, wrong, unknown, no face.
* ``speed``: on one thread and on every core: detection of a 640×480 photo, the embedding of a
  face, and identifying a 640×480 photo with one face through a trained run of each network
  (warm, median of 30).

    python bench/networks.py                      # every part, ../shared/data
    python bench/networks.py --parts speed recall
    CELEBMODEL_DATA=/work/celeb_data python bench/networks.py --parts grouping --lfw LFW_DIR

Nothing here is a test: the photos are ../shared's, which a fresh clone has not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, one_face_photo, table  # noqa: E402

NETWORKS = ("dlib128", "mbf512")


def train(data: Path, backbone: str, work: Path, seed: int, per_class: int | None) -> dict:
    """One ``celebmodel train`` as a user runs it; its test metrics, face routes and time."""
    run = work / f"{data.name}-{backbone}-{seed}"
    args = [sys.executable, "-m", "celebmodel", "train", str(data), "--backbone", backbone,
            "--seed", str(seed), "--run-dir", str(run)]
    if per_class:
        args += ["--per-class", str(per_class)]
    env = {**os.environ, "CELEBMODEL_DATA": str(work / "data"), "CELEBMODEL_RUNS": str(work)}
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics_test.json").read_text())
    status = json.loads((run / "status.json").read_text())
    routes = status.get("face_routes", {})
    return {
        "set": data.name, "network": backbone, "seed": seed,
        "test accuracy": metrics["accuracy"], "weighted F1": metrics["f1_weighted"],
        "no face": routes.get("none", 0), "seconds": round(seconds, 1), "run": str(run),
    }


def trained(work: Path, seeds: int) -> list[dict]:
    rows = []
    for seed in range(seeds):
        for backbone in NETWORKS:
            rows.append(train(SHARED / "lfw", backbone, work, seed, 60))
    for backbone in NETWORKS:
        rows.append(train(SHARED / "lfw_10to19", backbone, work, 0, None))
    table([{k: v for k, v in row.items() if k != "run"} for row in rows],
          "trained runs: celebmodel train FOLDER --backbone B (test subset)")
    return rows


def recall() -> None:
    from celebmodel.faces.detection import detect
    from celebmodel.faces.network import NETWORKS as TABLE

    rows = []
    for folder in ("lfw", "lfw_10to19"):
        photos = sorted((SHARED / folder).glob("*/*.jpg"))
        for side in (None, 112):
            for network in NETWORKS:
                detector = TABLE[network].detector
                found = 0
                for path in photos:
                    image = Image.open(path).convert("RGB")
                    if side:
                        image = image.resize((side, side), Image.Resampling.BILINEAR)
                    faces = detect(np.asarray(image), detector, fallback=False)
                    centre = np.array(image.size) / 2
                    found += any(
                        np.hypot(*(np.array(f.box[:2]) + np.array(f.box[2:]) / 2 - centre))
                        < image.size[0] / 4
                        for f in faces
                    )
                rows.append({"set": folder, "size": side or "as is", "network": network,
                             "detector": detector, "photos": len(photos),
                             "face found": found / len(photos)})
    table(rows, "a face found near the centre (no fallback to another detector)")


def grouping(lfw: Path) -> None:
    from grouping_scale import EIGHT, scores

    from celebmodel.albums.grouping import group_faces
    from celebmodel.faces.cache import cache_dir, embed_files, prepare
    from celebmodel.faces.network import NETWORKS as TABLE
    from celebmodel.faces.network import FaceEmbedder
    from celebmodel.recognition.public_figures import stage_of
    from celebmodel.scoring.cuts import Cuts, group_cuts

    paths = sorted(str(p.relative_to(lfw)) for p in lfw.glob("*/*.jpg"))
    rows = []
    for network in NETWORKS:
        records = [r for r in prepare(lfw, paths, stage_of(network), cache_dir()) if r["crop"]]
        faces = embed_files([r["crop"] for r in records], FaceEmbedder(network, flip=True))
        people = np.array([r["path"].split("/")[0] for r in records])
        truth = np.unique(people, return_inverse=True)[1]
        eight = np.isin(people, EIGHT)
        spec = TABLE[network]  # the network's own cuts, else learnt as a model's gallery would
        cuts = Cuts(*spec.grouping) if spec.grouping else group_cuts(faces[eight], truth[eight])
        counts = np.bincount(truth)[truth]
        for name, subset in (("all of LFW", np.ones(len(truth), bool)),
                             ("lfw_10to19", (counts >= 10) & (counts <= 19))):
            started = time.perf_counter()
            found = group_faces(faces[subset], cuts)
            rows.append({"set": name, "network": network, "faces": int(subset.sum()),
                         **{k: v for k, v in scores(truth[subset], found).items()},
                         "cuts": " ".join(f"{c:.3f}" for c in cuts.values()),
                         "seconds": round(time.perf_counter() - started, 1)})
    table(rows, "album grouping: each network's own cuts, else learnt from its LFW-8 gallery")


def profiles(folder: Path, people: int, work: Path) -> None:
    import shutil

    from other_sources import largest_faces

    from celebmodel.faces.detection import detect
    from celebmodel.faces.network import NETWORKS as TABLE

    chosen = sorted(p for p in folder.iterdir() if (p / "profile").is_dir())[:people]
    rows = []
    for network in NETWORKS:
        detector = TABLE[network].detector
        for view in ("frontal", "profile"):
            photos = [photo for person in chosen for photo in sorted((person / view).iterdir())]
            found = sum(bool(detect(np.asarray(Image.open(p).convert("RGB")), detector,
                                    fallback=False)) for p in photos)
            rows.append({"network": network, "detector": detector, "view": view,
                         "photos": len(photos), "face found": found / len(photos)})
    table(rows, f"CFP, {len(chosen)} people: a face found (no fallback to another detector)")
    known, asked = work / "cfp-frontal", work / "cfp-profile"
    for person in chosen:
        for view, target in (("frontal", known), ("profile", asked)):
            shutil.copytree(person / view, target / person.name)
    rows = []
    for network in NETWORKS:
        run = train(known, network, work, 0, None)["run"]
        csv = work / f"profiles-{network}.csv"
        subprocess.run([sys.executable, "-m", "celebmodel", "predict", run, str(asked),
                        "--csv", str(csv)], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "CELEBMODEL_DATA": str(work / "data")})
        largest = largest_faces(csv)
        truth = largest["photo"].map(lambda p: Path(p).parent.name)
        named = largest["named"]
        total = sum(1 for _ in asked.glob("*/*"))
        rows.append({"network": network, "profile photos": total,
                     "named right": float((named & (largest["label"] == truth)).sum() / total),
                     "named wrong": float((named & (largest["label"] != truth)).sum() / total),
                     "unknown": float((~named).sum() / total),
                     "no face": 1 - len(largest) / total})
    table(rows, f"runs trained on the frontal photos of {len(chosen)} CFP people name their "
                "profile photos")


def _median_ms(call, repeats: int = 30) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def speed(runs: dict[str, str]) -> None:
    """In a child per thread count, so TensorFlow's thread settings take."""
    rows = []
    for threads in (1, os.cpu_count() or 1):
        for network in NETWORKS:
            done = subprocess.run(
                [sys.executable, __file__, "--speed-worker", network, str(threads),
                 runs.get(network, "")],
                cwd=ROOT, check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    table(rows, "speed, ms (median of 30, warm)")


def speed_worker(network: str, threads: int, run: str) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from celebmodel.faces.detection import detect
    from celebmodel.faces.network import NETWORKS as TABLE
    from celebmodel.faces.network import FaceEmbedder

    photo = np.asarray(one_face_photo(next((SHARED / "lfw").glob("*/*.jpg"))))
    spec = TABLE[network]
    chips = np.zeros((32, spec.input_size, spec.input_size, 3), np.uint8)
    embedder = FaceEmbedder(network)
    row = {
        "network": network, "threads": threads,
        "detect 640x480": _median_ms(lambda: detect(photo, spec.detector, fallback=False)),
        "embed 1 face": _median_ms(lambda: embedder.embed(chips[:1])),
        "embed 32 faces, per face": _median_ms(lambda: embedder.embed(chips)) / 32,
    }
    if run:
        from celebmodel.recognition.recognize import Recognizer

        recognizer = Recognizer.from_run(run).warm_up()
        row["identify 640x480, 1 face"] = _median_ms(lambda: recognizer.identify(photo))
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["trained", "recall", "speed"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lfw", type=Path, help="every LFW photo (the grouping part)")
    parser.add_argument("--profiles", type=Path, help="CFP's photos (the profiles part)")
    parser.add_argument("--profile-people", type=int, default=100)
    parser.add_argument("--speed-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_worker:
        network, threads, run = args.speed_worker
        speed_worker(network, int(threads), run)
        return
    work = Path(tempfile.mkdtemp(prefix="celebbench-networks-"))
    runs: dict[str, str] = {}
    if "trained" in args.parts:
        for row in trained(work, args.seeds):
            runs.setdefault(row["network"], row["run"])
    if "recall" in args.parts:
        recall()
    if "profiles" in args.parts:
        profiles(args.profiles, args.profile_people, work)
    if "grouping" in args.parts:
        grouping(args.lfw)
    if "speed" in args.parts:
        speed(runs)


if __name__ == "__main__":
    main()
