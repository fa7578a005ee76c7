"""The built-in public-figures model (issue 18): the open-set protocol on all of LFW, photos
of LFW people from other sources, identify speed and memory, and trained runs' scoring.

Every "old" figure is measured in the same run as the new one:

- protocol: the scoring before issue 18 (cosine similarity to the nearest gallery photo, on
  the unflipped embeddings the face stage gave) against the gallery models' (flip-averaged
  embeddings, AS-norm, the learned decision: :mod:`celebmodel.scoring.matching`);
- identify: a 640x480 photo with one face, median of warm calls, and the process's memory
  once the model is loaded: the built-in model and an 8-person dlib128 model of this tree,
  and the 8-person model of the old tree (``--old``, default d5e5885), each in a fresh
  process;
- trained runs (``--parts trained``): on the dev sets (lfw_10to19 known with lfw as strangers, and
  the other way round), a run's own open-set score against the gallery scoring on the same
  gallery, at the run's calibrated threshold and at equal false-accept rates.

    python bench/public_figures.py --lfw /path/to/lfw [--external DIR] [--parts speed pages trained]

``--lfw``: LFW in its archive's layout (``celebmodel fetch-lfw DIR --min-faces 1``). Faces
and embeddings go through the face cache (``$CELEBMODEL_DATA``), so a second run is quick.
``--external``: photos from other sources, ``in_lfw/<LFW_Folder>/*`` and
``not_in_lfw/<Person>/*`` (not in the repository: photos are never committed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SHARED,
    drawn,
    flat_layout,
    old_options,
    one_face_photo,
    peak_rss_mib,
    python_json,
    rss_mib,
    studio_page,
    trees,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def table(rows: list[dict], title: str) -> None:
    print(f"\n## {title}")
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))


# The protocol ---------------------------------------------------------------------------------


def lfw_embeddings(lfw: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Every LFW photo that gave a face: unflipped and flip-averaged embeddings, labels."""
    from celebmodel.data.dataset import scan_dataset
    from celebmodel.faces.cache import cache_dir, embed_files, prepare
    from celebmodel.faces.network import FaceEmbedder
    from celebmodel.progress import console_bar
    from celebmodel.recognition.public_figures import STAGE

    scan = scan_dataset(lfw)
    records = prepare(scan.root, list(scan.items["path"]), STAGE, cache_dir(), bar=console_bar)
    crops = [r["crop"] for r in records if r["crop"]]
    keep = [i for i, r in enumerate(records) if r["crop"]]
    people = list(scan.items["label"].iloc[keep])
    index = {p: i for i, p in enumerate(sorted(set(people)))}
    labels = np.array([index[p] for p in people])
    plain = embed_files(crops, FaceEmbedder(flip=False), bar=console_bar)
    flipped = embed_files(crops, FaceEmbedder(flip=True), bar=console_bar)
    return plain, flipped, labels, sorted(index)


def protocol(plain: np.ndarray, flipped: np.ndarray, labels: np.ndarray) -> None:
    from celebmodel.scoring.protocol import METRICS, nearest_face, normalised_decision, run_protocol

    started = time.perf_counter()
    old = run_protocol(plain, labels, nearest_face)
    old_seconds = time.perf_counter() - started
    started = time.perf_counter()
    new = run_protocol(flipped, labels, normalised_decision)
    new_seconds = time.perf_counter() - started
    rows = []
    for name in METRICS:
        rows.append({
            "metric": name,
            "old mean": old[name]["mean"], "old sd": old[name]["sd"],
            "old mean-sd": old[name]["mean_minus_sd"],
            "new mean": new[name]["mean"], "new sd": new[name]["sd"],
            "new mean-sd": new[name]["mean_minus_sd"],
        })
    table(rows, f"Open-set protocol on {len(labels):,} faces of {labels.max() + 1:,} people, "
                f"10 trials (old {old_seconds:.0f} s, new {new_seconds:.0f} s)")


# Photos from other sources -------------------------------------------------------------------


