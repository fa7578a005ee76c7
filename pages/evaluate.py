"""Evaluate: how good a run is and how sure we can be, where it errs, whether it overfits,
how it treats strangers; compare runs on the photos they both held out.

Each tab is a section function; only the open tab runs (``st.tabs`` with ``on_change``), so a
run of thousands of people costs what the visible tab shows. A new section is one function
and one entry in :data:`SECTIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image

from celebmodel.data.dataset import display_name
from celebmodel.data.images import photos_under
from celebmodel.data.sources import extract_photos
from celebmodel.errors import CelebmodelError
from celebmodel.interfaces.export import export_zip, format_choices, format_label
from celebmodel.learning.evaluation import (
    OpenSetScores,
    compare,
    missing_metrics_note,
    open_set_scores,
    subset_metrics,
)
from celebmodel.recognition.comparison import reidentified, shared_photos
from celebmodel.reports import display, figures, run_report
from celebmodel.runs.archives import run_zip
from celebmodel.runs.run import Run, active_run, builtin_run_or_none, finished_runs
from celebmodel.scoring.metrics import (
    chance,
    learning_verdict,
    one_error_note,
    open_set_metrics,
    overfitting_verdict,
)
from celebmodel.scoring.open_set import threshold_scale
from pages import ui

ui.through_app()

EVALUATE_KEY = "evaluate_run"
SUBSETS = {"test": "test", "val": "validation", "val+test": "validation + test", "train": "train"}
GALLERY_COLUMNS = 4
STRANGER_TESTS = 4  # strangers' scores kept per session (folder x model)


@st.cache_data(max_entries=512, show_spinner=False)
def crop(run_path: str, path: str) -> Image.Image | None:
    """The aligned crop the model saw (cached: detection runs once per photo)."""
    return display.crop_for(Run(Path(run_path)), path)


def photo_grid(run: Run, rows: Any, caption: Callable[[Any], str]) -> None:
    grid = st.columns(GALLERY_COLUMNS)
    for i, row in enumerate(rows.itertuples()):
        with grid[i % GALLERY_COLUMNS], ui.shown_errors(row.path):
            st.image(run.open_photo(row.path), caption=caption(row))


# Sections -----------------------------------------------------------------------------------


def per_person(run: Run, metrics: dict, subset: str) -> None:
    sort, find = st.columns([1, 2])
    sort_by = sort.selectbox(
        "Sort by", figures.SORTS, key="sort-by", help="Bars are ordered by this, best first."
    )
    query = find.text_input(
        "Find people",
        key="find-person",
        placeholder="part of a name",
        help="The chart and the table show the people whose name holds this.",
    )
    shown = figures.people_shown(metrics, sort_by, query)
    if shown.note:
        st.caption(shown.note)
    st.plotly_chart(figures.per_class_figure(metrics, sort_by, query), key="per-class-chart")
    st.caption("Recall bars carry their 95% interval; the dotted line is chance (a blind guess).")
    table = figures.find_people(figures.ranked(figures.per_class_frame(metrics), sort_by), query)
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            column: st.column_config.NumberColumn(format="percent")
            for column in ("precision", "recall", "f1", "recall_low", "recall_high")
        },
    )


def confusion(run: Run, metrics: dict, subset: str) -> None:
    labels = metrics["labels"]
    if len(labels) <= figures.READABLE:
        normalise = st.toggle("Share of each true celebrity (row-normalised)", key="normalise")
        event = st.plotly_chart(
            figures.confusion_figure(metrics, normalise),
            key="confusion-chart",
            on_select="rerun",
            selection_mode="points",
        )
        by_display = {display_name(label): label for label in labels}
        points = (event.get("selection") or {}).get("points") or [] if event else []
        cell = points[0] if points else {}
        chosen = (by_display.get(cell.get("y")), by_display.get(cell.get("x")))
        hint = "Or click a cell of the matrix."
    elif not len(pairs := figures.confused_pairs(metrics)):
        st.success(
            f"No one was taken for anyone else on these photos: each of the {len(labels):,} "
            "people's photos went to that person.",
            icon=":material/check_circle:",
        )
        points, chosen, hint = [], (None, None), "Any person's own photos."
    else:
        st.caption(
            f"{len(labels):,} people are too many for a matrix: these are the pairs most often "
            f"confused, {min(figures.TOP_PAIRS, len(pairs))} of the {len(pairs):,} pairs with "
            "a mistake (all of them in the table below). Click a bar to see its photos."
        )
        event = st.plotly_chart(
            figures.confused_pairs_figure(pairs.head(figures.TOP_PAIRS)),
            key="pairs-chart",
            on_select="rerun",
            selection_mode="points",
        )
        points = (event.get("selection") or {}).get("points") or [] if event else []
        bar = points[0] if points else {}
        chosen = tuple((bar.get("customdata") or [None, None])[:2])
        hint = "Or click a bar of the chart."
        st.dataframe(
            pairs[["true celebrity", "predicted as", "photos", "share"]],
            hide_index=True,
            height=240,
            column_config={"share": st.column_config.NumberColumn(format="percent")},
        )
    if points and None not in chosen and st.session_state.get("cell-applied") != chosen:
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
        help=hint,
    )
    predicted = right.selectbox(
        "Predicted as",
        labels,
        index=labels.index(default[1]),
        format_func=display_name,
        key="cell-pred",
    )
    photos = run_report.cell_photos(run, subset, true, predicted)
    st.caption(
        f"{len(photos)} {SUBSETS[subset]} photo(s) of {display_name(true)} predicted as "
        f"{display_name(predicted)}" + (" (showing 12)" if len(photos) > 12 else "")
    )
    photo_grid(run, photos.head(12), lambda row: f"{row.path} · {row.probability:.0%}")


def overfitting(run: Run, metrics: dict, subset: str) -> None:
    st.info(overfitting_verdict(run_report.accuracies(run), chance(metrics)))
    left, right = st.columns([2, 3])
    left.plotly_chart(figures.accuracy_figure(run), key="accuracy-chart")
    history = run.history()
    if len(history):
        right.plotly_chart(figures.learning_curves(history), key="curves-chart")


def mistakes(run: Run, metrics: dict, subset: str) -> None:
    wrong = run_report.misclassified(run, subset)
    if wrong.empty:
        st.success(f"No {SUBSETS[subset]} photo is misclassified.")
        return
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


def stranger_scores(run: Run, folder: str) -> OpenSetScores:
    """The strangers test of ``folder`` (the same code as ``evaluate --unknown``), run with
    a progress bar, and kept in the session until the model or the folder's photos change."""
    listed = tuple(str(p) for p in photos_under(folder)) if Path(folder).is_dir() else ()
    scored_by = [run.file(name) for name in ("model.keras", "gallery.npz")]
    versions = tuple(path.stat().st_mtime for path in scored_by if path.is_file())
    key = (str(run.path), versions, folder, listed)
    kept = st.session_state.setdefault("strangers-scores", {})
    if key not in kept:
        with st.container(border=True):
            st.caption(
                f"Finding the faces in the model's known test photos (cached since training) "
                f"and in the {len(listed):,} photos of strangers, then scoring them with the "
                "model…"
            )
            bar = st.progress(0.0, text="Loading the model…")
            scores = open_set_scores(run, folder, bar=ui.streamlit_bar(bar))
        while len(kept) >= STRANGER_TESTS:
            kept.pop(next(iter(kept)))
        kept[key] = scores
        st.rerun()  # draw the results without the finished progress bar
    return kept[key]


