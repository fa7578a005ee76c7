"""A run described for a screen: its progress and stage in words, its summary row in the runs
table, the photos a page lists (mistakes, a confusion cell, photos with several faces), the
warnings its training left. Reading a run's files is :class:`celebmodel.runs.run.Run`; this is
what the pages (and the command line's ``runs``) make of them.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import RunError
from ..runs.run import ACTIVE, PHASE_TITLES, WORDS, Run, first_line, list_runs

RUN_COLUMNS = {  # summary key -> column title on the Train page
    "name": "name",
    "state": "state",  # beside the name: a narrow window still shows it
    "dataset": "dataset folder",
    "people": "people",
    "photos": "photos",
    "backbone": "backbone",
    "recipe": "recipe",
    "seconds": "duration",
    "ended": "finished",
    "best_val_loss": "val loss",
    "test_accuracy": "test accuracy",
    "error": "error",
}
RUN_FORMATS = {  # column title -> how the page formats its typed values
    "people": "localized",
    "photos": "localized",
    "duration": "%d s",  # exact: Streamlit's "duration" reads 50 s and 63 s both "a minute"
    "finished": "YYYY-MM-DD HH:mm",
    "val loss": "%.3f",
    "test accuracy": "percent",
}


def run_label(run: Run) -> str:
    """How selectors name a run: its title, with its network and people when the title is a
    name the user gave (a title of its own already says them)."""
    if not str(run.meta().get("name") or "").strip():
        return run.title
    people = run.people()
    count = f" · {people:,} people" if people is not None else ""
    return f"{run.title} · {run.config_dict().get('backbone', '?')}{count}"


def distinct_titles(runs: dict[str, Run]) -> dict[str, str]:
    """Each run's title, short enough for a selector; runs that share one (two copies of the
    built-in model) get the time they were made after it, so every choice can be told apart
    (a selector matches choices by what it shows)."""
    titles = {key: run.title for key, run in runs.items()}
    shared = {title for title in titles.values() if list(titles.values()).count(title) > 1}
    for key, run in runs.items():
        if titles[key] in shared:
            try:
                made = dt.datetime.strptime(run.name[:15], "%Y%m%d-%H%M%S")
                titles[key] += f" · {made:%d %b %H:%M:%S}"
            except ValueError:
                titles[key] += f" · {run.name}"
    return titles


def accuracies(run: Run) -> dict[str, float | None]:
    return {s: (run.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}


def elapsed(run: Run) -> float | None:
    """Seconds since the run started (queued, for a training still starting), until it
    ended once it did."""
    status = run.status()
    try:
        started = dt.datetime.fromisoformat(status.get("started") or status["queued"])
    except (KeyError, TypeError, ValueError):
        return None
    ended = status.get("ended")
    end = dt.datetime.fromisoformat(ended) if ended else dt.datetime.now(started.tzinfo)
    return max(0.0, (end - started).total_seconds())


def progress(run: Run) -> dict[str, Any]:
    """Epochs per phase (from ``history.csv``), the most a phase may take (early stopping
    may end it sooner), and ``text``: one line a page shows under the stage, which never
    repeats the stage's own epoch counter. While the training is active it is the time
    since Start (a sign of life in every second of it), afterwards the epochs of each
    phase and how long it all took."""
    history = run.history()
    done = len(history)
    phases: dict[str, int] = {}
    if done and "phase" in history:
        phases = {str(k): int(v) for k, v in history["phase"].value_counts(sort=False).items()}
    status = run.status()
    seconds = elapsed(run)
    if status["state"] in ACTIVE:
        text = f"{duration(seconds)} since Start" if seconds is not None else ""
    else:
        counts = ", ".join(
            f"{PHASE_TITLES.get(phase, phase)}: {n}" for phase, n in phases.items()
        )
        words = f"{done} epoch{'s' if done != 1 else ''}" if done else ""
        if len(phases) > 1:
            words += f" ({counts})"
        if seconds is not None:
            words += f"{' in ' if words else 'took '}{duration(seconds)}"
        text = words
    return {
        "epochs": done,
        "phases": phases,
        "phase": str(history["phase"].iloc[-1]) if phases else None,
        "max_epochs": int(run.config_dict().get("max_epochs") or 0) or None,
        "text": text,
    }


def stage_view(run: Run) -> dict[str, Any] | None:
    """What a queued or running training is doing, as the Train page shows it: the bar's
    ``fraction``, its ``text`` (stage, counts, time left) and the stage ``key``; ``None``
    once the run has ended.

    Counts are the stage's own: a phase's epochs, never the run's total. Time left is
    "about" for a stage of known size, "at least" for epochs (early stopping decides how
    many) and "estimating" until the trainer could measure it.
    """
    status = run.status()
    if status["state"] not in ACTIVE:
        return None
    stage = status.get("stage")
    if not stage:
        return {"key": "starting", "fraction": 0.0, "text": "Starting the training process…"}
    done, total, unit = stage.get("done") or 0, stage.get("total"), stage.get("unit")
    words = [stage.get("name", "")]
    fraction = min(1.0, done / total) if total else 0.0
    left = stage.get("seconds_left")
    if unit == "epoch":
        words.append(f"{done:,} of at most {total:,} epochs")
        if stage.get("batches"):
            words.append(f"batch {stage.get('batch', 0)} of {stage['batches']}")
        patience, waited = stage.get("patience"), stage.get("waited") or 0
        if patience and done:
            words.append(f"{waited} of {patience} epochs without improvement")
        if left is None:
            words.append("time left: estimating")
        elif left >= 1:
            words.append(f"at least {duration(left)} left in this phase")
        elif (stage.get("least") or 0) > 1:  # quick epochs: count them, not seconds
            words.append(f"at least {stage['least']} more epochs in this phase")
        elif patience:  # one more epoch without improvement ends the phase
            words.append("early stopping may end this phase after this epoch")
        else:
            words.append("under a second left in this phase")
        if stage.get("least") is not None:  # near the end early stopping allows at least
            fraction = done / max(1, done + stage["least"])
    elif total:
        words.append(f"{done:,} of {total:,} {unit or 'step'}s")
        if done < total:
            words.append(
                f"about {duration(left)} left" if left is not None else "time left: estimating"
            )
    elif done:
        people = stage.get("people")
        words.append(
            f"{done:,} {unit or 'item'}s" + (f" of {people:,} people" if people else "")
        )
    return {
        "key": stage.get("key"),
        "fraction": min(1.0, fraction),
        "text": " · ".join(w for w in words if w),
    }


def phase_summary(run: Run) -> str | None:
    """Which phase of a two-phase training was kept, in words (None for one phase)."""
    phases = run.status().get("phases") or {}
    before, after = phases.get("head"), phases.get("fine-tune")
    if before is None or after is None:
        return None
    if phases.get("kept") == "fine-tune":
        return (
            f"Phase 2 (fine-tuning) kept: it lowered the validation loss from {before:.3f} "
            f"to {after:.3f}."
        )
    return (
        f"Phase 2 (fine-tuning) did not lower the validation loss ({before:.3f} after "
        f"phase 1, {after:.3f} at best after phase 2): the phase 1 model was kept."
    )


def warnings(run: Run) -> list[dict[str, Any]]:
    """What the training noticed about the dataset, grouped (``warnings.json``), each with
    ``list_title``: what its list holds, counted in its own words ("The 150 celebrities";
    groups written before they said so list files)."""
    try:
        groups = run.read_json("warnings.json", default=[]) or []
    except RunError:
        return []
    kept = []
    for group in groups:
        if isinstance(group, dict) and "title" in group:
            n = len(group.get("files") or [])
            what = group.get("what")
            one, several = what if isinstance(what, list) and len(what) == 2 else WORDS
            kept.append({**group, "list_title": f"The {n} {one if n == 1 else several}"})
    return kept


def cell_photos(run: Run, subset: str, true: str, predicted: str) -> pd.DataFrame:
    """Predictions of ``subset`` with this true and predicted celebrity (a confusion cell)."""
    frame = run.predictions(subset)
    if frame.empty:
        return frame
    chosen = (frame["true"] == true) & (frame["predicted"] == predicted)
    return frame[chosen].reset_index(drop=True)


def misclassified(run: Run, subset: str = "test") -> pd.DataFrame:
    """Wrong predictions, most confident first (the most surprising mistakes on top)."""
    frame = run.predictions(subset)
    if frame.empty:
        return frame
    wrong = frame[frame["true"] != frame["predicted"]]
    return wrong.sort_values("probability", ascending=False).reset_index(drop=True)


def several_faces(run: Run) -> pd.DataFrame:
    """Photos where several faces were found and the central one was taken, with the box
    of the face taken (``[x, y, w, h]``; ``None`` in runs from before it was recorded)."""
    columns = ["path", "label", "subset", "n_faces", "box"]
    try:
        faces = pd.read_csv(run.file("faces.csv"), keep_default_na=False)
    except FileNotFoundError:
        return pd.DataFrame(columns=columns)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunError(f"{run.file('faces.csv')}: unreadable ({exc})") from exc
    chosen = faces[faces["route"] == "several"].reset_index(drop=True)
    boxes = chosen["box"] if "box" in chosen else [""] * len(chosen)
    try:
        chosen["box"] = [json.loads(b) if isinstance(b, str) and b else None for b in boxes]
    except ValueError as exc:
        raise RunError(f"{run.file('faces.csv')}: unreadable box ({exc})") from exc
    return chosen[columns]


def results(run: Run) -> tuple[int, float | None, float | None]:
    """Epochs, best validation loss and test accuracy, read once per version of
    ``history.csv`` and ``metrics_test.json``: the runs table lists every run on every
    rerun, and a metrics file of thousands of people takes milliseconds to parse."""
    stamps = tuple(_stamp(run.file(n)) for n in ("history.csv", "metrics_test.json"))
    return _results(run.path, stamps)


def summary(run: Run) -> dict[str, Any]:
    """One row of the runs table, raw values (``None`` where the run does not say)."""
    config = run.config_dict()
    status = run.status()
    epochs, best_val_loss, test_accuracy = results(run)
    facts = config.get("run") or {}
    return {
        "run": run.name,
        "name": run.title,
        "state": status.get("state"),
        "dataset": config.get("data_dir"),
        "people": run.people() or facts.get("n_celebrities"),
        "photos": facts.get("n_photos"),
        "backbone": config.get("backbone"),
        "weights": config.get("weights"),
        "recipe": config.get("recipe"),
        "epochs": epochs,
        "seconds": elapsed(run),
        "best_val_loss": best_val_loss,
        "test_accuracy": test_accuracy,
        "started": status.get("started"),
        "ended": status.get("ended"),
        "error": status.get("error"),
    }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4096)
def _results(path: Path, stamps: tuple) -> tuple[int, float | None, float | None]:
    """:func:`results` of one version of its files (``stamps`` keys the cache)."""
    run = Run(path)
    history = run.history()
    best = float(history["val_loss"].min()) if "val_loss" in history and len(history) else None
    return len(history), best, (run.metrics("test") or {}).get("accuracy")


def runs_table(root: str | Path | None = None) -> pd.DataFrame:
    return pd.DataFrame([summary(run) for run in list_runs(root)])


def runs_view(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as the Train page shows it: values kept typed (counts as integers, the
    duration in seconds, the finish as a local time, rates as fractions) so that sorting a
    column sorts by value; the page formats them (:data:`RUN_FORMATS`). Empty cells empty."""

    def column(key: str) -> pd.Series:
        return table[key] if key in table else pd.Series([None] * len(table), dtype=object)

    ended = pd.to_datetime(column("ended"), errors="coerce", utc=True, format="ISO8601")
    local = dt.datetime.now().astimezone().tzinfo
    seconds = pd.to_numeric(column("seconds"), errors="coerce").where(ended.notna())
    view = pd.DataFrame(
        {
            "name": [
                row.get("name") or row.get("run") or "" for row in table.to_dict("records")
            ],
            "state": column("state").fillna("").astype(str),
            "dataset": column("dataset").fillna("").astype(str),
            "people": pd.to_numeric(column("people"), errors="coerce").astype("Int64"),
            "photos": pd.to_numeric(column("photos"), errors="coerce").astype("Int64"),
            "backbone": column("backbone").fillna("").astype(str),
            "recipe": column("recipe").fillna("").astype(str),
            "seconds": seconds.round(),
            "ended": ended.dt.tz_convert(local).dt.tz_localize(None),
            "best_val_loss": pd.to_numeric(column("best_val_loss"), errors="coerce"),
            "test_accuracy": pd.to_numeric(column("test_accuracy"), errors="coerce"),
            "error": [first_line(_text(value)) for value in column("error")],
        },
        columns=list(RUN_COLUMNS),
    )
    return view.rename(columns=RUN_COLUMNS)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _count(value: Any) -> str:
    return "" if _missing(value) else f"{int(value):,}"


def _number(value: Any, form: str) -> str:
    return "" if _missing(value) else form.format(float(value))


def duration(seconds: float | None) -> str:
    """``3 min 05 s``, ``1 h 02 min``, ``42 s``; empty when unknown."""
    if _missing(seconds):
        return ""
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def local_time(stamp: Any) -> str:
    """An ISO time stamp as this machine's local time, ``2026-11-28 07:12``."""
    try:
        when = dt.datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M")
