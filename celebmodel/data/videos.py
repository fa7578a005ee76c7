"""Videos in, sampled RGB frames out, as a stream: every guard for a video file in one place.

Whatever FFmpeg decodes through PyAV (mp4, mov, mkv, webm, avi; H.264, HEVC, VP9, AV1 where
the build has it) is read packet by packet, so memory does not grow with the video's length.
Frames are taken at a chosen rate on the stream's own timestamps (variable frame rates stay
in time), turned upright by their rotation metadata, and shrunk to :data:`MAX_SIDE` (a 4K
video is read, not refused). Shot cuts are found on every decoded frame, sampled or not, as
PySceneDetect's content detector does (the mean change of a tiny HSV copy): on a 9-second
clip of a stage and an audience its three cuts change it by 54 to 62, camera moves by at most
21 between frames, but by up to 47 between frames a quarter of a second apart. A file that is not a video, has no picture, or whose codec this
build cannot decode raises :class:`~celebmodel.errors.VideoError` naming the file and the
problem; a file damaged part-way gives its frames up to the damage and says where it stopped
(:attr:`VideoReader.stopped`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
from PIL import Image

from ..errors import VideoError
from .images import photos_under

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv",
     ".3gp", ".ogv"}
)
DEFAULT_FPS = 4.0  # frames looked at per second: a face on screen for 2 s is seen 8 times
MAX_SIDE = 1280  # larger frames are shrunk to this (720p stays as it is)


CUT = 30.0  # mean change of a tiny HSV frame (0..255) between two frames that marks a cut


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its time in seconds from the start, its RGB pixels, and the number
    of its shot (a shot cut between two frames, sampled or not, starts the next)."""

    time: float
    pixels: np.ndarray
    shot: int = 0


@dataclass(frozen=True)
class VideoInfo:
    """What the container says of a video before it is decoded."""

    name: str
    duration: float | None  # seconds, when the container knows
    width: int
    height: int
    rate: float | None  # the stream's average frames per second
    codec: str

    def looked_at(self, fps: float | None) -> float:
        """Frames looked at per second when sampling at ``fps`` (``None``: every frame, at the
        stream's rate, 25 when it does not say)."""
        return fps or self.rate or 25.0

    def samples(self, fps: float | None) -> int | None:
        """About how many frames a reading at ``fps`` looks at (``None``: no duration known),
        for a progress bar's total."""
        return int((self.duration or 0) * self.looked_at(fps)) or None


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def media_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """The photos and the videos of the given files and folders (folders searched deeply,
    hidden files left out), each in the order given."""
    photos: list[Path] = []
    videos: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            photos += photos_under(path)
            videos += sorted(p for p in path.rglob("*") if p.is_file() and is_video(p)
                             and not p.name.startswith("."))
        elif is_video(path):
            videos.append(path)
        else:
            photos.append(path)
    return photos, videos


