"""The studio in a real browser, this tree against the old path: the idle server, a
12-megapixel upload on Identify (upload to annotated photo on screen) and Start to first
finished epoch on Train.

Each tree (this one, and the old path checked out in a temporary git worktree as in
``bench/face_network.py``) is started exactly as the README says, ``streamlit run
streamlit_app.py`` with no flag, from a copy of its folder as a fresh clone has it after the
README's first command: its files, its own ``.streamlit/config.toml`` and a ``.venv`` inside
(hard links to this interpreter's venv, so it costs no disk). The copy's config differs in
one line, the port, because 8501 may be taken on a shared machine (the port changes nothing
else); runs and caches go to folders of the bench's own (``CELEBMODEL_RUNS``,
``CELEBMODEL_DATA``), the data folder empty so the face stage starts cold, and each tree's
model is trained by its own CLI. Headless Debian Chromium drives both, one after the other.

    python bench/pages_speed.py                # about 10 minutes on 2 cores
    python bench/pages_speed.py --skip-old
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from face_network import SHARED, trees  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def big_photo(path: Path) -> Path:
    """A 4000x3000 JPEG holding a real LFW face, about 600 px tall, as a phone would take."""
    person = next(p for p in sorted((SHARED / "lfw").iterdir()) if p.is_dir())
    face = Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB").resize((1500, 1500))
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(70, 150, (375, 500, 3), dtype=np.uint8))
    canvas = canvas.resize((4000, 3000), Image.Resampling.BICUBIC)
    canvas.paste(face, (1250, 750))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=92)
    path.write_bytes(buffer.getvalue())
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


COPY_SKIPS = (".git", ".venv", "runs", "data", "test-artifacts", "__pycache__", ".*_cache")


def fresh_clone(tree: Path, folder: Path) -> tuple[Path, int]:
    """``tree`` as the README leaves it: its files, a ``.venv`` inside, and its config with
    the port moved to a free one (the one change). Returns the folder and the port."""
    shutil.copytree(tree, folder, ignore=shutil.ignore_patterns(*COPY_SKIPS))
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        raise SystemExit("run the bench from the project's venv (it is copied as the app's)")
    subprocess.run(["cp", "-al", str(venv), str(folder / ".venv")], check=True)
    port = free_port()
    config = folder / ".streamlit" / "config.toml"
    text, count = re.subn(r"(?m)^port = \d+$", f"port = {port}", config.read_text())
    if count != 1:
        raise SystemExit(f"{config}: no port line to move")
    config.write_text(text)
    return folder, port


def serve(tree: Path, env: dict[str, str], work: Path) -> tuple[str, subprocess.Popen]:
    """The README's ``streamlit run streamlit_app.py`` (no flag) in a fresh clone of
    ``tree`` under ``work``; returns its URL once it answers."""
    folder, port = fresh_clone(tree, work / "app")
    with open(work / "streamlit.log", "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py"],
            cwd=folder,
            env={**env, "PYTHONPATH": str(folder)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return url, process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"{tree}: streamlit did not start (see {work / 'streamlit.log'})")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time used so far: by process ``pid`` (user + system), or by the whole machine."""
    if pid is None:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # not idle/iowait
        return busy / os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_share(pid: int, page, seconds: float = 10.0) -> float:
    """Share of a core the server uses while a tab stays open and nobody does anything."""
    page.wait_for_timeout(5000)
    before = cpu_seconds(pid)
    page.wait_for_timeout(seconds * 1000)
    return (cpu_seconds(pid) - before) / seconds


def measure(tree: Path, work: Path, photo: Path, data: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CELEBMODEL_RUNS": str(work / "runs"),
        "CELEBMODEL_DATA": str(work / "data"),
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "celebmodel",
            "train",
            str(data),
            "--backbone",
            "dlib128",
            "--per-class",
            "10",
            "--run-dir",
            str(work / "runs" / "20200101-000000-dlib128"),
        ],
        env=env,
        cwd=tree,  # python -m puts the working folder first on the path: this tree's package
        check=True,
        capture_output=True,
    )
    shutil.rmtree(work / "data", ignore_errors=True)  # Train starts with an empty face cache
    url, server = serve(tree, env, work)
    result = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/identify")
            page.get_by_text("Upload one or several photos").wait_for(timeout=120_000)
            result["idle server, tab open (% of a core)"] = 100 * idle_share(server.pid, page)
            uploader = page.locator("[data-testid='stFileUploaderDropzoneInput']").first
            start = time.perf_counter()
            uploader.set_input_files(str(photo))
            page.get_by_text("face(s) found in").wait_for(timeout=120_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                ".some(img => img.complete && img.naturalWidth > 0)",
                timeout=120_000,
            )
            result["12 MP upload to annotated photo on Identify (s)"] = time.perf_counter() - start

            page.goto(f"{url}/train")
            folder = page.get_by_role("textbox", name="Dataset folder")
            folder.wait_for(timeout=120_000)
            folder.fill(str(data))
            folder.press("Enter")
            page.get_by_text("Photos", exact=True).first.wait_for(timeout=120_000)
            page.wait_for_timeout(2000)
            start = time.perf_counter()
            page.get_by_role("button", name="Start training").click()
            # The page shows the new run (the identify run's epochs are gone), then its first
            # finished epoch: "1 of at most 100 epochs" on the bar now, "epoch 1 of at most"
            # on the old path's caption.
            page.get_by_text(re.compile(r": (queued|running)$")).first.wait_for(timeout=120_000)
            page.get_by_text(
                re.compile(r"(epoch [1-9]\d* of at most)|(\b[1-9][\d,]* of at most [\d,]+ epochs)")
            ).first.wait_for(timeout=900_000)
            result["Start to first finished epoch on Train, empty cache (s)"] = (
                time.perf_counter() - start
            )
            stop = page.get_by_role("button", name="Stop training")
            if stop.count():  # a face head may already have finished its epochs
                stop.click()
            page.wait_for_timeout(3000)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    parser.add_argument(
        "--old", default="d5e5885", help="git ref of the old path (default: what issue 20 met)"
    )
    parser.add_argument("--skip-old", action="store_true")
    args = parser.parse_args()
    data = Path(args.data).resolve()
    base = Path(tempfile.mkdtemp(prefix="celebbench-pages-"))
    photo = big_photo(base / "phone.jpg")
    rows: dict[str, dict[str, float]] = {}
    with trees(args.old, args.skip_old) as measured:
        for name, tree in measured:
            (base / name).mkdir()
            for key, value in measure(tree, base / name, photo, data).items():
                rows.setdefault(key, {})[name] = value
    frame = pd.DataFrame(rows).T
    print(
        "\n## the studio started as the README says, in headless Chromium "
        "(targets: idle <= 2%, upload <= 2 s, first epoch <= 30 s)\n"
    )
    print(frame.to_string(float_format=lambda v: f"{v:.2f}"))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
