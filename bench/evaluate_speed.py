"""Evaluate at many people in a real browser, this tree against the old page: how long each
tab takes from the click (or from opening the page) until it is drawn and the browser answers
again, and how many bytes the server sends for it.

The runs are generated, not trained (``tests/generated_runs.py``: every file a training
writes, for any number of people, in seconds): 158 people as in LFW's people with at least 10
photos (22 train, 3 validation and 3 test photos each, about LFW's 4,324 photos), and 2,000
people for this tree only (the old page drew a 2,000 x 2,000 matrix with an invisible marker
on each of its 4 million cells; it is not measured there). Each tree gets its own
``streamlit run`` started as the README starts it, in a fresh copy of the tree
(``_common.serve``), its own copy of the runs and an empty data folder; headless Debian
Chromium drives both, one after the other.
Each tab is opened twice: "first" finds the face cache empty (the Mistakes tab aligns its
photos' faces once, which a trained run's cache already holds), "again" is a later visit.
Opening the page by its address reloads the whole app in the browser (Streamlit's own start-up
included); the last figure opens it as a user moves inside the app, by the sidebar's link.

The Strangers tab's test (``evaluation.open_set_scores``, what the tab runs) is timed too, in
each tree's own process with an empty face cache: a dlib128 run trained by this tree's CLI on
``../shared/data/lfw`` (8 people, 10 photos each), against 280 photos of other people
(``../shared/data/lfw_10to19``, copied to a temporary folder, never into the repository).

    python bench/evaluate_speed.py                  # about 15 minutes on 2 cores
    python bench/evaluate_speed.py --skip-old
    python bench/evaluate_speed.py --strangers 0    # no training, the pages only
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import ROOT, SHARED, drawn, old_options, python_json, studio_page, trees  # noqa: E402

TABS = (  # what shows that a tab is drawn (same position and words in both trees)
    ("per person", "Sort by", True),
    ("confusion", "Predicted as", True),
    ("overfitting", re.compile(r"overfitting|Near chance|Not enough subsets", re.I), True),
    ("mistakes", re.compile(r"mistakes \(most confident first\)|is misclassified"), False),
    ("strangers", "Strangers' photos", False),
    ("downloads", "Download for use elsewhere", False),
)
TIMEOUT_MS = 600_000


def measure(tree: Path, runs: Path, work: Path) -> dict[str, float]:
    env = {**os.environ, "CELEBMODEL_RUNS": str(runs), "CELEBMODEL_DATA": str(work / "data")}
    result: dict[str, float] = {}
    received = [0]
    # the README's start, in a fresh copy of the tree
    with studio_page(tree, env, work) as (url, _, page):
        page.on(
            "websocket",
            lambda socket: socket.on(
                "framereceived", lambda frame: received.__setitem__(0, received[0] + len(frame))
            ),
        )
        page.goto(url)  # the server imports everything once, before anything is timed
        page.get_by_text("Active model").first.wait_for(timeout=TIMEOUT_MS)
        for visit in ("first", "again"):
            received[0] = 0
            start = time.perf_counter()
            page.goto(f"{url}/evaluate")
            name, marker, chart = TABS[0]
            result[f"open Evaluate, {name} drawn ({visit}, s)"] = drawn(
                page, start, marker, chart
            )
            result[f"open Evaluate ({visit}, MB sent)"] = received[0] / 1e6
            print(
                tree.name,
                visit,
                "open",
                f"{result[f'open Evaluate, {name} drawn ({visit}, s)']:.2f} s",
            )
            for index in [*range(1, len(TABS)), 0]:  # each tab from another one
                name, marker, chart = TABS[index]
                received[0] = 0
                start = time.perf_counter()
                page.get_by_role("tab").nth(index).click(timeout=TIMEOUT_MS)
                result[f"{name} tab ({visit}, s)"] = drawn(page, start, marker, chart)
                result[f"{name} tab ({visit}, MB sent)"] = received[0] / 1e6
                print(tree.name, visit, name, f"{result[f'{name} tab ({visit}, s)']:.2f} s")
        # As a user reaches it inside the app: from Home, by the sidebar's link (no reload
        # of the page, so no Streamlit start-up in the browser).
        page.goto(url)
        page.get_by_text("Active model").first.wait_for(timeout=TIMEOUT_MS)
        page.wait_for_timeout(1000)
        start = time.perf_counter()
        page.locator("[data-testid='stSidebarNav'] a", has_text="Evaluate").first.click()
        name, marker, chart = TABS[0]
        result[f"open Evaluate from the sidebar, {name} drawn (s)"] = drawn(
            page, start, marker, chart
        )
    return result


# Run in this tree and in the old one, whose package is flat. There the new path must fail before
# any of it loads, since this tree's editable install supplies the modules an old tree lacks
# (celebmodel.learning would import): so celebmodel.runs.run comes first, which fails where
# celebmodel/runs.py is a module.
STRANGERS_TEST = """
import json, sys, time
try:
    from celebmodel.runs.run import Run
    from celebmodel.learning.evaluation import open_set_scores
