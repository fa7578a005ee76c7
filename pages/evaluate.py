"""Evaluate: how good a run is, where it errs, whether it overfits; compare two runs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from celebmodel import display, figures
from celebmodel.dataset import display_name
from celebmodel.metrics import overfitting_verdict
from celebmodel.runs import Run
from pages import ui

ui.through_app()

SUBSETS = {"test": "test", "val": "validation", "train": "train"}
GALLERY_COLUMNS = 4


@st.cache_data(max_entries=512, show_spinner=False)
def crop(run_path: str, path: str) -> Image.Image | None:
    """The aligned crop the model saw (cached: detection runs once per photo)."""
    return display.crop_for(Run(Path(run_path)), path)


st.title("Evaluate")

runs = ui.finished_runs()
if not runs:
    st.info("No finished run to evaluate yet: train one first.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

by_name = {run.name: run for run in runs}
asked = st.query_params.get("run")
if asked in by_name:
    st.session_state[ui.EVALUATE_KEY] = asked
    del st.query_params["run"]
if st.session_state.get(ui.EVALUATE_KEY) not in by_name:
    st.session_state.pop(ui.EVALUATE_KEY, None)
active = ui.active_run()
names = list(by_name)
pick, other_pick, subset_pick = st.columns(3)
name = pick.selectbox(
    "Run",
    names,
    index=names.index(active.name) if active and active.name in by_name else 0,
    format_func=lambda n: ui.run_label(by_name[n]),
    key=ui.EVALUATE_KEY,
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
metrics = run.metrics(subset)
if not metrics or metrics.get("accuracy") is None:
    st.warning(
        f"{run.name} has no {SUBSETS[subset]} metrics ({run.file(f'metrics_{subset}.json')}). "
        f"Compute them with `python -m celebmodel evaluate {run.path} --subset {subset}`."
    )
    st.stop()

# Headline -----------------------------------------------------------------------------------
config = run.config_dict()
st.caption(
    f"{config.get('backbone')} · {config.get('recipe')} recipe · {metrics['n']} "
    f"{SUBSETS[subset]} photos · {len(metrics.get('skipped') or [])} skipped (no usable face)"
)
cards = figures.headline(metrics)
for row in range(0, len(cards), 3):
    for column, card in zip(st.columns(3), cards[row : row + 3], strict=True):
        value, original = card["value"], card["original"]
        column.metric(
            card["title"],
            f"{value:.1%}" if value is not None else "n/a",
            delta=f"{value - original:+.1%} vs original {original:.1%}"
            if value is not None and original is not None
            else None,
            help=f"The original recipe reached {original:.1%} on its test set."
            if original is not None
            else "The original recipe did not report this.",
            border=True,
        )

if other_name:
    other = by_name[other_name]
    st.subheader(f"{run.name} against {other.name}")
    st.plotly_chart(figures.compare_figure([run, other], subset), key="compare-chart")
    table = figures.compare_frame([run, other], subset)
    st.dataframe(
        table.pivot(index="metric", columns="run", values="value"),
        column_config={c: st.column_config.NumberColumn(format="percent") for c in table["run"]},
    )

per_class, confusion, overfitting, mistakes, downloads = st.tabs(
    ["Per celebrity", "Confusion matrix", "Overfitting", "Mistakes", "Downloads"]
)

# Per celebrity ------------------------------------------------------------------------------
with per_class:
    sort_by = st.selectbox(
        "Sort by", figures.SORTS, key="sort-by", help="Bars are ordered by this, best first."
    )
    st.plotly_chart(figures.per_class_figure(metrics, sort_by), key="per-class-chart")
    st.dataframe(figures.per_class_frame(metrics), hide_index=True)

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
    st.info(overfitting_verdict(run.accuracies()))
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
        run.file(f"metrics_{subset}.json").read_bytes(),
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
        f"Model file ({model.stat().st_size / 1e6:.1f} MB)",
        model.read_bytes,
        file_name=f"{run.name}-model.keras",
        mime="application/octet-stream",
        key="download-model",
    )
    st.caption(
        "The model file alone is not enough to identify faces: copy the whole run folder "
        f"({run.path}) to use it elsewhere."
    )
