"""The studio in a real browser: ``streamlit run`` on 127.0.0.1 and headless Chromium.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and pip ``playwright`` (its own browser
download is never used). Screenshots of every page land in ``test-artifacts/``.

To refresh the README's screenshots from real runs, point the test at a runs folder (and a
photo to identify): ``CELEBMODEL_SCREENSHOT_RUNS=/path/to/runs
CELEBMODEL_SCREENSHOT_PHOTO=group.jpg pytest -m browser``; it then also copies one screenshot
per page into ``assets/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import COLOURS, astronauts, cameramen, make_dataset, write_video
from PIL import Image
from skimage import data as skdata

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
ASSETS = ROOT / "assets"
SCREENSHOT_RUNS = os.environ.get("CELEBMODEL_SCREENSHOT_RUNS")
SCREENSHOT_PHOTO = os.environ.get("CELEBMODEL_SCREENSHOT_PHOTO")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 180_000

if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) "
        "to run the real-browser test",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip("playwright.sync_api")
sync_playwright = playwright_api.sync_playwright
PlaywrightTimeout = playwright_api.TimeoutError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def launch(runs: Path, data: Path, log_path: Path, *flags: str) -> tuple[str, subprocess.Popen]:
    """``streamlit run streamlit_app.py`` from the repository (so its ``.streamlit/config.toml``
    applies) on a free port; returns the URL once the server answers."""
    port = free_port()
    env = {**os.environ, "CELEBMODEL_RUNS": str(runs), "CELEBMODEL_DATA": str(data)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "streamlit_app.py",
                "--server.port",  # the one flag: the repository's port may be taken
                str(port),
                *flags,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except BaseException:
        shut_down(process)
        raise
    return url, process


def shut_down(process: subprocess.Popen) -> None:
    """Stop a server as Ctrl+C or a service manager would (SIGTERM), killing it if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A studio server over a copy of a finished run."""
    base = tmp_path_factory.mktemp("browser")
    runs = base / "runs"
    if SCREENSHOT_RUNS:
        shutil.copytree(SCREENSHOT_RUNS, runs, ignore=shutil.ignore_patterns(".*lock"))
    else:
        run = request.getfixturevalue("cnn_run")
        shutil.copytree(run.path, runs / "20240102-000000-vgg16")
    data = Path(os.environ.get("CELEBMODEL_SCREENSHOT_DATA") or base / "data")
    url, process = launch(runs, data, base / "streamlit.log")
    try:
        yield url, runs
    finally:
        shut_down(process)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(base / "streamlit.log", ARTIFACTS / "streamlit.log")


def upload_photo(tmp_path: Path) -> Path:
    if SCREENSHOT_PHOTO:
        return Path(SCREENSHOT_PHOTO)
    rng = np.random.default_rng(3)
    pixels = np.clip(np.array(COLOURS[0]) + rng.normal(0, 30, (96, 96, 3)), 0, 255)
    path = tmp_path / "celebrity.png"
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def settle(page, text: str, quiet_ms: int = 1000) -> None:
    """Wait for ``text``, then until Streamlit has been idle for ``quiet_ms`` (a first load
    may rerun once when the navigation arrives), then for plotly to draw."""
    page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT_MS)
    running = "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        if page.evaluate(running):
            quiet_since = time.monotonic()
        elif (time.monotonic() - quiet_since) * 1000 >= quiet_ms:
            break
        page.wait_for_timeout(100)
    page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)


def give_album(page, url: str, archive) -> None:
    """Open Identify, choose the zip input and hand it ``archive``, as a user does."""
    page.goto(f"{url}/identify")
    settle(page, "How sure must a match be?")
    page.get_by_text("A .zip of photos", exact=True).click()
    settle(page, "Zip of photos")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(archive))


def choose(page, label: str, option: str, attempts: int = 3, within=None) -> None:
    """Pick ``option`` in a selectbox (of ``within``, a part of the page, if given; retried: a
    rerun may close the open list)."""
    for attempt in range(attempts):
        (within or page).get_by_role("combobox", name=label).click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=5000)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")


def no_traceback(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Traceback (most recent call last)" not in page.content()


@contextlib.contextmanager
def browser_page(args: list[str] = CHROMIUM_ARGS) -> Iterator[Any]:
    """A page of its own headless Chromium, closed afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=args, headless=True
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def shoot(page, name: str) -> Path:
    """Screenshot the whole page: the viewport grows to the content (Streamlit scrolls inside)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"screenshot_{name}.png"
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    viewport = page.viewport_size
    page.set_viewport_size({"width": viewport["width"], "height": min(max(height, 900), 5000)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
    if SCREENSHOT_RUNS:
        ASSETS.mkdir(exist_ok=True)
        shutil.copy(path, ASSETS / path.name)
    return path


def cell_caption(page) -> str:
    return page.get_by_text("photo(s) of").first.inner_text()


def test_pages_load_and_an_upload_is_identified(server, tmp_path):
    url, runs = server
    dataset = json.loads(next(runs.glob("*/config.json")).read_text())["data_dir"]
    with browser_page() as page:
        # A fresh server's first request is a page URL: it must still get the app's
        # navigation and sidebar (a pages/ folder would otherwise run the file alone).
        page.goto(f"{url}/evaluate")
        settle(page, "Per person")
        no_traceback(page)
        nav = page.locator("[data-testid='stSidebarNav']")
        assert nav.locator("a").count() == 5  # not the folder's files (ui.py, ...)
        for name in ("Home", "Identify", "People", "Train", "Evaluate"):
            assert nav.get_by_text(name, exact=True).count() == 1
        assert page.get_by_text("Active model", exact=True).count() == 1
        assert page.locator("[data-testid='stMetric']").count() >= 6

        page.get_by_role("tab", name="Confusion").click()
        settle(page, "Predicted as")  # only the open tab is drawn: the heatmap is the chart
        heatmap = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first
        heatmap.scroll_into_view_if_needed()
        box = heatmap.bounding_box()
        captions = []
        for x, y in ((5, 5), (box["width"] - 5, box["height"] - 5)):  # two diagonal cells
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_timeout(500)
            settle(page, "photo(s) of")
            captions.append(cell_caption(page))
        for caption in captions:
            cell = caption.split(" photo(s) of ")[1].split(" (showing")[0]
            true, predicted = cell.split(" predicted as ")
            assert true == predicted, caption  # a diagonal cell was selected
        assert captions[0] != captions[1]
        shoot(page, "evaluate")

        nav.get_by_role("link", name="Home").click()
        settle(page, "Model in use:")
        no_traceback(page)
        shoot(page, "home")

        nav.get_by_role("link", name="Identify").click()
        settle(page, "How sure must a match be?")
        photo = upload_photo(tmp_path)
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(
            str(photo)
        )
        settle(page, "face(s) found in")
        no_traceback(page)
        assert page.get_by_text(photo.name).count() >= 1
        # the face's card: its number and name or "Unknown", and its similarity
        page.get_by_text(re.compile(r"^1\. ")).first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_text(re.compile(r"^(match confidence|similarity|closest:) ")).first.wait_for(
            timeout=TIMEOUT_MS
        )
        shoot(page, "identify")

        nav.get_by_role("link", name="Train").click()
        settle(page, "Past runs")
        page.get_by_role("textbox", name="Dataset folder").fill(dataset)
        page.keyboard.press("Enter")
        settle(page, "Skipped files")  # the dataset preview
        no_traceback(page)
        assert page.get_by_text(dataset).count() >= 1
        shoot(page, "train")


def start_small_training(
    page, url: str, dataset: Path, epochs: int, patience: int = 5, click: bool = True
) -> None:
    """On the Train page: a 32 px VGG16 from random weights on ``dataset``, then Start
    (unless not ``click``)."""
    page.goto(f"{url}/train")
    settle(page, "Past runs")
    page.get_by_role("textbox", name="Dataset folder").fill(str(dataset))
    page.keyboard.press("Enter")
    settle(page, "Skipped files")
    choose(page, "Backbone", "VGG16 (ImageNet)")
    settle(page, "Random initialisation")
    page.get_by_text("Random initialisation", exact=True).click()
    page.get_by_text("Find and align the face first", exact=True).click()
    for name, value in (
        ("Image size (px)", "32"),
        ("Most epochs per phase", str(epochs)),
        ("Early-stopping patience (epochs)", str(patience)),
        ("Photos per celebrity (0 = all)", "0"),
    ):
        page.get_by_role("spinbutton", name=name).fill(value)
        page.keyboard.press("Enter")
        settle(page, "Past runs")
    if click:
        page.get_by_role("button", name="Start training").click()


def test_a_training_shows_its_stages_live_and_then_becomes_the_model_in_use(server, tmp_path):
    """Start a dlib128 training: the Train page shows the face stage counting photos before any
    epoch (the fragment refreshes by itself, ``run_every``, which only a real browser does),
    then "Use this model" makes it the model every page uses (the server's first run stays
    active until then); a second training is started and stopped from the page."""
    url, runs = server
    dataset = make_dataset(tmp_path / "dataset", per_class=40, size=96)
    stage = re.compile(r"Finding faces · (\d+) of 120 photos")
    with browser_page() as page:
        page.goto(f"{url}/train")
        settle(page, "Past runs")
        page.get_by_role("textbox", name="Dataset folder").fill(str(dataset))
        page.keyboard.press("Enter")
        settle(page, "Skipped files")
        if page.get_by_role("combobox", name="Backbone").inner_text().find("dlib") < 0:
            choose(page, "Backbone", "dlib face ResNet (128-d, offline)")
            settle(page, "Past runs")
        page.get_by_role("textbox", name="Name of this run").fill("Browser colours")
        page.keyboard.press("Enter")
        page.get_by_role("spinbutton", name="Most epochs per phase").fill("3")  # the stages
        page.keyboard.press("Enter")  # matter here, not the accuracy
        settle(page, "Past runs")
        page.get_by_role("button", name="Start training").click()
        bar = page.locator("[data-testid='stProgress']").filter(has_text=stage)
        bar.first.wait_for(timeout=TIMEOUT_MS)
        first = int(stage.search(bar.first.inner_text()).group(1))
        deadline = time.monotonic() + 120
        while True:  # the count moves while no epoch has been shown yet
            counts = [int(m.group(1)) for m in stage.finditer(page.content())]
            assert page.get_by_text(re.compile(r"^epoch \d")).count() == 0
            if counts and counts[-1] > first:
                break
            assert time.monotonic() < deadline, f"the face count stayed at {first}"
            page.wait_for_timeout(300)
        settle(page, "Training finished")
        no_traceback(page)
        assert page.get_by_text("Browser colours: finished").count() == 1
        page.get_by_role("button", name="Use this model").click()
        page.get_by_text("Browser colours is the active model").wait_for(timeout=TIMEOUT_MS)
        sidebar = page.locator("[data-testid='stSidebar']")  # every page's model now
        sidebar.get_by_text(  # under the box: its network, people and folder
            re.compile(r"^Browser colours · \w+ · [\d,]+ people \(\d{8}-")
        ).wait_for(timeout=TIMEOUT_MS)
        assert page.get_by_role("link", name="Evaluate Browser colours").count() == 1
        shoot(page, "train_use_model")

        page.get_by_role("button", name="Start training").click()  # again, then stop it
        page.get_by_text(": running").first.wait_for(timeout=TIMEOUT_MS)
        page.get_by_role("button", name="Stop training").click()
        page.get_by_text("Training stopped").first.wait_for(timeout=TIMEOUT_MS)
        no_traceback(page)
        shoot(page, "train_stopped")


def cells(table) -> list[str]:
    """The texts of a ``st.dataframe``'s cells (its grid is drawn on a canvas; these come from
    the table it keeps for screen readers)."""
    return [cell.text_content() for cell in table.locator("td").all()]


def test_start_shows_the_new_run_at_once_and_the_runs_table_keeps_up(tmp_path, cnn_run):
    """After Start the previous run gives way to the new one at once (it lingered while the
    whole page redrew), and the Past runs table says what the run is doing at every refresh
    (it said "queued" of a run long running): both refresh with the training, by themselves."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    shutil.copytree(cnn_run.path, runs / "20240102-000000-vgg16")
    from celebmodel.runs.run import Run, list_runs, pid_alive

    Run(runs / "20240102-000000-vgg16").set_meta("Earlier colours")
    dataset = make_dataset(tmp_path / "dataset", per_class=6, size=32)
    url, process = launch(runs, data, tmp_path / "streamlit.log")
    pid = None
    try:
        with browser_page() as page:
            start_small_training(page, url, dataset, epochs=1000, patience=100, click=False)
            page.get_by_text("Earlier colours: finished").wait_for(timeout=TIMEOUT_MS)
            clicked = time.monotonic()
            page.get_by_role("button", name="Start training").click()
            started = re.compile(r"vgg16 · .*: (queued|running)$")
            page.get_by_role("heading", name=started).first.wait_for(timeout=TIMEOUT_MS)
            shown_after = time.monotonic() - clicked
            assert page.get_by_text("Earlier colours: finished").count() == 0
            new = next(run for run in list_runs(runs) if run.name != "20240102-000000-vgg16")
            running = page.get_by_role("heading", name=re.compile(r"vgg16 · .*: running$"))
            running.wait_for(timeout=TIMEOUT_MS)
            table = page.locator("[data-testid='stDataFrame']").first
            deadline = time.monotonic() + 30
            while "running" not in cells(table):
                assert time.monotonic() < deadline, f"the runs table said {cells(table)}"
                assert running.count() == 1
                page.wait_for_timeout(500)
            assert "queued" not in cells(table)
            pid = new.status()["pid"]
            no_traceback(page)
            page.get_by_role("button", name="Stop training").click()
            page.get_by_text("Training stopped").first.wait_for(timeout=TIMEOUT_MS)
    finally:
        shut_down(process)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert shown_after < 3.0, f"the new run showed {shown_after:.1f} s after Start"