def rate(value: float | None, flip: bool = False) -> str:
    """A share as a percentage (``flip``: of the others), "n/a" when nobody was counted."""
    if value is None:
        return "n/a"
    return f"{1 - value if flip else value:.1%}"


def strangers(run: Run, metrics: dict, subset: str) -> None:
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
    used = st.session_state.pop("threshold-used", None)
    if used:
        st.success(used)
    if not folder:
        return
    with ui.shown_errors(f"Testing {folder}"):
        scores = stranger_scores(run, folder)
        known, unknown = scores.known, scores.strangers
        threshold = float((run.read_json("calibration.json") or {})["threshold"])
        current = open_set_metrics(known, unknown, threshold)
        a, b, c = st.columns(3)
        a.metric(
            "Strangers rejected",
            rate(current["unknown_rejected"]),
            help=f"{current['n_unknown']} stranger faces from {scores.n_stranger_photos} photos",
            border=True,
        )
        b.metric(
            "Known faces accepted",
            rate(current["known_accepted"]),
            help=f"{current['n_known']} known test faces",
            border=True,
        )
        c.metric(
            "ROC AUC",
            f"{current['auc']:.3f}" if current["auc"] is not None else "n/a",
            help="1.0: every stranger scores above every known face",
            border=True,
        )
        scale = threshold_scale(run.read_json("calibration.json") or {})
        in_force = float(scale.shown(threshold))
        low, high = figures.share_range(known, unknown, threshold, scale)
        chosen = st.slider(
            f"{scale.name.capitalize()} needed to name a face (%)",
            min_value=low * 100,
            max_value=high * 100,
            value=min(high, max(low, round(in_force, 3))) * 100,
            step=figures.SHARE_STEP * 100,
            format="%.1f%%",
            key=f"strangers-threshold-{run.name}",
            help=f"A face whose {scale.name} is below it is called unknown. Match confidence: "
            "how rarely strangers come as close (99% means 1 in 100 does).",
        ) / 100
        considered = open_set_metrics(known, unknown, scale.score(chosen))
        st.caption(
            f"Needing {chosen:.1%}: {rate(considered['unknown_rejected'], flip=True)} of "
            f"strangers accepted, {rate(considered['known_accepted'], flip=True)} of known faces "
            f"rejected. In force now: {in_force:.1%} "
            f"({rate(current['unknown_rejected'], flip=True)} of strangers accepted, "
            f"{rate(current['known_accepted'], flip=True)} of known faces rejected)."
        )
        st.plotly_chart(
            figures.threshold_figure(known, unknown, threshold, scale, chosen),
            key="threshold-chart",
        )
        if scale.score(chosen) != threshold and st.button(
            f"Use {chosen:.1%} as this model's {scale.name} needed", key="set-threshold"
        ):
            run.set_threshold(scale.score(chosen), f"strangers test on {folder}")
            st.session_state["threshold-used"] = (
                f"{run.title} now calls a face unknown below {scale.name} {chosen:.1%} "
                "(recorded in its calibration history)."
            )
            st.rerun()  # every number on the page from the threshold now in force


