"""People: who the active model knows; add a person or photos of one, rename, remove."""

from __future__ import annotations

import streamlit as st

from celebmodel import people
from celebmodel.backbones import BACKBONES
from celebmodel.runs import active_run
from pages import ui

ui.through_app()


st.title("People")
run = active_run()
if run is None:
    st.info("No model in use yet: train one, or choose one in the sidebar.")
    st.stop()

editable = BACKBONES[run.config_dict().get("backbone", "")].kind == "embedding"
roster = people.roster(run)
known = roster[~roster["removed"]]
st.caption(
    f"{run.title} knows {len(known)} people"
    + (f" ({int(roster['removed'].sum())} removed)" if roster["removed"].any() else "")
    + ". Changes apply at once, on every page."
)
if not editable:
    st.info(
        "People can be added, renamed or removed in a face-network run (dlib128); this run "
        "uses a CNN that would need retraining to learn someone new. Renaming and removing "
        "still work."
    )

columns = st.columns(4)
for i, person in enumerate(roster.itertuples()):
    with columns[i % 4].container(border=True):
        face = ui.gallery_face(run, person.face, 80) if person.face else None
        if face is not None:
            st.image(face, width=80)
        state = " · removed" if person.removed else ""
        st.markdown(f"**{person.name}**")
        st.caption(f"{person.photos} photo(s) · {person.kind}{state}")

st.subheader("Change someone")
labels = list(roster["label"])
names = dict(zip(roster["label"], roster["name"], strict=True))
label = st.selectbox("Person", labels, format_func=names.get, key="person")
if label:
    row = roster.set_index("label").loc[label]
    rename, change = st.columns(2)
    with rename.form(f"rename-{label}", clear_on_submit=False):
        new_name = st.text_input("Name shown", value=row["name"], key=f"name-{label}")
        if st.form_submit_button("Rename"):
            with ui.shown_errors(f"Renaming {row['name']}"):
                people.rename(run, label, new_name)
                st.toast(f"{row['name']} is now shown as {new_name}.")
                st.rerun()
    with change:
        if row["removed"]:
            if st.button(f"Put {row['name']} back", key="restore"):
                with ui.shown_errors(f"Restoring {row['name']}"):
                    people.restore(run, label)
                    st.rerun()
        elif st.button(f"Remove {row['name']}", key="remove"):
            with ui.shown_errors(f"Removing {row['name']}"):
                people.remove(run, label)
                st.toast(f"Removed {row['name']}.")
                st.rerun()
        if editable:
            more = st.file_uploader(
                f"More photos of {row['name']}",
                type=ui.PHOTO_TYPES,
                accept_multiple_files=True,
                key=f"more-{label}",
            )
            if more and st.button("Add these photos", key="add-more"):
                with ui.shown_errors(f"Adding photos of {row['name']}"), st.spinner("Adding…"):
                    report = people.enroll_uploaded(
                        run, label, [(f.name, f.getvalue()) for f in more]
                    )
                    st.toast(f"Added {report['n_photos']} photo(s) of {row['name']}.")
                    st.rerun()

if editable:
    st.subheader("Add someone new")
    st.caption(
        "A few clear photos (one face each) are enough: the face network learns the new face "
        "in seconds, without retraining. The photos are not kept, only what the model needs "
        "(the face embeddings), unless you keep the aligned faces as thumbnails."
    )
    with st.form("enrol", clear_on_submit=True):
        new_name = st.text_input("Name", placeholder="Ada Lovelace", key="new-name")
        new_photos = st.file_uploader(
            "Photos of this person", type=ui.PHOTO_TYPES, accept_multiple_files=True
        )
        keep = st.checkbox("Keep their aligned faces (thumbnails) in the model", key="keep")
        if st.form_submit_button("Add person"):
            with ui.shown_errors(f"Adding {new_name or 'a person'}"), st.spinner("Adding…"):
                report = people.enroll_uploaded(
                    run, new_name, [(f.name, f.getvalue()) for f in new_photos or []], keep
                )
                shown = people.names(run).get(report["name"], report["name"])
                st.success(
                    f"Added {shown} from {report['n_photos']} photo(s) in "
                    f"{report['seconds']:.1f} s."
                )
                for problem in report["skipped"]:
                    st.warning(f"Skipped {problem['path']}: {problem['reason']}")