@pytest.fixture(scope="module")
def astro_server(tmp_path_factory: pytest.TempPathFactory, astro):
    """A studio whose active model knows the astronaut (the cameraman is a stranger)."""
    base = tmp_path_factory.mktemp("astro-browser")
    runs = base / "runs"
    shutil.copytree(astro.path, runs / "20250101-000000-dlib128")
    url, process = launch(runs, base / "data", base / "streamlit.log")
    try:
        yield url, runs / "20250101-000000-dlib128"
    finally:
        shut_down(process)


def test_an_album_zip_is_grouped_and_a_group_named_in_the_browser(astro_server, tmp_path):
    """Upload a zip on Identify: a table of every face, the strangers grouped; naming the
    group adds the person to the model, and the faces are then shown as that person."""
    url, run_path = astro_server
    archive = tmp_path / "trip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, photo in enumerate([*cameramen(3, 1, turn=2, light=0.05), *astronauts(1, seed=8)]):
            buffer = io.BytesIO()
            photo.save(buffer, format="JPEG")
            zf.writestr(f"trip/photo{i}.jpg", buffer.getvalue())
    with browser_page() as page:
        give_album(page, url, archive)
        group = page.get_by_text(re.compile(r"^Group 1: 3 faces"))
        group.wait_for(timeout=TIMEOUT_MS)
        no_traceback(page)
        shoot(page, "identify_album")
        page.get_by_role("textbox", name="Name this person").first.fill("Ada Lovelace")
        page.get_by_role("button", name="Add to the model").first.click()
        page.get_by_text("Added Ada Lovelace from 3 faces").wait_for(timeout=TIMEOUT_MS)
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while group.count():  # no longer a group of strangers
            assert time.monotonic() < deadline, "the named group is still shown"
            page.wait_for_timeout(300)
        no_traceback(page)
    from celebmodel.runs.run import Run

    assert Run(run_path).labels()[-1] == "Ada_Lovelace"


