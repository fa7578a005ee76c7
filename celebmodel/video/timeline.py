"""Who is in a video, and when: sampled frames → faces → tracks → people → occurrences.

``identify_video(recognizer, path)`` reads the video as a stream (:mod:`celebmodel.data.videos`),
identifies each sampled frame's faces as a photo's, links them into tracks
(:mod:`celebmodel.video.tracks`) and names each track once, from all its faces together: their
mean embedding is scored as one face (one calibrated match confidence for the track), and
the name holds only when at least :data:`AGREE` of the track's faces have that person
nearest, so one blurred or turned frame neither flips nor invents a name. Tracks of faces
nobody knows are grouped into unknown people as an album's faces are
(:func:`celebmodel.albums.grouping.group_faces`), and can be named (:func:`name_person`).
Each person's tracks become occurrences: time ranges with gaps up to :data:`BRIDGE` seconds
bridged, their screen time, and the best face.
"""

from __future__ import annotations

import bisect
import threading
import time as clock
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from ..albums.grouping import UNGROUPED, group_faces, join_groups
from ..data.videos import DEFAULT_FPS, Frame, VideoInfo, VideoReader
from ..progress import BarFactory, quiet_bar
from ..recognition.people import name_faces
from ..recognition.recognize import UNKNOWN, Recognizer
from ..runs.run import Run
from ..scoring.open_set import presets
from ..vectors import l2_normalize
from .tracks import Track, Tracker, padded_face

CLOCK = 0.0015  # times are kept to the millisecond: a frame within this of one is at it
AGREE = 0.5  # share of a track's faces that must have its person nearest for it to be named
MIN_FACES = 2  # a face seen once is not a track (a detector's false alarm, a passer-by)
BRIDGE = 1.0  # seconds between two of a person's tracks bridged into one occurrence
ENROL_FACES = 20  # faces of a track person a naming adds (evenly spread over their tracks)
# A video shows many strangers' faces (an audience, passers-by), each track a new chance to
# name one wrongly: at Balanced (5% of strangers named) a 9-second clip of a stage and its
# audience put a film star's name on a man in the audience at 97.7%. Videos are named at
# Strict (1%) unless a threshold is given.
PRESET = "Strict"


@dataclass
class Person:
    """Someone on screen: a known person, or unknown faces grouped as one person."""

    key: str  # the label, or "unknown-N"
    name: str  # as shown: the person's name, or "Unknown N"
    known: bool
    tracks: list[Track]
    occurrences: list[dict[str, Any]]
    match_confidence: float | None  # the surest of their tracks
    best: Track  # whose best face is theirs

    @property
    def screen_time(self) -> float:
        return float(sum(o["end"] - o["start"] for o in self.occurrences))

    def summary(self) -> dict[str, Any]:
        best = self.best
        return {
            "person": self.key,
            "name": self.name,
            "known": self.known,
            "screen_time": round(self.screen_time, 2),
            "appearances": len(self.occurrences),
            "match_confidence": _rounded(self.match_confidence),
            "best_face": {"time": round(best.times[best.best], 3), "box": best.boxes[best.best],
                          "track": best.id},
            "occurrences": self.occurrences,
        }


