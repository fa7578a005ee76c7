"""Streamlit glue shared by the pages: the app's navigation, the active model, the cached
recognizer, and failures shown as messages.

Not a page itself; it holds no celebrity logic, only how the app remembers choices between
pages and shows errors. Public Streamlit APIs only.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image

from celebmodel.data.images import IMAGE_EXTENSIONS
from celebmodel.errors import CelebmodelError
from celebmodel.learning.stages import STAGES
from celebmodel.recognition.recognize import Recognizer
from celebmodel.reports import display, run_report
from celebmodel.runs.run import (
    Run,
    active_run,
    builtin_problem,
    builtin_run_or_none,
    choose_run,
    chosen_name,
    finished_runs,
)

BUILTIN_KEY = "lfw-public-figures"  # the built-in model's entry in the sidebar
PHOTO_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)  # what datasets may hold
EVALUATE_KEY = "evaluate_run"
FAVICON = Path(__file__).resolve().parents[1] / "assets" / "favicon.png"
PAGES = (  # file, title, icon; the first is the default page
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/identify.py", "Identify", ":material/search:"),
    ("pages/people.py", "People", ":material/group:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
)
_inside = threading.local()  # set while app() runs a page, in this script run's thread


def keep_keras_session() -> None:
    """Stop Streamlit from clearing Keras's global session after every script run.

    Streamlit does that for scripts that build a new model on each run. This studio builds its
    models once and caches them, so the clearing only costs time: a full garbage collection of
    a heap holding TensorFlow (about 0.2 s of CPU per rerun, per user: 8 users uploading at
    once spent a fifth of the server's time there) and a reset of Keras's global state while
    other sessions' models run. Streamlit has no option for it, so this replaces its private
    ``_clean_problem_modules`` hook; ``tests/test_app.py`` checks that the hook still exists.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if getattr(script_runner, "_clean_problem_modules", None) is not None:
        script_runner._clean_problem_modules = lambda: None


def app() -> None:
    """The studio: the page list, the sidebar's model choice, then the requested page."""
    keep_keras_session()
    st.set_page_config(  # the icon is served by the studio: a material icon comes from Google
        page_title="Celebrity face studio", page_icon=str(FAVICON), layout="wide"
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


def _choose(key: str, runs: dict[str, Run]) -> None:
    name = st.session_state.get(key)
    if name in runs:
        choose_run(runs[name])


def model_selector() -> Run | None:
    """The sidebar's active model: the user's choice, kept beside the runs for every session,
    changed only here or by a "Use this model" button."""
    runs = {run.name: run for run in finished_runs()}
    builtin = builtin_run_or_none()
    if builtin is not None:  # listed first, under the name every command knows it by
        runs = {BUILTIN_KEY: builtin, **runs}
    if not runs:
        st.sidebar.info("No trained model yet.")
        return None
    active = active_run()
    gone = chosen_name() if active is None else None
    labels = run_report.distinct_titles(runs)  # short: the box cuts the rest
    current = (BUILTIN_KEY if active.builtin else active.name) if active else None
    # A new choice elsewhere, or new labels (a person added), make it a new widget.
    key = f"active-model-{current or ''}-{abs(hash(tuple(labels.values())))}"
    st.sidebar.selectbox(
        "Active model",
        list(runs),
        index=list(runs).index(current) if current in runs else None,
        format_func=labels.get,
        placeholder="Choose the model to use",
        key=key,
        on_change=_choose,
        args=(key, runs),
        help="Identify uses it; Evaluate opens on it. It changes only when you choose another.",
    )
    if active is not None:  # the whole name and what it is, which the box would cut off
        st.sidebar.caption(run_report.run_label(active) + (
            f" ({active.name})" if active.name != active.title and not active.builtin else ""
        ))
    if gone:
        st.sidebar.warning(f"The model chosen before ({gone}) is gone: choose another.")
    return active


def no_model_yet() -> None:
    """What a page says when no model can be used: why the built-in one cannot (if it was
    damaged), and how to train your own."""
    problem = builtin_problem()
    if problem:
        st.error(f"The built-in public-figures model cannot be used: {problem}")
    st.warning(
        "No model in use yet, so there is no one to recognise. Train your own on Train (a "
        "few minutes with the offline mbf512 face network), or choose one in the sidebar."
    )
    if st.button("Go to Train", type="primary", icon=":material/model_training:", key="to-train"):
        st.switch_page("pages/train.py")


def page_buttons(pages: list[tuple[str, str, str]], key: str) -> None:
    """Buttons to the next pages, side by side, the first one primary: the first step a page
    suggests should look like one, not like a line of text."""
    for i, (column, (page, label, icon)) in enumerate(
        zip(st.columns(len(pages)), pages, strict=True)
    ):
        kind = "primary" if i == 0 else "secondary"
        if column.button(label, type=kind, icon=icon, key=f"{key}-{i}", width="stretch"):
            st.switch_page(page)


def group_widget_key(what: str, number: int) -> str:
    """The key of an album group's widget: its group number and the groups' version, so a
    change to the groups makes every group box a new widget, drawn from the file."""
    return f"group-{what}-{number}-v{st.session_state.get('groups-version', 0)}"


def new_group_widgets() -> None:
    """After a change to the groups: every group widget is drawn anew on the next run."""
    st.session_state["groups-version"] = st.session_state.get("groups-version", 0) + 1


def people_search(names: list[str], key: str, shown: int = 20) -> None:
    """A search over the people a model knows: never every name on the page."""
    query = st.text_input(
        "Is someone known? Search the people",
        key=key,
        placeholder="e.g. Tony Blair",
        help="Type part of a name.",
    ).strip()
    if not query:
        return
    found = display.search_names(names, query)
    if not found:
        st.caption(f"No one called “{query}” is known.")
        return
    more = f" (first {shown} of {len(found):,})" if len(found) > shown else ""
    st.caption(f"Known{more}: " + ", ".join(found[:shown]))


def column_formats(formats: dict[str, str]) -> dict[str, Any]:
    """``st.column_config`` for a table of typed values: dates with a date pattern, numbers
    (counts, rates, time spans) with a number format, so a column sorts by value."""
    return {
        title: st.column_config.DatetimeColumn(format=form) if "YYYY" in form
        else st.column_config.NumberColumn(format=form)
        for title, form in formats.items()
    }


def threshold_input(recognizer: Recognizer, preset: dict[str, Any], key: str) -> float:
    """The fine setting under Advanced: the smallest match confidence that names a face (or,
    for an older run without stranger scores, the smallest similarity); the threshold it
    gives on the model's own scale."""
    from celebmodel.scoring.open_set import score_for

    if recognizer.strangers is not None:
        start = preset.get("match_confidence") or 0.99
        needed = st.number_input(
            "Smallest match confidence that names a face (%)",
            min_value=0.0,
            max_value=99.99,
            value=round(float(start) * 100, 2),
            step=0.1,
            format="%.2f",
            key=key,
            help="Match confidence: how rarely strangers score as high as the face. 99% means "
            "1 stranger in 100 reaches it.",
        )
        return recognizer.threshold_for(needed / 100)
    from celebmodel.scoring.open_set import similarity

    needed = st.slider(
        "Smallest similarity that names a face",
        0.0,
        1.0,
        value=round(float(similarity(preset["threshold"])), 2),
        step=0.01,
        key=key,
        help="Similarity = 1 − score²/2, where the score is the face's distance to the "
        "person's mean face times (2 − top probability).",
    )
    return score_for(needed)


def use_model_button(run: Run, key: str) -> None:
    """ "Use this model" for a finished run (or a note that it is the active one)."""
    if not run.has_model() or run.state != "finished":
        return
    active = active_run()
    if active is not None and active.path == run.path:
        st.caption(f":material/check_circle: {run.title} is the active model.")
    elif st.button("Use this model", key=key, icon=":material/task_alt:"):
        choose_run(run)
        st.toast(f"{run.title} is now the active model.")
        st.rerun()


@st.cache_resource(
    max_entries=3,
    show_spinner="Loading the model… (the first time on this machine the face network is also "
    "prepared for fast photos: about 10 seconds)",
)
def _load_recognizer(path: str, versions: tuple[float, ...]) -> Recognizer:
    """One loaded model per run and version of its files (enrolment rewrites the model,
    a new threshold the calibration)."""
    return Recognizer.from_run(path).warm_up()


def recognizer(run: Run) -> Recognizer:
    """The run's recognizer, loaded once and shared by all sessions."""
    return _load_recognizer(str(run.path), run.versions())


@contextlib.contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show a failure of ``what`` as a message naming the file and the problem, not a trace."""
    try:
        yield
    except (CelebmodelError, OSError) as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:  # last resort: a user must never see a traceback
        st.error(f"{what}: unexpected {type(exc).__name__}: {exc}")


@st.cache_data(max_entries=2048, show_spinner=False)
def _gallery_face(run_path: str, path: str, side: int, version: float) -> Image.Image | None:
    image = display.evidence_image(Run(Path(run_path)), path)
    return display.thumbnail(image, side) if image is not None else None


def gallery_face(run: Run, path: str, side: int = 96) -> Image.Image | None:
    """A gallery face as a thumbnail: the aligned crop of a training photo, or the kept face of
    someone added later (``None`` when not kept). Cached until the run's gallery changes."""
    return _gallery_face(str(run.path), path, side, run.file("gallery.npz").stat().st_mtime)


def streamlit_bar(bar: Any) -> Callable[..., Any]:
    """A bar factory (as :mod:`celebmodel.progress` uses): tqdm counts, an ``st.progress``
    shows the count and the rate, as the command line's bar does, led by the stage's name
    when the bar is one of the package's stages ("Finding faces · 40 of 280 photos")."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if not self.n:  # until the first photo, the page's own words stay
                return True
            text = f"{self.n} of {self.total} {self.unit}s"
            info = self.format_dict
            if self.postfix:  # what the work counts besides ("faces=12": "12 faces")
                text += "".join(f" · {value} {key}" for key, value in
                                (item.split("=", 1) for item in self.postfix.split(", ")))
            if info["elapsed"] > 0:  # the average rate (no smoothing), and the time left
                rate = info["rate"] or info["n"] / info["elapsed"]
                text += f" · {rate:.1f} {self.unit}s/s"
                if self.total and rate and self.n < self.total:
                    text += f" · about {self.format_interval((self.total - self.n) / rate)} left"
            if self.desc in STAGES:  # a stage of the package's work: say which
                text = f"{STAGES[self.desc]} · {text}"
            bar.progress(min(1.0, self.n / max(self.total or 1, 1)), text=text)
            return True

    return lambda **options: Bar(file=io.StringIO(), smoothing=0, **options)


def _load_srtp() -> None:
    """Load aiortc's SRTP library binding its own symbols first: it bundles an OpenSSL whose
    symbols clash with TensorFlow's, and loaded after TensorFlow it crashes the process."""
    if "pylibsrtp" in sys.modules:
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import pylibsrtp  # noqa: F401 (loaded for its side effect)
    finally:
        sys.setdlopenflags(flags)


def live_webcam(recognizer: Recognizer, threshold: float) -> None:
    """The webcam as live video with boxes and names drawn on it (``streamlit-webrtc``).

    No STUN server: the browser and this server are on the same machine (localhost), so
    their own addresses are enough and nothing is asked of the internet.
    """
    _load_srtp()
    import av
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    from celebmodel.video.live import LiveAnnotator

    annotator = LiveAnnotator(recognizer, threshold)

    def frame(video: av.VideoFrame) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(annotator(video.to_ndarray(format="rgb24")), "rgb24")

    st.caption(
        "Press START and allow the camera. If the browser refuses it (a camera icon in the "
        "address bar, or no camera at all), the box below says so: allow the camera for this "
        "site and press START again. Live video needs the studio opened as localhost or "
        "over HTTPS. Frames that arrive while one is being identified are skipped, so the "
        "picture never lags; the rate achieved is drawn in its corner."
    )
    webrtc_streamer(
        key=f"live-{recognizer.run.name}",
        mode=WebRtcMode.SENDRECV,
        rtc_configuration={"iceServers": []},
        media_stream_constraints={"video": {"width": 640, "height": 480}, "audio": False},
        video_frame_callback=frame,
        async_processing=True,
    )
