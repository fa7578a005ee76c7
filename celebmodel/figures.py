"""What the pages chart: plotly figures and tables built from run files and metrics.

Pages only lay these out, so every number on screen comes from one tested place and the same
views can be made outside Streamlit (a notebook, a report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .dataset import DatasetScan, display_name
from .metrics import ORIGINAL, chance, intervals
from .runs import Run

if TYPE_CHECKING:
    from .evaluation import Comparison

HEADLINE = (  # metrics key, card title
    ("accuracy", "Accuracy"),
    ("precision_weighted", "Precision (weighted)"),
    ("recall_weighted", "Recall (weighted)"),
    ("f1_weighted", "F1 (weighted)"),
    ("f1_macro", "F1 (macro)"),
    ("top5_accuracy", "Top-5 accuracy"),
)

PER_CLASS = ("precision", "recall", "f1")
# Colour-blind-safe (Okabe-Ito), and no metric drawn in red: none of them is "bad".
METRIC_COLOURS = {"precision": "#0072B2", "recall": "#009E73", "f1": "#CC79A7"}
SUBSET_COLOURS = {"train": "#0072B2", "validation": "#E69F00"}
RUN_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9")
ORIGINAL_COLOUR = "#999999"
ORIGINAL_NAME = "original recipe"

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
        color_discrete_map=SUBSET_COLOURS,
        labels={"subset": "photos", "value": "value", "phase": "phase"},
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


def percent_interval(interval: tuple[float, float] | None) -> str:
    """``95% CI 91–99%`` (empty when there is no interval)."""
    if not interval:
        return ""
    return f"95% CI {interval[0]:.0%}–{interval[1]:.0%}"


def headline(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The cards: title, value, its 95% interval when it is a share of photos (accuracy), and
    the original recipe's number when it reported one."""
    accuracy_interval = intervals(metrics)["accuracy"]
    return [
        {
            "key": key,
            "title": title,
            "value": metrics.get(key),
            "original": ORIGINAL.get(key),
            "interval": accuracy_interval if key == "accuracy" else None,
        }
        for key, title in HEADLINE
    ]


def per_class_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Precision, recall (with its 95% interval), F1 and photos per celebrity."""
    recall_intervals = intervals(metrics)["recall"]
    rows = []
    for label, values in (metrics.get("per_class") or {}).items():
        low, high = recall_intervals.get(label, (np.nan, np.nan))
        rows.append(
            {
                "label": label,
                "celebrity": display_name(label),
                **values,
                "recall_low": low,
                "recall_high": high,
            }
        )
    columns = ["label", "celebrity", *PER_CLASS, "support", "recall_low", "recall_high"]
    return pd.DataFrame(rows, columns=columns)


def per_class_figure(metrics: dict[str, Any], sort_by: str = "f1") -> go.Figure:
    """Grouped bars per celebrity ordered by ``sort_by``, recall with its 95% interval, and a
    line at chance (one over the number of celebrities)."""
    frame = per_class_frame(metrics)
    if sort_by == "name":
        order = sorted(frame["celebrity"])
    else:
        order = frame.sort_values([sort_by, "celebrity"], ascending=[False, True])["celebrity"]
    long = frame.melt(
        id_vars=["label", "celebrity", "support", "recall_low", "recall_high"],
        value_vars=list(PER_CLASS),
        var_name="metric",
        value_name="value",
    )
    is_recall = long["metric"] == "recall"
    long["above"] = np.where(is_recall, long["recall_high"] - long["value"], np.nan)
    long["below"] = np.where(is_recall, long["value"] - long["recall_low"], np.nan)
    figure = px.bar(
        long,
        x="celebrity",
        y="value",
        color="metric",
        barmode="group",
        error_y="above",
        error_y_minus="below",
        color_discrete_map=METRIC_COLOURS,
        hover_data={
            "celebrity": True,
            "metric": True,
            "value": ":.1%",
            "support": True,
            "above": False,
            "below": False,
        },
        labels={"support": "photos", "value": "value", "celebrity": "celebrity"},
        category_orders={"celebrity": list(order), "metric": list(PER_CLASS)},
        range_y=[0, 1.08],
    )
    level = chance(metrics)
    if level is not None:
        figure.add_hline(
            y=level,
            line_dash="dot",
            line_color=ORIGINAL_COLOUR,
            annotation_text=f"chance {level:.0%}",
            annotation_position="top left",
        )
    figure.update_yaxes(tickformat=".0%")
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
    if not normalise:  # photos are whole numbers: no half photos on the colour bar
        top = int(counts.max()) if counts.size else 0
        figure.update_coloraxes(
            colorbar_tickformat="d", colorbar_dtick=max(1, int(np.ceil(top / 6)))
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
    """Train, validation and test accuracy with their 95% intervals, beside the original
    recipe's 53% on test (its own grey bar, so no label lies across another bar)."""
    rows = []
    for subset in ("train", "val", "test"):
        metrics = run.metrics(subset) or {}
        if metrics.get("accuracy") is None:
            continue
        interval = intervals(metrics)["accuracy"] or (metrics["accuracy"],) * 2
        rows.append(
            {
                "photos": {"val": "validation"}.get(subset, subset),
                "accuracy": metrics["accuracy"],
                "above": interval[1] - metrics["accuracy"],
                "below": metrics["accuracy"] - interval[0],
                "n": metrics.get("n"),
                "kind": "this run",
            }
        )
    original = ORIGINAL["accuracy"]
    rows.append(
        {
            "photos": f"{ORIGINAL_NAME} (test)",
            "accuracy": original,
            "above": 0.0,
            "below": 0.0,
            "n": None,
            "kind": ORIGINAL_NAME,
        }
    )
    frame = pd.DataFrame(rows)
    figure = px.bar(
        frame,
        x="photos",
        y="accuracy",
        color="kind",
        error_y="above",
        error_y_minus="below",
        text=frame["accuracy"].map("{:.1%}".format),
        color_discrete_map={"this run": RUN_COLOURS[0], ORIGINAL_NAME: ORIGINAL_COLOUR},
        hover_data={
            "photos": True,
            "accuracy": ":.1%",
            "n": True,
            "kind": False,
            "above": False,
            "below": False,
        },
        labels={"n": "photos evaluated"},
        range_y=[0, 1.08],
    )
    figure.update_yaxes(tickformat=".0%")
    figure.update_layout(
        height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None, showlegend=False
    )
    return figure