def write_y4m(path: Path, pixels: np.ndarray, frames: int = 20) -> Path:
    """A Y4M video (what Chromium's fake camera plays) of one RGB picture, 4:2:0."""
    rgb = pixels.astype(np.float32)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    u = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
    v = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
    planes = [y] + [c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3)) for c in (u, v)]
    frame = b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)
    height, width = y.shape
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(b"FRAME\n" + frame)
    return path


GREEN_PIXELS = """(video) => {
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let green = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i] - 46) < 30 && Math.abs(data[i + 1] - 160) < 30
            && Math.abs(data[i + 2] - 67) < 30) green++;
    }
    return green;
}"""


def test_the_live_webcam_draws_the_name_on_the_video(astro_server, tmp_path):
    """Chromium's fake camera plays the astronaut: the video coming back from the server has
    the green box and name label of a known face drawn on it (no STUN server anywhere)."""
    url, _ = astro_server
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(Image.fromarray(skdata.astronaut()).resize((480, 480)), (80, 0))
    video = write_y4m(tmp_path / "astronaut.y4m", np.asarray(canvas))
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    with browser_page(args) as page:
        page.goto(f"{url}/identify")
        settle(page, "How sure must a match be?")
        page.get_by_text("Live webcam", exact=True).click()
        settle(page, "Press START")
        frame = page.frame_locator("iframe[title*='webrtc']").first
        frame.get_by_role("button", name="START").click()
        video = frame.locator("video").first
        video.wait_for(timeout=TIMEOUT_MS)
        deadline = time.monotonic() + 120
        green = 0
        while green < 200:  # the label box of a known face, drawn by the server
            assert time.monotonic() < deadline, "no name drawn on the live video"
            page.wait_for_timeout(500)
            if video.evaluate("v => v.readyState") >= 2:
                green = video.evaluate(GREEN_PIXELS)
        shoot(page, "identify_live")
        frame.get_by_role("button", name="STOP").click()


