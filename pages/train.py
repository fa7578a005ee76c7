"""Train: choose a dataset and the settings that apply, start a training, watch every stage."""

from __future__ import annotations

import streamlit as st

from celebmodel.backbones import BACKBONES, keras_cache
from celebmodel.config import DETECTORS, RECIPES, TrainConfig, hidden_settings
from celebmodel.data.dataset import folder_signature, scan_dataset
from celebmodel.data.sources import datasets_dir, extract_dataset, fetch_lfw
from celebmodel.learning import jobs
from celebmodel.reports import display, figures, run_report
from celebmodel.runs.archives import import_run, run_zip
from celebmodel.runs.run import (
    Run,
    active_run,
    delete_run,
    first_line,
    list_runs,
    runs_root,
)
from pages import ui

ui.through_app()

DATASET_KEY = "dataset"  # the chosen folder, kept across pages
FOLDER_KEY = "dataset-folder"
WATCH_KEY = "watched-run"
SOURCES = {
    "folder": "A folder on this server",
    "zip": "Upload a .zip",
    "lfw": "Labeled Faces in the Wild (online)",
}
RECIPE_TITLES = {
    "improved": "improved: frozen base, then fine-tune",
    "classic": "classic: the original, whole network at once",
}


@st.cache_data(max_entries=16, show_spinner="Scanning the dataset…")
def _preview(folder: str, signature: str) -> tuple:
    scan = scan_dataset(folder)
    counts, skipped = figures.dataset_tables(scan)
    return str(scan.root), counts, skipped


def preview(folder: str) -> tuple:
    """Photos per celebrity and skipped files of a dataset folder, cached under what is on
    disk (:func:`folder_signature`): a change there is seen at once, never 30 s later."""
    return _preview(folder, folder_signature(folder))


st.title("Train")
st.caption(
    "Training runs as its own process (`python -m celebmodel train …`): it carries on if you "
    "reload or close this page, and everyone using the studio sees it."
)

# 1. Dataset --------------------------------------------------------------------------------
st.header("1. Dataset")
source = st.radio(
    "Where are the photos?",
    list(SOURCES),
    format_func=SOURCES.get,
    horizontal=True,
    key="dataset-source",
)
if source == "folder":
    if FOLDER_KEY not in st.session_state:
        st.session_state[FOLDER_KEY] = st.session_state.get(DATASET_KEY, "")
    folder = st.text_input(
        "Dataset folder",
        key=FOLDER_KEY,
        placeholder="/path/to/celebrities",
        help="One sub-folder per celebrity, named after them (George_W_Bush/…jpg). "
        f"Uploaded and fetched datasets are kept in {datasets_dir()}.",
    )
    st.session_state[DATASET_KEY] = folder.strip()
elif source == "zip":
    archive = st.file_uploader(
        "Dataset .zip (one folder per celebrity inside)", type=["zip"], key="dataset-zip"
    )
    if archive is not None and st.button("Extract", key="extract"):
        st.session_state[DATASET_KEY] = ""  # a refused zip leaves no dataset behind it
        with ui.shown_errors(f"Extracting {archive.name}"), st.spinner("Extracting…"):
            scan = extract_dataset(archive.getvalue(), archive.name)
            st.session_state[DATASET_KEY] = str(scan.root)
            st.success(f"Extracted {len(scan.items)} photos into {scan.root}.")
elif source == "lfw":
    st.caption(
        "Downloads Labeled Faces in the Wild's official archive (173 MB, checked against its "
        "sha256) and keeps the people with at least 60 photos: needs internet."
    )
    if st.button("Fetch LFW", key="fetch-lfw"):
        st.session_state[DATASET_KEY] = ""
        with ui.shown_errors("Fetching LFW"), st.spinner("Downloading and unpacking LFW…"):
            scan = fetch_lfw(datasets_dir() / "lfw")
            st.session_state[DATASET_KEY] = str(scan.root)
            st.success(f"LFW ready: {len(scan.labels)} celebrities, {len(scan.items)} photos.")

dataset = st.session_state.get(DATASET_KEY) or ""
dataset_ok, root = False, ""
if dataset:
    with ui.shown_errors("Dataset"):
        root, counts, skipped = preview(dataset)
        st.markdown(f"**{root}**")
        a, b, c = st.columns(3)
        a.metric("Celebrities", f"{len(counts):,}")
        b.metric("Photos", f"{int(counts['photos'].sum()):,}")
        c.metric("Skipped files", f"{len(skipped):,}")
        st.plotly_chart(figures.dataset_figure(counts), key="dataset-chart")
        if len(skipped):
            with st.expander(f"{len(skipped)} skipped file(s) and why"):
                st.dataframe(skipped, hide_index=True)
        dataset_ok = True
