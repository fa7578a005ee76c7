"""Start to first epoch on the command line, and the commands that must answer at once.

For LFW-8 (``../shared/data/lfw``, 60 photos per person: 480 photos) from an empty face
cache, ``python -m celebmodel train --backbone B`` (each of ``--backbones``: mbf512 and dlib128;
an old tree, dlib128 alone) is timed from the moment the
process starts to the first finished epoch (``history.csv`` gains its first row), TensorFlow's
import included; ``status.json`` is read every 0.1 s to time each stage on the way and the
cores the face stage kept busy (the process's CPU time over the stage's wall time). The face
stage is also timed alone (``face_cache.prepare`` on the same photos, empty cache, nothing
else running in the process). Then ``celebmodel runs`` and ``celebmodel split`` are timed as a
user types them (a new process each, median of 5). Every figure is printed beside the old
path's (commit d5e5885, checked out in a temporary git worktree as in
``bench/face_network.py``), measured in the same run.

    python bench/train_start.py                 # about 4 minutes on 2 cores
    python bench/train_start.py --skip-old
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, cpu_seconds, flat_layout, old_options, python_json, trees  # noqa: E402


def first_epoch(
    tree: Path, work: Path, data: Path, per_class: int, backbone: str
) -> dict[str, float]:
    """Seconds from ``train``'s start to its first epoch, and per stage on the way."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CELEBMODEL_RUNS": str(work / "runs"),
        "CELEBMODEL_DATA": str(work / "data"),  # empty: the face stage starts cold
    }
    run = work / "runs" / f"20200101-000000-{backbone}"
    command = [sys.executable, "-m", "celebmodel", "train", str(data), "--backbone", backbone]
    command += ["--per-class", str(per_class), "--run-dir", str(run)]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    entered: dict[str, tuple[float, float]] = {}  # stage -> (seconds since start, CPU then)
    result: dict[str, float] = {}
    try:
        while process.poll() is None:
            now = time.perf_counter() - start
            try:
                status = json.loads((run / "status.json").read_text())
            except (OSError, ValueError):  # not written yet
                status = {}
            try:
                history = (run / "history.csv").read_text().splitlines()
            except OSError:
                history = []
            key = (status.get("stage") or {}).get("key")
            if key and key not in entered:
                entered[key] = (now, cpu_seconds(process.pid))
            if len(history) > 1:  # a header and the first epoch
                result["Start to first epoch (s)"] = now
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{tree}: train ended before its first epoch")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    marks = sorted(entered.items(), key=lambda item: item[1][0])
    for (key, (at, cpu)), following in zip(marks, [*marks[1:], None], strict=True):
        end, cpu_end = following[1] if following else (result["Start to first epoch (s)"], cpu)
        result[f"  {key} (s)"] = end - at
        if key == "faces" and end > at:
            result["  faces: cores busy"] = (cpu_end - cpu) / (end - at)
    first = marks[0][1][0] if marks else float("nan")
    result["  until the run says what it does (s)"] = first
    return result


def face_stage(data: Path, per_class: int, backbone: str) -> None:
    """(In a process of the measured tree.) The face stage alone, empty cache: JSON line."""
    if flat_layout():  # an old tree's package
        from celebmodel.dataset import make_split, scan_dataset
        from celebmodel.face_cache import prepare

        from celebmodel.faces import FaceStage, warm_up
    else:
        from celebmodel.data.dataset import make_split, scan_dataset
        from celebmodel.faces.cache import prepare
        from celebmodel.faces.detection import FaceStage, warm_up
    if flat_layout():
        stage = FaceStage(alignment="chip", size=150)
        warm_up()
    else:
        from celebmodel.recognition.public_figures import stage_of

        stage = stage_of(backbone)
        warm_up(stage.detector)

    split, _ = make_split(scan_dataset(data), per_class=per_class, seed=0)
    with tempfile.TemporaryDirectory() as cache:
        cpu, start = time.process_time(), time.perf_counter()
        records = prepare(data, list(split["path"]), stage, cache)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    routes = pd.Series([r["route"] for r in records]).value_counts().to_dict()
    print(json.dumps({"seconds": wall, "cores": cpu / wall, "routes": routes}))


def command_seconds(tree: Path, args: list[str], env: dict[str, str], repeats: int = 5) -> float:
    """Median wall time of ``python -m celebmodel ARGS`` in a new process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "celebmodel", *args],
            cwd=tree,
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    tree: Path, work: Path, data: Path, per_class: int, backbone: str
) -> dict[str, float]:
    result = first_epoch(tree, work, data, per_class, backbone)
    env = {**os.environ, "PYTHONPATH": str(tree), "CELEBMODEL_RUNS": str(work / "runs")}
    alone = python_json(
        __file__, "--faces-only", "--data", data, "--per-class", str(per_class),
        "--backbone", backbone, env=env, cwd=tree,
    )
    result["face stage alone, empty cache (s)"] = alone["seconds"]
    result["  its cores busy"] = alone["cores"]
    result["celebmodel runs (s)"] = command_seconds(tree, ["runs"], env)
    split = ["split", str(data), "--out", str(work / "split.csv"), "--per-class", "60"]
    result["celebmodel split, LFW-8 (s)"] = command_seconds(tree, split, env)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    parser.add_argument("--per-class", type=int, default=60)
    old_options(parser)
    parser.add_argument("--backbones", nargs="+", default=["mbf512", "dlib128"])
    parser.add_argument("--faces-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if args.faces_only:
        face_stage(data, args.per_class, args.backbone)
        return
    base = Path(tempfile.mkdtemp(prefix="celebbench-start-"))
    columns = {}
    try:
        with trees(args.old, args.skip_old) as measured:
            for name, tree in measured:
                for backbone in args.backbones if name == "new" else ["dlib128"]:
                    work = base / f"{name}-{backbone}"
                    work.mkdir()
                    columns[f"{name} {backbone}"] = measure(
                        tree, work, data, args.per_class, backbone
                    )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        f"\n## train from an empty cache, {args.per_class} photos per person of {data.name}; "
        "runs and split (targets: first epoch <= 15 s, runs and split <= 1.5 s)\n"
    )
    print(pd.DataFrame(columns).to_string(float_format=lambda v: f"{v:.2f}", na_rep="-"))


if __name__ == "__main__":
    main()
