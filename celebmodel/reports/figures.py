"""What the pages chart: plotly figures and tables built from run files and metrics.

Pages only lay these out, so every number on screen comes from one tested place and the same
views can be made outside Streamlit (a notebook, a report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ..data.dataset import DatasetScan, display_name, name_matches
from ..runs.run import Run
from ..scoring.metrics import (
    ORIGINAL,
    chance,
    confusion_cells,
    confusion_counts,
    intervals,
    recall_intervals,
)
from ..scoring.open_set import ThresholdScale

if TYPE_CHECKING:
    from ..learning.evaluation import Comparison

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
ENDS = {  # sort -> what the top and the bottom of the ranking are called
    "f1": ("strongest", "weakest"),
    "precision": ("strongest", "weakest"),
    "recall": ("strongest", "weakest"),
    "support": ("most photographed", "least photographed"),
    "name": ("first", "last"),
}
SORT_NAMES = {"f1": "F1", "support": "photos"}
READABLE = 40  # people one chart shows legibly: beyond, the ends of the ranking, or a search
AT_EACH_END = 15  # people shown at each end of the ranking beyond READABLE
TOP_PAIRS = 20  # confused pairs charted beyond READABLE people (the table lists them all)


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
    per_class = metrics.get("per_class") or {}
    columns = ["label", "celebrity", *PER_CLASS, "support", "recall_low", "recall_high"]
    if not per_class:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame.from_dict(per_class, orient="index").rename_axis("label").reset_index()
    frame.insert(1, "celebrity", frame["label"].map(display_name))
    recall = recall_intervals(metrics)
    frame["recall_low"] = frame["label"].map(recall["low"])
    frame["recall_high"] = frame["label"].map(recall["high"])
    return frame[columns]


@dataclass
class PeopleShown:
    """The people a per-person chart shows, in its order, and what they are, in words."""

    frame: pd.DataFrame  # rows of :func:`per_class_frame`
    note: str  # empty when every person is shown
    gap: int | None  # people shown before the ones left out (the ends of the ranking)


def ranked(frame: pd.DataFrame, sort_by: str) -> pd.DataFrame:
    """Best first by ``sort_by`` (ties by name), or by name."""
    if sort_by == "name":
        return frame.sort_values(["celebrity", "label"])
    return frame.sort_values([sort_by, "celebrity"], ascending=[False, True])


def find_people(frame: pd.DataFrame, query: str) -> pd.DataFrame:
    """The rows whose shown name or folder label holds every word of ``query``; all of them
    when it is empty."""
    return frame[name_matches(query, list(frame["celebrity"]), list(frame["label"]))]


def people_shown(metrics: dict[str, Any], sort_by: str = "f1", query: str = "") -> PeopleShown:
    """Who a per-person chart shows: everyone up to :data:`READABLE` people; beyond, the
    :data:`AT_EACH_END` at each end of the ranking; with a ``query``, the people it finds
    (the first :data:`READABLE` of them). Never a chart of thousands of bars."""
    frame = ranked(per_class_frame(metrics), sort_by)
    total, by = len(frame), SORT_NAMES.get(sort_by, sort_by)
    if query.strip():
        found = find_people(frame, query)
        note = f"{len(found):,} of {total:,} people match “{query.strip()}”"
        if len(found) > READABLE:
            note += f": the first {READABLE} by {by} are shown; refine the search for the others"
        return PeopleShown(found.head(READABLE), note + ".", None)
    if total <= READABLE:
        return PeopleShown(frame, "", None)
    top, bottom = ENDS.get(sort_by, ENDS["f1"])
    ends = pd.concat([frame.head(AT_EACH_END), frame.tail(AT_EACH_END)])
    note = (
        f"The {AT_EACH_END} {top} and the {AT_EACH_END} {bottom} of {total:,} people by {by}; "
        "find anyone else by name."
    )
    return PeopleShown(ends, note, AT_EACH_END)


def per_class_figure(metrics: dict[str, Any], sort_by: str = "f1", query: str = "") -> go.Figure:
    """Grouped bars per celebrity ordered by ``sort_by`` (the people of
    :func:`people_shown`), recall with its 95% interval, and a line at chance (one over the
    number of celebrities)."""
    shown = people_shown(metrics, sort_by, query)
    frame = shown.frame
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
        category_orders={"celebrity": list(frame["celebrity"]), "metric": list(PER_CLASS)},
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
    if shown.gap is not None:
        left_out = len(metrics.get("per_class") or {}) - len(frame)
        figure.add_vline(
            x=shown.gap - 0.5,
            line_dash="dash",
            line_color=ORIGINAL_COLOUR,
            annotation_text=f"{left_out:,} people between",
            annotation_position="top",
        )
    figure.update_yaxes(tickformat=".0%")
    top = 30 if shown.gap is not None else 10  # room for the words over the gap
    figure.update_layout(height=380, margin=dict(l=0, r=0, t=top, b=0), xaxis_title=None)
    return figure


def confusion_figure(metrics: dict[str, Any], normalise: bool = False) -> go.Figure:
    """Heatmap of true (rows) against predicted (columns); hover names both and the count.
    For up to :data:`READABLE` people (beyond, :func:`confused_pairs_figure`)."""
    labels = metrics.get("labels") or []
    counts = confusion_counts(metrics).astype(float)
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


def confused_pairs(metrics: dict[str, Any]) -> pd.DataFrame:
    """Every true → predicted pair with at least one mistake, most photos first: labels, shown
    names, ``photos`` and ``share`` of the true person's photos. From the confusion's
    non-zero cells, so it grows with the mistakes, never with the square of the people."""
    labels = np.asarray(metrics.get("labels") or [], dtype=object)
    cells = confusion_cells(metrics)
    support = np.bincount(cells["true"], weights=cells["count"], minlength=len(labels))
    wrong = cells[cells["true"] != cells["predicted"]]
    wrong = wrong.assign(share=wrong["count"] / support[wrong["true"].to_numpy()])
    wrong = wrong.sort_values(
        ["count", "share", "true", "predicted"], ascending=[False, False, True, True]
    )
    true, predicted = labels[wrong["true"].to_numpy()], labels[wrong["predicted"].to_numpy()]
    return pd.DataFrame(
        {
            "true": true,
            "predicted": predicted,
            "true celebrity": [display_name(label) for label in true],
            "predicted as": [display_name(label) for label in predicted],
            "photos": wrong["count"].to_numpy(),
            "share": wrong["share"].to_numpy(),
        }
    )


def confused_pairs_figure(pairs: pd.DataFrame) -> go.Figure:
    """Horizontal bars of confused pairs (``true → predicted``), most photos on top; a click
    selects a pair (its labels are the bar's ``customdata``)."""
    frame = pairs.assign(pair=pairs["true celebrity"] + " → " + pairs["predicted as"])
    figure = px.bar(
        frame,
        x="photos",
        y="pair",
        orientation="h",
        custom_data=["true", "predicted", "share"],
        color_discrete_sequence=[RUN_COLOURS[0]],
    )
    figure.update_traces(
        hovertemplate="%{y}<br>%{x} photo(s), %{customdata[2]:.0%} of the true person's"
        "<extra></extra>"
    )
    figure.update_yaxes(autorange="reversed", title=None, categoryorder="array")
    figure.update_xaxes(title="photos taken for the other person", tickformat="d", dtick=1)
    figure.update_layout(
        height=80 + 26 * len(frame), margin=dict(l=0, r=0, t=10, b=0), clickmode="event+select"
    )
    return figure


def largest_confusion(metrics: dict[str, Any]) -> tuple[str, str] | None:
    """The most confused pair (:func:`confused_pairs`' first), else the largest cell: the
    default pick."""
    labels = metrics.get("labels") or []
    pairs = confused_pairs(metrics)
    if len(pairs):
        return pairs["true"].iloc[0], pairs["predicted"].iloc[0]
    cells = confusion_cells(metrics)
    if cells.empty:
        return None
    top = cells.sort_values(["count", "true"], ascending=[False, True]).iloc[0]
    return labels[int(top["true"])], labels[int(top["predicted"])]


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


SHARE_STEP = 0.001  # the strangers control's even step on its scale: a tenth of a percent


def threshold_tradeoff(known: np.ndarray, strangers: np.ndarray, threshold: float) -> pd.DataFrame:
    """For every threshold worth trying (each score, and ``threshold``): share of strangers
    accepted (false accepts) and of known faces rejected (false rejects); a face is accepted
    when its score is at most the threshold."""
    return rates_at(known, strangers, np.unique(np.r_[known, strangers, threshold]))


def rates_at(known: np.ndarray, strangers: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Strangers accepted and known faces rejected at each of ``thresholds`` (sorted scores
    and a binary search, not a pass over the faces per threshold)."""
    accepted = np.searchsorted(np.sort(strangers), thresholds, side="right")
    kept = np.searchsorted(np.sort(known), thresholds, side="right")
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "strangers accepted": accepted / len(strangers) if len(strangers) else np.nan,
            "known rejected": 1 - kept / len(known) if len(known) else np.nan,
        }
    )


def share_range(
    known: np.ndarray, strangers: np.ndarray, threshold: float, scale: ThresholdScale
) -> tuple[float, float]:
    """The ends of an evenly stepped control on ``scale`` (:data:`SHARE_STEP`): from one step
    under the lowest share any face or the threshold in force reaches to the highest."""
    values = np.asarray(scale.shown(np.r_[known, strangers, threshold]), np.float64)
    low = np.floor(values.min() / SHARE_STEP) * SHARE_STEP - SHARE_STEP
    high = np.ceil(values.max() / SHARE_STEP) * SHARE_STEP
    return round(float(max(low, 0.0)), 3), round(float(min(high, 1.0)), 3)


def threshold_figure(
    known: np.ndarray,
    strangers: np.ndarray,
    threshold: float,
    scale: ThresholdScale,
    chosen: float | None = None,
) -> go.Figure:
    """Strangers accepted and known faces rejected as the needed share moves on ``scale``
    (the match confidence, or the similarity), with the threshold in force (and the share
    being considered, ``chosen``) marked. Drawn against the share, not one rate against the
    other: when the two sets separate perfectly the gap between them is what shows, where a
    rate-against-rate curve lies flat on the axes."""
    low, high = share_range(known, strangers, threshold, scale)
    steps = np.unique(np.r_[known, strangers, threshold, known.min(initial=0) - 1,
                            np.max(np.r_[known, strangers, threshold]) + 1])
    frame = rates_at(known, strangers, steps)
    frame["needed"] = np.clip(np.asarray(scale.shown(frame["threshold"]), np.float64), low, high)
    long = frame.sort_values(["needed", "threshold"], ascending=[True, False]).melt(
        id_vars=["threshold", "needed"], var_name="rate", value_name="share"
    )
    figure = px.line(
        long,
        x="needed",
        y="share",
        color="rate",
        line_shape="hv",
        color_discrete_map={"strangers accepted": RUN_COLOURS[1], "known rejected": RUN_COLOURS[0]},
        labels={"rate": "", "share": "share of faces"},
        hover_data={"needed": ":.1%", "share": ":.1%", "rate": True, "threshold": False},
    )
    figure.for_each_trace(
        lambda trace: trace.update(
            name={
                "strangers accepted": "strangers accepted (false accepts)",
                "known rejected": "known faces rejected (false rejects)",
            }[trace.name]
        )
    )
    in_force = float(scale.shown(threshold))
    marks = [("in force", in_force, "solid")]
    if chosen is not None and abs(chosen - in_force) >= SHARE_STEP / 2:
        marks.append(("considered", chosen, "dash"))
    for name, value, dash in marks:
        figure.add_vline(
            x=value,
            line_dash=dash,
            line_color=ORIGINAL_COLOUR,
            annotation_text=f"{name} {value:.1%}",
            annotation_position="top",
        )
    figure.update_yaxes(tickformat=".0%", range=[-0.04, 1.08])
    figure.update_xaxes(title=f"{scale.name} needed (a face below it is unknown)",
                        range=[low, high], tickformat=".1%")
    figure.update_layout(
        height=380,
        margin=dict(l=0, r=0, t=30, b=0),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
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


# The built-in model's open-set protocol ------------------------------------------------------

PROTOCOL_SHORT = {  # metric -> its short name on the chart's axis
    "rank1": "rank-1",
    "dir_far_1": "DIR @ FAR 1%",
    "dir_far_0.1": "DIR @ FAR 0.1%",
    "tar_far_0.1": "TAR @ FAR 0.1%",
}
PROTOCOL_METRICS = {  # metric -> what it means, for the table and the chart
    "rank1": "rank-1: the best gallery person is right",
    "dir_far_1": "DIR at FAR 1%: right and above the threshold that names 1% of impostors",
    "dir_far_0.1": "DIR at FAR 0.1%: the same at 1 impostor in 1,000",
    "tar_far_0.1": "verification TAR at FAR 0.1%: same-person pairs accepted",
}


def plain_words(protocol: dict, calibration: dict) -> str:
    """The protocol's headline and the preset in force, in words anyone reads the same."""
    named = protocol["figures"]["dir_far_1"]["mean"]
    words = (f"**In plain words:** of 100 photos of people it knows, it names about "
             f"{named * 100:.0f} right while naming 1 stranger in 100 (measured on LFW's own "
             "photos, each person left out in turn as the stranger).")
    balanced = (calibration.get("presets") or {}).get("Balanced") or {}
    source = calibration.get("strangers_source")
    if source and balanced.get("strangers_named") is not None:
        share = balanced["strangers_named"] * 100
        words += (f" As it names faces now (Balanced), about {share:.0f} in 100 photos of "
                  "strangers taken elsewhere get a name (measured on "
                  f"{source['photos']:,} photos of {source['people']:,} people not in LFW).")
    known = calibration.get("known_source")
    if known and balanced.get("known_elsewhere_named") is not None:
        words += (f" Photos of the people it knows taken elsewhere than LFW are harder: it names "
                  f"about {balanced['known_elsewhere_named'] * 100:.0f} in 100 of them right and "
                  f"{balanced['known_elsewhere_wrong'] * 100:.0f} under a wrong name (measured on "
                  f"{known['photos']:,} photos of {known['people']:,} of its people).")
    return words


def protocol_words(protocol: dict) -> str:
    """What the protocol is and what its figures mean, for the Evaluate page."""
    return (
        f"**Open-set identification on Labeled Faces in the Wild** ({protocol['photos']:,} "
        f"faces, {protocol['people']:,} people). {protocol['protocol'].capitalize()}. "
        "*DIR* (detection and identification rate) is the share of genuine probes named right "
        "while the threshold names only 1% (or 0.1%) of the impostors: how well the model "
        "names the people it knows while saying *unknown* to strangers. Reported as the mean "
        "over the trials, its spread, and mean − sd (what published results report)."
    )


def protocol_table(protocol: dict) -> pd.DataFrame:
    """The protocol's figures: this model's method and plain nearest-face cosine similarity on
    the same (flip-averaged) embeddings, so the table shows what the scoring adds."""
    rows = []
    for key, meaning in PROTOCOL_METRICS.items():
        new, old = protocol["figures"][key], protocol["baseline"][key]
        rows.append({
            "measure": meaning,
            "mean": f"{new['mean']:.3f}",
            "sd": f"{new['sd']:.3f}",
            "mean − sd": f"{new['mean_minus_sd']:.3f}",
            "nearest face, same embeddings, mean − sd": f"{old['mean_minus_sd']:.3f}",
        })
    return pd.DataFrame(rows)


def protocol_figure(protocol: dict) -> go.Figure:
    """Each measure's trials, this model's method beside the nearest-face baseline."""
    rows = []
    for key in PROTOCOL_METRICS:
        for method, label in (("figures", "this model"),
                              ("baseline", "nearest face, same embeddings")):
            for trial, value in enumerate(protocol[method][key]["trials"]):
                rows.append({"measure": PROTOCOL_SHORT[key], "method": label, "trial": trial,
                             "value": value})
    figure = px.strip(
        pd.DataFrame(rows), x="measure", y="value", color="method", hover_data=["trial"],
        title="Every trial (10 random splits of the people)",
    )
    figure.update_layout(yaxis={"range": [0, 1], "title": "share"}, height=360)
    return figure
