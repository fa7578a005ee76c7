"""Videos identified on a Ray cluster (``predict --engine ray``): each video cut into time
segments of :data:`SEGMENT_SECONDS`, the segments of every video spread over the actors, and
the tracks stitched on the driver.

What a worker does is the costly part, and only that: it reads its segment
(:meth:`VideoReader.frames` with ``start`` and ``stop``: the frames, samples and cuts the whole
reading gives there) and finds and embeds the faces of each sampled frame with the run's
model, loaded once per actor. What links faces across the segments' boundaries is done once,
on the driver, in time order: the segments' faces go through the same
:class:`~celebmodel.video.timeline.Collected` as a video read on this machine, with each
frame's shot counted from all the segments' cuts. So a track that crosses a boundary is one
track, and the timeline is the local engine's (up to TensorFlow's last-digit rounding of an
embedding). A damaged file's segments after the damage are left out, as the local reading
stops there.
"""

from __future__ import annotations

import base64
import bisect
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..cluster.engine import (
    PART_FORMAT,
    actor_setup,
    cluster,
    die_if_asked,
    driver_settings,
    import_ray,
    plan,
    run_blocks,
)
from ..data.videos import DEFAULT_FPS, VideoReader
from ..errors import VideoError
from ..progress import BarFactory, quiet_bar
from ..recognition.recognize import Recognizer
from ..runs.run import Run, load_run
from ..storage import plain_json
from .timeline import Collected, VideoTimeline, video_threshold
from .tracks import ANSWER_KEYS, padded_face

SEGMENT_SECONDS = 60.0  # a worker's share of a video: long enough that its extra second read
# before the start (for the cuts and the sampling) costs little, short enough to spread a
# 10-minute video over ten workers
FACE_KEYS = (*ANSWER_KEYS, "box", "confidence")  # what the driver's tracks need of a face


class _Sampler:
    """A Ray actor: a run's Recognizer, loaded once, finding the faces of one segment per
    call."""

    def __init__(self, settings: dict[str, Any]) -> None:
        actor_setup(settings)
        self.settings = settings
        self.recognizer = Recognizer.from_run(settings["run"])
        self.recognizer.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        die_if_asked(self.settings)
        answers = []
        for items in batch["items"]:
            ((path, start, stop),) = json.loads(str(items))
            answers.append(segment_faces(self.recognizer, path, start, stop,
                                         self.settings["fps"], self.settings["threshold"]))
        return {"block": batch["block"], "answer": np.array(answers)}


def segment_faces(recognizer: Recognizer, path: str, start: float, stop: float | None,
                  fps: float | None, threshold: float) -> str:
    """A segment's sampled frames with their faces, embeddings and padded face crops (PNG),
    and its cuts, as JSON (floats round-trip exactly)."""
    reader = VideoReader(path, fps=fps)
    samples = []
    for frame in reader.frames(start, stop):
        faces, embeddings = recognizer.analyse(frame.pixels, threshold)
        samples.append({
            "time": frame.time,
            "faces": [{key: face.get(key) for key in FACE_KEYS} for face in faces],
            "embeddings": np.asarray(embeddings, np.float32).tolist(),
            "crops": [_png(padded_face(frame.pixels, face["box"])) for face in faces],
        })
    return json.dumps({"format": PART_FORMAT, "samples": samples, "cuts": reader.cuts,
                       "end": reader.end, "stopped": reader.stopped}, default=plain_json)


def _png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _image(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def segments(duration: float | None, length: float) -> list[tuple[float, float | None]]:
    """``[start, stop)`` ranges of ``length`` seconds covering a video; the last one open
    (read to the end, whatever the container said of its duration)."""
    if not duration or duration <= length:
        return [(0.0, None)]
    count = int(np.ceil(duration / length))
    return [(k * length, (k + 1) * length if k + 1 < count else None) for k in range(count)]


def identify_videos(
    run_dir: str | Path | Run,
    videos: Sequence[str | Path],
    fps: float | None = DEFAULT_FPS,
    threshold: float | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    bar: BarFactory = quiet_bar,
    samples: bool = False,
    segment: float | None = None,
) -> list[VideoTimeline | VideoError]:
    """What :func:`~celebmodel.video.timeline.identify_video` gives for each of ``videos``,
    their segments (``segment`` seconds, default :data:`SEGMENT_SECONDS`) computed by Ray
    actors; a video that cannot be read is its :class:`VideoError`, in its place. ``bar``
    counts sampled frames."""
    import_ray()
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    recognizer = Recognizer.from_run(run)  # names the tracks, here
    threshold = video_threshold(recognizer) if threshold is None else threshold
    readers: dict[str, VideoReader | VideoError] = {}
    for video in videos:
        try:
            readers[str(video)] = VideoReader(video, name=str(video), fps=fps)
        except VideoError as exc:
            readers[str(video)] = exc
    items = [(name, str(Path(name).resolve()), start, stop)
             for name, reader in readers.items() if isinstance(reader, VideoReader)
             for start, stop in segments(reader.info.duration, segment or SEGMENT_SECONDS)]
    blocks = plan([item[1:] for item in items], [str(run.path), run.versions(), fps, threshold],
                  size=1)
    owners = {block.id: name for block, (name, *_) in zip(blocks, items, strict=True)}
    settings = {**driver_settings(), "run": str(run.path), "fps": fps, "threshold": threshold}
    parts: dict[str, dict[str, Any]] = {}
    total = sum(r.info.samples(fps) or 0 for r in readers.values() if isinstance(r, VideoReader))
    with bar(desc="frames", total=total or None, unit="frame") as progress:
        if blocks:
            with cluster(address) as ray:
                for block_id, answer in run_blocks(ray, _Sampler, settings, blocks, workers):
                    if block_id not in parts:  # a block retried after delivery: counted once
                        parts[block_id] = json.loads(answer)
                        progress.update(len(parts[block_id]["samples"]))
    results: list[VideoTimeline | VideoError] = []
    for name, reader in readers.items():
        if isinstance(reader, VideoError):
            results.append(reader)
            continue
        own = [parts[block.id] for block in blocks if owners[block.id] == name]
        try:
            results.append(_stitch(recognizer, threshold, reader, own, fps, samples))
        except VideoError as exc:
            results.append(exc)
    return results


def _stitch(recognizer: Recognizer, threshold: float, reader: VideoReader,
            parts: list[dict[str, Any]], fps: float | None, samples: bool) -> VideoTimeline:
    """One video's segments, in order, through the local engine's :class:`Collected`."""
    kept = []
    for part in parts:
        kept.append(part)
        if part["stopped"]:
            break  # the whole reading stops at the damage: so does this one
    cuts = [float(t) for part in kept for t in part["cuts"]]
    collected = Collected(recognizer, threshold, samples)
    for part in kept:
        for sample in part["samples"]:
            faces, crops = sample["faces"], sample["crops"]
            embeddings = np.asarray(sample["embeddings"], np.float32).reshape(len(faces), -1
                                                                               if faces else 0)
            collected.add(sample["time"], bisect.bisect_right(cuts, sample["time"]), faces,
                          embeddings, lambda j, crops=crops: _image(crops[j]))
    if not collected.frames:
        raise VideoError(f"{reader.name}: no frame could be decoded")
    last = max(float(part["end"]) for part in kept if part["samples"])
    stopped = kept[-1]["stopped"] or reader.ended_early(last)
    return collected.timeline(reader.info, fps, last, cuts, stopped)

