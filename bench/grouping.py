"""Grouping quality and folder speed: strangers found, then grouped by person.

A model is trained on ``../shared/data/lfw`` (8 people; ``--backbone``, default mbf512); then
``celebmodel predict RUN FOLDER --group --csv`` runs on every photo of
``../shared/data/lfw_10to19`` (96 people the model does not know), exactly as a user would run
it. The CSV is scored against the folder names: the share of faces marked unknown, and the
groups against the true people (BCubed precision, recall and F-measure; an ungrouped face is a
group of its own).

Each LFW photo is centred on its person; other faces in it (people in the background) have no
known identity, so only the face nearest the photo's centre is scored (the others are counted).

With ``--old WORKTREE`` (a checkout of earlier code, e.g. ``git worktree add --detach
/tmp/old d5e5885``; repeat it for more) the same command runs from that checkout with a model
it trained itself, in the same run: its groups scored and its speed, beside these. The speed
is the whole command's (TensorFlow's start-up included); a trained run's albums now embed each
face twice (as it is and mirrored), so it shows that cost too.

    python bench/grouping.py
    python bench/grouping.py --old /tmp/old --old /tmp/first-scalable
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, run_celebmodel  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known", default=str(SHARED / "lfw"), help="folder the model learns")
    parser.add_argument("--strangers", default=str(SHARED / "lfw_10to19"), help="folder grouped")
    parser.add_argument(
        "--old", action="append", default=[], help="a checkout of earlier code (repeatable)"
    )
    parser.add_argument("--work", help="folder for runs and caches (default: a temporary one)")
    parser.add_argument("--backbone", default="mbf512", help="the network trained (all trees)")
    return parser.parse_args()


def train(code: Path, work: Path, data: str, backbone: str) -> Path:
    run_celebmodel(code, work, "train", data, "--backbone", backbone)
    runs = sorted(p for p in (work / "runs").iterdir() if (p / "model.keras").is_file())
    return runs[-1]


def main_faces(rows: pd.DataFrame) -> pd.DataFrame:
    """Per photo, the face whose box centre is nearest the photo's centre."""
    rows = rows.copy()
    boxes = np.array([[float(v) for v in box.split()] for box in rows["box"]])
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    sizes = np.array([Image.open(photo).size for photo in rows["photo"]], dtype=float)
    rows["off_centre"] = np.linalg.norm(centres - sizes / 2, axis=1)
    nearest = rows.groupby("photo")["off_centre"].idxmin()
    return rows.loc[nearest]


def bcubed(truth: list[str], clusters: list[str]) -> tuple[float, float, float]:
    """BCubed precision and recall of ``clusters`` against ``truth`` (one entry per item), and
    the pairwise F-measure (pairs of items put together)."""
    frame = pd.DataFrame({"truth": truth, "cluster": clusters})
    both = frame.groupby(["cluster", "truth"]).size()
    per_cluster = frame.groupby("cluster").size()
    per_truth = frame.groupby("truth").size()
    pairs = both.reset_index(name="n")
    precision = (pairs["n"] ** 2 / per_cluster[pairs["cluster"]].to_numpy()).sum() / len(frame)
    recall = (pairs["n"] ** 2 / per_truth[pairs["truth"]].to_numpy()).sum() / len(frame)
    same = (pairs["n"] * (pairs["n"] - 1) / 2).sum()
    pair_p = same / max((per_cluster * (per_cluster - 1) / 2).sum(), 1)
    pair_r = same / max((per_truth * (per_truth - 1) / 2).sum(), 1)
    pairwise = 2 * pair_p * pair_r / max(pair_p + pair_r, 1e-12)
    return float(precision), float(recall), float(pairwise)


def score(csv: Path, strangers: Path) -> dict[str, float]:
    rows = pd.read_csv(csv, dtype={"group": str}, keep_default_na=False)
    main = main_faces(rows)
    truth = [Path(photo).relative_to(strangers).parts[0] for photo in main["photo"]]
    clusters = [
        f"group {group}" if group else f"alone {i}" for i, group in enumerate(main["group"])
    ]
    precision, recall, pairwise = bcubed(truth, clusters)
    grouped = main[main["group"] != ""]
    return {
        "faces": len(rows),
        "scored faces (one per photo)": len(main),
        "background faces left out": len(rows) - len(main),
        "unknown share (scored)": float((main["known"].astype(str) == "False").mean()),
        "unknown share (all faces)": float((rows["known"].astype(str) == "False").mean()),
        "groups": int(grouped["group"].nunique()),
        "people in the folder": len(set(truth)),
        "faces grouped": len(grouped),
        "BCubed precision": precision,
        "BCubed recall": recall,
        "BCubed F": 2 * precision * recall / (precision + recall),
        "pairwise F": pairwise,
    }


def measure(
    code: Path, work: Path, known: str, strangers: Path, backbone: str
) -> tuple[dict, float]:
    """Train a model with ``code``, then ``predict --group`` the strangers: scores, seconds."""
    work.mkdir(parents=True, exist_ok=True)
    run = train(code, work, known, backbone)
    csv = work / "strangers.csv"
    _, seconds = run_celebmodel(
        code, work, "predict", str(run), str(strangers), "--group", "--csv", str(csv)
    )
    return score(csv, strangers), seconds


def main() -> None:
    args = parse_args()
    strangers = Path(args.strangers).resolve()
    photos = sum(1 for p in strangers.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    codes = [("this code", ROOT)] + [
        (f"old {i + 1}", Path(o).resolve()) for i, o in enumerate(args.old)
    ]
    results, speed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for i, (name, code) in enumerate(codes):
            results[name], seconds = measure(code, work / f"code{i}", args.known, strangers,
                                             args.backbone)
            speed[f"{name}: predict --group --csv (s)"] = seconds
            speed[f"{name}: photos/s"] = photos / seconds
    print(f"\n## Grouping {photos} photos of {strangers.name} with a {args.backbone} model of "
          f"{args.known}\n")
    for name, code in codes[1:]:
        print(f"{name}: {code}")
    print(f"{'':34}" + "".join(f"{name:>11}" for name, _ in codes))
    for key in results["this code"]:
        values = [results[name][key] for name, _ in codes]
        shown = [f"{v:11.4f}" if isinstance(v, float) else f"{v!s:>11}" for v in values]
        print(f"{key:34}" + "".join(shown))
    print("\n## Speed (wall time of the command, TensorFlow start-up included)\n")
    for name, value in speed.items():
        print(f"{name:44} {value:.2f}")


if __name__ == "__main__":
    main()