def compare_frame(comparison: Comparison) -> pd.DataFrame:
    """Headline metrics of the compared runs on their common photos, in the runs' order,
    with the original recipe last."""
    rows = []
    for run, metrics in zip(comparison.runs, comparison.metrics, strict=True):
        rows += [
            {"run": run.title, "metric": title, "value": metrics.get(key)}
            for key, title in HEADLINE
        ]
    rows += [
        {"run": ORIGINAL_NAME, "metric": title, "value": ORIGINAL[key]}
        for key, title in HEADLINE
        if key in ORIGINAL
    ]
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def compare_table(comparison: Comparison) -> pd.DataFrame:
    """:func:`compare_frame` as a table: one row per metric, one column per run, same order."""
    frame = compare_frame(comparison)
    order = list(dict.fromkeys(frame["run"]))
    table = frame.pivot(index="metric", columns="run", values="value")
    return table.reindex(index=[title for _, title in HEADLINE], columns=order)


def compare_figure(comparison: Comparison) -> go.Figure:
    frame = compare_frame(comparison).dropna(subset=["value"])
    order = list(dict.fromkeys(frame["run"]))
    colours = {name: RUN_COLOURS[i % len(RUN_COLOURS)] for i, name in enumerate(order)}
    colours[ORIGINAL_NAME] = ORIGINAL_COLOUR
    figure = px.bar(
        frame,
        x="metric",
        y="value",
        color="run",
        barmode="group",
        text=frame["value"].map("{:.1%}".format),
        category_orders={"run": order, "metric": [title for _, title in HEADLINE]},
        color_discrete_map=colours,
        hover_data={"run": True, "metric": True, "value": ":.1%"},
        range_y=[0, 1.05],
    )
    figure.update_yaxes(tickformat=".0%")
    figure.update_layout(height=360, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=None)
    return figure


def threshold_tradeoff(known: np.ndarray, strangers: np.ndarray, threshold: float) -> pd.DataFrame:
    """For every threshold worth trying: share of strangers accepted (false accepts) and of
    known faces rejected (false rejects); a face is accepted when its score is at most the
    threshold."""
    candidates = np.unique(np.r_[known, strangers, threshold])
    return pd.DataFrame(
        {
            "threshold": candidates,
            "strangers accepted": [
                (strangers <= t).mean() if len(strangers) else np.nan for t in candidates
            ],
            "known rejected": [(known > t).mean() if len(known) else np.nan for t in candidates],
        }
    )


def threshold_figure(
    known: np.ndarray, strangers: np.ndarray, threshold: float, chosen: float | None = None
) -> go.Figure:
    """False accepts against false rejects over thresholds; the model's threshold marked (and
    the one being considered, when another)."""
    frame = threshold_tradeoff(known, strangers, threshold)
    figure = px.line(
        frame,
        x="strangers accepted",
        y="known rejected",
        hover_data={"threshold": ":.3f", "strangers accepted": ":.1%", "known rejected": ":.1%"},
        markers=True,
        color_discrete_sequence=[RUN_COLOURS[0]],
    )
    marks = [("current threshold", threshold, RUN_COLOURS[1])]
    if chosen is not None and chosen != threshold:
        marks.append(("chosen threshold", chosen, RUN_COLOURS[2]))
    for name, value, colour in marks:
        point = frame.iloc[(frame["threshold"] - value).abs().argmin()]
        figure.add_trace(
            go.Scatter(
                x=[point["strangers accepted"]],
                y=[point["known rejected"]],
                mode="markers+text",
                marker={"size": 14, "color": colour, "symbol": "diamond"},
                text=[f"{name} {value:.3f}"],
                textposition="top right",
                name=name,
                hovertemplate=f"{name} {value:.3f}<br>strangers accepted %{{x:.1%}}"
                "<br>known rejected %{y:.1%}<extra></extra>",
            )
        )
    figure.update_xaxes(tickformat=".0%", title="strangers accepted (false accepts)")
    figure.update_yaxes(tickformat=".0%", title="known faces rejected (false rejects)")
    figure.update_layout(height=380, margin=dict(l=0, r=0, t=10, b=0))
    return figure


def human_size(size: float) -> str:
    """``32 KB``, ``4.6 MB``: a file size in the unit that reads best."""
    unit = "bytes"
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    if unit == "bytes":
        return f"{int(size)} bytes"
    return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"


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
