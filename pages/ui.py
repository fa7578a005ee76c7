"""Streamlit glue shared by the pages: the active model, the cached recognizer, error display.

Not a page itself (``streamlit_app.py`` lists the pages); it holds no celebrity logic, only
how the app remembers choices between pages and shows failures as messages.
"""

from __future__ import annotations

import contextlib
import runpy
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from celebmodel.backbones import WeightsError
from celebmodel.config import ConfigError
from celebmodel.data import IMAGE_EXTENSIONS, DatasetError, ImageError, display_name
from celebmodel.faces import FaceError
from celebmodel.jobs import JobError
from celebmodel.recognize import Recognizer
from celebmodel.runs import Run, RunError, best_run, list_runs
from celebmodel.uploads import UploadError

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PHOTO_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)  # what datasets may hold
ACTIVE_KEY = "active_run"
EVALUATE_KEY = "evaluate_run"
KNOWN_ERRORS = (
    RunError,
    DatasetError,
    ImageError,
    ConfigError,
    JobError,
    UploadError,
    WeightsError,
    FaceError,
    OSError,
)


def through_app() -> None:
    """Make sure a page runs inside ``streamlit_app.py`` (its navigation and sidebar).

    A folder named ``pages/`` makes Streamlit start in its older multipage mode, where a
    request for a page's URL runs that file alone, until ``st.navigation`` is first called.
    Then run the entry point in its place, in this same run (a rerun would drop the click
    that caused it), and stop.
    """
    if not getattr(PagesManager, "uses_pages_directory", False):
        return
    PagesManager.uses_pages_directory = False
    runpy.run_path(str(APP), run_name="__main__")
    st.stop()


def finished_runs() -> list[Run]:
    """Runs with a saved model, newest first: what can identify faces."""
    return [run for run in list_runs() if run.state == "finished" and run.has_model()]


def run_label(run: Run) -> str:
    """``20250101-120000-dlib128 · dlib128 · test 97%`` for selectors."""
    config = run.config_dict()
    accuracy = (run.metrics("test") or {}).get("accuracy")
    score = f" · test {accuracy:.0%}" if accuracy is not None else ""
    return f"{run.name} · {config.get('backbone', '?')}{score}"


def model_selector() -> Run | None:
    """The sidebar's active-model choice, shared by every page through the session state."""
    runs = finished_runs()
    if not runs:
        st.session_state.pop(ACTIVE_KEY, None)
        st.sidebar.info("No trained model yet.")
        return None
    options = [str(run.path) for run in runs]
    if st.session_state.get(ACTIVE_KEY) not in options:
        st.session_state.pop(ACTIVE_KEY, None)
    best = best_run()
    default = options.index(str(best.path)) if best and str(best.path) in options else 0
    labels = {str(run.path): run_label(run) for run in runs}
    chosen = st.sidebar.selectbox(
        "Active model",
        options,
        index=default,
        format_func=labels.get,
        key=ACTIVE_KEY,
        help="Used by Identify, preselected on Evaluate. The best finished run comes first.",
    )
    return Run(Path(chosen))


def active_run() -> Run | None:
    """The model chosen in the sidebar, else the best finished run.

    The fallback matters when a page script runs on its own: Streamlit runs ``pages/*.py``
    directly (without ``streamlit_app.py`` and its sidebar) on a fresh server's first request
    for that page, and under ``AppTest.switch_page``.
    """
    path = st.session_state.get(ACTIVE_KEY)
    chosen = next((run for run in finished_runs() if str(run.path) == path), None)
    return chosen or best_run()


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _load_recognizer(path: str, model_mtime: float) -> Recognizer:
    """One loaded model per run and model file version (enrolment rewrites the file)."""
    return Recognizer.from_run(path)


def recognizer(run: Run) -> Recognizer:
    """The run's recognizer, loaded once and shared by all sessions."""
    return _load_recognizer(str(run.path), run.file("model.keras").stat().st_mtime)


def names(labels: list[str]) -> str:
    return ", ".join(display_name(label) for label in labels)


@contextlib.contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show a failure of ``what`` as a message naming the file and the problem, not a trace."""
    try:
        yield
    except KNOWN_ERRORS as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:  # last resort: a user must never see a traceback
        st.error(f"{what}: unexpected {type(exc).__name__}: {exc}")
