"""Videos: read as a stream with their guards, faces linked into tracks, tracks named once,
people's occurrences, and the CLI's and the API's outputs (generated videos only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import astronauts, cameramen, write_video
from PIL import Image

from celebmodel.data.videos import VideoReader, media_files
from celebmodel.errors import VideoError

GREY, RED = (40, 40, 40), (200, 40, 40)


@pytest.fixture(scope="module")
def astro_face() -> Image.Image:
    return astronauts(1, seed=5)[0]


@pytest.fixture(scope="module")
def stranger_face() -> Image.Image:
    return cameramen(1, seed=2, turn=2, light=0.05)[0]


@pytest.fixture
def recognizer(tiny_builtin):
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import builtin_run

    return Recognizer.from_run(builtin_run())


def identify(recognizer, path: Path, **options):
    from celebmodel.video.timeline import identify_video

    return identify_video(recognizer, path, **options)


# Reading --------------------------------------------------------------------------------------


def test_frames_are_sampled_on_the_stream_time_and_shot_cuts_counted(tmp_path):
    video = write_video(tmp_path / "a.webm", [(1.5, GREY, None), (1.5, RED, None)],
                        codec="libvpx-vp9")
    reader = VideoReader(video, fps=2)
    frames = list(reader.frames())
    assert [f.time for f in frames] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert [f.shot for f in frames] == [0, 0, 0, 1, 1, 1]
    assert reader.info.codec == "vp9" and reader.info.duration == pytest.approx(3.0, abs=0.1)
    assert reader.stopped is None
    assert len(list(VideoReader(video, fps=None).frames())) == 30  # every frame


def test_segments_read_apart_give_the_whole_readings_frames_and_cuts(tmp_path):
    """A cluster's workers each read a segment: together they give the frames, the sampling
    and the cuts of one reading, a cut right at a segment's start included."""
    from celebmodel.video.ray_video import segments

    video = write_video(tmp_path / "s.mp4", [(1.5, GREY, None), (1.5, RED, None),
                                             (1.3, GREY, None)], gop=5)
    whole = VideoReader(video, fps=4)
    frames = [f.time for f in whole.frames()]
    assert whole.cuts == pytest.approx([1.5, 3.0])
    ranges = segments(whole.info.duration, 1.5)
    assert ranges == [(0.0, 1.5), (1.5, 3.0), (3.0, None)]
    times, cuts = [], []
    for start, stop in ranges:
        reader = VideoReader(video, fps=4)
        times += [f.time for f in reader.frames(start, stop)]
        cuts += reader.cuts
    assert times == frames and cuts == whole.cuts


def test_a_huge_frame_is_shrunk_not_refused(tmp_path):
    video = write_video(tmp_path / "big.mp4", [(0.3, GREY, None)], size=(2560, 1440))
    frame = next(iter(VideoReader(video).frames()))
    assert frame.pixels.shape == (720, 1280, 3)


def test_bad_videos_are_named_with_their_problem(tmp_path):
    photo = tmp_path / "photo.mp4"
    Image.new("RGB", (64, 64)).save(photo, format="JPEG")
    with pytest.raises(VideoError, match=r"photo\.mp4: a photo, not a video"):
        VideoReader(photo)
    with pytest.raises(VideoError, match=r"gone\.mp4: no such file"):
        VideoReader(tmp_path / "gone.mp4")
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.mkv: empty file"):
        VideoReader(empty)
    sound = tmp_path / "sound.m4a"
    _write_sound(sound)
    with pytest.raises(VideoError, match=r"sound\.m4a: has no video stream"):
        VideoReader(sound)


def _write_sound(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


def test_a_truncated_video_keeps_what_came_before_and_says_where_it_stopped(tmp_path):
    import av

    video = tmp_path / "whole.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(video), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for _ in range(60):  # noise: every frame as large as the next, so half is 3 s
            pixels = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    reader = VideoReader(cut, fps=2)
    frames = list(reader.frames())
    assert 4 <= len(frames) <= 8
    assert reader.stopped.startswith(f"{cut}: ")
    assert reader.stopped.endswith("what came before is kept")


def test_folders_give_photos_and_videos_apart(tmp_path):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "b.MP4").write_bytes(b"x")
    (tmp_path / "in" / ".hidden.mov").write_bytes(b"x")
    photos, videos = media_files([tmp_path / "in"])
    assert [p.name for p in photos] == ["a.jpg"] and [v.name for v in videos] == ["b.MP4"]


# Tracks, names and occurrences ------------------------------------------------------------------


