"""Folder identification on Ray against the local engine: photos per second, Ray's overhead,
and what N workers would give.

A dlib128 model is trained on ``../shared/data/lfw`` (8 people); then every photo of
``../shared/data/lfw_10to19`` (1,301 photos) is identified, in the same run:

1. the local engine in this process (model loaded once, then ``identify_album``);
2. the Ray engine on a local Ray cluster of this machine's CPUs, with 1 actor, then 2 actors
   (each actor loads the model once and takes blocks of 32 photos);
3. both as a user runs them, ``celebmodel predict RUN FOLDER --csv`` with and without
   ``--engine ray`` (whole command: TensorFlow and Ray start-up included), and their CSVs
   compared row for row.

Ray's start-up (``ray.init``) and each job's actor start-up (time to its first block, less a
block's work) are reported apart from the steady rate (photos between the first and the last
block delivered, over that time). The steady rate of one actor (one CPU) is the per-worker
rate; N workers are projected at N times it, up to the driver's ceiling (merging parts and
writing the CSV, measured) and the photo bytes per second the shared storage must serve.

    python bench/ray_engine.py
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, run_celebmodel  # noqa: E402

sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known", default=str(SHARED / "lfw"), help="folder the model learns")
    parser.add_argument("--folder", default=str(SHARED / "lfw_10to19"), help="folder identified")
    parser.add_argument("--work", help="folder for runs and caches (default: a temporary one)")
    return parser.parse_args()


def celebmodel(work: Path, *args: str) -> float:
    """Run ``python -m celebmodel ARGS`` from this tree; its wall time."""
    return run_celebmodel(ROOT, work, *args)[1]


class Clock:
    """A bar factory that records when each step arrived (photos delivered)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int]] = []

    def __call__(self, **options):
        clock = self

        class Bar:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return None

            def update(self, n=1):
                clock.events.append((time.perf_counter(), n))

        return Bar()


def ray_job(run: Path, photos: list, workers: int, parts: Path) -> dict[str, float]:
    from celebmodel.albums.ray_album import identify_folder
    from celebmodel.cluster.engine import BLOCK_PHOTOS

    clock = Clock()
    start = time.perf_counter()
    album = identify_folder(run, photos, parts / f"ray{workers}.csv", workers=workers, bar=clock)
    total = time.perf_counter() - start
    times = [t for t, _ in clock.events]
    first_photos = clock.events[0][1]
    steady = (len(photos) - first_photos) / (times[-1] - times[0])
    per_block = BLOCK_PHOTOS / (steady / workers)  # one block's work on one actor
    return {
        "seconds": total,
        "photos/s (whole job)": len(photos) / total,
        "photos/s (steady)": steady,
        "actor start-up (s)": (times[0] - start) - per_block,
        "faces": len(album.rows),
    }


def driver_share(album, photos: list, recognizer, work: Path) -> dict[str, float]:
    """What the driver does alone, timed on the local album cut into the engine's blocks:
    write each block's part, merge them, write the CSV; and grouping (``--group``) apart."""
    from celebmodel.albums import ray_album
    from celebmodel.albums.album import Album
    from celebmodel.cluster import engine
    from celebmodel.storage import atomic_write_text

    blocks = engine.plan([(name, str(path)) for name, path in photos], "bench")
    answers = []
    for block in blocks:
        names = {name for name, _ in block.items}
        mask = album.rows["photo"].isin(names).to_numpy()
        piece = Album(
            album.rows[mask].reset_index(drop=True),
            album.embeddings[mask],
            [face for face, keep in zip(album.faces, mask, strict=True) if keep],
            [error for error in album.errors if error["photo"] in names],
            [name for name, _ in block.items],
            album.grouped[mask],
        )
        answers.append((block.id, ray_album._part(piece)))
    folder = work / "driver.csv.parts"
    folder.mkdir()
    start = time.perf_counter()
    parts = []
    for block_id, answer in answers:
        atomic_write_text(folder / f"{block_id}.json", answer)
        parts.append(json.loads(answer))
    merged = ray_album.merge(parts)
    merged.write_csv(work / "driver.csv")
    merge_seconds = time.perf_counter() - start
    start = time.perf_counter()
    merged.group(recognizer.cuts)
    return {"merge": merge_seconds, "group": time.perf_counter() - start}


