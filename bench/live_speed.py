"""Live webcam speed: frames per second the live mode identifies and draws at 640x480, one face.

The frames are a short synthetic clip: an LFW photo's face, moving a few pixels per frame over
a 640x480 background, as a webcam would send it. This tree runs them through
:class:`celebmodel.live.LiveAnnotator` (identify, draw the boxes and names and the rate), the
exact callback of the Identify page's live mode. Beside it, in the same run, the old path's
``Recognizer.identify`` alone (it had no live mode: the snapshot's recognition is the best it
could do per frame), with a model each tree trained itself.

    python bench/live_speed.py                  # about 3 minutes on 2 cores
    python bench/live_speed.py --skip-old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from face_network import SHARED, trees  # noqa: E402

FRAMES = 150


def clip(data: Path, frames: int = FRAMES) -> np.ndarray:
    """``frames`` 640x480 RGB frames with one face drifting across."""
    person = next(p for p in sorted(data.iterdir()) if p.is_dir())
    face = Image.open(sorted(person.glob("*.jpg"))[-1]).convert("RGB").resize((300, 300))
    rng = np.random.default_rng(0)
    background = Image.fromarray(rng.integers(60, 160, (48, 64, 3), dtype=np.uint8))
    background = background.resize((640, 480), Image.Resampling.BICUBIC)
    out = []
    for i in range(frames):
        frame = background.copy()
        frame.paste(face, (100 + (i % 60) * 3, 90 + (i % 20)))
        out.append(np.asarray(frame))
    return np.stack(out)


def worker(run: str, frames_file: str) -> None:
    """Time each frame in this process (this tree or the old one, by ``PYTHONPATH``)."""
    frames = np.load(frames_file)
    from celebmodel.recognize import Recognizer

    recognizer = Recognizer.from_run(run)
    try:
        from celebmodel.live import LiveAnnotator

        step, what = LiveAnnotator(recognizer), "LiveAnnotator (identify + draw)"
    except ImportError:
        step, what = recognizer.identify, "Recognizer.identify (no live mode)"
    for frame in frames[:10]:  # warm-up: compiled graphs, caches
        step(frame)
    times = []
    for frame in frames:
        start = time.perf_counter()
        step(frame)
        times.append(time.perf_counter() - start)
    times_ms = np.array(times) * 1000
    print(
        json.dumps(
            {
                "what": what,
                "frames/s": float(len(times) / sum(times)),
                "median ms/frame": float(np.median(times_ms)),
                "p95 ms/frame": float(np.quantile(times_ms, 0.95)),
            }
        )
    )


def measure(tree: Path, work: Path, data: Path, frames_file: Path) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CELEBMODEL_RUNS": str(work / "runs"),
        "CELEBMODEL_DATA": str(work / "data"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    run = work / "runs" / "20200101-000000-dlib128"
    subprocess.run(
        [sys.executable, "-m", "celebmodel", "train", str(data), "--backbone", "dlib128"]
        + ["--per-class", "20", "--run-dir", str(run)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [sys.executable, __file__, "--worker", str(run), str(frames_file)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    parser.add_argument("--old", help="git ref of the old path")
    parser.add_argument("--skip-old", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("RUN", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    data = Path(args.data).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        frames_file = base / "frames.npy"
        np.save(frames_file, clip(data))
        rows = {}
        with trees(args.old, args.skip_old) as measured:
            for name, tree in measured:
                rows[name] = measure(tree, base / name, data, frames_file)
    print(f"\n## live video, {FRAMES} frames of 640x480 with one face (target: >= 10 frames/s)\n")
    for name, row in rows.items():
        print(
            f"{name:22} {row['frames/s']:6.1f} frames/s  median {row['median ms/frame']:.1f} ms"
            f"  p95 {row['p95 ms/frame']:.1f} ms  ({row['what']})"
        )


if __name__ == "__main__":
    main()