else:
    st.info("Choose a dataset to see its celebrities and photo counts.")

# 2. Settings -------------------------------------------------------------------------------
st.header("2. Settings")
vgg_cached = BACKBONES["vgg16"].imagenet_cached()
names = list(BACKBONES)
left, right = st.columns(2)
backbone = left.selectbox(
    "Backbone",
    names,
    index=0 if vgg_cached else names.index("mbf512"),
    format_func=lambda name: BACKBONES[name].title,
    key="backbone",
    help="VGG16 is the original recipe's network. mbf512 (MobileFaceNet, ArcFace) and dlib128 "
    "are face networks that need no download and train in minutes on a CPU; mbf512 is the "
    "stronger (its weights are for non-commercial research only; dlib128's are public domain).",
)
spec = BACKBONES[backbone]
recipe = left.radio(
    "Recipe",
    list(RECIPES),
    index=list(RECIPES).index("improved"),
    format_func=RECIPE_TITLES.get,
    key="recipe",
    horizontal=True,
)
fine_tune = False
if RECIPES[recipe].two_phase:
    fine_tune = left.checkbox(
        "Phase 2: fine-tune the top of the network",
        value=spec.fine_tune,
        key=f"fine-tune-{backbone}",
        help="After the head is trained, unfreeze the network's last stage and train it at a "
        "low learning rate. A face network keeps phase 2 only if it lowers the validation "
        "loss; measured on LFW it did not help dlib128, so it is off by default there.",
    )
hidden = hidden_settings(backbone, recipe, fine_tune)
weights = "imagenet"
if "weights" not in hidden:
    cached = spec.imagenet_cached()
    if not cached:
        left.warning(
            f"ImageNet weights for {spec.title} are not in Keras's cache ({keras_cache()}). "
            "Keras downloads them when online; offline, training with them fails. Choose the "
            "offline **mbf512** (or **dlib128**) face backbone, or random initialisation below "
            "(much weaker)."
        )
    weights = left.radio(
        "Weights",
        ["imagenet", "none"],
        index=0 if cached else 1,
        format_func={"imagenet": "ImageNet (pretrained)", "none": "Random initialisation"}.get,
        key=f"weights-{backbone}",
        horizontal=True,
    )
per_class = left.number_input(
    "Photos per celebrity (0 = all)",
    min_value=0,
    value=60,
    step=10,
    key="per-class",
    help="The original recipe sampled 60 photos per celebrity, split 80/10/10.",
)
batch_size = right.number_input("Batch size", 1, 256, 8, key="batch-size", help="Original: 8")
patience = right.number_input(
    "Early-stopping patience (epochs)", 1, 100, 5, key="patience", help="Original: 5"
)
max_epochs = right.number_input("Most epochs per phase", 1, 1000, 100, key="max-epochs")
image_size = None
if "image size" not in hidden:
    image_size = right.number_input(
        "Image size (px)", 32, 1024, spec.input_size, step=16, key=f"image-size-{backbone}"
    )
faces = True
if "face stage" not in hidden:
    faces = right.checkbox(
        "Find and align the face first",
        value=True,
        key="faces",
        help="Off: the whole photo is resized, as the original recipe did.",
    )
augment = None
if "augmentation" not in hidden:
    augment = right.checkbox(
        "Augment the training photos",
        value=RECIPES[recipe].augment,
        key=f"augment-{recipe}-{spec.kind}",
        help="Random flips, small rotations and brightness (and zoom and contrast for CNNs).",
    )
detector = right.selectbox(
    "Face detector",
    DETECTORS,
    index=DETECTORS.index(spec.detector),
    key=f"detector-{backbone}",
    disabled=not faces,
    help="scrfd: small, turned and profile faces, with the 5 keypoints ArcFace alignment "
    "needs; hog: dlib's frontal detector; mtcnn: slower, finds more partly hidden faces. "
    "When one finds no face, the others are tried.",
)
if hidden:
    st.caption(
        "Not shown, because they do not apply here: "
        + "; ".join(f"{setting} ({why})" for setting, why in hidden.items())
        + "."
    )
