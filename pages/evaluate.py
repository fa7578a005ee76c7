"""Evaluate: how good a run is and how sure we can be, where it errs, whether it overfits,
how it treats strangers; compare runs on the photos they both held out."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from celebmodel import display, figures
from celebmodel.archives import run_zip
from celebmodel.dataset import display_name
from celebmodel.evaluation import compare, open_set_scores, subset_metrics
from celebmodel.export import export_zip, format_choices, format_label
from celebmodel.images import photos_under
from celebmodel.metrics import (
    chance,
    learning_verdict,
    one_error_note,
    open_set_metrics,
    overfitting_verdict,
)
from celebmodel.runs import Run, active_run, finished_runs
from celebmodel.sources import extract_photos
from pages import ui

ui.through_app()

EVALUATE_KEY = "evaluate_run"
SUBSETS = {"test": "test", "val": "validation", "val+test": "validation + test", "train": "train"}
GALLERY_COLUMNS = 4


@st.cache_data(max_entries=512, show_spinner=False)
def crop(run_path: str, path: str) -> Image.Image | None:
    """The aligned crop the model saw (cached: detection runs once per photo)."""
    return display.crop_for(Run(Path(run_path)), path)


@st.cache_data(max_entries=4, show_spinner="Finding and scoring the strangers' faces…")
def stranger_test(run_path: str, model_time: float, folder: str, photos: tuple[str, ...]):
    """Known test faces' and strangers' unknown scores (the same code as ``evaluate
    --unknown``), recomputed when the model or the folder's photos change."""
    scores = open_set_scores(Run(Path(run_path)), folder)
    return scores.known, scores.strangers, scores.n_stranger_photos


st.title("Evaluate")

