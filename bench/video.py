"""Videos: speed, memory and quality of ``identify_video`` beside per-frame naming (each
sampled frame identified as a photo, as the live webcam does), measured in the same run.

- ``speed``: a generated 720p H.264 video (``--minutes``, default 10; 10-second scenes, each a
  photo of ``../shared/data/lfw`` moving across a coloured background, 25 frames/s, x264
  "veryfast") identified with the built-in model at the default sampling: seconds and times
  faster than real time, tracks beside frames identified one by one.
- ``memory``: the studio's peak memory (each in a process of its own) on a generated 1-minute
  and 30-minute video (360p, so that half an hour is made in minutes).
- ``quality``: real clips with people marked by hand (kept outside the repository, see
  :data:`CLIPS`): news and interview clips of LFW's public figures with the built-in model,
  and a clip of people it does not know with a copy that learnt them from one photo each
  (the same public repository's photos): per person, the occurrences found against the
  truth; share of on-screen seconds named right and wrong-name seconds per minute, tracks
  beside frames.

    python bench/video.py --parts quality                      # 1 minute
    python bench/video.py --parts speed --minutes 10           # about 8 minutes on 2 cores
    python bench/video.py --parts memory                       # about 15 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

CLIPS = Path("/work/clips")  # kept outside the repository; where each comes from below
# Truth marked by hand, frame by frame: who is on screen with a visible face, when (s).
# "photos": people the built-in model does not know, learnt by a copy from one photo each.
TRUTH = {
    # daviesian/CLM-framework@3b2bf06 videos/ (clips of the YouTube Faces set, whose people
    # are LFW's): news and interview footage, the face on screen the whole clip
    "clm_0417_02_003_bill_clinton.avi": {"photos": {},
                                         "on_screen": {"Bill Clinton": [(0.0, 13.2)]}},
    "clm_1815_01_008_tony_blair.avi": {"photos": {},
                                       "on_screen": {"Tony Blair": [(0.0, 8.2)]}},
    "clm_1878_01_002_vladimir_putin.avi": {"photos": {},
                                           "on_screen": {"Vladimir Putin": [(0.0, 7.28)]}},
    # ericvui/FaceNet2020@6f18c84 video/DonaldTrumpCovid19.mp4: a 2020 Fox News interview (LFW
    # has one photo of him, from 2003); from 34.92 s a split screen with the guest (Marc
    # Siegel, not in LFW); a wipe covers both faces by 37.4 s; then the publisher's end card
    "DonaldTrumpCovid19.mp4": {"photos": {},
                               "on_screen": {"Donald Trump": [(0.0, 37.4)]},
                               "strangers": {"Marc Siegel": [(34.92, 37.4)]}},
    # ageitgey/face_recognition examples/
    "short_hamilton_clip.mp4": {
        "photos": {"Lin-Manuel Miranda": "lin-manuel-miranda.png",
                   "Alex Lacamoire": "alex-lacamoire.png"},
        "on_screen": {
            "Lin-Manuel Miranda": [(0.0, 1.52), (3.59, 7.89)],  # on stage, wide; close
            "Alex Lacamoire": [(0.0, 1.52), (1.52, 3.59)],  # at the piano; profile, close
        },
        # 7.89-10.0: the audience (Barack and Michelle Obama and others; none in LFW)
    },
}


def generate(path: Path, minutes: float, size: tuple[int, int] = (1280, 720),
             preset: str = "veryfast") -> Path:
    """An H.264 video of LFW-8 photos, one per 10-second scene, each moving slowly."""
    import av

    if path.exists():
        return path
    photos = sorted((SHARED / "lfw").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    width, height = size
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": preset})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for scene in range(int(minutes * 6)):
            side = height * 5 // 9
            face = Image.open(photos[rng.integers(len(photos))]).convert("RGB").resize((side, side))
            colour = tuple(int(c) for c in rng.integers(0, 200, 3))
            for i in range(250):
                canvas = Image.new("RGB", size, colour)
                canvas.paste(face, (width // 6 + i * width // 640, height // 5 + (i % 50)))
                frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            print(f"  generating {path.name}: {scene + 1} of {int(minutes * 6)} scenes",
                  end="\r", file=sys.stderr)
        for packet in stream.encode():
            out.mux(packet)
    partial.replace(path)
    return path


def per_frame(recognizer, path: Path, fps: float, threshold: float | None) -> list[tuple]:
    """The old path: every sampled frame identified as a photo (as the live webcam does)."""
    from celebmodel.data.videos import VideoReader

    return [(frame.time, recognizer.identify(frame.pixels, threshold=threshold))
            for frame in VideoReader(path, fps=fps).frames()]


def speed(minutes: float, cache: Path) -> None:
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import builtin_run
    from celebmodel.video.timeline import identify_video, video_threshold

    video = generate(cache / f"lfw8_{minutes:g}min_720p.mp4", minutes)
    recognizer = Recognizer.from_run(builtin_run()).warm_up()
    length = minutes * 60
    start = time.perf_counter()
    timeline = identify_video(recognizer, video)
    tracks = time.perf_counter() - start
    start = time.perf_counter()
    frames = per_frame(recognizer, video, timeline.fps, video_threshold(recognizer))
    single = time.perf_counter() - start
    print(f"\nspeed: {video.name} ({length / 60:g} min, 1280x720 H.264, 25 fps), built-in model, "
          f"{timeline.fps:g} frames/s looked at ({timeline.frames:,} frames, "
          f"{timeline.faces:,} faces, {len(timeline.tracks):,} tracks)")
    print(f"  tracks (identify_video):      {tracks:7.1f} s  {length / tracks:5.2f}x real time")
    print(f"  frames one by one (old path): {single:7.1f} s  {length / single:5.2f}x real time"
          f"  ({len(frames):,} frames)")


def memory(cache: Path) -> None:
    rows = []
    for minutes in (1, 30):  # 360p, encoded "ultrafast": half an hour made in minutes
        video = generate(cache / f"lfw8_{minutes:g}min_360p.mp4", minutes, (640, 360),
                         "ultrafast")
        out = subprocess.run([sys.executable, __file__, "--memory-of", str(video)],
                             capture_output=True, text=True, check=True)
        rows.append((minutes, json.loads(out.stdout.strip().splitlines()[-1])))
    print("\nmemory: the studio's peak resident memory identifying a generated 360p video")
    for minutes, row in rows:
        print(f"  {minutes:2d} min: {row['peak_mb']:7.0f} MB  ({row['seconds']:.0f} s, "
              f"{row['frames']:,} frames, {row['tracks']:,} tracks)")
    print(f"  30 min - 1 min: {rows[1][1]['peak_mb'] - rows[0][1]['peak_mb']:+.0f} MB")


def memory_of(video: Path) -> None:
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import builtin_run
    from celebmodel.video.timeline import identify_video

    start = time.perf_counter()
    timeline = identify_video(Recognizer.from_run(builtin_run()), video)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "seconds": time.perf_counter() - start,
                      "frames": timeline.frames, "tracks": len(timeline.tracks)}))


def _on(spans: list[tuple[float, float]], t: float) -> bool:
    return any(a <= t < b for a, b in spans)


def quality() -> None:
    from celebmodel.recognition.people import enroll
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import builtin_run, copy_run
    from celebmodel.video.timeline import identify_video, video_threshold

    os.environ["CELEBMODEL_RUNS"] = tempfile.mkdtemp(prefix="bench-video-runs-")
    for clip, truth in TRUTH.items():
        path = CLIPS / clip
        if not path.exists():
            print(f"{path}: missing (git show it from the repository named in TRUTH)")
            continue
        run = builtin_run()
        if truth["photos"]:
            run = copy_run(run, "bench copy")
        for name, photo in truth["photos"].items():
            enroll(run, name, [CLIPS / photo])
        recognizer = Recognizer.from_run(run)
        timeline = identify_video(recognizer, path)
        step = 1.0 / timeline.fps
        on_screen = truth["on_screen"]
        learnt = "people learnt from one photo each" if truth["photos"] else "built-in model"
        print(f"\nquality: {clip} ({timeline.end:.1f} s; {learnt}; "
              f"{timeline.fps:g} frames/s looked at; named at Strict)")
        for name, spans in on_screen.items():
            found = [p for p in timeline.people if p.name == name]
            got = [(o["start"], o["end"]) for p in found for o in p.occurrences]
            print(f"  {name}: truth {spans}; found {got}")
        for name, spans in truth.get("strangers", {}).items():
            print(f"  {name} (not in the model): truth {spans}")
        for person in timeline.people:
            if not person.known:
                spans = [(o["start"], o["end"]) for o in person.occurrences]
                print(f"  {person.name} (unknown): {spans}")
        for person in timeline.people:
            if person.known and person.name not in on_screen:
                print(f"  WRONG: {person.name} named at {person.occurrences}")
        # track naming against frame-by-frame naming, at the sampled frames' own times
        frames = dict(per_frame(recognizer, path, timeline.fps, video_threshold(recognizer)))
        for method in ("tracks", "frames"):
            right = total = 0
            wrong = 0.0
            for t, faces in frames.items():
                if method == "tracks":
                    named = {p.name for p in timeline.people if p.known
                             for o in p.occurrences if o["start"] <= t < o["end"]}
                else:
                    named = {f["name"] for f in faces if f["known"]}
                for name, spans in on_screen.items():
                    if _on(spans, t):
                        total += 1
                        right += name in named
                wrong += step * sum(not _on(on_screen.get(n, []), t) for n in named)
            minutes = timeline.end / 60
            print(f"  {method:6s}: on-screen seconds named right {right / max(total, 1):.3f}"
                  f" ({right} of {total} samples); wrong-name seconds per minute "
                  f"{wrong / minutes:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="quality,speed,memory")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bench-videos",
                        help="where generated videos are kept between runs")
    parser.add_argument("--memory-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return memory_of(args.memory_of)
    args.cache.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    if "quality" in parts:
        quality()
    if "speed" in parts:
        speed(args.minutes, args.cache)
    if "memory" in parts:
        memory(args.cache)


if __name__ == "__main__":
    main()