def downloads(run: Run, metrics: dict | None, subset: str) -> None:
    if metrics:
        st.download_button(
            "Metrics (CSV)",
            partial(figures.metrics_csv, metrics),
            file_name=f"{run.name}-metrics-{subset}.csv",
            mime="text/csv",
            key="download-csv",
        )
        st.download_button(
            "Metrics (JSON)",
            partial(json.dumps, metrics, indent=2),
            file_name=f"{run.name}-metrics-{subset}.json",
            mime="application/json",
            key="download-json",
        )
        st.download_button(
            "Predictions (CSV)",
            lambda: run.predictions(subset).to_csv(index=False),
            file_name=f"{run.name}-predictions-{subset}.csv",
            mime="text/csv",
            key="download-predictions",
        )
    model = run.file("model.keras")
    if model.is_file():
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


def open_set_protocol(run: Run, metrics: Any, subset: str) -> None:
    """A gallery model's figures: the open-set identification protocol on LFW."""
    try:
        protocol = run.read_json("protocol.json") or {}
    except CelebmodelError:
        protocol = {}
    if "figures" not in protocol:
        st.info(protocol.get("note") or f"{run.title} has no open-set protocol figures.")
        return
    st.markdown(figures.plain_words(protocol, run.read_json("calibration.json") or {}))
    st.markdown(figures.protocol_words(protocol))
    st.dataframe(figures.protocol_table(protocol), hide_index=True, key="protocol-table")
    st.plotly_chart(figures.protocol_figure(protocol), key="protocol-chart")
    where = "lfw-public-figures" if run.builtin else str(run.path)
    st.caption(
        f"Measure it again on any LFW folder: `celebmodel evaluate {where} "
        "--protocol open-set LFW_FOLDER` (every figure, both methods, 10 trials)."
    )


@dataclass(frozen=True)
class Section:
    title: str
    draw: Callable[[Run, Any, str], None]  # (run, the subset's metrics, subset)
    needs_metrics: bool = True  # left out for a run without metrics of the chosen photos
    scoring: tuple[str, ...] = ("classifier", "gallery")  # the kinds of model it applies to


SECTIONS = (
    Section("Open-set protocol", open_set_protocol, needs_metrics=False, scoring=("gallery",)),
    Section("Per person", per_person),
    Section("Confusion", confusion),
    Section("Overfitting", overfitting),
    Section("Mistakes", mistakes),
    Section("Strangers", strangers, needs_metrics=False, scoring=("classifier",)),
    Section("Downloads", downloads, needs_metrics=False, scoring=("classifier",)),
)


# The page -----------------------------------------------------------------------------------

st.title("Evaluate")

