"""What the pages chart: plotly figures and tables built from run files and metrics.

Pages only lay these out, so every number on screen comes from one tested place and the same
views can be made outside Streamlit (a notebook, a report).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .dataset import DatasetScan, display_name
from .metrics import ORIGINAL
from .runs import Run

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


def accuracy_figure(run: Run) -> go.Figure:
    """Train, validation and test accuracy against the original recipe's 53% on test."""
    frame = pd.DataFrame(
        [{"subset": s, "accuracy": a} for s, a in run.accuracies().items() if a is not None],
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
