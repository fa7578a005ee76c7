"""Live webcam speed: frames per second the live mode identifies and draws at 640x480, one face.

The frames are a short synthetic clip: an LFW photo's face, moving a few pixels per frame over
a 640x480 background, as a webcam would send it. Two measures per tree, with a model each
tree trained itself:

* in the process: this tree runs the frames through :class:`celebmodel.video.live.LiveAnnotator`
  (identify, draw the boxes and names and the rate), the exact callback of the Identify
  page's live mode; the old path without it, its ``Recognizer.identify`` alone;
* in the app, what a user sees: the studio started exactly as the README says
  (``_common.serve``: ``streamlit run streamlit_app.py``, no flag, from a fresh clone with
  its ``.venv`` inside), headless Chromium's fake camera playing the clip at 30 frames per
  second into Identify's live webcam, and the frames per second that come back annotated:
  frames the page shows that differ from the one before (the server repeats the last
  annotated frame while it identifies the next, so a repeat is not counted).

The old path is commit d5e5885 by default (the code issue 20's walkthrough met), checked out
in a temporary git worktree as in ``bench/face_network.py``, measured in the same run.

    python bench/live_speed.py                  # about 5 minutes on 2 cores
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
from _common import SHARED, flat_layout, old_options, python_json, studio_page, trees  # noqa: E402

FRAMES = 150
IN_APP_SECONDS = 15
# Frames the page shows that differ from the previous one (a repeat, re-encoded, changes few
# pixels by little), counted for ``seconds``; on a 320x240 copy.
DISTINCT_FRAMES = """async (video, seconds) => {
    const canvas = document.createElement('canvas');
    canvas.width = 320; canvas.height = 240;
    const context = canvas.getContext('2d', {willReadFrequently: true});
    let last = null, distinct = 0, shown = 0;
    const start = performance.now();
    return await new Promise(resolve => {
        const step = () => {
            context.drawImage(video, 0, 0, 320, 240);
            const data = context.getImageData(0, 0, 320, 240).data;
            let changed = 0;
            if (last) for (let i = 0; i < data.length; i += 4) {
                const delta = Math.abs(data[i] - last[i]) + Math.abs(data[i + 1] - last[i + 1]);
                if (delta > 40) changed++;
            }
            if (last && changed > 150) distinct++;
            last = data; shown++;
            const seconds_so_far = (performance.now() - start) / 1000;
            if (seconds_so_far < seconds) video.requestVideoFrameCallback(step);
            else resolve({distinct, shown, seconds: seconds_so_far});
        };
        video.requestVideoFrameCallback(step);
    });
}"""


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
    flat = flat_layout()  # an old tree's package
    if flat:
        from celebmodel.recognize import Recognizer
    else:
        from celebmodel.recognition.recognize import Recognizer

    recognizer = Recognizer.from_run(run)
    try:
        if flat:
            from celebmodel.live import LiveAnnotator
        else:
            from celebmodel.video.live import LiveAnnotator

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


def write_y4m(path: Path, frames: np.ndarray, rate: int = 30) -> Path:
    """The clip as a Y4M video (what Chromium's fake camera plays), 4:2:0."""
    height, width = frames.shape[1:3]
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{rate}:1 Ip A1:1 C420jpeg\n".encode())
        for pixels in frames:
            rgb = pixels.astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            halves = [c.reshape(height // 2, 2, width // 2, 2).mean((1, 3)) for c in (u, v)]
            planes = [np.clip(np.rint(plane), 0, 255).astype(np.uint8) for plane in [y, *halves]]
            handle.write(b"FRAME\n" + b"".join(plane.tobytes() for plane in planes))
    return path


def in_app(tree: Path, work: Path, env: dict[str, str], video: Path) -> dict:
    """Annotated frames per second coming back to the Identify page's live webcam."""
    camera = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    with studio_page(tree, env, work, *camera) as (url, _, page):
        page.goto(f"{url}/identify")
        page.get_by_text("Live webcam", exact=True).click(timeout=180_000)
        frame = page.frame_locator("iframe[title*='webrtc']").first
        frame.get_by_role("button", name="START").click(timeout=180_000)
        shown = frame.locator("video").first
        shown.wait_for(timeout=180_000)
        deadline = time.monotonic() + 180
        while shown.evaluate("v => v.readyState") < 2:  # frames are coming back
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tree}: no video came back from the live webcam")
            page.wait_for_timeout(500)
        page.wait_for_timeout(10_000)  # the model warms up, the connection settles
        counted = shown.evaluate(DISTINCT_FRAMES, IN_APP_SECONDS)
    return {"in-app frames/s": counted["distinct"] / counted["seconds"], **counted}


def measure(tree: Path, work: Path, data: Path, frames_file: Path, video: Path) -> dict:
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
    result = python_json(__file__, "--worker", run, frames_file, env=env, cwd=tree)
    return {**result, **in_app(tree, work, env, video)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    old_options(parser)
    parser.add_argument("--worker", nargs=2, metavar=("RUN", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    data = Path(args.data).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        frames_file = base / "frames.npy"
        frames = clip(data)
        np.save(frames_file, frames)
        video = write_y4m(base / "clip.y4m", frames)
        rows = {}
        with trees(args.old, args.skip_old) as measured:
            for name, tree in measured:
                (base / name).mkdir()
                rows[name] = measure(tree, base / name, data, frames_file, video)
    print(f"\n## live video, {FRAMES} frames of 640x480 with one face (target: >= 10 frames/s)\n")
    for name, row in rows.items():
        print(
            f"{name:22} {row['frames/s']:6.1f} frames/s  median {row['median ms/frame']:.1f} ms"
            f"  p95 {row['p95 ms/frame']:.1f} ms  ({row['what']})"
        )
        print(
            f"{'':22} {row['in-app frames/s']:6.1f} frames/s in the app, started as the README "
            f"says ({row['distinct']} annotated of {row['shown']} shown in {row['seconds']:.0f} s)"
        )


if __name__ == "__main__":
    main()