def test_occurrences_match_the_appearances_by_hand(tmp_path, recognizer, astro_face,
                                                    stranger_face):
    video = write_video(tmp_path / "talk.mp4", [
        (1, GREY, None), (3, GREY, astro_face), (1, GREY, None), (3, GREY, stranger_face),
    ])
    timeline = identify(recognizer, video)
    people = {p.name: p for p in timeline.people}
    astro = people["Astro Naut"]
    assert astro.known and len(astro.occurrences) == 1
    assert astro.occurrences[0]["start"] == pytest.approx(1.0, abs=0.3)
    assert astro.occurrences[0]["end"] == pytest.approx(4.0, abs=0.3)
    assert astro.match_confidence is not None and astro.match_confidence >= 0.99
    stranger = people["Unknown 1"]  # the stranger carries no one's name
    assert not stranger.known and stranger.match_confidence is None
    assert stranger.occurrences[0]["start"] == pytest.approx(5.0, abs=0.3)
    assert stranger.occurrences[0]["end"] == pytest.approx(8.0, abs=0.3)
    assert set(people) == {"Astro Naut", "Unknown 1"}
    assert astro.best.thumbnail is not None


def test_a_shot_cut_splits_tracks_and_the_occurrence_is_bridged(tmp_path, recognizer,
                                                                  astro_face):
    video = write_video(tmp_path / "cut.mp4", [(2, GREY, astro_face), (2, RED, astro_face)])
    timeline = identify(recognizer, video)
    tracks = timeline.tracks
    assert [t.shot for t in tracks] == [0, 1]
    assert tracks[1].start == pytest.approx(2.0, abs=0.3)
    (astro,) = timeline.people
    assert astro.name == "Astro Naut" and len(astro.occurrences) == 1
    assert astro.occurrences[0]["tracks"] == [t.id for t in tracks]
    assert astro.screen_time == pytest.approx(4.0, abs=0.3)


def test_a_frame_of_another_face_inside_a_track_does_not_rename_it(tmp_path, recognizer,
                                                                    astro_face, stranger_face):
    video = write_video(tmp_path / "flash.mp4", [
        (2, GREY, astro_face), (0.1, GREY, stranger_face), (2, GREY, astro_face),
    ], fps=10)
    timeline = identify(recognizer, video, fps=10)
    assert [p.name for p in timeline.people] == ["Astro Naut"]
    (astro,) = timeline.people
    assert len(astro.occurrences) == 1 and astro.screen_time == pytest.approx(4.1, abs=0.3)
    assert timeline.brief == 1  # the other face, seen once, is no track


def test_an_unnamed_track_close_to_a_named_persons_tracks_takes_their_name():
    """A person named in one shot and unnamed in a smaller one (a split screen): the unnamed
    track joins them when its faces are within the grouping cut of theirs; a stranger's
    track, farther, stays unknown."""
    from types import SimpleNamespace

    from celebmodel.scoring.cuts import Cuts
    from celebmodel.video.timeline import _join_named
    from celebmodel.video.tracks import Track

    rng = np.random.default_rng(0)
    person, stranger = rng.normal(size=(2, 128))

    def track(id_, centre, spread, answer):
        faces = centre + spread * rng.normal(size=(6, 128))
        unit = faces / np.linalg.norm(faces, axis=1, keepdims=True)
        return Track(id_, 0, times=list(range(6)), embeddings=list(unit.astype(np.float32)),
                     answer=answer)

    unnamed = {"known": False, "label": "unknown", "name": None, "match_confidence": 0.3}
    named = track(1, person, 0.1, {"known": True, "label": "Ada", "name": "Ada",
                                   "match_confidence": 0.999})
    same = track(2, person, 0.15, dict(unnamed))
    other = track(3, stranger, 0.1, dict(unnamed))
    _join_named(SimpleNamespace(cuts=Cuts(0.3, 0.4, 0.5)), [named, same, other])
    assert same.answer["known"] and same.answer["name"] == "Ada"
    assert same.answer["joined"] == [1] and same.answer["match_confidence"] is None
    assert not other.answer["known"] and "joined" not in other.answer


def test_an_unknown_person_named_from_their_track_is_known_after(tmp_path, folders,
                                                                 tiny_builtin, recognizer,
                                                                 stranger_face):
    from celebmodel.recognition.recognize import Recognizer
    from celebmodel.runs.run import active_run
    from celebmodel.video.timeline import name_person

    video = write_video(tmp_path / "guest.mp4", [(3, GREY, stranger_face)])
    timeline = identify(recognizer, video)
    (guest,) = timeline.people
    into, label, new = name_person(recognizer.run, timeline, guest.key, "Camera Man")
    assert new and into.copied_from and active_run().path == into.path  # the user's copy
    again = identify(Recognizer.from_run(into), video)
    assert [(p.name, p.known) for p in again.people] == [("Camera Man", True)]