runs = finished_runs()
if not runs:
    st.info("No finished run to evaluate yet: train one first.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_name = {run.name: run for run in runs}
asked = st.query_params.get("run")
if asked in by_name:
    st.session_state[EVALUATE_KEY] = asked
    del st.query_params["run"]
if st.session_state.get(EVALUATE_KEY) not in by_name:
    st.session_state.pop(EVALUATE_KEY, None)
active = active_run()
names = list(by_name)
pick, other_pick, subset_pick = st.columns([2, 2, 3])
name = pick.selectbox(
    "Run",
    names,
    index=names.index(active.name) if active and active.name in by_name else 0,
    format_func=lambda n: ui.run_label(by_name[n]),
    key=EVALUATE_KEY,
)
other_name = other_pick.selectbox(
    "Compare with",
    [n for n in names if n != name],
    index=None,
    format_func=lambda n: ui.run_label(by_name[n]),
    placeholder="another run (optional)",
    key="compare-run",
)
subset = subset_pick.radio(
    "Photos", list(SUBSETS), format_func=SUBSETS.get, key="subset", horizontal=True
)
run = by_name[name]
metrics = subset_metrics(run, subset)
if not metrics or metrics.get("accuracy") is None:
    st.warning(
        f"{run.title} has no {SUBSETS[subset]} metrics. Compute them with "
        f"`python -m celebmodel evaluate {run.path} --subset all`."
    )
    st.stop()

# Headline -----------------------------------------------------------------------------------
config = run.config_dict()
notes = run.meta().get("notes")
st.caption(
    f"{run.title} · {config.get('backbone')} · {config.get('recipe')} recipe · {metrics['n']} "
    f"{SUBSETS[subset]} photos · {len(metrics.get('skipped') or [])} skipped (no usable face)"
    + (f" · {notes}" if notes else "")
)
ui.use_model_button(run, key="use-evaluated")
verdict = learning_verdict(metrics)
if verdict:
    st.error(verdict, icon=":material/report:")
cards = figures.headline(metrics)
for row in range(0, len(cards), 3):
    for column, card in zip(st.columns(3), cards[row : row + 3], strict=True):
        value, original = card["value"], card["original"]
        interval = figures.percent_interval(card["interval"])
        column.metric(
            card["title"],
            f"{value:.1%}" if value is not None else "n/a",
            delta=f"{value - original:+.1%} vs original {original:.1%}"
            if value is not None and original is not None
            else None,
            help=(f"{interval} (Wilson) over {metrics['n']} photos. " if interval else "")
            + (
                f"The original recipe reached {original:.1%} on its test set."
                if original is not None
                else "The original recipe did not report this."
            ),
            border=True,
        )
        if interval:
            column.caption(interval)
note = one_error_note(metrics)
if note:
    st.info(note, icon=":material/info:")

if other_name:
    comparison = compare([run, by_name[other_name]], "test" if subset == "val+test" else subset)
    st.subheader(f"{run.title} against {by_name[other_name].title}")
    if comparison.same_photos:
        st.caption(comparison.note())
    else:
        st.warning(comparison.note())
    if comparison.common:
        st.plotly_chart(figures.compare_figure(comparison), key="compare-chart")
        st.dataframe(
            figures.compare_table(comparison),
            column_config={
                column: st.column_config.NumberColumn(format="percent")
                for column in figures.compare_table(comparison).columns
            },
        )

per_class, confusion, overfitting, mistakes, strangers, downloads = st.tabs(
    ["Per celebrity", "Confusion matrix", "Overfitting", "Mistakes", "Strangers", "Downloads"]
)

# Per celebrity ------------------------------------------------------------------------------
with per_class:
    sort_by = st.selectbox(
        "Sort by", figures.SORTS, key="sort-by", help="Bars are ordered by this, best first."
    )
    st.plotly_chart(figures.per_class_figure(metrics, sort_by), key="per-class-chart")
    st.caption("Recall bars carry their 95% interval; the dotted line is chance (a blind guess).")
    st.dataframe(
        figures.per_class_frame(metrics),
        hide_index=True,
        column_config={
            column: st.column_config.NumberColumn(format="percent")
            for column in ("precision", "recall", "f1", "recall_low", "recall_high")
        },
    )

# Confusion matrix ---------------------------------------------------------------------------
with confusion:
    normalise = st.toggle("Share of each true celebrity (row-normalised)", key="normalise")
    event = st.plotly_chart(
        figures.confusion_figure(metrics, normalise),
        key="confusion-chart",
        on_select="rerun",
        selection_mode="points",
    )
    labels = metrics["labels"]
    by_display = {display_name(label): label for label in labels}
    points = (event.get("selection") or {}).get("points") or [] if event else []
    if points:
        chosen = (by_display.get(points[0].get("y")), by_display.get(points[0].get("x")))
        if None not in chosen and st.session_state.get("cell-applied") != chosen:
            st.session_state["cell-applied"] = chosen
            st.session_state["cell-true"], st.session_state["cell-pred"] = chosen
    default = figures.largest_confusion(metrics) or (labels[0], labels[0])
    left, right = st.columns(2)
    true = left.selectbox(
        "True celebrity",
        labels,
        index=labels.index(default[0]),
        format_func=display_name,
        key="cell-true",
        help="Or click a cell of the matrix.",
    )
    predicted = right.selectbox(
        "Predicted as",
        labels,
        index=labels.index(default[1]),
        format_func=display_name,
        key="cell-pred",
    )
    photos = run.cell_photos(subset, true, predicted)
    st.caption(
        f"{len(photos)} {SUBSETS[subset]} photo(s) of {display_name(true)} predicted as "
        f"{display_name(predicted)}" + (" (showing 12)" if len(photos) > 12 else "")
    )
    grid = st.columns(GALLERY_COLUMNS)
    for i, row in enumerate(photos.head(12).itertuples()):
        with grid[i % GALLERY_COLUMNS], ui.shown_errors(row.path):
            st.image(run.open_photo(row.path), caption=f"{row.path} · {row.probability:.0%}")

# Overfitting --------------------------------------------------------------------------------
with overfitting:
    st.info(overfitting_verdict(run.accuracies(), chance(metrics)))
    left, right = st.columns([2, 3])
    left.plotly_chart(figures.accuracy_figure(run), key="accuracy-chart")
    history = run.history()
    if len(history):
        right.plotly_chart(figures.learning_curves(history), key="curves-chart")

# Mistakes -----------------------------------------------------------------------------------
with mistakes:
    wrong = run.misclassified(subset)
    if wrong.empty:
        st.success(f"No {SUBSETS[subset]} photo is misclassified.")
    else:
        shown = st.number_input(
            f"Show the first of {len(wrong)} mistakes (most confident first)",
            min_value=1,
            max_value=len(wrong),
            value=min(12, len(wrong)),
            key="mistakes-shown",
        )
        grid = st.columns(GALLERY_COLUMNS)
        for i, row in enumerate(wrong.head(int(shown)).itertuples()):
            with grid[i % GALLERY_COLUMNS].container(border=True), ui.shown_errors(row.path):
                photo, seen = st.columns(2)
                photo.image(run.open_photo(row.path), caption="photo")
                aligned = crop(str(run.path), row.path)
                if aligned is not None:
                    seen.image(aligned, caption="what the model saw")
                st.caption(
                    f"**{display_name(row.true)}** taken for **{display_name(row.predicted)}** "
                    f"({row.probability:.0%}) · {row.path}"
                )

# Strangers ----------------------------------------------------------------------------------
with strangers:
    st.caption(
        "People the model was never trained on must come back as unknown. Point at photos of "
        "such people (any layout) to see how many it rejects, how many known test faces it "
        "still accepts, and to choose the threshold from that trade-off."
    )
    where = st.radio(
        "Strangers' photos",
        ["folder", "zip"],
        format_func={"folder": "A folder on this server", "zip": "Upload a .zip"}.get,
        horizontal=True,
        key="strangers-source",
    )
    folder = None
    if where == "folder":
        folder = st.text_input("Folder of strangers", key="strangers-folder").strip() or None
    else:
        archive = st.file_uploader("Zip of strangers' photos", type=["zip"], key="strangers-zip")
        if archive is not None and st.button("Extract", key="strangers-extract"):
            with ui.shown_errors(f"Extracting {archive.name}"):
                st.session_state["strangers-extracted"] = str(
                    extract_photos(archive.getvalue(), archive.name)
                )
        folder = st.session_state.get("strangers-extracted")
    if folder:
        with ui.shown_errors(f"Testing {folder}"):
            listed = tuple(str(p) for p in photos_under(folder)) if Path(folder).is_dir() else ()
            known, unknown, n_photos = stranger_test(
                str(run.path), run.file("model.keras").stat().st_mtime, folder, listed
            )
            threshold = float((run.read_json("calibration.json") or {})["threshold"])
            current = open_set_metrics(known, unknown, threshold)
            a, b, c = st.columns(3)
            a.metric(
                "Strangers rejected",
                f"{current['unknown_rejected']:.1%}"
                if current["unknown_rejected"] is not None
                else "n/a",
                help=f"{current['n_unknown']} stranger faces from {n_photos} photos",
                border=True,
            )
            b.metric(
                "Known faces accepted",
                f"{current['known_accepted']:.1%}"
                if current["known_accepted"] is not None
                else "n/a",
                help=f"{current['n_known']} known test faces",
                border=True,
            )
            c.metric(
                "ROC AUC",
                f"{current['auc']:.3f}" if current["auc"] is not None else "n/a",
                help="1.0: every stranger scores above every known face",
                border=True,
            )
            tradeoff = figures.threshold_tradeoff(known, unknown, threshold)
            options = list(tradeoff["threshold"])
            chosen_threshold = st.select_slider(
                "Threshold to consider",
                options=options,
                value=min(options, key=lambda t: abs(t - threshold)),
                format_func=lambda t: f"{t:.3f}",
                key=f"strangers-threshold-{run.name}",
            )
            row = tradeoff.iloc[int(np.argmin(np.abs(tradeoff["threshold"] - chosen_threshold)))]
            st.caption(
                f"At {chosen_threshold:.3f}: {row['strangers accepted']:.1%} of strangers "
                f"accepted, {row['known rejected']:.1%} of known faces rejected "
                f"(current threshold {threshold:.3f})."
            )
            st.plotly_chart(
                figures.threshold_figure(known, unknown, threshold, chosen_threshold),
                key="threshold-chart",
            )
            if chosen_threshold != threshold and st.button(
                f"Use {chosen_threshold:.3f} as this model's threshold", key="set-threshold"
            ):
                run.set_threshold(chosen_threshold, f"strangers test on {folder}")
                st.success(
                    f"{run.title} now calls a face unknown above {chosen_threshold:.3f} "
                    "(recorded in its calibration history)."
                )

# Downloads ----------------------------------------------------------------------------------
with downloads:
    st.download_button(
        "Metrics (CSV)",
        figures.metrics_csv(metrics),
        file_name=f"{run.name}-metrics-{subset}.csv",
        mime="text/csv",
        key="download-csv",
    )
    st.download_button(
        "Metrics (JSON)",
        json.dumps(metrics, indent=2),
        file_name=f"{run.name}-metrics-{subset}.json",
        mime="application/json",
        key="download-json",
    )
    st.download_button(
        "Predictions (CSV)",
        run.predictions(subset).to_csv(index=False),
        file_name=f"{run.name}-predictions-{subset}.csv",
        mime="text/csv",
        key="download-predictions",
    )
    model = run.file("model.keras")
    st.download_button(
        f"Model file ({figures.human_size(model.stat().st_size)})",
        model.read_bytes,
        file_name=f"{run.name}-model.keras",
        mime="application/octet-stream",
        key="download-model",
    )
    st.download_button(
        "The whole run (.zip)",
        lambda: run_zip(run),
        file_name=f"{run.name}.zip",
        mime="application/zip",
        key="download-run",
    )
    st.caption(
        "The model file alone is not enough to identify faces: the run zip holds everything "
        "(labels, gallery, threshold) and imports back on the Train page of any studio."
    )
    st.subheader("Download for use elsewhere")
    missing = format_choices()  # format -> why it cannot be made here, or None
    chosen_format = st.selectbox(
        "Format",
        list(missing),
        format_func=format_label,
        key="export-format",
    )
    if missing[chosen_format]:
        st.caption(missing[chosen_format])
    st.download_button(
        "Download for use elsewhere (.zip)",
        partial(export_zip, run, chosen_format),
        file_name=f"{run.name}-{chosen_format}.zip",
        mime="application/zip",
        key="download-export",
        disabled=bool(missing[chosen_format]),
    )
    st.caption(
        "The network alone (aligned face in, embedding and probabilities out) with its labels, "
        "threshold and centroids, and a README giving the input it needs and a Python example "
        "that names faces as the studio does (the same as `celebmodel export`)."
    )