class VideoReader:
    """A video's frames at ``fps`` per second (``None``: every frame), read as a stream.

    ``source`` is a path, bytes or a binary file; ``name`` names it in messages. Opening
    checks the container; :meth:`frames` decodes. After :meth:`frames` is exhausted,
    :attr:`stopped` says where a damaged file stopped (``None`` when it was read to the end),
    :attr:`end` is the time of the last frame decoded and :attr:`cuts` when each shot after
    the first starts.
    """

    def __init__(
        self,
        source: str | Path | bytes | BinaryIO,
        name: str | None = None,
        fps: float | None = DEFAULT_FPS,
        max_side: int = MAX_SIDE,
    ) -> None:
        if fps is not None and not fps > 0:
            raise VideoError(f"{name or source}: frames per second must be above 0, not {fps}")
        self.name = name or (str(source) if isinstance(source, (str, Path)) else "<video>")
        self.fps = fps
        self.max_side = max_side
        self.stopped: str | None = None
        self.end = 0.0
        self.cuts: list[float] = []  # when each shot after the first starts (s)
        self._source = io.BytesIO(source) if isinstance(source, bytes) else source
        self.info = self._probe()

    def _open(self) -> Any:
        if isinstance(self._source, (str, Path)) and not Path(self._source).is_file():
            raise VideoError(f"{self.name}: no such file")
        if isinstance(self._source, (str, Path)) and not Path(self._source).stat().st_size:
            raise VideoError(f"{self.name}: empty file")
        if not isinstance(self._source, (str, Path)):
            self._source.seek(0)
        try:
            container = av.open(self._source if isinstance(self._source, io.IOBase)
                                else str(self._source), metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise VideoError(f"{self.name}: not a video FFmpeg can read, or damaged before its "
                             f"first frame ({_reason(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.name}: has no video stream (sound only?)")
        if container.format.name.endswith("_pipe") or container.format.name == "image2":
            container.close()  # FFmpeg reads a photo as a video of one frame
            raise VideoError(f"{self.name}: a photo, not a video")
        return container

    def _probe(self) -> VideoInfo:
        with self._open() as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            codec = stream.codec_context.name if context is not None else "unknown"
            if context is None or not av.codec.Codec(codec, "r"):
                raise VideoError(f"{self.name}: its video codec ({codec}) cannot be decoded "
                                 "by this FFmpeg build")
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            rate = float(stream.average_rate) if stream.average_rate else None
            return VideoInfo(self.name, duration, context.width, context.height, rate, codec)

    def _size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, self.max_side / max(width, height, 1))
        return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)

    def frames(self, start: float = 0.0, stop: float | None = None) -> Iterator[Frame]:
        """The sampled frames in order; raises :class:`VideoError` when none can be decoded.

        ``start`` and ``stop`` (seconds) read one segment: the frames the whole video's reading
        would give from ``start`` up to (not including) ``stop``, with the same sampling and
        the cuts found in it (a cluster's workers each read one; ``shot`` then counts from
        the segment's start). Reading starts a second early, so a cut or a sample right at
        ``start`` is seen as the whole reading sees it."""
        step = 0.0 if self.fps is None else 1.0 / self.fps
        next_time = 0.0  # on a grid from the start, so a variable frame rate keeps its times
        count = shot = 0
        before: np.ndarray | None = None
        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if start > 0 and stream.time_base is not None:
                container.seek(max(0, int((start - 1.0) / stream.time_base)), stream=stream,
                               backward=True, any_frame=False)
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:
                    where = max(self.end, start)
                    self.stopped = (f"{self.name}: damaged at {where:.1f} s ({_reason(exc)}); "
                                    "what came before is kept")
                    break
                time = frame.time if frame.time is not None else count / (self.info.rate or 25)
                if stop is not None and time + 1e-6 >= stop:
                    break
                tiny = _tiny_hsv(frame)
                if before is not None and float(np.abs(tiny - before).mean()) > CUT:
                    if time + 1e-6 >= start:
                        shot += 1
                        self.cuts.append(float(time))
                before = tiny
                if time + 1e-6 < next_time:
                    continue
                if step:
                    next_time += step * (1 + int((time + 1e-6 - next_time) // step))
                if time + 1e-6 < start:
                    continue  # before the segment: seen for its cuts and the sampling only
                self.end = time
                count += 1
                yield Frame(float(time), self._pixels(frame), shot)
        if not count and start == 0:
            raise VideoError(f"{self.name}: no frame could be decoded")
        if self.stopped is None and start == 0 and stop is None:
            self.stopped = self.ended_early(self.end)

    def ended_early(self, end: float) -> str | None:
        """What to say of a reading whose last sampled frame is at ``end``, when that is well
        short of the duration the container gave (a truncated file)."""
        duration = self.info.duration
        if duration is None or end >= duration - max(1.0, 2 / (self.fps or 1)):
            return None
        return (f"{self.name}: ends at {end:.1f} s of its {duration:.1f} s (truncated?); "
                "what came before is kept")

    def frame_at(self, time: float) -> Frame:
        """The frame shown at ``time`` seconds (the last one starting at or before it, within
        a millisecond: times are kept rounded to one)."""
        with self._open() as container:
            stream = container.streams.video[0]
            if stream.time_base is not None:
                container.seek(max(0, int(time / stream.time_base)), stream=stream,
                               backward=True, any_frame=False)
            found = None
            try:
                for frame in container.decode(stream):
                    if found is not None and (frame.time or 0) > time + 0.0015:
                        break
                    found = frame
            except av.error.FFmpegError:
                pass  # a damaged file: the last frame before the damage
            if found is None:
                raise VideoError(f"{self.name}: no frame at {time:.1f} s")
            return Frame(float(found.time or 0), self._pixels(found))

    def _pixels(self, frame: Any) -> np.ndarray:
        width, height = self._size(frame.width, frame.height)
        pixels = frame.to_ndarray(width=width, height=height, format="rgb24")
        turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise, as FFmpeg means it
        return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels


def _tiny_hsv(frame: Any) -> np.ndarray:
    """A 64×36 HSV copy of a frame, for finding cuts."""
    rgb = frame.to_ndarray(width=64, height=36, format="rgb24")
    return np.asarray(Image.fromarray(rgb).convert("HSV"), np.float32)


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