# Outputs: the command line and the API --------------------------------------------------------


def test_predict_gives_json_csv_and_webvtt_for_videos(tmp_path, tiny_builtin, astro_face,
                                                      capsys):
    from celebmodel.interfaces.cli import main

    video = write_video(tmp_path / "talk.mp4", [(1, GREY, None), (2, GREY, astro_face)])
    assert main(["predict", "lfw-public-figures", str(video), "--json", "--fps", "5"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["video"] == str(video) and result["sampled_fps"] == 5
    (person,) = result["people"]
    assert person["name"] == "Astro Naut" and person["appearances"] == 1
    assert person["occurrences"][0]["start"] == pytest.approx(1.0, abs=0.25)
    csv, vtt = tmp_path / "out.csv", tmp_path / "out.vtt"
    assert main(["predict", "lfw-public-figures", str(video), "--csv", str(csv),
                 "--vtt", str(vtt)]) == 0
    assert csv.read_text().splitlines()[0] == (
        "video,person,name,known,start,end,seconds,match_confidence,tracks"
    )
    assert csv.read_text().splitlines()[1].startswith("talk.mp4,Astro_Naut,Astro Naut,True,1.0,")
    cues = vtt.read_text().split("\n\n")
    assert cues[0] == "WEBVTT"
    number, times, text = cues[1].splitlines()
    assert number == "1" and times.startswith("00:00:01.000 --> 00:00:03.")
    assert text.startswith("Astro Naut (match confidence 99.") or text == (
        "Astro Naut (match confidence 100.0%)"  # as the photo's answer rounds it (6 digits)
    )


def test_predict_names_a_bad_video_and_goes_on(tmp_path, tiny_builtin, astro_face, capsys):
    from celebmodel.interfaces.cli import main

    good = write_video(tmp_path / "good.mp4", [(2, GREY, astro_face)])
    bad = tmp_path / "bad.mov"
    bad.write_bytes(b"not a video at all" * 10)
    assert main(["predict", "lfw-public-figures", str(bad), str(good)]) == 0
    out, err = capsys.readouterr()
    assert f"error: {bad}: not a video FFmpeg can read" in err
    assert out.startswith(f"{good}: Astro Naut (match confidence")
    assert main(["predict", "lfw-public-figures", str(bad)]) == 1


def test_the_video_with_names_drawn_has_every_frame_and_the_boxes(tmp_path, recognizer,
                                                                  astro_face):
    from celebmodel.video.outputs import write_annotated

    video = write_video(tmp_path / "talk.mp4", [(1, GREY, None), (1, GREY, astro_face)])
    timeline = identify(recognizer, video)
    named = tmp_path / "named.mp4"
    write_annotated(video, timeline, named)
    reader = VideoReader(named, fps=None)
    frames = list(reader.frames())
    assert len(frames) == 20 and reader.info.codec == "h264"
    assert (reader.info.width, reader.info.height) == (640, 360)  # its own shape, not stretched
    assert [f.time for f in frames[:3]] == pytest.approx([0, 0.1, 0.2])  # its own times
    x, y, w, h = timeline.tracks[0].boxes[0]
    before, after = frames[5].pixels, frames[15].pixels  # no face yet; the face, boxed
    edge = after[y + h // 2, max(0, x - 1) : x + 2].astype(int)
    assert (edge[:, 1] - edge[:, 0] > 60).any()  # the known face's green box
    assert not (before[y + h // 2, max(0, x - 1) : x + 2, 1] > 120).any()


def test_the_api_identifies_a_video(tmp_path, tiny_builtin, astro_face):
    from fastapi.testclient import TestClient

    from celebmodel.interfaces.serve import create_app

    video = write_video(tmp_path / "talk.mp4", [(2, GREY, astro_face)])
    with TestClient(create_app("lfw-public-figures")) as client:
        answer = client.post("/identify-video", files={"file": ("talk.mp4", video.read_bytes())})
        assert answer.status_code == 200, answer.text
        assert [p["name"] for p in answer.json()["people"]] == ["Astro Naut"]
        bad = client.post("/identify-video", files={"file": ("x.mp4", b"nothing")})
        assert bad.status_code == 400 and bad.json()["detail"].startswith("x.mp4: not a video")


# The Identify page ------------------------------------------------------------------------------


def uploaded_on_identify(video: Path, mime: str):
    """The Identify page (AppTest) after ``video`` is uploaded as "A video"."""
    from conftest import app, open_page

    at = open_page(app(), "pages/identify.py")
    at.radio(key="source").set_value("video")
    open_page(at)
    at.file_uploader(key="video-upload").set_value([(video.name, video.read_bytes(), mime)])
    return open_page(at)


def test_identify_page_video_timeline_moment_and_naming(tmp_path, folders, tiny_builtin,
                                                        astro_face, stranger_face):
    from conftest import open_page

    video = write_video(tmp_path / "talk.mp4", [
        (1, GREY, None), (2, GREY, astro_face), (1, GREY, None), (2, GREY, stranger_face),
    ])
    at = uploaded_on_identify(video, "video/mp4")
    assert any(s.value.startswith("1 known person and 1 unknown person in 0:06.0 of video")
               for s in at.success), [s.value for s in at.success]
    assert at.get("video")[0].proto.start_time == 0
    jump = at.selectbox(key="video-jump-0")
    assert jump.value is None  # "choose a moment"
    jump.select_index(jump.options.index("Astro Naut at 0:01.0"))
    open_page(at)
    assert at.get("video")[0].proto.start_time == 1  # the player starts at that moment
    (moment,) = [i for i in at.get("image") if i.proto.imgs[0].caption == "At 0:01.0"]
    again = at.selectbox(key="video-jump-1")  # a fresh box: the same moment can be chosen again
    assert again.value is None
    again.select_index(again.options.index("Unknown 1 at 0:04.0"))
    open_page(at)
    assert at.get("video")[0].proto.start_time == 4
    assert [i for i in at.get("image") if i.proto.imgs[0].caption == "At 0:04.0"]
    table = at.dataframe[0].value
    assert list(table["person"]) == ["Astro Naut", "Unknown 1"]
    at.button(key="video-draw").click()
    open_page(at)
    (drawn,) = [b for b in at.get("download_button") if b.proto.label.startswith("The video")]
    (box,) = [t for t in at.text_input if t.key.endswith("-unknown-1")]
    box.set_value("Camera Man")
    at.button(key="video-add-unknown-1").click()
    open_page(at)
    assert any(s.value.startswith("2 known people and 0 unknown people") for s in at.success), \
        [s.value for s in at.success]


def test_a_video_browsers_cannot_play_gets_an_h264_copy_for_the_player(tmp_path, folders,
                                                                       tiny_builtin):
    """An AVI of MPEG-4 Part 2 (a YouTube Faces clip's format) shows only a broken player in
    a browser: the page plays an H.264 copy with the same frames and times, and says so."""

    from celebmodel.video.outputs import plays_in_browsers, write_playable

    avi = write_video(tmp_path / "old.avi", [(1, GREY, None), (1, RED, None)], codec="mpeg4")
    mp4 = write_video(tmp_path / "new.mp4", [(0.5, GREY, None)])
    assert not plays_in_browsers(VideoReader(avi).info)
    assert plays_in_browsers(VideoReader(mp4).info)
    copy = tmp_path / "copy.mp4"
    write_playable(avi, "old.avi", copy)
    reader = VideoReader(copy, fps=None)
    assert reader.info.codec == "h264" and plays_in_browsers(reader.info)
    assert [f.time for f in reader.frames()] == pytest.approx(
        [f.time for f in VideoReader(avi, fps=None).frames()])
    at = uploaded_on_identify(avi, "video/x-msvideo")
    assert any("old.avi (mpeg4) is not a video browsers play" in c.value for c in at.caption)
    assert at.get("video")


def test_a_zip_of_videos_is_unpacked_with_the_guards_of_a_zip_of_photos(tmp_path):
    import zipfile

    from celebmodel.data.sources import extract_videos
    from celebmodel.errors import UploadError

    video = write_video(tmp_path / "a.mp4", [(0.5, GREY, None)]).read_bytes()
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("news/a.mp4", video)
        zf.writestr("news/b.webm", video)
        zf.writestr("__MACOSX/news/._a.mp4", b"junk")
        zf.writestr("notes.txt", b"not a video")
    folder = extract_videos(archive.read_bytes(), "clips.zip", tmp_path / "out")
    assert sorted(p.relative_to(folder).as_posix() for p in media_files([folder])[1]) == [
        "news/a.mp4", "news/b.webm"]
    with zipfile.ZipFile(tmp_path / "none.zip", "w") as zf:
        zf.writestr("notes.txt", b"no video")
    with pytest.raises(UploadError, match=r"^none\.zip: no videos inside"):
        extract_videos((tmp_path / "none.zip").read_bytes(), "none.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../evil.mp4", video)
    with pytest.raises(UploadError, match=r"^evil\.zip: "):
        extract_videos((tmp_path / "evil.zip").read_bytes(), "evil.zip", tmp_path / "out")
    assert not (tmp_path / "evil.mp4").exists()