name_column, notes_column = st.columns([1, 2])
run_name = name_column.text_input(
    "Name of this run", key="run-name", placeholder="e.g. LFW, 8 people, dlib128"
)
run_notes = notes_column.text_input("Notes", key="run-notes", placeholder="optional")

run = active_run()
exclude: list[str] = []
if run is not None and dataset_ok and run.config_dict().get("data_dir") == root:
    with ui.shown_errors(f"Reading {run.file('faces.csv')}"):
        several = run_report.several_faces(run)
        if len(several):
            with st.expander(f"{len(several)} photo(s) with several faces in {run.title}"):
                st.caption(
                    "The central face was taken as the celebrity (boxed in each photo). Leave "
                    "out the photos where that guess is wrong."
                )
                st.dataframe(several.drop(columns="box"), hide_index=True)
                grid = st.columns(6)
                for i, row in enumerate(several.head(12).itertuples()):
                    with grid[i % 6], ui.shown_errors(row.path):
                        st.image(display.taken_face(run, row.path, row.box), caption=row.path)
                exclude = st.multiselect(
                    "Leave out of the next training", list(several["path"]), key="exclude"
                )

settings = None  # what Start hands the trainer, once there is a dataset to train on
if dataset_ok:
    settings = {
        "data_dir": root,
        "backbone": backbone,
        "weights": weights,
        "recipe": recipe,
        "per_class": int(per_class) or None,
        "batch_size": int(batch_size),
        "patience": int(patience),
        "max_epochs": int(max_epochs),
        "image_size": int(image_size) if image_size else None,
        "faces": faces,
        "detector": detector,
        "augment": augment,
        "fine_tune": fine_tune if RECIPES[recipe].two_phase else None,
        "exclude": tuple(exclude),
    }


def show_warnings(run: Run) -> None:
    """What the training noticed about the dataset, one alert per group naming what it is
    about (files, celebrities, groups of identical photos)."""
    for group in run_report.warnings(run):
        files = group.get("files") or []
        st.warning(group["title"], icon=":material/warning:")
        if files:
            with st.expander(group["list_title"]):
                st.code("\n".join(files[:200]) + ("\n…" if len(files) > 200 else ""), None)


def live() -> None:
    """The running training, else the last one watched here, else the newest run.

    While a training is queued or running it is part of a fragment refreshed every 2 s from
    the run's files (:func:`start_and_watch`), so every open page follows it. An idle page has
    no timer: with Streamlit 1.67 an auto-refresh that meets a rerun of the user's own (a
    setting changed) can drop an element elsewhere on the page, so the timer runs only when
    there is something to follow.
    """
    with ui.shown_errors("Reading the training"):
        job = jobs.active()
        watched = st.session_state.get(WATCH_KEY)
        target = job or (Run(runs_root() / watched) if watched else None)
        if target is None or not target.file("status.json").is_file():
            target = next(iter(list_runs()), None)
        was_active = st.session_state.get("live-was-active", False)
        st.session_state["live-was-active"] = job is not None
        if target is None:
            st.caption("No training yet.")
            return
        st.session_state[WATCH_KEY] = target.name
        show_run(target)
        if was_active and job is None:
            st.rerun()


def show_run(run: Run) -> None:
    status = run.status()
    state = status["state"]
    st.subheader(f"{run.title}: {state}")
    if run.title != run.name:
        st.caption(f"Run folder {run.name}")
    stage = run_report.stage_view(run)
    if stage is not None:
        st.progress(stage["fraction"], text=stage["text"])
    progress = run_report.progress(run)
    if progress["text"]:
        st.caption(progress["text"])
    show_warnings(run)
    history = run.history()
    if len(history):
        st.plotly_chart(figures.learning_curves(history), key="live-curves")
    if state in ("queued", "running"):
        if st.button("Stop training", key="stop"):
            with st.spinner("Stopping…"):
                st.info(f"{run.name} is now {jobs.stop(run)}.")
    elif state == "finished":
        st.success(display.finished_words(run))
        summary = run_report.phase_summary(run)
        if summary:
            st.caption(summary)
        use, evaluate = st.columns(2)
        with use:
            ui.use_model_button(run, key=f"use-{run.name}")
        evaluate.page_link(
            "pages/evaluate.py",
            label=f"Evaluate {run.title}",
            icon=":material/analytics:",
            query_params={"run": run.name},
        )
    elif state == "cancelled":
        reason = first_line(status.get("error")) or "cancelled"
        st.warning(f"Training stopped: {reason}. No model was saved.")
    else:
        reason = first_line(status.get("error")) or "see the log below"
        st.error(f"Training failed: {reason}")
    log = jobs.log_text(run)
    if log:
        st.code(log, language=None)


