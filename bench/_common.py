"""What the benches share: where things are, the old trees measured beside this one, the studio
started as the README says, headless Chromium, test photos, child processes and memory.

Each bench imports it with its own folder first on the path::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import ROOT, SHARED, trees  # noqa: E402

Nothing here imports ``celebmodel``, and numpy, pandas and Pillow load only in the helpers that
use them: benches run parts of themselves in processes of old trees (git worktrees of old
commits, whose package is flat: ``celebmodel.faces``, ``celebmodel.grouping``, ...), which
import this file too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OLD = "d5e5885"  # the code issue 20's walkthrough met: most benches' old path


def table(rows: list[dict], title: str, number: str = ".5g") -> None:
    """``rows`` as pandas prints them under a ``## title`` heading, floats to ``number``."""
    import pandas as pd

    print(f"\n## {title}\n", flush=True)
    print(
        pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:{number}}"),
        flush=True,
    )


# The old trees --------------------------------------------------------------------------------


def old_options(
    parser: argparse.ArgumentParser,
    default: str | list[str] | None = OLD,
    text: str = "git ref of the old path",
    **options: Any,
) -> None:
    """``--old`` (the git ref of the old path, ``text`` its help) and ``--skip-old``."""
    parser.add_argument("--old", default=default, help=text, **options)
    parser.add_argument("--skip-old", action="store_true")


def git(*args: str) -> str:
    """What ``git ARGS`` prints, run in this tree."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def old_tree(ref: str) -> tuple[Path, str]:
    """``ref`` checked out in a temporary git worktree: the folder, and ``ref`` as a commit."""
    ref = git("rev-parse", "--short=12", ref).strip()
    folder = Path(tempfile.mkdtemp(prefix="celebmodel-old-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return folder, ref


@contextlib.contextmanager
def trees(ref: str | None, skip_old: bool) -> Iterator[list[tuple[str, Path]]]:
    """The trees a bench measures: this one as "new" and, unless ``skip_old``, ``ref``
    checked out by :func:`old_tree` as "old (<ref>)"; the checkout is removed afterwards."""
    if skip_old:
        yield [("new", ROOT)]
        return
    folder, ref = old_tree(ref)
    try:
        yield [("new", ROOT), (f"old ({ref[:12]})", folder)]
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT)


def flat_layout() -> bool:
    """Whether the ``celebmodel`` imported (the old tree's, when its folder is first on the
    path) is an old tree's flat package (``celebmodel/faces.py``, not ``celebmodel/faces/``).
    Told by its files, not by an import that works: this tree's editable install supplies any
    module an old tree lacks (``celebmodel.scoring.cuts`` imports in every tree)."""
    import celebmodel

    return not (Path(celebmodel.__file__).parent / "faces").is_dir()


def python_json(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None):
    """``python ARGS`` (a script and its options, or ``-c CODE ...``) in a child process: the
    JSON on the last line it printed. Raises ``CalledProcessError`` (with its stderr) if it
    fails."""
    done = subprocess.run(
        [sys.executable, *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_celebmodel(code: Path, work: Path, *args: str) -> tuple[str, float]:
    """Run ``python -m celebmodel ARGS`` from ``code``; its stdout and wall time."""
    env = dict(
        os.environ,
        PYTHONPATH=str(code),
        CELEBMODEL_RUNS=str(work / "runs"),
        CELEBMODEL_DATA=str(work / "data"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.pop("RAY_ADDRESS", None)  # the local engine, whatever the shell says
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "celebmodel", *args],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"celebmodel {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout, seconds


# Photos ---------------------------------------------------------------------------------------


def one_face_photo(path: Path, face: int = 480):
    """A 640x480 photo with one face: the photo at ``path`` as a ``face`` px square in the
    middle of a grey background (as a numpy array)."""
    import numpy as np
    from PIL import Image

    portrait = Image.open(path).convert("RGB").resize((face, face))
    canvas = Image.new("RGB", (640, 480), (90, 90, 90))
    canvas.paste(portrait, ((640 - face) // 2, (480 - face) // 2))
    return np.asarray(canvas)


def photos_in_turn(folder: Path, total: int, extensions: set[str]) -> list[Path]:
    """``total`` photos, one from each celebrity sub-folder in turn (a folder without
    sub-folders counts as one celebrity)."""
    folders = [p for p in sorted(folder.iterdir()) if p.is_dir()] or [folder]
    people = [
        sorted(p for p in person.rglob("*") if p.suffix.lower() in extensions) for person in folders
    ]
    chosen: list[Path] = []
    for row in range(max(map(len, people), default=0)):
        chosen += [photos[row] for photos in people if row < len(photos)]
    return chosen[:total]


# The studio, started as the README says ------------------------------------------------------


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


# Headless Chromium ---------------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(playwright, *args: str):
    """Debian's Chromium, headless, launched by ``playwright`` (sync, or async: then await
    it) with :data:`CHROMIUM_ARGS` and ``args``."""
    return playwright.chromium.launch(
        executable_path=shutil.which("chromium"), args=[*CHROMIUM_ARGS, *args]
    )


def new_page(browser, width: int = 1400, height: int = 1000):
    """A page of ``width`` x ``height`` in ``browser`` (await it for an async browser)."""
    return browser.new_page(viewport={"width": width, "height": height})


@contextlib.contextmanager
def studio_page(
    tree: Path, env: dict[str, str], work: Path, *args: str
) -> Iterator[tuple[str, subprocess.Popen, Any]]:
    """The studio started by :func:`serve` and a page of headless Chromium (:func:`chromium`
    with ``args``, :func:`new_page`) to open it in: its URL, the server's process and the page.
    Both stop on the way out."""
    from playwright.sync_api import sync_playwright

    url, server = serve(tree, env, work)
    try:
        with sync_playwright() as playwright:
            browser = chromium(playwright, *args)
            yield url, server, new_page(browser)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


STREAMLIT_RUNNING = "() => !!document.querySelector('[data-testid=\"stStatusWidget\"]')"
TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def drawn(page, started: float, marker, chart: bool, timeout_ms: int = 600_000) -> float:
    """Seconds from ``started`` until ``marker`` (text or a pattern, and the chart of its tab
    if ``chart``) is on screen, Streamlit is idle and the browser has painted two frames (a
    page busy drawing a huge chart answers only then)."""
    exact = None if isinstance(marker, re.Pattern) else True
    found = page.get_by_text(marker, exact=exact).first
    found.wait_for(state="visible", timeout=timeout_ms)
    if chart:
        panel = page.locator("[role=tabpanel]", has=found)
        panel.locator(".main-svg").first.wait_for(state="visible", timeout=timeout_ms)
    page.evaluate(TWO_FRAMES)
    end = time.perf_counter()
    quiet = time.monotonic()
    while time.monotonic() - quiet < 1.0:  # a rerun still under way is part of the tab
        if page.evaluate(STREAMLIT_RUNNING):
            page.wait_for_function(f"() => !({STREAMLIT_RUNNING})()", timeout=timeout_ms)
            page.evaluate(TWO_FRAMES)
            end = quiet = time.perf_counter()
        page.wait_for_timeout(100)
    return end - started


# CPU and memory ------------------------------------------------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time used so far: by process ``pid`` (user + system), or by the whole machine."""
    if pid is None:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # not idle/iowait
        return busy / os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of process ``pid`` (this one by default) now, not its peak, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """The most resident memory this process has had, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