builtin = builtin_run_or_none()
runs = ([builtin] if builtin is not None else []) + finished_runs()
if not runs:
    st.info("No finished run to evaluate yet: train one first.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_name = {ui.BUILTIN_KEY if run.builtin else run.name: run for run in runs}
asked = st.query_params.get("run")
if asked in by_name:
    st.session_state[EVALUATE_KEY] = asked
    del st.query_params["run"]
if st.session_state.get(EVALUATE_KEY) not in by_name:
    st.session_state.pop(EVALUATE_KEY, None)
active = active_run()
in_use = (ui.BUILTIN_KEY if active.builtin else active.name) if active else None
if st.session_state.get("evaluate-in-use", in_use) != in_use:  # another model chosen since:
    if in_use in by_name:  # open on it (set, not dropped: the box would keep its old value)
        st.session_state[EVALUATE_KEY] = in_use
    else:
        st.session_state.pop(EVALUATE_KEY, None)
st.session_state["evaluate-in-use"] = in_use
names = list(by_name)
labels = run_report.distinct_titles(by_name)  # short (the box cuts the rest), each its own
pick, other_pick, subset_pick = st.columns([2, 2, 3])
name = pick.selectbox(
    "Run",
    names,
    index=names.index(in_use) if in_use in by_name else 0,
    format_func=labels.get,
    key=EVALUATE_KEY,
)
other_name = other_pick.selectbox(
    "Compare with",
    [n for n in names if n != name],
    index=None,
    format_func=labels.get,
    placeholder="another run (optional)",
    key="compare-run",
)
run = by_name[name]
pick.caption(run_report.run_label(run) + (f" ({run.name})" if not run.builtin else ""))
subset = (  # a gallery model has no photos of its own held out: its figures are the protocol's
    subset_pick.radio(
        "Photos", list(SUBSETS), format_func=SUBSETS.get, key="subset", horizontal=True
    )
    if run.scoring == "classifier"
    else "test"
)
with ui.shown_errors(f"Reading the {SUBSETS[subset]} metrics of {run.title}"):
    metrics = subset_metrics(run, subset)
if not metrics or metrics.get("accuracy") is None:
    metrics = None

# Headline -----------------------------------------------------------------------------------
config = run.config_dict()
notes = run.meta().get("notes")
st.caption(
    f"{run.title} · {config.get('backbone')} · "
    + (f"{config.get('recipe')} recipe" if run.scoring == "classifier" else "gallery scoring")
    + (
        f" · {metrics['n']} {SUBSETS[subset]} photos · "
        f"{len(metrics.get('skipped') or [])} skipped (no usable face)"
        if metrics
        else ""
    )
    + (f" · {notes}" if notes else "")
)
ui.use_model_button(run, key="use-evaluated")
if metrics is None:
    st.info(missing_metrics_note(run, subset), icon=":material/info:")
else:
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
                delta=f"{(value - original) * 100:+.1f} points vs original {original:.1%}"
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
    with ui.shown_errors(f"Comparing with {by_name[other_name].title}"):
        comparison = compare([run, by_name[other_name]], "test" if subset == "val+test" else subset)
        st.subheader(f"{run.title} against {by_name[other_name].title}")
        if comparison.same_photos:
            st.caption(comparison.note())
        else:
            st.warning(comparison.note())
            pair = (run.name, other_name, subset)
            shared = shared_photos([run, by_name[other_name]], comparison.subset)
            if st.session_state.get("reidentified", (None,))[0] == pair:
                comparison = st.session_state["reidentified"][1]
                st.caption(comparison.note())
            elif shared.empty:
                st.info("No held-out photo of a person both know that neither learnt from: "
                        "nothing to identify again.", icon=":material/info:")
            elif st.button(
                f"Identify the {len(shared)} photos both can answer with each model",
                key="reidentify",
                help="The held-out photos of the people both know, leaving out every photo "
                "either learnt from: each model names each photo's subject again.",
            ):
                bar = st.progress(0.0, text="Identifying the photos again")
                comparison = reidentified(
                    [run, by_name[other_name]], comparison.subset, ui.streamlit_bar(bar)
                )
                bar.empty()
                st.session_state["reidentified"] = (pair, comparison)
                st.caption(comparison.note())
        if comparison.common:
            table = figures.compare_table(comparison)
            st.plotly_chart(figures.compare_figure(comparison), key="compare-chart")
            st.dataframe(
                table,
                column_config={
                    column: st.column_config.NumberColumn(format="percent")
                    for column in table.columns
                },
            )

sections = [
    section
    for section in SECTIONS
    if (metrics or not section.needs_metrics) and run.scoring in section.scoring
]
tabs = st.tabs([section.title for section in sections], key="evaluate-tab", on_change="rerun")
for tab, section in zip(tabs, sections, strict=True):
    if tab.open:
        with tab, ui.shown_errors(section.title):
            section.draw(run, metrics, subset)