def external(folder: Path, plain: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """Named right at a threshold rejecting 95% of people not in LFW, old and new; and what
    the built-in model's presets do on these photos."""
    from celebmodel.data.images import load_image
    from celebmodel.faces.network import FaceEmbedder
    from celebmodel.recognition.public_figures import STAGE
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.scoring.open_set import presets

    recognizer = Recognizer.from_run("lfw-public-figures")
    old_gallery = plain / np.linalg.norm(plain, axis=1, keepdims=True)
    found = {"in_lfw": [], "not_in_lfw": []}
    for group in found:
        for person in sorted((folder / group).iterdir()):
            for photo in sorted(person.iterdir()):
                try:
                    chip, _ = STAGE.extract(load_image(photo))
                except Exception:  # noqa: BLE001 (a bench: skip what cannot be read)
                    continue
                if chip is None:
                    continue
                flipped = recognizer._embed([chip])
                candidates = recognizer.matcher.candidates(flipped, k=2)
                decision = float(recognizer.decision(candidates.features())[0])
                new_best = recognizer.labels[candidates.people[0, 0]]
                unflipped = FaceEmbedder(flip=False).embed([chip])[0]
                similarities = old_gallery @ unflipped
                old_best = names[labels[int(np.argmax(similarities))]]
                found[group].append((person.name, new_best, decision, old_best,
                                     float(similarities.max())))
    inside, outside = found["in_lfw"], found["not_in_lfw"]
    print(f"\n## Photos from other sources: {len(inside)} of {len({r[0] for r in inside})} LFW "
          f"people, {len(outside)} of {len({r[0] for r in outside})} people not in LFW")
    rows = []
    for name, best, score in (("old (nearest face, cosine)", 3, 4), ("new (built-in model)", 1, 2)):
        right = np.array([r[0] == r[best] for r in inside])
        scores = np.array([r[score] for r in inside])
        strangers = np.array([r[score] for r in outside])
        cut = float(np.quantile(strangers, 0.95))
        rows.append({
            "scoring": name,
            "rank-1 of LFW people": float(right.mean()),
            "named right, 95% of others rejected": float(np.mean(right & (scores > cut))),
            "others rejected": float(np.mean(strangers <= cut)),
        })
    table(rows, "LFW people named right at the threshold that rejects 95% of people not in LFW")
    right = np.array([r[0] == r[1] for r in inside])
    scores = np.array([r[2] for r in inside])
    strangers = np.array([r[2] for r in outside])
    calibration = recognizer.run.read_json("calibration.json")
    rows = [
        {
            "preset": preset,
            "strangers named (LOPO in LFW)": option["strangers_named"],
            "LFW people named right (other sources)": float(
                np.mean(right & (scores >= option["threshold"]))),
            "people not in LFW named": float(np.mean(strangers >= option["threshold"])),
        }
        for preset, option in presets(calibration).items()
    ]
    table(rows, "The built-in model's presets on photos from other sources")


# Identify speed and memory ---------------------------------------------------------------------


def identify_measure(run: str, data: Path) -> dict:
    """In this process: load ``run``, identify 640x480 photos with one face (warm), memory."""
    if flat_layout():  # an old tree's package
        from celebmodel.recognize import Recognizer
    else:
        from celebmodel.recognition.recognize import Recognizer

    started = time.perf_counter()
    recognizer = Recognizer.from_run(run).warm_up()
    load = time.perf_counter() - started
    photos = []
    for person in sorted(p for p in data.iterdir() if p.is_dir())[:8]:
        photos += [one_face_photo(path, 300) for path in sorted(person.iterdir())[:3]]
    recognizer.identify(photos[0])
    times = []
    for _ in range(3):
        for photo in photos:
            started = time.perf_counter()
            recognizer.identify(photo)
            times.append(time.perf_counter() - started)
    return {
        "identify median (ms)": statistics.median(times) * 1000,
        "p90 (ms)": float(np.quantile(times, 0.9)) * 1000,
        "load (s)": load,
        "max RSS (MB)": peak_rss_mib(),
    }


def in_process(tree: Path, *args: str) -> dict:
    return python_json(__file__, *args, env={**os.environ, "PYTHONPATH": str(tree)})


def train_in(tree: Path, data: Path, work: Path, backbone: str = "dlib128") -> Path:
    run = work / f"20240101-000000-{backbone}"
    subprocess.run(
        [sys.executable, "-m", "celebmodel", "train", str(data), "--backbone", backbone,
         "--run-dir", str(run)],
        env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, check=True,
        cwd=tree,  # python -m puts the working folder first on the path: this tree's package
    )
    return run


def speed(old_ref: str | None, skip_old: bool) -> None:
    data = SHARED / "lfw"
    rows = []
    with trees(old_ref, skip_old) as measured:
        for name, tree in measured:
            work = Path(tempfile.mkdtemp(prefix="celebbench-"))
            run = train_in(tree, data, work)
            rows.append({"tree": name, "model": "8 people (dlib128, trained)",
                         **in_process(tree, "--identify", str(run))})
            if name == "new":
                run = train_in(tree, data, work, "mbf512")
                rows.append({"tree": name, "model": "8 people (mbf512, trained)",
                             **in_process(tree, "--identify", str(run))})
            try:
                rows.append({"tree": name, "model": "built-in (every LFW person)",
                             **in_process(tree, "--identify", "lfw-public-figures")})
            except subprocess.CalledProcessError:  # a tree from before the built-in model
                rows.append({"tree": name, "model": "built-in: none in this tree"})
    table(rows, "Identify one 640x480 photo with one face (warm, 24 photos x 3), memory")


# Pages in a real browser, the app started as the README does --------------------------------


def pages_measure(tree: Path, runs: Path, work: Path, known: int) -> dict:
    """People's first paint (its caption on screen, the script finished and two frames
    painted: the table, or the old page's cards) and Identify's (the model's caption), then
    the app's memory with the model loaded."""
    env = {**os.environ, "CELEBMODEL_RUNS": str(runs), "CELEBMODEL_DATA": str(work / "data")}
    found = {}
    with studio_page(tree, env, work) as (url, server, page):
        page.goto(url)
        page.get_by_text("Celebrity face studio").first.wait_for(timeout=600_000)
        # The old page writes the count without a thousands separator, and lists cards.
        caption = re.compile(rf"knows ({known:,}|{known}) people")
        for visit in ("first", "again"):
            started = time.perf_counter()
            page.goto(f"{url}/people")
            found[f"People first paint ({visit}, s)"] = drawn(page, started, caption, False)
        started = time.perf_counter()
        page.goto(f"{url}/identify")
        page.get_by_text("Photos", exact=True).first.wait_for(timeout=600_000)
        found["Identify ready, model loaded (s)"] = time.perf_counter() - started
        found["app memory, model loaded (MB)"] = rss_mib(server.pid)
    return found


def pages(old_ref: str | None, skip_old: bool) -> None:
    """The new tree with no run of the user's (the built-in model, 5,748 people) against the
    old tree with a 5,748-person run written by ``tests/generated_runs.py`` (the old code
    cannot open the built-in model); memory: the new app with the built-in model against the
    old app with an 8-person trained model."""
    from generated_runs import generated_run

    rows = []
    with trees(old_ref, skip_old) as measured:
        for name, tree in measured:
            work = Path(tempfile.mkdtemp(prefix="celebbench-"))
            runs = work / "runs"
            runs.mkdir()
            if name == "new":
                rows.append({"tree": name, "model": "built-in (5,748 people)",
                             **pages_measure(tree, runs, work, 5748)})
            else:
                generated_run(runs, 5748, photos=(2, 1, 1), photo_files=None, model="head")
                rows.append({"tree": name, "model": "generated, 5,748 people",
                             **pages_measure(tree, runs, work, 5748)})
                eight = Path(tempfile.mkdtemp(prefix="celebbench-"))
                (eight / "runs").mkdir()
                train_in(tree, SHARED / "lfw", eight / "runs")
                rows.append({"tree": name, "model": "8 people (trained)",
                             **pages_measure(tree, eight / "runs", eight, 8)})
    table(rows, "Pages in Chromium, the app started as the README does")


# Trained runs: their own score against gallery scoring ------------------------------------------


def trained(known: Path, strangers: Path) -> dict:
    """A dlib128 run trained on ``known`` (80/10/10): its test faces and every photo of
    ``strangers`` scored by the run (distance x (2 - p)) and by gallery scoring on the run's
    gallery (decision fitted on that gallery). Rates at the run's calibrated threshold and at
    equal false-accept rates."""
    import celebmodel
    from celebmodel.faces.network import FaceEmbedder
    from celebmodel.learning.pipeline import prepare_inputs
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.scoring.matching import Confidence, Matcher, fit_decision, simulate

    work = Path(tempfile.mkdtemp(prefix="celebbench-"))
    run = celebmodel.train(known, work / "run", backbone="dlib128")
    recognizer = Recognizer.from_run(run)
    config = run.config()
    split = run.split()
    test = split[split["subset"] == "test"]
    inputs = prepare_inputs(config, test, embed=False)
    scan = celebmodel.scan_dataset(strangers)
    others = prepare_inputs(config, scan.items, root=strangers, embed=False)
    found = {}
    crops_known = [np.asarray(Image.open(c).convert("RGB")) for c in inputs.usable["crop"]]
    crops_other = [np.asarray(Image.open(c).convert("RGB")) for c in others.usable["crop"]]
    truth = np.array([recognizer.labels.index(x) for x in inputs.usable["label"]])
    # the run's own scoring (the model's embeddings and probabilities)
    from celebmodel.scoring.open_set import unknown_scores
    from celebmodel.vectors import l2_normalize

    def own(crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        embeddings, probabilities = recognizer._predict(recognizer._inputs(crops))
        probabilities = np.asarray(probabilities)
        scores = unknown_scores(l2_normalize(np.asarray(embeddings)), probabilities,
                                recognizer.centroids)
        return -scores, probabilities.argmax(1)

    known_own, best_own = own(crops_known)
    other_own, _ = own(crops_other)
    found["own"] = (known_own, best_own, other_own, -recognizer.threshold)
    # gallery scoring on the run's gallery (flip-averaged faces of its training photos)
    train = split[split["subset"] == "train"]
    gallery_inputs = prepare_inputs(config, train, embed=False)
    embed = FaceEmbedder(flip=True)
    gallery = embed.embed([np.asarray(Image.open(c).convert("RGB"))
                           for c in gallery_inputs.usable["crop"]])
    gallery_labels = np.array([recognizer.labels.index(x) for x in gallery_inputs.usable["label"]])
    matcher = Matcher().fit(gallery, gallery_labels)
    seen = simulate(matcher, np.random.default_rng(0))
    decision = fit_decision(np.r_[seen["genuine"], seen["stranger"]],
                            np.r_[seen["genuine_correct"], seen["stranger_correct"]])
    threshold = Confidence(np.sort(decision(seen["stranger"]))).threshold(0.02)
    candidates = matcher.candidates(embed.embed(crops_known), k=2)
    other_candidates = matcher.candidates(embed.embed(crops_other), k=2)
    found["gallery"] = (decision(candidates.features()), candidates.people[:, 0],
                        decision(other_candidates.features()), threshold)
    rows = []
    for name, (known_scores, best, other_scores, cut) in found.items():
        right = best == truth
        row = {"scoring": name, "test accuracy": float(right.mean()),
               "known named (own threshold)": float(np.mean(right & (known_scores >= cut))),
               "strangers rejected (own threshold)": float(np.mean(other_scores < cut))}
        for far in (0.01, 0.05):
            level = float(np.quantile(other_scores, 1 - far))
            row[f"known named at FAR {far:.0%}"] = float(np.mean(right & (known_scores > level)))
        rows.append(row)
    return {"rows": rows, "known": known.name, "strangers": strangers.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", help="LFW in its archive's layout (every person)")
    parser.add_argument("--external", help="photos from other sources (in_lfw/, not_in_lfw/)")
    old_options(parser, text="git ref of the old path (default d5e5885)")
    parser.add_argument(
        "--parts", nargs="*", choices=["speed", "pages", "trained"], default=["speed"],
        help="besides the protocol (--lfw): identify speed and memory (speed), People and "
        "Identify in Chromium with the app's memory (pages), the dev-set comparison (trained)",
    )
    parser.add_argument("--identify", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.identify:
        print(json.dumps(identify_measure(args.identify, SHARED / "lfw")))
        return
    if args.lfw:
        plain, flipped, labels, names = lfw_embeddings(Path(args.lfw))
        protocol(plain, flipped, labels)
        if args.external:
            external(Path(args.external), plain, labels, names)
    if "speed" in args.parts:
        speed(args.old, args.skip_old)
    if "pages" in args.parts:
        pages(args.old, args.skip_old)
    if "trained" in args.parts:
        for known, strangers in (("lfw_10to19", "lfw"), ("lfw", "lfw_10to19")):
            found = trained(SHARED / known, SHARED / strangers)
            table(found["rows"], f"A dlib128 run trained on {known} (80/10/10), strangers: "
                                 f"every photo of {strangers}")


if __name__ == "__main__":
    main()
