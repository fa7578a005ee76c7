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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, cpu_seconds, old_options, studio_page, trees  # noqa: E402


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


def idle_share(pid: int, page, seconds: float = 10.0) -> float:
    """Share of a core the server uses while a tab stays open and nobody does anything."""
    page.wait_for_timeout(5000)
    before = cpu_seconds(pid)
    page.wait_for_timeout(seconds * 1000)
    return (cpu_seconds(pid) - before) / seconds


def measure(tree: Path, work: Path, photo: Path, data: Path) -> dict[str, float]:
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
    result = {}
    with studio_page(tree, env, work) as (url, server, page):
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
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    old_options(parser, text="git ref of the old path (default: what issue 20 met)")
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
