"""Identify: every face named or called unknown, with the evidence; whole albums grouped;
the live webcam."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from celebmodel.albums.album import Album
from celebmodel.albums.groups import AlbumGroups, face_key, kept_with
from celebmodel.albums.ray_album import identify_photos
from celebmodel.data.images import photo_files
from celebmodel.data.sources import extract_photos, extract_videos
from celebmodel.data.videos import DEFAULT_FPS, VIDEO_EXTENSIONS, VideoReader, media_files
from celebmodel.errors import CelebmodelError
from celebmodel.recognition import people
from celebmodel.reports import display
from celebmodel.runs.run import Run, active_run, own_copy
from celebmodel.scoring.open_set import presets
from celebmodel.video import views
from celebmodel.video.outputs import (
    csv_text,
    json_text,
    plays_in_browsers,
    vtt_text,
    write_annotated,
    write_playable,
)
from celebmodel.video.timeline import PRESET, VideoTimeline, identify_video, name_person
from pages import ui

ui.through_app()

DETAILED = 6  # more photos than this are shown as an album: a table and groups
SOURCES = {
    "photos": "Upload photos",
    "zip": "A .zip of photos",
    "folder": "A folder on this server",
    "camera": "Webcam snapshot",
    "live": "Live webcam",
    "video": "A video",
}
FPS_CHOICES = {1.0: "1", 2.0: "2", 4.0: "4", 8.0: "8", None: "every frame"}


st.title("Identify")

run = active_run()
if run is None:
    ui.no_model_yet()
    st.stop()

try:
    recognizer = ui.recognizer(run)
except (CelebmodelError, OSError) as exc:
    st.error(f"Cannot load {run.title}: {exc}")
    st.stop()

known_people = [recognizer.names[label] for label in recognizer.people]
st.caption(
    f"Model **{run.title}** ({'built in, ' if run.builtin else ''}{recognizer.config.backbone})"
    f" knows {len(known_people):,} people."
)
ui.people_search(known_people, key=f"who-{run.name}")
st.page_link("pages/people.py", label="Manage the people it knows", icon=":material/group:")

# How sure a match must be --------------------------------------------------------------------
calibration = run.read_json("calibration.json") or {"threshold": recognizer.threshold}
options = presets(calibration)
balanced = options["Balanced"]
preset = st.radio(
    "How sure must a match be?",
    list(options),
    index=list(options).index("Balanced"),
    format_func=lambda name: display.preset_words(name, options[name]),
    key=f"preset-{run.name}",
    help=display.preset_help(run.scoring, calibration),
)
threshold = options[preset]["threshold"]
with st.expander("Advanced"):
    if st.toggle("Set the threshold myself", key="custom-threshold"):
        threshold = ui.threshold_input(recognizer, options[preset], key=f"custom-{run.name}")
if display.looser(recognizer.scoring, threshold, balanced["threshold"]):
    st.warning(
        f"Looser than Balanced ({display.needs_words(recognizer, balanced['threshold'])}): "
        "it may name more strangers as someone they are not.",
        icon=":material/warning:",
    )

# What to identify ----------------------------------------------------------------------------
source = st.radio("Identify faces in", list(SOURCES), format_func=SOURCES.get, horizontal=True,
                  key="source", help="A video: who is on screen, and when, on a timeline.")


def show_face(number: int, face: dict, pixels: np.ndarray) -> None:
    with st.container(border=True):
        thumb, text = st.columns([1, 4])
        thumb.image(display.face_crop(pixels, face["box"]), width=72)
        text.markdown(f"**{number}. {display.face_title(face)}**")
        text.caption(display.face_details(face, recognizer, threshold))
        if face["known"]:
            text.caption(display.top_k_line(face))
        same = [e for e in face["evidence"] if not e["runner_up"]]
        other = [e for e in face["evidence"] if e["runner_up"]]
        if not same:
            return
        st.caption(display.evidence_line(same, other))
        if recognizer.lfw:  # LFW photos are not shipped: their names and the person's page
            st.markdown(display.evidence_links(same + other))
            return
        strip = st.columns(len(same) + len(other))
        for column, item in zip(strip, same + other, strict=True):
            face_image = ui.gallery_face(run, item["path"])
            if face_image is not None:
                column.image(face_image, caption=f"{item['name']} {item['similarity']:.2f}")
            else:
                column.caption(f"{item['name']} {item['similarity']:.2f} (photo not kept)")


def show_photo(name: str, content: bytes) -> None:
    st.divider()
    st.subheader(name)
    try:
        with st.spinner(f"Identifying the faces in {name} ({display.photo_size(content)})…"):
            result = display.identify_photo(recognizer, content, name, threshold)
    except (CelebmodelError, OSError) as exc:
        st.error(str(exc))
        return
    faces = result["faces"]
    width, height = result["size"]
    st.caption(f"{len(faces)} face(s) found in {result['seconds']:.2f} s · {width}×{height} photo")
    if faces:
        st.caption(display.preset_effect(faces, recognizer, options))
    if not faces:
        st.warning(
            f"{name}: no face found. Try a photo where the face is larger, turned to the "
            "camera and well lit."
        )
        st.image(result["annotated"], width="content")
        return
    selected = None
    if len(faces) > 1:
        selected = st.segmented_control(
            "Highlight face", list(range(1, len(faces) + 1)), key=f"highlight-{name}"
        )
    picture = result["annotated"]
    if selected:
        picture = display.jpeg(display.annotate(result["pixels"], faces, selected))
    st.image(picture, width="content")
    columns = st.columns(2)
    for number, face in enumerate(faces, start=1):
        with columns[(number - 1) % 2]:
            show_face(number, face, result["pixels"])


def album_photos() -> tuple[str, list[tuple[str, object]]]:
    """The album chosen, as a name its groups are kept under and its (name, source) pairs:
    a zip's photos or a folder's. A new zip first clears the last one's album, so a refused
    zip leaves nothing of it on the page."""
    if source == "zip":
        archive = st.file_uploader("Zip of photos", type=["zip"], key="album-zip")
        if archive is not None and st.session_state.get("album-zip-id") != archive.file_id:
            for stale in ("album-folder-extracted", "album-zip-id", "album", "album-key"):
                st.session_state.pop(stale, None)
            with ui.shown_errors(f"Extracting {archive.name}"):
                folder = extract_photos(archive.getvalue(), archive.name)
                st.session_state["album-folder-extracted"] = str(folder)
                st.session_state["album-zip-id"] = archive.file_id
        folder = st.session_state.get("album-folder-extracted") if archive is not None else None
        album = f"zip:{archive.name}" if archive is not None else ""
    else:
        folder = st.text_input("Folder of photos (searched deeply)", key="album-folder").strip()
        album = f"folder:{Path(folder).resolve()}" if folder else ""
    if not folder:
        return album, []
    root = Path(folder)
    if not root.is_dir():
        st.error(f"{folder}: no such folder")
        return album, []
    return album, [(str(path.relative_to(root)), path) for path in photo_files([root])]


def show_album(name: str, photos: list[tuple[str, object]]) -> None:
    """Every face of many photos in a table; unknown faces in groups that keep their
    numbers (kept with the run), each nameable, mergeable and splittable."""
    group = st.toggle("Group the unknown faces by person", value=True, key="group")
    key = (run.name, run.versions(), threshold, tuple(name for name, _ in photos))
    if st.session_state.get("album-key") != key:
        bar = st.progress(0.0, text=f"Identifying {len(photos)} photos…")
        # on the cluster of $RAY_ADDRESS when the app was started with one, else here
        album = identify_photos(recognizer, photos, threshold, bar=ui.streamlit_bar(bar))
        thumbs = display.album_thumbnails(album, photos)
        st.session_state["album"] = (album, thumbs, display.album_table(album, thumbs))
        st.session_state["album-key"] = key
        bar.empty()
    album, thumbs, table = st.session_state["album"]
    book = AlbumGroups.open(kept_with(run, name), run.embeddings_id) if group else None
    with ui.shown_errors("Grouping the unknown faces"):
        if book is not None:  # cheap for faces already kept: only new ones are placed
            album.group(recognizer.cuts, book)
        else:
            album.rows["group"] = ""
    table["group"] = album.rows["group"].to_numpy()
    rows, groups = album.rows, album.groups()
    a, b, c, d = st.columns(4)
    a.metric("Photos", f"{len(photos):,}")
    b.metric("Faces", f"{len(rows):,}")
    c.metric("Known", f"{int(rows['known'].sum()) if len(rows) else 0:,}")
    d.metric("Groups of unknown faces", f"{len(groups):,}")
    for error in album.errors:
        st.error(error["error"])  # it names the photo
    if len(rows):
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "thumbnail": st.column_config.ImageColumn("thumbnail"),
                "similarity": st.column_config.NumberColumn(format="percent"),
                "match confidence": st.column_config.NumberColumn(format="percent"),
            },
            key="album-table",
        )
        st.download_button(
            "Download the table (CSV)", album.csv(), file_name="faces.csv", mime="text/csv"
        )
    added = st.session_state.get("group-added")
    if added and Path(added[0]) != run.path:  # another model chosen since: not its undo
        added = None
    if added and st.button(f"Undo: take {added[2]} out of the model again", key="added-undo"):
        with ui.shown_errors(f"Taking {added[2]} out"):
            people.remove(Run(Path(added[0])), added[1])
            del st.session_state["group-added"]
            st.session_state.pop("album-key", None)  # identified again without them
            ui.new_group_widgets()
            st.toast(f"{added[2]} is out of the model again.")
            st.rerun()
    if book is None:
        return
    if book.notice:
        st.warning(book.notice, icon=":material/warning:")
    kind, message = st.session_state.pop("groups-said", (None, None))
    if kind == "error":
        st.error(message)
    elif kind == "done":
        st.toast(message)
    if book.last_change():
        st.button(
            f"Undo: {book.last_change()}", key="groups-undo", on_click=change_groups,
            args=(book.undo,),
        )
    for number, members in groups.items():
        show_group(book, album, thumbs, number, members, [g for g in groups if g != number])


def show_group(
    book: AlbumGroups,
    album: Album,
    thumbs: list,
    number: int,
    members: pd.DataFrame,
    others: list[int],
) -> None:
    """One group, every widget keyed on its number (which never moves to other faces) and on
    the groups' version: after any change every box is a new widget, drawn from the file (a
    cleared widget would otherwise come back with the value the browser still shows)."""
    faces = [face_key(p, f) for p, f in zip(members["photo"], members["face"], strict=True)]
    key = ui.group_widget_key
    with st.container(border=True, key=f"group-{number}"):
        called = book.names.get(number)
        st.markdown(
            f"**Group {number}**{f' · {called}' if called else ''}: {len(members)} faces of "
            "someone the model does not know"
        )
        st.image([thumbs[i] for i in members.index], width=64, caption=faces)
        name_column, add_column, save_column = st.columns([3, 1, 1], vertical_alignment="bottom")
        name = name_column.text_input(
            "Name this person",
            value=called or "",
            key=key("name", number),
            placeholder="e.g. Ada Lovelace",
        )
        mine = own_copy(run) if run.builtin else None
        if run.builtin:
            name_column.caption(
                f"The built-in model is read-only: adding puts this person in your own copy "
                f"({mine.title}), the model in use from then on." if mine else
                "The built-in model is read-only: adding makes your own copy of it (the model "
                "in use from then on) and adds this person there."
            )
        if people.learns_faces(run) and add_column.button(
            ("Add to my copy" if mine else "Make my copy and add") if run.builtin
            else "Add to the model",
            key=key("add", number), type="primary",
        ):
            add_group(number, name, members, album, thumbs)
        state = st.session_state  # the callbacks read the widgets as they are when clicked
        save_column.button(
            "Save the name", key=key("rename", number), on_click=change_groups,
            args=(lambda: book.rename(number, state[key("name", number)]),),
        )
        with st.expander("Merge or split this group"):
            left, right = st.columns(2)
            other = left.selectbox(
                "Merge it with group", others, index=None, key=key("merge-with", number)
            )
            left.button(
                "Merge", key=key("merge", number), disabled=other is None,
                on_click=change_groups,
                args=(lambda: book.merge(number, int(state[key("merge-with", number)])),),
            )
            chosen = right.multiselect("Faces to take out", faces, key=key("split", number))
            right.radio(
                "Into", ["a new group", "no group"], horizontal=True, key=key("into", number)
            )
            right.button(
                "Take them out", key=key("take", number), disabled=not chosen,
                on_click=change_groups,
                args=(lambda: book.split(
                    state[key("split", number)],
                    new_group=state[key("into", number)] == "a new group",
                ),),
            )


def change_groups(change) -> None:
    """One change to the groups (saved by the package), run as the button's callback so that
    every group widget starts again from the file before the page is drawn; said on the page
    in a toast, or as an error naming the problem."""
    try:
        done = change()
    except CelebmodelError as exc:
        said = f"Changing the groups: {display.group_problem(exc)}"
        st.session_state["groups-said"] = ("error", said)
        return
    ui.new_group_widgets()
    st.session_state["groups-said"] = ("done", done[0].upper() + done[1:] + ".")


def add_group(number: int, name: str, members: pd.DataFrame, album: Album, thumbs: list) -> None:
    """Enrol group ``number`` as a new person (or more photos of a known one), with progress:
    the model is rewritten, then the album identified again (its faces now known)."""
    with ui.shown_errors(f"Adding {name or 'this person'}"):
        if not name.strip():
            raise CelebmodelError("Name this person: the name is empty")
        with st.status(f"Adding {name} to the model from {len(members)} faces…") as status:
            into, label, new = people.name_faces(
                run,
                name,
                [np.asarray(thumbs[i]) for i in members.index],
                list(members["photo"]),
                album.embeddings[members.index],
            )
            status.update(label=f"Added {name}; identifying the album again…", state="complete")
        ui.new_group_widgets()
        st.session_state.pop("album-key", None)
        shown = people.names(into).get(label, name)
        copied = " to your own copy of the built-in model, now in use" if into != run else ""
        st.toast(f"Added {shown} from {len(members)} faces{copied}.")
        if new:  # undone by taking them out again
            st.session_state["group-added"] = (str(into.path), label, shown)
        st.session_state["people-show"] = shown  # the People page opens on them
        st.rerun()


def video_page() -> None:
    """A video uploaded or on the server: identified with progress (Stop cancels), then its
    player, timeline, people and downloads."""
    upload = st.file_uploader("Video", type=[*sorted(e.lstrip(".") for e in VIDEO_EXTENSIONS),
                                             "zip"], key="video-upload",
                              help="A video, or a .zip of videos (one is chosen after).")
    if upload is not None and upload.name.lower().endswith(".zip"):
        upload = zipped_video(upload)
    path = st.text_input("Or a video on this server (its path)", key="video-path").strip()
    rate = st.select_slider("Frames looked at per second", list(FPS_CHOICES), value=DEFAULT_FPS,
                            format_func=FPS_CHOICES.get, key="video-fps",
                            help="More find brief faces and times more exactly, and take longer.")
    chosen = threshold if st.session_state.get("custom-threshold") or preset != "Balanced" \
        else None
    st.caption(views.preset_words(preset if chosen is not None else PRESET))
    if isinstance(upload, Path):
        name, data = upload.name, upload.read_bytes()
    elif upload is not None:
        name, data = upload.name, upload.getvalue()
    elif path:
        if not Path(path).is_file():
            st.error(f"{path}: no such file")
            return
        name, data = path, Path(path).read_bytes()
    else:
        st.info("Upload a video (mp4, mov, mkv, webm, avi) to see who is on screen, and when.")
        return
    key = (name, len(data), rate, chosen, str(run.path), run.versions())
    done = st.session_state.get("video")
    if done is None or done[0] != key:
        if st.session_state.get("video-stopped") == key:
            st.info(f"Stopped identifying {Path(name).name}.")
            if st.button("Identify it again", key="video-again"):
                st.session_state.pop("video-stopped")
                st.rerun()
            return
        st.session_state["video-stopped"] = key  # a Stop click reruns the page with it set
        st.button("Stop", key="video-stop", icon=":material/stop:")
        progress = st.progress(0.0, text=f"Reading {Path(name).name}…")
        with ui.shown_errors(Path(name).name):
            timeline = identify_video(recognizer, data, name=Path(name).name, fps=rate,
                                      threshold=chosen, bar=ui.streamlit_bar(progress))
            st.session_state["video"] = (key, timeline)
            st.session_state.pop("video-at", None)
        st.session_state.pop("video-stopped", None)
        progress.empty()
        if st.session_state.get("video", (None,))[0] != key:
            return
        st.rerun()  # the Stop button goes
    show_video(data, st.session_state["video"][1])


def zipped_video(archive) -> Path | None:
    """The video chosen from a zip of videos, unpacked once (the guards of a zip of photos)."""
    if st.session_state.get("video-zip", (None,))[0] != archive.file_id:
        st.session_state.pop("video-zip", None)
        with ui.shown_errors(f"Extracting {archive.name}"):
            folder = extract_videos(archive.getvalue(), archive.name)
            st.session_state["video-zip"] = (archive.file_id, str(folder))
    if "video-zip" not in st.session_state:
        return None
    folder = Path(st.session_state["video-zip"][1])
    videos = media_files([folder])[1]
    return st.selectbox("Video in the zip", videos, key="video-in-zip",
                        format_func=lambda video: str(video.relative_to(folder)))


def show_video(data: bytes, timeline: VideoTimeline) -> None:
    """The video's player (names as subtitles), timeline, the frame at the moment chosen,
    people, unknown people to name, and downloads."""
    st.success(views.summary(timeline), icon=":material/movie:")
    if timeline.stopped:
        st.warning(timeline.stopped)
    if not timeline.people:
        st.info("Nobody's face was seen for long enough to follow them.")
    at = float(st.session_state.get("video-at", 0.0))
    picks = st.session_state.get("video-picks", 0)  # each pick makes a new player, chart and
    # box: the player seeks even to the second it was last sent to (Streamlit's seeks only
    # when its start time changes), a bar clicked again is a new pick, and a bar left
    # selected never outweighs the box
    players = st.empty(), st.empty()
    players[picks % 2].video(playable(data, timeline), start_time=int(at),  # whole seconds
                             subtitles={"Who is on screen": vtt_text(timeline)})
    moment = st.container()  # the frame chosen below shows here, under the player
    if not timeline.people:
        return
    st.subheader("Timeline")
    st.caption("Click a bar to watch that moment.")
    picked = st.plotly_chart(views.timeline_figure(timeline), on_select="rerun",
                             selection_mode="points", key=f"video-timeline-{picks}",
                             use_container_width=True)
    points = (picked or {}).get("selection", {}).get("points", []) if picked else []
    jump = st.selectbox(
        "Or go to", [(p.name, o["start"]) for p in timeline.people for o in p.occurrences],
        index=None, placeholder="choose a moment", key=f"video-jump-{picks}",
        format_func=lambda item: f"{item[0]} at {views.clock(item[1])}",
    )
    chosen = points[0]["customdata"][0] if points else jump[1] if jump else None
    if chosen is not None:
        st.session_state["video-at"] = float(chosen)
        st.session_state["video-picks"] = picks + 1
        st.rerun()
    if "video-at" in st.session_state:
        frame = VideoReader(data, name=timeline.info.name).frame_at(at)
        moment.image(views.frame_with_faces(frame.pixels, timeline, frame.time),
                     caption=f"At {views.clock(frame.time)}")
    st.subheader("People")
    st.dataframe(views.people_table(timeline), hide_index=True,
                 column_config={"face": st.column_config.ImageColumn("face")})
    for person in [p for p in timeline.people if not p.known]:
        name_video_person(timeline, person)
    stem = Path(timeline.info.name).stem
    left, middle, right = st.columns(3)
    left.download_button("Occurrences (CSV)", csv_text([timeline]), f"{stem}.csv", "text/csv")
    middle.download_button("Who is on screen (WebVTT)", vtt_text(timeline), f"{stem}.vtt",
                           "text/vtt")
    right.download_button("Everything (JSON)", json_text([timeline]), f"{stem}.json",
                          "application/json")
    drawn = st.session_state.get("video-drawn")
    if drawn is None or drawn[0] != id(timeline):
        if st.button("Make the video with the names drawn", key="video-draw",
                     help="The video again, every face boxed and named (no sound)."):
            with ui.shown_errors(f"Drawing the names on {timeline.info.name}"), \
                    st.spinner("Drawing the names on every frame…"), \
                    tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / f"{stem}-named.mp4"
                write_annotated(data, timeline, target)
                st.session_state["video-drawn"] = (id(timeline), target.read_bytes())
                st.rerun()
    else:
        st.download_button("The video with the names drawn (mp4)", drawn[1],
                           f"{stem}-named.mp4", "video/mp4")


def playable(data: bytes, timeline: VideoTimeline) -> bytes:
    """The video as the player gets it: itself, or (an AVI, an MKV, MPEG-4 Part 2) a copy
    browsers play, made once per video."""
    info = timeline.info
    if plays_in_browsers(info):
        return data
    made = st.session_state.get("video-playable")
    if made is None or made[0] != id(timeline):
        with ui.shown_errors(f"Making a copy of {info.name} for the player"), \
                st.spinner(f"Making a copy of {info.name} your browser can play…"), \
                tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "playable.mp4"
            write_playable(data, info.name, target)
            st.session_state["video-playable"] = (id(timeline), target.read_bytes())
        if st.session_state.get("video-playable", (None,))[0] != id(timeline):
            return data  # the error is shown; the player tries the file itself
        made = st.session_state["video-playable"]
    st.caption(f"{info.name} ({info.codec}) is not a video browsers play: the player shows an "
               "H.264 copy of it, without sound.")
    return made[1]


def name_video_person(timeline: VideoTimeline, person) -> None:
    """An unknown person of the video: their face, a name, and the add that enrols them."""
    with st.container(border=True, key=f"video-person-{person.key}"):
        face, form = st.columns([1, 4])
        if person.best.thumbnail is not None:
            face.image(person.best.thumbnail, width=96)
        form.markdown(f"**{person.name}**: {views.clock(person.screen_time)} on screen")
        name = form.text_input("Name this person", key=f"video-name-{id(timeline)}-{person.key}",
                               placeholder="e.g. Ada Lovelace")  # a new timeline: empty boxes
        mine = own_copy(run) if run.builtin else None
        label = ("Add to my copy" if mine else "Make my copy and add") if run.builtin \
            else "Add to the model"
        if people.learns_faces(run) and form.button(label, key=f"video-add-{person.key}"):
            with ui.shown_errors(f"Adding {name or 'this person'}"):
                if not name.strip():
                    raise CelebmodelError("Name this person: the name is empty")
                with st.spinner(f"Adding {name} to the model…"):
                    into, _, _ = name_person(run, timeline, person.key, name)
                copied = " to your own copy of the built-in model, now in use" \
                    if into != run else ""
                st.toast(f"Added {name} from their faces in the video{copied}; identifying "
                         "it again…")
                st.rerun()


if source == "photos":
    uploads = st.file_uploader(
        "Photos",
        type=ui.PHOTO_TYPES,
        accept_multiple_files=True,
        key="photos",
        help="Photos stay in memory; nothing is written to disk.",
    )
    photos = [(upload.name, upload.getvalue()) for upload in uploads or []]
    if not photos:
        st.info("Upload one or several photos (many at once make an album, with groups).")
    elif len(photos) <= DETAILED:
        for name, content in photos:
            show_photo(name, content)
    else:
        show_album("uploads", photos)
elif source in ("zip", "folder"):
    with ui.shown_errors("The album"):
        album_name, photos = album_photos()
        if photos:
            show_album(album_name, photos)
elif source == "camera":
    shot = st.camera_input("Take a photo", key="camera")
    if shot is not None:
        show_photo("webcam photo", shot.getvalue())
elif source == "video":
    video_page()
else:
    ui.live_webcam(recognizer, threshold)