except ImportError:  # an old tree's flat package
    from celebmodel.evaluation import open_set_scores
    from celebmodel.runs import Run
started = time.perf_counter()
scores = open_set_scores(Run(__import__("pathlib").Path(sys.argv[1])), sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - started, "faces": len(scores.strangers)}))
"""


def strangers_test(base: Path, count: int, measured: list[tuple[str, Path]]) -> pd.DataFrame:
    """Seconds of the strangers test of ``count`` photos in each tree, face cache empty."""
    run = base / "strangers-run"
    env = {**os.environ, "CELEBMODEL_DATA": str(base / "train-data")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "celebmodel",
            "train",
            str(SHARED / "lfw"),
            "--backbone",
            "dlib128",
            "--per-class",
            "10",
            "--run-dir",
            str(run),
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    folder = base / "strangers"
    for photo in sorted((SHARED / "lfw_10to19").rglob("*.jpg"))[:count]:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.parent.name / photo.name)
    rows = {}
    for name, tree in measured:
        found = python_json(
            "-c",
            STRANGERS_TEST,
            run,
            folder,
            env={**env, "PYTHONPATH": str(tree), "CELEBMODEL_DATA": str(base / f"data-{name}")},
            cwd=tree,
        )
        rows[name] = {
            f"strangers test of {count} photos, empty face cache (s)": found["seconds"],
            "stranger faces found": found["faces"],
        }
    return pd.DataFrame(rows)


def main() -> None:
    from generated_runs import generated_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # by default d5e5885: the Evaluate page before it was made to hold thousands of people
    old_options(parser, text="git ref of the old page")
    parser.add_argument("--people", type=int, default=158)
    parser.add_argument("--large", type=int, default=2000, help="people, this tree only")
    parser.add_argument("--strangers", type=int, default=280, help="photos (0: no test)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="celebbench-evaluate-"))
    sizes = {args.people: (22, 3, 3), args.large: (4, 1, 1)}
    for n, photos in sizes.items():
        started = time.perf_counter()
        generated_run(base / f"runs-{n}", n, photos=photos, model="head")
        print(f"generated a run of {n:,} people in {time.perf_counter() - started:.1f} s")
    frames = {}
    with trees(args.old, args.skip_old) as measured:
        for n in sizes:
            rows: dict[str, dict[str, float]] = {}
            for name, tree in measured:
                if n == args.large and name != "new":
                    continue
                work = base / f"{name.split()[0]}-{n}"
                work.mkdir()
                runs = work / "runs"
                shutil.copytree(base / f"runs-{n}", runs)
                for key, value in measure(tree, runs, work).items():
                    rows.setdefault(key, {})[name] = value
            frames[n] = pd.DataFrame(rows).T
        if args.strangers:
            strangers = strangers_test(base, args.strangers, measured)
    for n, frame in frames.items():
        print(
            f"\n## Evaluate of a generated {n:,}-person run in headless Chromium "
            "(target: every tab drawn within 3 s)\n"
        )
        print(frame.to_string(float_format=lambda v: f"{v:.2f}"))
    if args.strangers:
        print("\n## The Strangers tab's test (the face stage on every core in this tree)\n")
        print(strangers.to_string(float_format=lambda v: f"{v:.2f}"))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