def rows(path: Path) -> set[tuple[str, ...]]:
    return {tuple(row) for row in csv.reader(io.StringIO(path.read_text()))}


def main() -> None:
    args = parse_args()
    folder = Path(args.folder).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["CELEBMODEL_RUNS"] = str(work / "runs")
        os.environ["CELEBMODEL_DATA"] = str(work / "data")
        os.environ.pop("RAY_ADDRESS", None)
        run = work / "runs" / "lfw"
        if not (run / "model.keras").is_file():
            celebmodel(work, "train", args.known, "--backbone", "dlib128", "--run-dir", str(run))

        from celebmodel.albums.album import identify_album
        from celebmodel.data.images import photo_files
        from celebmodel.recognition.recognize import Recognizer

        files = photo_files([folder])
        photos = [(str(path), path) for path in files]
        size = sum(path.stat().st_size for path in files)
        for path in files:  # the page cache warm for every engine alike
            path.read_bytes()
        n = len(photos)

        # 1. the local engine, in this process
        start = time.perf_counter()
        recognizer = Recognizer.from_run(run).warm_up()
        local_load = time.perf_counter() - start
        start = time.perf_counter()
        album = identify_album(recognizer, photos)
        local_seconds = time.perf_counter() - start
        local_rate = n / local_seconds

        # 2. Ray, 1 then 2 actors, on a local cluster of this machine's CPUs
        import ray

        cpus = os.cpu_count() or 1
        start = time.perf_counter()
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        ray_start = time.perf_counter() - start
        from celebmodel.cluster import engine

        engine._quiet(ray)
        jobs = {workers: ray_job(run, photos, workers, work) for workers in (1, 2)}

        driver = driver_share(album, photos, recognizer, work)
        ray.shutdown()

        # 3. as a user runs them
        local_csv, ray_csv = work / "local.csv", work / "ray.csv"
        cli_local = celebmodel(work, "predict", str(run), str(folder), "--csv", str(local_csv))
        cli_ray = celebmodel(
            work, "predict", str(run), str(folder), "--csv", str(ray_csv), "--engine", "ray"
        )
        same = rows(local_csv) == rows(ray_csv)

    per_worker = jobs[1]["photos/s (steady)"]
    driver_ceiling = n / driver["merge"]
    print(f"\n## {n} photos of {folder.name} ({size / n / 1024:.0f} KiB each), {cpus} CPUs\n")
    print("| Engine | photos/s (steady) | photos/s (whole job) | start-up (s) |")
    print("| --- | --- | --- | --- |")
    print(f"| local, in-process | {local_rate:.1f} | {local_rate:.1f} | {local_load:.1f} (model) |")
    for workers, job in jobs.items():
        print(
            f"| Ray, {workers} actor(s) | {job['photos/s (steady)']:.1f} | "
            f"{job['photos/s (whole job)']:.1f} | {job['actor start-up (s)']:.1f} (actors) |"
        )
    print(f"| Ray cluster start (`ray.init`) | | | {ray_start:.1f} |")
    print(f"| `predict --csv`, whole command | {n / cli_local:.1f} | | {cli_local:.1f} s total |")
    print(
        f"| `predict --csv --engine ray`, whole command | {n / cli_ray:.1f} | | "
        f"{cli_ray:.1f} s total |"
    )
    print(f"\nCSV of --engine ray equals the local CSV (as sets of rows): {same}")
    print(f"faces: local {len(album.rows)}, Ray {jobs[2]['faces']}")
    print(f"\n## Projection from the per-worker rate ({per_worker:.1f} photos/s, 1 CPU each)\n")
    print(
        f"driver, alone: parts written, merged and the CSV written in {driver['merge']:.2f} s "
        f"for {n} photos (ceiling {driver_ceiling:.0f} photos/s); --group adds "
        f"{driver['group']:.2f} s for {len(album.rows)} faces\n"
    )
    print("| Workers | photos/s | photos/hour | photo reads MB/s |")
    print("| --- | --- | --- | --- |")
    for workers in (1, 2, 8, 32, 128):
        rate = min(workers * per_worker, driver_ceiling)
        print(f"| {workers} | {rate:.0f} | {rate * 3600:,.0f} | {rate * size / n / 1e6:.1f} |")


if __name__ == "__main__":
    main()