def click_first_bar(page, attempts: int = 5) -> None:
    """Click the timeline's first bar where a user does (plotly takes the click on its drag
    layer, above the bar); retried while a rerun replaces the chart under the pointer."""
    for attempt in range(attempts):
        bar = page.locator(".js-plotly-plot g.trace.bars path").first
        try:
            bar.scroll_into_view_if_needed(timeout=5000)
            box = bar.bounding_box(timeout=5000)
        except playwright_api.Error:
            box = None
        if box is not None:
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            return
        assert attempt < attempts - 1, "the timeline's bar never settled"
        page.wait_for_timeout(500)


def test_a_video_on_a_timeline_whose_bar_starts_the_player_there(astro_server, tmp_path):
    """Issue 26 in a real browser: a video uploaded on Identify is identified; a click on the
    astronaut's bar of the timeline moves the player to the second he appears and shows
    that frame."""
    url, _ = astro_server
    video = write_video(tmp_path / "talk.mp4", [
        (1, (40, 40, 40), None), (2, (40, 40, 40), astronauts(1, seed=5)[0]),
        (1, (40, 40, 40), None), (2, (40, 40, 40), cameramen(1, seed=2, turn=2, light=0.05)[0]),
    ])
    with browser_page() as page:
        page.goto(f"{url}/identify")
        settle(page, "How sure must a match be?")
        page.get_by_text("A video", exact=True).click()
        upload = page.locator("[data-testid='stFileUploaderDropzoneInput']").first
        upload.wait_for(state="attached", timeout=TIMEOUT_MS)
        page.get_by_text("Upload a video").wait_for(timeout=TIMEOUT_MS)
        upload.set_input_files(str(video))
        bars = page.locator(".js-plotly-plot g.trace.bars path")
        bars.first.wait_for(timeout=TIMEOUT_MS)
        player = "document.querySelector('[data-testid=\"stVideo\"], video')"
        assert page.evaluate(f"() => {player}.currentTime") == 0
        shoot(page, "video_timeline")
        click_first_bar(page)  # the known person's bar: the astronaut, from 1 s
        page.get_by_text("At 0:01.0").wait_for(timeout=TIMEOUT_MS)  # the frame, boxed
        page.wait_for_function(f"() => Math.abs({player}.currentTime - 1.0) < 0.3",
                               timeout=TIMEOUT_MS)
        no_traceback(page)
        shoot(page, "video_moment")
        choose(page, "Or go to", "Unknown 2 at 0:04.0")  # the bar clicked is no obstacle
        page.get_by_text("At 0:04.0").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(f"() => Math.abs({player}.currentTime - 4.0) < 0.3",
                               timeout=TIMEOUT_MS)
        settle(page, "At 0:04.0")  # the chart is drawn anew after each pick
        click_first_bar(page)  # the same bar again: back to 1 s
        page.get_by_text("At 0:01.0").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(f"() => Math.abs({player}.currentTime - 1.0) < 0.3",
                               timeout=TIMEOUT_MS)
        page.evaluate(f"() => {{ {player}.currentTime = 3.5; }}")  # the user plays on, then
        choose(page, "Or go to", "Astronaut at 0:01.0")  # picks the second last picked
        page.wait_for_function(f"() => Math.abs({player}.currentTime - 1.0) < 0.3",
                               timeout=TIMEOUT_MS)
        no_traceback(page)