def start_and_watch(settings: dict | None, name: str, notes: str) -> None:
    """Start training and the run it follows, one fragment: Start reruns only this part, so
    the new run replaces the previous one on screen at once (a whole-page rerun first
    redrew everything above while the previous run stayed shown)."""
    busy = None
    with ui.shown_errors("Looking for a running training"):
        busy = jobs.active()
    started = None
    if st.button(
        "Start training",
        type="primary",
        disabled=busy is not None or settings is None,
        key="start",
        help="Another training is running" if busy else None,
    ):
        with ui.shown_errors("Starting the training"):
            started = jobs.start(TrainConfig(**settings), name=name, notes=notes)
            st.session_state[WATCH_KEY] = started.name
    live()
    if started is not None:
        st.rerun()  # the whole page, whose fragments now refresh while the training runs


def runs_list() -> None:
    """Every run with its state, refreshed with the live view while a training is active
    (the table said "queued" of a run long running)."""
    table = run_report.runs_table()
    if table.empty:
        st.caption("No runs yet.")
    else:
        st.dataframe(
            run_report.runs_view(table),
            hide_index=True,
            column_config=ui.column_formats(run_report.RUN_FORMATS),
        )


# 3. Start and watch ------------------------------------------------------------------------
st.header("3. Train")
# While a training is queued or running its parts refresh every 2 s from the run's files.
refresh = None
with ui.shown_errors("Looking for a running training"):
    refresh = 2 if jobs.active() is not None else None
st.fragment(start_and_watch, run_every=refresh)(settings, run_name, run_notes)

# 4. Past runs ------------------------------------------------------------------------------
st.header("Past runs")
with ui.shown_errors("Listing runs"):
    st.fragment(runs_list, run_every=refresh)()
    runs = {run.name: run for run in list_runs()}
    if runs:
        pick = st.selectbox(
            "Run",
            list(runs),
            index=None,
            format_func=lambda name: run_report.run_label(runs[name]),
            key="past-pick",
            placeholder="Choose a run to rename, download or delete",
        )
        if pick:
            chosen = runs[pick]
            meta = chosen.meta()
            with st.form(f"meta-{pick}"):
                new_name = st.text_input("Name", value=meta.get("name") or "", key="meta-name")
                new_notes = st.text_area("Notes", value=meta.get("notes") or "", key="meta-notes")
                if st.form_submit_button("Save name and notes"):
                    with ui.shown_errors(f"Saving {pick}"):
                        chosen.set_meta(new_name, new_notes)
                        st.toast(f"Saved {new_name or pick}.")
                        st.rerun()
            download, use, delete = st.columns(3)
            if chosen.state == "finished" and chosen.has_model():
                download.download_button(
                    "Download the run (.zip)",
                    lambda: run_zip(chosen),
                    file_name=f"{chosen.name}.zip",
                    mime="application/zip",
                    key="download-run",
                )
                with use:
                    ui.use_model_button(chosen, key="use-past")
            if chosen.state not in ("queued", "running") and delete.button("Delete…", key="delete"):
                st.session_state["delete-confirm"] = pick
        confirm = st.session_state.get("delete-confirm")
        if confirm:
            st.warning(f"Delete {confirm} with its model and results? This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Yes, delete", type="primary", key="delete-yes"):
                st.session_state.pop("delete-confirm")
                delete_run(Run(runs_root() / confirm))
                st.toast(f"Deleted {confirm}.")
                st.rerun()
            if no.button("Cancel", key="delete-no"):
                st.session_state.pop("delete-confirm")
                st.rerun()

with st.expander("Import a run (.zip downloaded from a studio)"):
    uploaded = st.file_uploader("Run .zip", type=["zip"], key="import-zip")
    if uploaded is not None and st.button("Import", key="import"):
        with ui.shown_errors(f"Importing {uploaded.name}"), st.spinner("Checking the run…"):
            imported = import_run(uploaded.getvalue(), uploaded.name)
            st.success(f"Imported {imported.title} as {imported.name}.")
