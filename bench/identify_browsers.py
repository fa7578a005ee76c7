"""Identify under load in real browsers: 8 users at once, each in its own headless Chromium,
each uploading 10 photos one after another (LFW photos and 1280x960 photos mixed).

User *i* uploads photos of LFW person *i* only, under file names of its own, so a result that
belongs to someone else shows up as a wrong name or a wrong file name. Timed per photo: from
handing the file to the uploader to the annotated photo on screen under that file's heading;
then the user takes the photo off the uploader and adds the next, on the same page.
The server's resident memory is read after every round (``--rounds``), to see it stay flat.

This tree and the old path (a git worktree, as in ``bench/face_network.py``) are each started
exactly as the README says (``streamlit run streamlit_app.py``, no flag, from a fresh clone
with its ``.venv`` inside: ``_common.serve``) with a model they trained themselves; the
same photos go to both.

    python bench/identify_browsers.py             # about 10 minutes on 2 cores
    python bench/identify_browsers.py --skip-old
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, chromium, cpu_seconds, new_page, old_options, rss_mib, serve, trees  # noqa: E402

TIMEOUT_MS = 180_000


def large_copy(photo: Path, size: tuple[int, int] = (1280, 960)) -> bytes:
    """The LFW photo's face, enlarged, on a 1280x960 background: a camera-sized upload."""
    face = Image.open(photo).convert("RGB").resize((600, 600))
    rng = np.random.default_rng(len(photo.name))
    canvas = Image.fromarray(rng.integers(70, 150, (96, 128, 3), dtype=np.uint8))
    canvas = canvas.resize(size, Image.Resampling.BICUBIC)
    canvas.paste(face, ((size[0] - 600) // 2, (size[1] - 600) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def user_photos(data: Path, folder: Path, users: int, per_user: int) -> list[tuple[str, list]]:
    """Per user: its person's display name and its photos (files named after the user)."""
    people = [p for p in sorted(data.iterdir()) if p.is_dir()][:users]
    plan = []
    for number, person in enumerate(people):
        files = []
        for k, photo in enumerate(sorted(person.glob("*.jpg"))[-per_user:]):
            name = folder / f"user{number}_{k:02d}.jpg"
            name.write_bytes(photo.read_bytes() if k % 2 == 0 else large_copy(photo))
            files.append(name)
        plan.append((person.name.replace("_", " "), files))
    return plan


async def one_user(playwright, url: str, person: str, files: list[Path]) -> list[dict]:
    browser = await chromium(playwright)
    results = []
    try:
        page = await new_page(browser)
        await page.goto(f"{url}/identify", timeout=TIMEOUT_MS)  # 8 browsers start at once
        uploader = page.locator("[data-testid='stFileUploaderDropzoneInput']").first
        await uploader.wait_for(state="attached", timeout=TIMEOUT_MS)
        await page.wait_for_timeout(1000)
        for photo in files:
            start = time.perf_counter()
            error = None
            heading = page.get_by_role("heading", name=photo.name)
            try:
                await uploader.set_input_files(str(photo))
                await heading.wait_for(timeout=TIMEOUT_MS)
                await page.get_by_text("face(s) found in").first.wait_for(timeout=TIMEOUT_MS)
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                    ".some(img => img.complete && img.naturalWidth > 0)",
                    polling=100,  # not every animation frame: that would load the CPU itself
                    timeout=TIMEOUT_MS,
                )
                seconds = time.perf_counter() - start
                text = await page.locator("[data-testid='stMain']").inner_text()
                if person not in text:
                    error = f"{photo.name}: {person} not named"
                if "Exception" in text or "Traceback" in text:
                    error = f"{photo.name}: an error on the page"
                # Take the photo off the uploader, as a user would, for the next one.
                await page.locator("[data-testid='stFileChipDeleteBtn']").first.click()
                await heading.wait_for(state="detached", timeout=TIMEOUT_MS)
            except Exception as exc:  # a timeout is a failed request, counted and shown
                seconds = time.perf_counter() - start
                error = f"{photo.name}: {type(exc).__name__}"
            results.append({"photo": photo.name, "seconds": seconds, "error": error})
    finally:
        await browser.close()
    return results


async def round_of_users(url: str, plan: list[tuple[str, list]]) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        done = await asyncio.gather(
            *(one_user(playwright, url, person, files) for person, files in plan)
        )
    return [row for rows in done for row in rows]


def measure(tree: Path, work: Path, data: Path, plan: list, rounds: int) -> dict[str, object]:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CELEBMODEL_RUNS": str(work / "runs"),
        "CELEBMODEL_DATA": str(work / "data"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    subprocess.run(
        [sys.executable, "-m", "celebmodel", "train", str(data), "--backbone", "dlib128"]
        + ["--per-class", "20", "--run-dir", str(work / "runs" / "20200101-000000-dlib128")],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
    )
    url, server = serve(tree, env, work)
    rows, memory = [], []
    try:
        start = time.perf_counter()
        server_cpu, machine_cpu = cpu_seconds(server.pid), cpu_seconds()
        for _ in range(rounds):
            rows += asyncio.run(round_of_users(url, plan))
            memory.append(rss_mib(server.pid))
        wall = time.perf_counter() - start
        server_cpu = cpu_seconds(server.pid) - server_cpu
        machine_cpu = cpu_seconds() - machine_cpu
    finally:
        server.terminate()
        server.wait(timeout=30)
    seconds = sorted(row["seconds"] for row in rows if not row["error"])
    errors = [row["error"] for row in rows if row["error"]]
    return {
        "uploads": len(rows),
        "errors": len(errors),
        "first errors": "; ".join(errors[:3]) or "-",
        "p50 upload to result (s)": statistics.median(seconds) if seconds else float("nan"),
        "p95 upload to result (s)": seconds[int(0.95 * (len(seconds) - 1))]
        if seconds
        else float("nan"),
        "max (s)": seconds[-1] if seconds else float("nan"),
        "photos/s in all": len(rows) / wall,
        "server CPU-s per upload": server_cpu / len(rows),
        "browsers and the rest, CPU-s per upload": (machine_cpu - server_cpu) / len(rows),
        "server memory after each round (MiB)": " / ".join(f"{m:.0f}" for m in memory),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "lfw"))
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--photos", type=int, default=10, help="per user")
    parser.add_argument("--rounds", type=int, default=2)
    old_options(parser, text="git ref of the old path (default: what issue 20 met)")
    args = parser.parse_args()
    data = Path(args.data).resolve()
    base = Path(tempfile.mkdtemp(prefix="celebbench-browsers-"))
    (base / "photos").mkdir()
    plan = user_photos(data, base / "photos", args.users, args.photos)
    columns = {}
    with trees(args.old, args.skip_old) as measured:
        for name, tree in measured:
            (base / name).mkdir()
            columns[name] = measure(tree, base / name, data, plan, args.rounds)
    print(
        f"\n## {args.users} browsers at once, {args.photos} photos each, {args.rounds} rounds "
        "(target: no error, p95 <= 3 s)\n"
    )
    print(pd.DataFrame(columns).to_string(float_format=lambda v: f"{v:.2f}"))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