def test_one_number_on_identify_and_a_compare_that_compares_in_the_browser(astro_server, tmp_path):
    """Issue 27 in a real browser: a trained run's face reads as match confidence against what
    the preset needs (point 1); two runs that held out no photo in common are compared on the
    photos both can answer, and the page says how many (point 4); the built-in model's
    Evaluate opens with plain words (point 5); naming a group on it makes the user's own copy
    that knows them (point 3), and People lists them (point 6). Last in the module: it leaves
    that copy as the model in use."""
    url, run_path = astro_server
    other = run_path.parent / "20240101-000000-dlib128"  # older: the model in use stays
    shutil.copytree(run_path, other, ignore=shutil.ignore_patterns(".*lock", "albums"))
    held_out = pd.read_csv(run_path / "predictions_test.csv")
    split = pd.read_csv(other / "split.csv")  # as if its folder had held out other photos
    split[~split["path"].isin(held_out["path"])].to_csv(other / "split.csv", index=False)
    held_out.iloc[:0].to_csv(other / "predictions_test.csv", index=False)
    (other / "meta.json").write_text(json.dumps({"name": "second split"}))
    try:
        with browser_page() as page:
            page.goto(f"{url}/identify")
            settle(page, "How sure must a match be?")
            photo = tmp_path / "astronaut.jpg"
            astronauts(1, seed=4)[0].save(photo)
            page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(
                str(photo)
            )
            line = page.get_by_text(re.compile(r"^match confidence [\d.]+% \(needs [\d.]+%\)"))
            line.first.wait_for(timeout=TIMEOUT_MS)
            no_traceback(page)

            page.goto(f"{url}/evaluate")
            settle(page, "Per person")
            page.get_by_role("combobox", name="Compare with").click()
            page.get_by_role("option", name=re.compile("^second split")).click()
            reidentify = page.get_by_role(
                "button", name=f"Identify the {len(held_out)} photos both can answer"
            )
            reidentify.wait_for(timeout=TIMEOUT_MS)
            reidentify.click()
            said = page.get_by_text(
                f"Every model identified the same {len(held_out)} test photos again"
            )
            said.wait_for(timeout=TIMEOUT_MS)
            page.get_by_role("cell", name="second split").or_(
                page.get_by_text("second split", exact=True)
            ).first.wait_for(timeout=TIMEOUT_MS)
            no_traceback(page)
            shoot(page, "evaluate_compare")

            page.get_by_role("combobox", name="Run").click()
            page.get_by_role("option", name=re.compile("^LFW public figures")).click()
            page.get_by_text(re.compile(r"^In plain words: of 100 photos")).wait_for(
                timeout=TIMEOUT_MS
            )
            no_traceback(page)

            # naming a group on the read-only built-in model makes the user's copy and adds
            # them there (point 3); People then lists them (point 6)
            page.locator("[data-testid='stSidebar']").get_by_role("combobox").click()
            page.get_by_role("option", name=re.compile("^LFW public figures")).click()
            settle(page, "is the active model")
            archive = tmp_path / "trip.zip"
            with zipfile.ZipFile(archive, "w") as zf:
                for i, picture in enumerate(cameramen(3, 1, turn=2, light=0.05)):
                    buffer = io.BytesIO()
                    picture.save(buffer, format="JPEG")
                    zf.writestr(f"trip/photo{i}.jpg", buffer.getvalue())
            give_album(page, url, archive)
            page.get_by_text(re.compile(r"^Group 1: 3 faces")).wait_for(timeout=TIMEOUT_MS)
            page.get_by_role("textbox", name="Name this person").first.fill("Camera Man")
            page.get_by_role("button", name="Make my copy and add").first.click()
            added = re.compile(r"^Added Camera Man from 3 faces to your own copy")
            page.get_by_text(added).wait_for(timeout=TIMEOUT_MS)
            nav = page.locator("[data-testid='stSidebarNav']")
            nav.get_by_role("link", name="People").click()
            page.get_by_text(re.compile(r"^1 of [\d,]+ people$")).wait_for(timeout=TIMEOUT_MS)
            # the page opens on them, ready to change
            page.get_by_role("button", name="Remove Camera Man").wait_for(timeout=TIMEOUT_MS)
            no_traceback(page)
            shoot(page, "people_added")
    finally:
        shutil.rmtree(other)


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel lists them) of the sockets listening on ``port``."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if table.is_file():
            for line in table.read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def shown_epoch(page) -> int:
    """The epochs of the current phase the Train page's bar shows."""
    count = re.compile(r"([\d,]+) of at most [\d,]+ epochs")
    return int(count.search(page.get_by_text(count).first.inner_text())[1].replace(",", ""))


