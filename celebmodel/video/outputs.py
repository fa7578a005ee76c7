"""A video's occurrences as files: a CSV row per occurrence, a WebVTT cue per occurrence (so a
video player shows who is on screen), the JSON of :meth:`VideoTimeline.to_dict`, and the video
itself with the faces boxed and named. Each is written whole or not at all
(:mod:`celebmodel.storage`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from ..data.videos import VideoInfo, VideoReader
from ..reports.display import draw_faces, short_of_certain
from ..storage import atomic_file, atomic_write_text
from .timeline import VideoTimeline

COLUMNS = ("video", "person", "name", "known", "start", "end", "seconds", "match_confidence",
           "tracks")


def occurrence_table(timeline: VideoTimeline) -> pd.DataFrame:
    """One row per occurrence, people in the order of :attr:`VideoTimeline.people`."""
    rows = [
        {"video": Path(timeline.info.name).name, "person": person.key, "name": person.name,
         "known": person.known, "start": o["start"], "end": o["end"],
         "seconds": round(o["end"] - o["start"], 3), "match_confidence": o["match_confidence"],
         "tracks": " ".join(map(str, o["tracks"]))}
        for person in timeline.people for o in person.occurrences
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def csv_text(timelines: list[VideoTimeline]) -> str:
    frame = pd.concat([occurrence_table(t) for t in timelines]) if timelines else \
        pd.DataFrame(columns=list(COLUMNS))
    frame["match_confidence"] = frame["match_confidence"].map(
        lambda value: "" if value is None or value != value else f"{value:.4f}"
    )
    return frame.to_csv(index=False, lineterminator="\n")


def _clock(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"


def vtt_text(timeline: VideoTimeline) -> str:
    """WebVTT: a cue per occurrence, in time order, reading who it is (and how sure)."""
    cues = sorted(
        (o["start"], o["end"], person.name, o["match_confidence"])
        for person in timeline.people for o in person.occurrences
    )
    lines = ["WEBVTT", ""]
    for number, (start, end, name, confidence) in enumerate(cues, start=1):
        sure = "" if confidence is None else f" (match confidence {short_of_certain(confidence)})"
        lines += [str(number), f"{_clock(start)} --> {_clock(end)}", f"{name}{sure}", ""]
    return "\n".join(lines)


def json_text(timelines: list[VideoTimeline]) -> str:
    return json.dumps([t.to_dict() for t in timelines], indent=2)


def write_annotated(source: str | Path | bytes, timeline: VideoTimeline,
                    path: str | Path) -> None:
    """The video again (H.264 in mp4, its frames' times, no sound) with every face boxed and
    named as its person is on the timeline, written whole or not at all."""
    from PIL import Image

    reader = VideoReader(source, name=timeline.info.name, fps=None)
    _write_h264(((frame.time, draw_faces(Image.fromarray(frame.pixels),
                                         timeline.faces_at(frame.time), numbered=False))
                 for frame in reader.frames()), timeline.info.rate, path)


def write_playable(source: str | Path | bytes, name: str, path: str | Path) -> None:
    """A copy of a video that every browser plays (H.264 in mp4, its frames' times, no
    sound), for the page's player when the file's own codec or container is not one
    (:func:`plays_in_browsers`)."""
    from PIL import Image

    reader = VideoReader(source, name=name, fps=None)
    _write_h264(((frame.time, Image.fromarray(frame.pixels)) for frame in reader.frames()),
                reader.info.rate, path)


BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})  # what Chrome and Firefox play
BROWSER_CONTAINERS = frozenset({".mp4", ".m4v", ".mov", ".webm"})


def plays_in_browsers(info: VideoInfo) -> bool:
    """Whether a browser's player can show the video as it is (an AVI, an MKV or MPEG-4
    Part 2 video shows nothing but a broken player)."""
    return info.codec in BROWSER_CODECS and Path(info.name).suffix.lower() in BROWSER_CONTAINERS


def _write_h264(frames: Iterator[tuple[float, Any]], rate: float | None, path: str | Path) -> None:
    """(time, PIL image) pairs as H.264 in mp4 at their own times, written whole or not at
    all."""
    import av
    import numpy as np

    fraction = Fraction(rate or 25).limit_denominator(1001)
    with atomic_file(path) as partial, av.open(str(partial), "w", format="mp4") as out:
        stream = None
        for time, image in frames:
            if stream is None:  # the frames' own size (upright, shrunk as identified)
                stream = out.add_stream("libx264", rate=fraction, options={"preset": "veryfast"})
                stream.width, stream.height = image.width // 2 * 2, image.height // 2 * 2
                stream.pix_fmt = "yuv420p"
            pixels = np.asarray(image)[: stream.height, : stream.width]
            picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            picture.pts = round(time * fraction)  # the source's times: subtitles agree
            picture.time_base = 1 / fraction
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_csv(path: str | Path, timelines: list[VideoTimeline]) -> None:
    atomic_write_text(path, csv_text(timelines))


def write_vtt(path: str | Path, timeline: VideoTimeline) -> None:
    atomic_write_text(path, vtt_text(timeline))
