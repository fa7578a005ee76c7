"""Identify: every face named or called unknown, with the evidence; whole albums grouped;
the live webcam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from celebmodel import display, people
from celebmodel.errors import CelebmodelError
from celebmodel.images import photo_files
from celebmodel.open_set import presets, score_for, similarity
from celebmodel.ray_engine import identify_photos
from celebmodel.runs import active_run
from celebmodel.sources import extract_photos
from pages import ui

ui.through_app()

DETAILED = 6  # more photos than this are shown as an album: a table and groups
SOURCES = {
    "photos": "Upload photos",
    "zip": "A .zip of photos",
    "folder": "A folder on this server",
    "camera": "Webcam snapshot",
    "live": "Live webcam",
}


st.title("Identify")

run = active_run()
if run is None:
    st.warning(
        "No model in use yet, so there is no one to recognise. Train one first (a few "
        "minutes with the offline dlib128 backbone), or choose one in the sidebar."
    )
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

try:
    recognizer = ui.recognizer(run)
except (CelebmodelError, OSError) as exc:
    st.error(f"Cannot load the model of {run.name}: {exc}")
    st.stop()

shown = [recognizer.names[label] for label in recognizer.people]
st.caption(
    f"Model {run.name} ({recognizer.config.backbone}) knows {len(shown)} people: "
    f"{', '.join(shown)}."
)
st.page_link("pages/people.py", label="Manage the people it knows", icon=":material/group:")

# How sure a match must be --------------------------------------------------------------------
options = presets(run.read_json("calibration.json") or {"threshold": recognizer.threshold})
balanced = options["Balanced"]


def preset_words(name: str) -> str:
    option = options[name]
    accepts = f", accepts {option['accepts']:.0%} of known faces" if option["accepts"] else ""
    return f"{name}: similarity at least {option['similarity']:.0%}{accepts}"


preset = st.radio(
    "How sure must a match be?",
    list(options),
    index=list(options).index("Balanced"),
    format_func=preset_words,
    key=f"preset-{run.name}",
    help="Measured on the model's own validation faces. Balanced is the calibrated value.",
)
needed = options[preset]["similarity"]
with st.expander("Advanced"):
    if st.toggle("Set the similarity myself", key="custom-threshold"):
        needed = st.slider(
            "Smallest similarity that names a face",
            0.0,
            1.0,
            value=round(float(needed), 2),
            step=0.01,
            key=f"similarity-{run.name}",
            help="Similarity = 1 − score²/2, where the score is the face's distance to the "
            "person's mean face times (2 − top probability): for a confident prediction, the "
            "cosine similarity to that mean face.",
        )
threshold = (
    score_for(needed) if needed != options[preset]["similarity"] else options[preset]["threshold"]
)
if threshold > balanced["threshold"] + 1e-9:
    st.warning(
        f"Looser than Balanced (similarity {balanced['similarity']:.0%}): more strangers will "
        "be named as someone they are not.",
        icon=":material/warning:",
    )
needed = float(similarity(threshold))

# Photos --------------------------------------------------------------------------------------
source = st.radio("Photos", list(SOURCES), format_func=SOURCES.get, horizontal=True, key="source")


def show_face(number: int, face: dict, pixels: np.ndarray) -> None:
    with st.container(border=True):
        thumb, text = st.columns([1, 4])
        thumb.image(display.face_crop(pixels, face["box"]), width=72)
        text.markdown(f"**{number}. {display.face_title(face)}**")
        text.caption(display.face_details(face, needed))
        if face["known"]:
            text.caption(display.top_k_line(face))
        same = [e for e in face["evidence"] if not e["runner_up"]]
        other = [e for e in face["evidence"] if e["runner_up"]]
        if same:
            words = " / ".join(f"{e['similarity']:.2f}" for e in same)
            line = f"Looks most like these {len(same)} photos of {same[0]['name']}: {words}"
            if other:
                line += f"; next: {other[0]['name']} {other[0]['similarity']:.2f}"
            st.caption(line)
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
    if not faces:
        st.warning(
            f"{name}: no face found. Try a photo where the face is larger, turned to the "
            "camera and well lit."
        )
        st.image(result["annotated"], width=480)
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


def album_photos() -> list[tuple[str, object]]:
    """The (name, source) pairs of the album chosen: a zip's photos or a folder's."""
    if source == "zip":
        archive = st.file_uploader("Zip of photos", type=["zip"], key="album-zip")
        if archive is not None and st.session_state.get("album-zip-name") != archive.name:
            with ui.shown_errors(f"Extracting {archive.name}"):
                folder = extract_photos(archive.getvalue(), archive.name)
                st.session_state["album-folder-extracted"] = str(folder)
                st.session_state["album-zip-name"] = archive.name
        folder = st.session_state.get("album-folder-extracted") if archive is not None else None
    else:
        folder = st.text_input("Folder of photos (searched deeply)", key="album-folder").strip()
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        st.error(f"{folder}: no such folder")
        return []
    return [(str(path.relative_to(root)), path) for path in photo_files([root])]


def show_album(photos: list[tuple[str, object]]) -> None:
    """Every face of many photos in a table, unknown faces grouped, groups nameable."""
    group = st.toggle("Group the unknown faces by person", value=True, key="group")
    key = (run.name, run.versions(), threshold, group, tuple(name for name, _ in photos))
    if st.session_state.get("album-key") != key:
        bar = st.progress(0.0, text=f"Identifying {len(photos)} photos…")
        # on the cluster of $RAY_ADDRESS when the app was started with one, else here
        album = identify_photos(recognizer, photos, threshold, bar=ui.streamlit_bar(bar))
        if group:
            album.group(recognizer.gallery, recognizer.gallery_labels)
        thumbs = display.album_thumbnails(album, photos)
        st.session_state["album"] = (album, thumbs, display.album_table(album, thumbs))
        st.session_state["album-key"] = key
        bar.empty()
    album, thumbs, table = st.session_state["album"]
    rows, groups = album.rows, album.groups()
    a, b, c, d = st.columns(4)
    a.metric("Photos", len(photos))
    b.metric("Faces", len(rows))
    c.metric("Known", int(rows["known"].sum()) if len(rows) else 0)
    d.metric("Groups of unknown faces", len(groups))
    for error in album.errors:
        st.error(error["error"])  # it names the photo
    if len(rows):
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "thumbnail": st.column_config.ImageColumn("thumbnail"),
                "similarity": st.column_config.NumberColumn(format="percent"),
            },
            key="album-table",
        )
        st.download_button(
            "Download the table (CSV)", album.csv(), file_name="faces.csv", mime="text/csv"
        )
    for number, members in groups.items():
        with st.container(border=True):
            st.markdown(
                f"**Group {number}**: {len(members)} faces of someone the model does not know"
            )
            st.image([thumbs[i] for i in members.index], width=64)
            name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
            name = name_column.text_input(
                "Name this person", key=f"group-name-{number}", placeholder="e.g. Ada Lovelace"
            )
            if button_column.button("Add to the model", key=f"group-add-{number}"):
                with ui.shown_errors(f"Adding {name or 'this person'}"):
                    if not name.strip():
                        raise CelebmodelError("Name this person: the name is empty")
                    label = people.add_faces(
                        run,
                        name,
                        [np.asarray(thumbs[i]) for i in members.index],
                        list(members["photo"]),
                        vectors=album.embeddings[members.index],
                    )
                    st.session_state.pop("album-key", None)
                    st.toast(
                        f"Added {recognizer.names.get(label, name)} from {len(members)} faces."
                    )
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
        show_album(photos)
elif source in ("zip", "folder"):
    with ui.shown_errors("The album"):
        photos = album_photos()
        if photos:
            show_album(photos)
elif source == "camera":
    shot = st.camera_input("Take a photo", key="camera")
    if shot is not None:
        show_photo("webcam photo", shot.getvalue())
else:
    ui.live_webcam(recognizer, threshold)