def test_a_restarted_server_picks_up_the_running_training(tmp_path):
    """The training outlives its server; the next server's Train page shows it live and stops it.

    Both servers start from the repository's ``.streamlit/config.toml`` alone (no address on
    the command line), so this also checks that the studio listens on 127.0.0.1 only.
    """
    from celebmodel.runs.run import Run, list_runs, pid_alive

    runs, data = tmp_path / "runs", tmp_path / "data"
    dataset = make_dataset(tmp_path / "dataset", per_class=6, size=32)
    url, first = launch(runs, data, tmp_path / "first.log")
    try:
        assert listening_addresses(int(url.rsplit(":", 1)[1])) == {"0100007F"}
        with browser_page() as page:
            start_small_training(page, url, dataset, epochs=1000, patience=100)
            page.get_by_text(": running").first.wait_for(timeout=TIMEOUT_MS)
            page.locator(".js-plotly-plot").nth(1).wait_for(timeout=TIMEOUT_MS)
    finally:
        shut_down(first)

    [run] = list_runs(runs)
    pid = run.status()["pid"]
    try:
        assert pid != first.pid and pid_alive(pid) and run.state == "running"
        follow_and_stop_after_restart(run, runs, data, tmp_path)
    finally:
        if pid_alive(pid):  # a failed check must not leave a 1000-epoch training behind
            os.kill(pid, signal.SIGKILL)
    assert Run(run.path).state == "cancelled" and not run.has_model()
    assert not pid_alive(pid)


def follow_and_stop_after_restart(run, runs: Path, data: Path, tmp_path: Path) -> None:
    epochs_then = len(run.history())
    url, second = launch(runs, data, tmp_path / "second.log")
    try:
        with browser_page() as page:
            page.goto(f"{url}/train")
            page.get_by_text(f"{run.title}: running").first.wait_for(timeout=TIMEOUT_MS)
            seen = shown_epoch(page)
            deadline = time.monotonic() + 120
            while shown_epoch(page) <= max(seen, epochs_then):  # the page follows it live
                assert time.monotonic() < deadline, "the Train page stopped updating"
                page.wait_for_timeout(500)
            no_traceback(page)
            shoot(page, "train_after_restart")
            page.get_by_role("button", name="Stop training").click()
            page.get_by_text("Training stopped").first.wait_for(timeout=TIMEOUT_MS)
            no_traceback(page)
    finally:
        shut_down(second)
