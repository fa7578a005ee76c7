"""People: who the active model knows (searched and paged, for thousands); add a person or
photos of one, rename, remove; a copy of the built-in model to change."""

from __future__ import annotations

import streamlit as st

from celebmodel.recognition import people
from celebmodel.reports import display
from celebmodel.runs.run import active_run, choose_run, copy_run
from pages import ui

ui.through_app()

PAGE_SIZE = 24  # people per page of cards and rows

st.title("People")
run = active_run()
if run is None:
    ui.no_model_yet()
    st.stop()

for level, message in st.session_state.pop("people-done", []):  # what the last change did
    getattr(st, level)(message)

editable = people.learns_faces(run)  # the built-in model: through a copy, offered below
roster = people.roster(run)
removed_count = int(roster["removed"].sum())
st.caption(
    f"{run.title} knows {len(roster) - removed_count:,} people"
    + (f" ({removed_count:,} removed)" if removed_count else "")
    + ". Changes apply at once, on every page."
)

if run.builtin:
    st.info(
        "This is the built-in model: read-only, so it stays the same for everyone. Make your "
        "own copy to add people from a few photos, rename or remove them; the copy knows "
        "everyone this one knows and becomes the model in use.",
        icon=":material/lock:",
    )
    if st.button("Make my own copy", type="primary", icon=":material/content_copy:"):
        with ui.shown_errors("Making your copy"), st.spinner("Copying the model…"):
            copy = copy_run(run)
            choose_run(copy)
            st.session_state["people-done"] = [
                ("success", f"{copy.title} is ready and in use: add anyone below.")
            ]
            st.rerun()
elif not editable:
    st.info(
        "People can be added, renamed or removed in a face-network run (mbf512, dlib128); "
        "this run uses a CNN that would need retraining to learn someone new. Renaming and "
        "removing still work."
    )

# Who it knows: searched, filtered and paged ----------------------------------------------
if "people-show" in st.session_state:  # the person just added or renamed, found for the user
    st.session_state["people-search"] = st.session_state.pop("people-show")
    st.session_state["people-kind"] = "all"
query, which = st.columns([3, 2])
text = query.text_input("Search", key="people-search", placeholder="part of a name").strip()
kinds = {"all": "Everyone", "added": "Added later", "removed": "Removed"}
kind = which.segmented_control(
    "Show", list(kinds), format_func=kinds.get, key="people-kind",
    default=None if "people-kind" in st.session_state else "all",  # set above: no default
) or "all"
chosen = display.roster_matches(roster, text, kind)
pages = max(1, -(-len(chosen) // PAGE_SIZE))
page = 1
if pages > 1:
    page = int(
        st.number_input(
            f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, key="people-page"
        )
    )
shown = chosen.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
st.caption(
    f"{len(chosen):,} of {len(roster):,} people" + (f" · page {page} of {pages:,}" if pages > 1
                                                    else "")
)
table = display.roster_table(shown, run.lfw_gallery, removed=bool(roster["removed"].any()))
# a face for each person of this page, where one can be shown (cached until the gallery
# changes; an LFW gallery's photos are not shipped)
faces = [] if run.builtin else [ui.gallery_face(run, p, 64) if p else None for p in shown["face"]]
if any(face is not None for face in faces):
    table.insert(0, "face", [display.data_uri(face) if face else None for face in faces])
st.dataframe(
    table,
    hide_index=True,
    column_config={
        "face": st.column_config.ImageColumn("face"),
        "LFW page": st.column_config.LinkColumn(display_text="LFW page"),
    },
    key="people-table",
)

if run.builtin:
    st.stop()

# Changing someone ---------------------------------------------------------------------------
st.subheader("Change someone")
options = list(chosen["label"].head(200))
names = dict(zip(roster["label"], roster["name"], strict=True))
label = st.selectbox(
    "Person",
    options,
    format_func=names.get,
    key="person",
    help="The people the search above finds (the first 200).",
)
if label:
    row = roster.set_index("label").loc[label]
    rename, change = st.columns(2)
    with rename.form(f"rename-{label}", clear_on_submit=False):
        new_name = st.text_input("Name shown", value=row["name"], key=f"name-{label}")
        if st.form_submit_button("Rename"):
            with ui.shown_errors(f"Renaming {row['name']}"):
                people.rename(run, label, new_name)
                st.session_state["people-show"] = new_name
                st.session_state["people-done"] = [
                    ("success", f"{row['name']} is now shown as {new_name}.")
                ]
                st.rerun()
    with change:
        if row["removed"]:
            if st.button(f"Put {row['name']} back", key="restore"):
                with ui.shown_errors(f"Restoring {row['name']}"):
                    people.restore(run, label)
                    st.session_state["people-done"] = [("success", f"{row['name']} is back.")]
                    st.rerun()
        elif st.button(f"Remove {row['name']}", key="remove"):
            with ui.shown_errors(f"Removing {row['name']}"):
                people.remove(run, label)
                st.session_state["people-done"] = [("success", f"Removed {row['name']}.")]
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
                    st.session_state["people-done"] = [
                        ("success", f"Added {report['n_photos']} photo(s) of {row['name']}."),
                        *display.skipped_lines(report["skipped"]),
                    ]
                    st.rerun()

if editable:
    st.subheader("Add someone new")
    st.caption(
        "A few clear photos (one face each) are enough: the face network learns the new face "
        "without retraining (about ten seconds on two cores). The photos are not kept, only "
        "what the model needs (the face embeddings), unless you keep the aligned faces as "
        "thumbnails."
    )
    with st.form("enrol", clear_on_submit=True):
        new_name = st.text_input("Name", placeholder="Ada Lovelace", key="new-name")
        new_photos = st.file_uploader(
            "Photos of this person", type=ui.PHOTO_TYPES, accept_multiple_files=True
        )
        keep = st.checkbox("Keep their aligned faces (thumbnails) in the model", key="keep")
        if st.form_submit_button("Add person"):
            with ui.shown_errors(f"Adding {new_name or 'a person'}"), st.spinner(
                "Adding: finding the faces, embedding them, updating the model…"
            ):
                report = people.enroll_uploaded(
                    run, new_name, [(f.name, f.getvalue()) for f in new_photos or []], keep
                )
                shown_name = people.names(run).get(report["name"], report["name"])
                st.session_state["people-show"] = shown_name
                st.session_state["people-done"] = [
                    ("success", f"Added {shown_name} from {report['n_photos']} photo(s) in "
                     f"{report['seconds']:.1f} s."),
                    *display.skipped_lines(report["skipped"]),
                ]
                st.rerun()
