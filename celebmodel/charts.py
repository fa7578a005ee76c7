"""What the app's pages show, built from run files: plotly figures, tables and photos.

Pages only lay these out, so every number on screen comes from one tested place and the same
views can be made outside Streamlit (a notebook, a report).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from .data import DatasetScan, display_name, load_image
from .evaluate import ORIGINAL
from .runs import Run, RunError

HEADLINE = (  # metrics key, card title
    ("accuracy", "Accuracy"),
    ("precision_weighted", "Precision (weighted)"),
    ("recall_weighted", "Recall (weighted)"),
    ("f1_weighted", "F1 (weighted)"),
    ("f1_macro", "F1 (macro)"),
    ("top5_accuracy", "Top-5 accuracy"),
)
PER_CLASS = ("precision", "recall", "f1")
SORTS = ("f1", "precision", "recall", "support", "name")
KNOWN_COLOUR = (46, 160, 67)
UNKNOWN_COLOUR = (230, 126, 34)


# Identify ------------------------------------------------------------------------------------


def face_title(face: dict[str, Any]) -> str:
    """``George W Bush (87%)`` or ``unknown (nearest: George W Bush, 41%)``."""
    nearest = display_name(face["nearest"])
    if face["known"]:
        return f"{nearest} ({face['probability']:.0%})"
    return f"unknown (nearest: {nearest}, {face['probability']:.0%})"


def annotate(pixels: np.ndarray, faces: list[dict[str, Any]]) -> Image.Image:
    """The photo with a box and a name on every face (orange for unknown faces)."""
    image = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 250))
    for number, face in enumerate(faces, start=1):
        x, y, w, h = face["box"]
        font = ImageFont.load_default(size=max(12, min(round(w / 6), round(max(image.size) / 30))))
        colour = KNOWN_COLOUR if face["known"] else UNKNOWN_COLOUR
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        name = display_name(face["nearest"]) if face["known"] else "unknown"
        text = f"{number}. {name}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        label_y = y - (bottom - top) - 2 * width if y - (bottom - top) - 2 * width >= 0 else y
        draw.rectangle(
            [x, label_y, x + (right - left) + 2 * width, label_y + (bottom - top) + 2 * width],
            fill=colour,
        )
        draw.text((x + width, label_y + width - top), text, fill=(255, 255, 255), font=font)
    return image


def face_crop(pixels: np.ndarray, box: list[int]) -> Image.Image:
    """The face's box cut out of the photo, for a thumbnail beside its chart."""
    x, y, w, h = box
    return Image.fromarray(pixels[max(0, y) : y + h, max(0, x) : x + w])


def top_k_figure(face: dict[str, Any]) -> go.Figure:
    """Horizontal bars of the top-k celebrities of one face."""
    frame = pd.DataFrame(face["top_k"])
    frame["celebrity"] = frame["label"].map(display_name)
    figure = px.bar(
        frame,
        x="probability",
        y="celebrity",
        orientation="h",
        text=frame["probability"].map("{:.0%}".format),
        range_x=[0, 1],
        hover_data={"label": True, "probability": ":.3f", "celebrity": False},
    )
    figure.update_yaxes(autorange="reversed", title=None)
    figure.update_xaxes(tickformat=".0%", title="probability")
    figure.update_layout(height=60 + 36 * len(frame), margin=dict(l=0, r=10, t=10, b=0))
    return figure


# Train ---------------------------------------------------------------------------------------