@dataclass
class VideoTimeline:
    """A video identified: its people with their occurrences, its tracks, and how it went."""

    info: VideoInfo
    fps: float | None
    model: str
    people: list[Person]
    tracks: list[Track]  # every track kept (:data:`MIN_FACES` faces or more)
    shots: list[float]  # when each shot starts
    frames: int  # sampled frames looked at
    faces: int  # faces found in them
    seconds: float  # how long it took
    end: float  # the end of the last frame read
    stopped: str | None = None  # where a damaged file stopped
    brief: int = 0  # faces left out, seen in fewer than MIN_FACES samples
    samples: list[dict[str, Any]] = field(default_factory=list)  # per face, when asked

    def faces_at(self, time: float) -> list[dict[str, Any]]:
        """The faces on screen at ``time``: each track's sample nearest to it, within one
        sampling step, described as a photo's faces are (for drawing them)."""
        step = 1.0 / self.info.looked_at(self.fps)
        shot = bisect.bisect_right(self.shots, time + CLOCK) - 1  # never a face of another shot
        people = {p.key: p for p in self.people}
        faces = []
        for track in self.tracks:
            if track.shot != shot or not track.start - step <= time <= track.end + step:
                continue
            i = min(range(len(track)), key=lambda k: abs(track.times[k] - time))
            if abs(track.times[i] - time) > step:
                continue
            person = people[track.person]
            faces.append({"box": track.boxes[i], "known": person.known, "name": person.name,
                          "title": person.name, "label": person.key, "nearest_name": person.name,
                          "match_confidence": track.answer["match_confidence"]})
        return faces

    def person(self, key: str) -> Person:
        return next(p for p in self.people if p.key == key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``predict --json`` and the API for a video."""
        return {
            "video": self.info.name,
            "duration": _rounded(self.info.duration or self.end, 3),
            "model": self.model,
            "sampled_fps": self.fps,
            "frames": self.frames,
            "faces": self.faces,
            "stopped": self.stopped,
            "people": [person.summary() for person in self.people],
            "tracks": [
                {"track": t.id, "person": t.person, "start": round(t.start, 3),
                 "end": round(t.end, 3), "faces": len(t), "shot": t.shot,
                 **{k: v for k, v in t.answer.items()
                    if k in ("known", "match_confidence", "similarity", "agreement",
                             "joined")}}
                for t in self.tracks
            ],
            **({"samples": self.samples} if self.samples else {}),
        }


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def identify_video(
    recognizer: Recognizer,
    source: str | Path | bytes | BinaryIO,
    name: str | None = None,
    fps: float | None = DEFAULT_FPS,
    threshold: float | None = None,
    bar: BarFactory = quiet_bar,
    samples: bool = False,
) -> VideoTimeline:
    """Identify the people of a video (a path, bytes or a binary file; ``name`` names it).

    ``fps`` frames a second are looked at (``None``: every frame); ``threshold`` as for
    :meth:`Recognizer.identify` (default: :func:`video_threshold`); ``samples`` keeps a row
    per face found. Raises :class:`~celebmodel.errors.VideoError` for a file that is not a
    readable video."""
    reader = VideoReader(source, name=name, fps=fps)
    threshold = video_threshold(recognizer) if threshold is None else threshold
    collected = Collected(recognizer, threshold, samples)
    with bar(desc="frames", total=reader.info.samples(fps), unit="frame") as progress:
        for frame in decoded_ahead(reader.frames()):
            faces, embeddings = recognizer.analyse(frame.pixels, threshold)
            collected.add(frame.time, frame.shot, faces, embeddings,
                          lambda j, f=frame, faces=faces: padded_face(f.pixels, faces[j]["box"]))
            progress.update(1)
            progress.set_postfix(faces=collected.faces, refresh=False)
    return collected.timeline(reader.info, fps, reader.end, reader.cuts, reader.stopped)


class Collected:
    """A video's sampled frames' faces, added in time order, become its timeline: the one
    path from faces to people for a video read here and for one read in segments by a
    cluster's workers (:mod:`celebmodel.video.ray_video`)."""

    def __init__(self, recognizer: Recognizer, threshold: float, samples: bool = False) -> None:
        self.recognizer = recognizer
        self.threshold = threshold
        self.samples = samples
        self.tracker = Tracker(recognizer.cuts)
        self.rows: list[dict[str, Any]] = []
        self.frames = 0
        self.faces = 0
        self.started = clock.monotonic()

    def add(self, time: float, shot: int, faces: list[dict[str, Any]], embeddings: np.ndarray,
            crop: Callable[[int], Image.Image]) -> None:
        """One sampled frame's faces (``crop(j)``: face ``j``'s thumbnail)."""
        ids = self.tracker.add(time, shot, faces, embeddings, crop)
        self.frames += 1
        self.faces += len(faces)
        if self.samples:
            self.rows += [{"time": round(time, 3), "track": i, "box": f["box"],
                           **{k: f.get(k) for k in ("known", "label", "name", "match_confidence",
                                                    "similarity")}}
                          for i, f in zip(ids, faces, strict=True)]

    def timeline(self, info: VideoInfo, fps: float | None, last: float, cuts: list[float],
                 stopped: str | None) -> VideoTimeline:
        """The tracks named and gathered into people; ``last``: the last sampled frame's
        time; ``cuts``: when each shot after the first starts."""
        step = 1.0 / info.looked_at(fps)
        end = last + step
        every = self.tracker.finish()
        tracks = [t for t in every if len(t) >= MIN_FACES]
        for track in tracks:
            _name_track(self.recognizer, track, self.threshold)
        shots = [0.0, *cuts]
        people = _people(self.recognizer, tracks, step, end, shots)
        kept = {t.id for t in tracks}
        return VideoTimeline(
            info=info, fps=fps, model=self.recognizer.run.title, people=people, tracks=tracks,
            shots=shots, frames=self.frames, faces=self.faces,
            seconds=clock.monotonic() - self.started, end=end, stopped=stopped,
            brief=sum(len(t) for t in every if t.id not in kept),
            samples=[row for row in self.rows if row["track"] in kept],
        )


def decoded_ahead(frames: Iterator[Frame], depth: int = 4) -> Iterator[Frame]:
    """``frames`` decoded in a thread of their own, up to ``depth`` ahead, while the last ones
    are identified (FFmpeg decodes without the GIL); a stop on either side ends both."""
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def decode() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
        except BaseException as exc:  # handed to the reading side, raised there
            put(exc)
            return
        put(end)

    worker = threading.Thread(target=decode, name="video-decoder", daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def video_threshold(recognizer: Recognizer) -> float:
    """The threshold videos are named at: the model's :data:`PRESET` preset, where it has
    one (runs from before presets: its calibrated threshold)."""
    found = presets(recognizer.run.read_json("calibration.json") or {})
    return float(found[PRESET]["threshold"]) if PRESET in found else recognizer.threshold


def _name_track(recognizer: Recognizer, track: Track, threshold: float | None) -> None:
    """The track's one answer (``track.answer``): its faces pooled, named only when they
    agree."""
    if recognizer.pools_faces:
        answer = recognizer.identify_pooled(np.stack(track.embeddings), threshold)
    else:  # its most typical face speaks for it
        faces = np.stack(track.embeddings)
        typical = int(np.argmax(faces @ l2_normalize(faces.mean(axis=0))))
        answer = dict(track.answers[typical])
    nearest = [a["nearest"] for a in track.answers]
    agreement = nearest.count(answer["nearest"]) / len(nearest)
    known = bool(answer["known"]) and agreement >= AGREE
    track.answer = {
        "known": known,
        "label": answer["nearest"] if known else UNKNOWN,
        "name": answer.get("nearest_name") if known else None,
        "nearest": answer["nearest"],
        "nearest_name": answer.get("nearest_name"),
        "match_confidence": _rounded(answer.get("match_confidence"), 6),
        "similarity": _rounded(answer.get("similarity")),
        "agreement": round(agreement, 3),
    }


def _people(recognizer: Recognizer, tracks: list[Track], step: float, end: float,
            shots: list[float]) -> list[Person]:
    """Tracks gathered by person (unknown ones grouped), each with their occurrences."""
    by_key: dict[str, list[Track]] = {}
    names: dict[str, str] = {}
    _join_named(recognizer, tracks)
    unknown = [t for t in tracks if not t.answer["known"]]
    if unknown:
        means = l2_normalize(np.stack([np.mean(t.embeddings, axis=0) for t in unknown]))
        groups = group_faces(means, recognizer.cuts)
        lone = groups.max(initial=0)
        for track, group in zip(unknown, groups, strict=True):
            if group == UNGROUPED:
                lone += 1
                group = lone
            track.person = f"unknown-{group}"
            names[track.person] = f"Unknown {group}"
    for track in tracks:
        answer = track.answer
        if answer["known"]:
            track.person = answer["label"]
            names[track.person] = answer["name"] or answer["label"]
        by_key.setdefault(track.person, []).append(track)
    people = []
    for key, own in by_key.items():
        confidences = [t.answer["match_confidence"] for t in own
                       if t.answer["match_confidence"] is not None]
        known = not key.startswith("unknown-")
        best = max(own, key=lambda t: (t.answer["match_confidence"] or 0, len(t)))
        people.append(Person(
            key=key, name=names[key], known=known, tracks=own,
            occurrences=occurrences(own, step, end, shots),
            match_confidence=max(confidences) if known and confidences else None,
            best=best if known else max(own, key=len),
        ))
    people.sort(key=lambda p: (not p.known, -p.screen_time, p.name))
    return people


def _join_named(recognizer: Recognizer, tracks: list[Track]) -> None:
    """An unnamed track takes the name of a person named in the same video when its faces are
    as close to theirs as an album's face must be to join a group
    (:func:`~celebmodel.albums.grouping.join_groups`, the model's grouping cuts): the same
    person in a smaller or turned shot (a split screen, a profile) looks more like themselves
    a minute earlier than like the gallery's photos of them. Its answer keeps its own match
    confidence (none for that person) and says which tracks it joined (``joined``)."""
    named = [t for t in tracks if t.answer["known"]]
    unnamed = [t for t in tracks if not t.answer["known"]]
    if not named or not unnamed:
        return
    labels = sorted({t.answer["label"] for t in named})
    own = {label: [t for t in named if t.answer["label"] == label] for label in labels}
    sums = np.stack([np.sum([l2_normalize(np.stack(t.embeddings)).sum(axis=0) for t in own[label]],
                            axis=0) for label in labels])
    sizes = np.array([sum(len(t) for t in own[label]) for label in labels])
    means = l2_normalize(np.stack([np.mean(t.embeddings, axis=0) for t in unnamed]))
    for track, joined in zip(unnamed, join_groups(means, sums, sizes, recognizer.cuts),
                             strict=True):
        if joined < 0:
            continue
        first = own[labels[joined]][0].answer
        track.answer = {**track.answer, "known": True, "label": first["label"],
                        "name": first["name"], "match_confidence": None,
                        "joined": [t.id for t in own[labels[joined]]]}


def occurrences(tracks: list[Track], step: float, end: float, shots: list[float],
                bridge: float = BRIDGE) -> list[dict[str, Any]]:
    """A person's time ranges on screen: each track from its first sample to one sampling
    step past its last, but from its shot's cut when it is there from the shot's first
    sample, and never past the next cut or the video's end; ranges less than ``bridge``
    seconds apart joined. ``shots``: when each shot starts."""
    def span(track: Track) -> tuple[float, float]:
        cut = shots[track.shot] if track.shot < len(shots) else track.start
        following = shots[track.shot + 1] if track.shot + 1 < len(shots) else end
        start = cut if track.start - cut < step - 1e-6 else track.start
        return start, min(track.end + step, following, end)

    spans = sorted(((*span(t), t) for t in tracks), key=lambda item: item[:2])
    merged: list[dict[str, Any]] = []
    for start, stop, track in spans:
        confidence = track.answer["match_confidence"] if track.answer["known"] else None
        if merged and start - merged[-1]["end"] <= bridge:
            last = merged[-1]
            last["end"] = max(last["end"], round(stop, 3))
            last["tracks"].append(track.id)
            if confidence is not None:
                last["match_confidence"] = max(last["match_confidence"] or 0, confidence)
            continue
        merged.append({"start": round(start, 3), "end": round(stop, 3), "tracks": [track.id],
                       "match_confidence": confidence})
    return merged


def name_person(run: Run, timeline: VideoTimeline, key: str, name: str) -> tuple[Run, str, bool]:
    """Naming an unknown person of a video makes the model know them, as naming an album's
    group does (:func:`celebmodel.recognition.people.name_faces`: on the built-in model, the
    user's own copy): up to :data:`ENROL_FACES` of their faces, spread over their tracks."""
    person = timeline.person(key)
    faces = [(t, i) for t in person.tracks for i in range(len(t))]
    chosen = [faces[i] for i in np.linspace(0, len(faces) - 1,
                                            min(ENROL_FACES, len(faces))).astype(int)]
    vectors = np.stack([t.embeddings[i] for t, i in chosen])
    chips = [np.asarray(t.thumbnail) for t, _ in chosen]
    sources = [f"{Path(timeline.info.name).name}@{t.times[i]:.1f}s" for t, i in chosen]
    return name_faces(run, name, chips, sources, vectors)
