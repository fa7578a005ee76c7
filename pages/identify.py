"""Identify: name every face in uploaded or webcam photos with the active model."""

from __future__ import annotations

import streamlit as st

from celebmodel import display, figures
from celebmodel.backbones import BACKBONES
from celebmodel.enrol import enroll_uploaded
from celebmodel.errors import CelebmodelError
from celebmodel.runs import active_run
from pages import ui

ui.through_app()

FACES_PER_ROW = 3

st.title("Identify")

run = active_run()
if run is None:
    st.warning(
        "No trained model yet, so there is no one to recognise. Train one first (a few "
        "minutes with the offline dlib128 backbone)."
    )
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

try:
    recognizer = ui.recognizer(run)
except (CelebmodelError, OSError) as exc:
    st.error(f"Cannot load the model of {run.name}: {exc}")
    st.stop()

st.caption(
    f"Model {run.name} ({recognizer.config.backbone}) knows {len(recognizer.labels)} "
    f"celebrities: {ui.names(recognizer.labels)}."
)
threshold = st.slider(
    "Unknown threshold",
    min_value=0.0,
    max_value=max(4.0, round(recognizer.threshold * 2, 2)),
    value=round(recognizer.threshold, 2),
    step=0.01,
    key=f"threshold-{run.name}",
    help="A face scoring above this is too unlike every known celebrity and is called "
    f"unknown. Lower is stricter. Calibrated default: {recognizer.threshold:.2f}.",
)

uploads = st.file_uploader(
    "Photos",
    type=ui.PHOTO_TYPES,
    accept_multiple_files=True,
    key="photos",
    help="Photos stay in memory; nothing is written to disk.",
)
photos = [(upload.name, upload.getvalue()) for upload in uploads or []]
if st.toggle("Use the webcam", key="use-camera"):
    shot = st.camera_input("Take a photo", key="camera")
    if shot is not None:
        photos.append(("webcam photo", shot.getvalue()))

if not photos:
    st.info("Upload one or several photos, or take one with the webcam.")

for name, content in photos:
    st.divider()
    st.subheader(name)
    try:
        with st.spinner(f"Identifying the faces in {name}…"):
            result = display.identify_photo(recognizer, content, name, threshold)
    except (CelebmodelError, OSError) as exc:
        st.error(str(exc))
        continue
    faces = result["faces"]
    st.caption(f"{len(faces)} face(s) found in {result['seconds']:.2f} s")
    if not faces:
        st.warning(
            f"{name}: no face found. Try a photo where the face is larger, turned to the "
            "camera and well lit."
        )
        st.image(result["annotated"], width=480)
        continue
    st.image(result["annotated"], width="content")
    columns = st.columns(FACES_PER_ROW)
    for number, face in enumerate(faces, start=1):
        with columns[(number - 1) % FACES_PER_ROW].container(border=True):
            thumb, text = st.columns([1, 3])
            thumb.image(display.face_crop(result["pixels"], face["box"]), width=72)
            text.markdown(f"**{number}. {display.face_title(face)}**")
            text.caption(
                f"score {face['score']:.2f} (unknown above {threshold:.2f}) · detector "
                f"confidence {face['confidence']:.0%}"
            )
            if not face["known"]:
                text.caption("Marked unknown: this face is not close enough to anyone known.")
            st.plotly_chart(
                figures.top_k_figure(face),
                key=f"topk-{name}-{number}",
                config={"displayModeBar": False},
            )

if BACKBONES[recognizer.config.backbone].kind == "embedding":
    with st.expander("Add a celebrity to this model"):
        st.caption(
            "A few clear photos (one face each) are enough: the dlib128 model learns the new "
            "face in seconds, without retraining. The photos are deleted afterwards."
        )
        with st.form("enrol", clear_on_submit=True):
            new_name = st.text_input("Name", placeholder="Ada Lovelace")
            new_photos = st.file_uploader(
                "Photos of this person",
                type=ui.PHOTO_TYPES,
                accept_multiple_files=True,
            )
            if st.form_submit_button("Add celebrity"):
                with ui.shown_errors(f"Adding {new_name or 'a celebrity'}"), st.spinner("Adding…"):
                    report = enroll_uploaded(
                        run, new_name, [(f.name, f.getvalue()) for f in new_photos or []]
                    )
                    st.success(
                        f"Added {report['name']} from {report['n_photos']} photo(s) in "
                        f"{report['seconds']:.1f} s."
                    )
                    for problem in report["skipped"]:
                        st.warning(f"Skipped {problem['path']}: {problem['reason']}")