def dataset_tables(scan: DatasetScan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Photos per celebrity and the skipped files with their reason."""
    counts = scan.counts().rename("photos").rename_axis("label").reset_index()
    counts.insert(0, "celebrity", counts["label"].map(display_name))
    skipped = pd.DataFrame(
        [{"file": s.path, "reason": s.reason} for s in scan.skipped], columns=["file", "reason"]
    )
    return counts, skipped


def dataset_figure(counts: pd.DataFrame) -> go.Figure:
    figure = px.bar(counts, x="celebrity", y="photos", hover_data=["label"])
    figure.update_layout(height=280, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None)
    return figure


def history_long(history: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch, quantity (loss/accuracy) and subset (train/validation)."""
    columns = {"loss": "train", "val_loss": "validation"}
    columns |= {"accuracy": "train", "val_accuracy": "validation"}
    rows = []
    for column, subset in columns.items():
        if column not in history:
            continue
        quantity = column.removeprefix("val_")
        rows.append(
            pd.DataFrame(
                {
                    "epoch": history["epoch"].astype(int) + 1,
                    "phase": history.get("phase", pd.Series("", index=history.index)),
                    "quantity": quantity,
                    "subset": subset,
                    "value": history[column].astype(float),
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=["epoch", "phase", "quantity", "subset", "value"])
    return pd.concat(rows, ignore_index=True)


def learning_curves(history: pd.DataFrame) -> go.Figure:
    """Loss and accuracy per epoch, train and validation, with the fine-tune phase marked."""
    long = history_long(history)
    figure = px.line(
        long,
        x="epoch",
        y="value",
        color="subset",
        facet_col="quantity",
        markers=True,
        hover_data=["phase"],
        category_orders={"quantity": ["loss", "accuracy"], "subset": ["train", "validation"]},
    )
    figure.update_yaxes(matches=None, showticklabels=True, title=None)
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    phases = history["phase"].tolist() if "phase" in history else []
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            figure.add_vline(
                x=int(history["epoch"].iloc[i]) + 0.5,
                line_dash="dot",
                annotation_text=str(phases[i]),
                row="all",
                col="all",
            )
    figure.update_layout(height=320, margin=dict(l=0, r=0, t=30, b=0))
    return figure


# Evaluate ------------------------------------------------------------------------------------


def headline(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The cards: title, value and the original recipe's number when it reported one."""
    return [
        {"key": key, "title": title, "value": metrics.get(key), "original": ORIGINAL.get(key)}
        for key, title in HEADLINE
    ]


def per_class_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1 and support per celebrity."""
    rows = [
        {"label": label, "celebrity": display_name(label), **values}
        for label, values in (metrics.get("per_class") or {}).items()
    ]
    return pd.DataFrame(rows, columns=["label", "celebrity", *PER_CLASS, "support"])


def per_class_figure(metrics: dict[str, Any], sort_by: str = "f1") -> go.Figure:
    """Grouped bars per celebrity, ordered by ``sort_by``; hovering shows the support."""
    frame = per_class_frame(metrics)
    if sort_by == "name":
        order = sorted(frame["celebrity"])
    else:
        order = frame.sort_values([sort_by, "celebrity"], ascending=[False, True])["celebrity"]
    long = frame.melt(
        id_vars=["label", "celebrity", "support"],
        value_vars=list(PER_CLASS),
        var_name="metric",
        value_name="value",
    )
    figure = px.bar(
        long,
        x="celebrity",
        y="value",
        color="metric",
        barmode="group",
        hover_data={"support": True, "label": True, "value": ":.3f"},
        category_orders={"celebrity": list(order), "metric": list(PER_CLASS)},
        range_y=[0, 1.05],
    )
    figure.update_layout(height=380, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None)
    return figure


def confusion_figure(metrics: dict[str, Any], normalise: bool = False) -> go.Figure:
    """Heatmap of true (rows) against predicted (columns); hover names both and the count."""
    labels = metrics.get("labels") or []
    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=float)
    if counts.size == 0:
        counts = np.zeros((len(labels), len(labels)))
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    names = [display_name(label) for label in labels]
    figure = px.imshow(
        share if normalise else counts,
        x=names,
        y=names,
        text_auto=".0%" if normalise else True,
        color_continuous_scale="Blues",
        aspect="auto",
        labels={"x": "predicted", "y": "true", "color": "share of row" if normalise else "photos"},
        zmin=0,
    )
    # Heatmap cells cannot be selected in plotly: an invisible marker on every cell carries
    # the hover text and makes a click select that cell (hoverdistance -1: nearest marker).
    true_names = [name for name in names for _ in names]
    predicted_names = [name for _ in names for name in names]
    figure.update_traces(hoverinfo="skip", hovertemplate=None)
    figure.add_trace(
        go.Scatter(
            x=predicted_names,
            y=true_names,
            mode="markers",
            marker={"size": 24, "opacity": 0, "symbol": "square"},
            customdata=np.column_stack([counts.ravel(), share.ravel()]),
            hovertemplate="true: %{y}<br>predicted: %{x}<br>photos: %{customdata[0]:.0f}"
            "<br>share of true row: %{customdata[1]:.0%}<extra></extra>",
            showlegend=False,
            name="cells",
        )
    )
    figure.update_layout(
        height=max(320, 60 + 40 * len(names)),
        margin=dict(l=0, r=0, t=10, b=0),
        hoverdistance=-1,
        clickmode="event+select",
    )
    figure.update_xaxes(side="bottom", title="predicted")
    figure.update_yaxes(title="true")
    return figure


def largest_confusion(metrics: dict[str, Any]) -> tuple[str, str] | None:
    """The most frequent mistake (true, predicted), else the largest cell: the default pick."""
    labels = metrics.get("labels") or []
    counts = np.asarray(metrics.get("confusion_matrix") or [], dtype=float)
    if counts.size == 0:
        return None
    off = counts.copy()
    np.fill_diagonal(off, -1)
    grid = off if off.max() > 0 else counts
    i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return labels[i], labels[j]


def accuracies(run: Run) -> dict[str, float | None]:
    return {s: (run.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}


def accuracy_figure(run: Run) -> go.Figure:
    """Train, validation and test accuracy against the original recipe's 53% on test."""
    frame = pd.DataFrame(
        [{"subset": s, "accuracy": a} for s, a in accuracies(run).items() if a is not None],
        columns=["subset", "accuracy"],
    )
    figure = px.bar(
        frame, x="subset", y="accuracy", text=frame["accuracy"].map("{:.1%}".format), range_y=[0, 1]
    )
    figure.add_hline(
        y=ORIGINAL["accuracy"],
        line_dash="dash",
        annotation_text=f"original recipe (test) {ORIGINAL['accuracy']:.0%}",
    )
    figure.update_yaxes(tickformat=".0%")
    figure.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None)
    return figure


def compare_frame(runs: list[Run], subset: str = "test") -> pd.DataFrame:
    """Headline metrics of several runs side by side, with the original recipe as a row."""
    rows = []
    for run in runs:
        metrics = run.metrics(subset) or {}
        rows += [
            {"run": run.name, "metric": title, "value": metrics.get(key)} for key, title in HEADLINE
        ]
    rows += [
        {"run": "original recipe", "metric": title, "value": ORIGINAL[key]}
        for key, title in HEADLINE
        if key in ORIGINAL
    ]
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def compare_figure(runs: list[Run], subset: str = "test") -> go.Figure:
    frame = compare_frame(runs, subset).dropna(subset=["value"])
    figure = px.bar(
        frame,
        x="metric",
        y="value",
        color="run",
        barmode="group",
        text=frame["value"].map("{:.1%}".format),
        range_y=[0, 1.05],
    )
    figure.update_yaxes(tickformat=".0%")
    figure.update_layout(height=360, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None)
    return figure


def metrics_csv(metrics: dict[str, Any]) -> str:
    """Headline numbers, then one row per celebrity, as CSV for download."""
    head = pd.DataFrame(
        [
            {"scope": "overall", "metric": key, "value": metrics.get(key)}
            for key, _ in HEADLINE
            if metrics.get(key) is not None
        ]
    )
    per_class = per_class_frame(metrics).melt(
        id_vars=["label"], value_vars=[*PER_CLASS, "support"], var_name="metric"
    )
    per_class = per_class.rename(columns={"label": "scope"})
    return pd.concat([head, per_class], ignore_index=True).to_csv(index=False)


# Photos of a run -----------------------------------------------------------------------------


def photo_path(run: Run, path: str) -> Path:
    """A dataset photo of the run on disk (paths in run files are relative to its dataset)."""
    return Path(run.config_dict().get("data_dir", "")) / path


def cell_photos(run: Run, subset: str, true: str, predicted: str) -> pd.DataFrame:
    """Predictions of ``subset`` with this true and predicted celebrity (a confusion cell)."""
    frame = run.predictions(subset)
    if frame.empty:
        return frame
    return frame[(frame["true"] == true) & (frame["predicted"] == predicted)].reset_index(drop=True)


def misclassified(run: Run, subset: str = "test") -> pd.DataFrame:
    """Wrong predictions, most confident first (the most surprising mistakes on top)."""
    frame = run.predictions(subset)
    if frame.empty:
        return frame
    wrong = frame[frame["true"] != frame["predicted"]]
    return wrong.sort_values("probability", ascending=False).reset_index(drop=True)


def crop_for(run: Run, path: str) -> Image.Image | None:
    """The aligned crop the model saw for a dataset photo, through the run's own face stage.

    Uses the face cache (what training wrote), detecting again only when it was cleared.
    """
    from .faces import prepare
    from .pipeline import cache_dir, face_stage

    config = run.config()
    record = prepare(config.data_dir, [path], face_stage(config), cache_dir())[0]
    if not record.get("crop"):
        return None
    return Image.open(record["crop"]).convert("RGB")


def open_photo(run: Run, path: str) -> Image.Image:
    """A dataset photo, decoded safely (raises :class:`celebmodel.data.ImageError`)."""
    return Image.fromarray(load_image(photo_path(run, path), name=path))


def several_faces(run: Run) -> pd.DataFrame:
    """Photos of the run where several faces were found and the central one was taken."""
    try:
        faces = pd.read_csv(run.file("faces.csv"))
    except FileNotFoundError:
        return pd.DataFrame(columns=["path", "label", "subset", "n_faces"])
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunError(f"{run.file('faces.csv')}: unreadable ({exc})") from exc
    chosen = faces[faces["route"] == "several"]
    return chosen[["path", "label", "subset", "n_faces"]].reset_index(drop=True)


def elapsed(status: dict[str, Any]) -> float | None:
    """Seconds since the run started (until it ended, once it did)."""
    try:
        started = dt.datetime.fromisoformat(status["started"])
    except (KeyError, TypeError, ValueError):
        return None
    ended = status.get("ended")
    end = dt.datetime.fromisoformat(ended) if ended else dt.datetime.now(started.tzinfo)
    return max(0.0, (end - started).total_seconds())


def progress(run: Run) -> dict[str, Any]:
    """Epochs done, the most the run can take (early stopping may end it sooner), the phase."""
    from .backbones import BACKBONES
    from .config import RECIPES

    config = run.config_dict()
    history = run.history()
    backbone = BACKBONES.get(config.get("backbone", ""))
    recipe = RECIPES.get(config.get("recipe", ""))
    phases = 2 if recipe and recipe.two_phase and backbone and backbone.kind == "cnn" else 1
    max_epochs = int(config.get("max_epochs") or 0) * phases
    done = len(history)
    return {
        "epochs": done,
        "max_epochs": max_epochs or None,
        "fraction": min(1.0, done / max_epochs) if max_epochs else 0.0,
        "phase": str(history["phase"].iloc[-1]) if done and "phase" in history else None,
    }


def identify_photo(
    recognizer: Any, content: bytes, name: str, threshold: float | None = None
) -> dict[str, Any]:
    """Identify the faces of one uploaded photo, timed, with the annotated picture.

    Raises :class:`celebmodel.data.ImageError` naming ``name`` when the bytes are no image.
    """
    started = time.perf_counter()
    pixels = load_image(content, name=name)
    faces = recognizer.identify(pixels, threshold=threshold)
    seconds = time.perf_counter() - started
    faces.sort(key=lambda face: (face["box"][0], face["box"][1]))  # numbered left to right
    return {
        "pixels": pixels,
        "image": Image.fromarray(pixels),
        "annotated": annotate(pixels, faces),
        "faces": faces,
        "seconds": seconds,
    }


TRACE_MARKERS = (
    "Traceback (most recent call last):",
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
    "At:",
)
RUN_COLUMNS = [
    "run",
    "state",
    "backbone",
    "weights",
    "recipe",
    "epochs",
    "best_val_loss",
    "test_accuracy",
    "started",
    "error",
]


def first_line(text: Any, limit: int = 300) -> str:
    """An error message's first line: stack listings stay in the log file."""
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


def readable_log(text: str, limit: int = 300) -> str:
    """A training log for the page: records and messages, without traceback frames.

    Frames (indented lines) and traceback headers are dropped, progress bars keep their
    last state, and the exception line itself stays, so the cause is still named.
    """
    kept = []
    for raw in text.split("\n"):
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if not line or line[0].isspace() or line.strip() in TRACE_MARKERS:
            continue
        kept.append(line[:limit])
    return "\n".join(kept)


def runs_view(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as the Train page shows it (errors cut to their first line)."""
    view = table.reindex(columns=RUN_COLUMNS)
    return view.assign(error=view["error"].map(first_line))
