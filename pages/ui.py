"""Streamlit glue shared by the pages: the app's navigation, the active model, the cached
recognizer, and failures shown as messages.

Not a page itself; it holds no celebrity logic, only how the app remembers choices between
pages and shows errors. Public Streamlit APIs only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import streamlit as st

from celebmodel.dataset import display_name
from celebmodel.errors import CelebmodelError
from celebmodel.images import IMAGE_EXTENSIONS
from celebmodel.recognize import Recognizer
from celebmodel.runs import Run, best_run, list_runs

PHOTO_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)  # what datasets may hold
ACTIVE_KEY = "active_run"
EVALUATE_KEY = "evaluate_run"
PAGES = (  # file, title, icon; the first is the default page
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/identify.py", "Identify", ":material/search:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
)
_inside = threading.local()  # set while app() runs a page, in this script run's thread


def app() -> None:
    """The studio: the page list, the sidebar's model choice, then the requested page."""
    st.set_page_config(
        page_title="Celebrity face studio", page_icon=":material/face:", layout="wide"
    )
    navigation = st.navigation(
        [
            st.Page(path, title=title, icon=icon, default=index == 0)
            for index, (path, title, icon) in enumerate(PAGES)
        ]
    )
    with shown_errors("Listing the trained models"):
        model_selector()
    _inside.active = True
    try:
        with shown_errors(navigation.title):
            navigation.run()
    finally:
        _inside.active = False


def through_app() -> None:
    """Make sure a page runs inside :func:`app` (its navigation and sidebar).

    A folder named ``pages/`` next to ``streamlit_app.py`` makes a fresh Streamlit server
    start in its older multipage mode: until ``st.navigation`` is first called, a request for
    a page's URL runs that file alone. Such a run calls :func:`app` in its place (its
    ``st.navigation`` ends that mode for the server) and stops.
    """
    if getattr(_inside, "active", False):
        return
    app()
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
    """The model chosen in the sidebar, else the best finished run."""
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
    except (CelebmodelError, OSError) as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:  # last resort: a user must never see a traceback
        st.error(f"{what}: unexpected {type(exc).__name__}: {exc}")
