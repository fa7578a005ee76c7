"""The built-in public-figures model on photos from other sources than LFW, as a user meets it:
``celebmodel predict lfw-public-figures FOLDER --csv`` on photos of LFW people taken elsewhere
and on photos of people who are not in LFW, by this tree and by an old one in the same run
(``--old``, default d465646: the built-in model on dlib's network).

The folder (``--folder``, never in the repository) holds ``known/<LFW_Name>/*`` and
``strangers/<Person>/*``; up to ``--per-person`` photos of each person are taken (evenly
spaced, the same ones for every tree), and in each photo its largest face. Printed per tree:

- known people: named right, named wrong, left unknown, and the right person nearest
  (rank-1), at the default preset;
- strangers: the share named (wrongly: none of them is in LFW), and named at a match
  confidence that reads as certain (95% or more);
- named right at the threshold that leaves 95% of the strangers unknown (the issue's figure),
  read off the CSV's match confidence, which orders faces as the model's score does; and the
  same held out: the threshold set on every other stranger (by person) and the share of the
  remaining strangers it names, both halves in turn, averaged.

    python bench/other_sources.py --folder /work/other_sets
    python bench/other_sources.py --folder DIR --per-person 20 --skip-old
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import old_options, run_celebmodel, table, trees  # noqa: E402

GROUPS = ("known", "strangers")
CERTAIN = 0.95


def sample(folder: Path, per_person: int, into: Path) -> pd.DataFrame:
    """Up to ``per_person`` photos of each person, linked into ``into/<group>/<person>/``."""
    rows = []
    for group in GROUPS:
        for person in sorted(p for p in (folder / group).iterdir() if p.is_dir()):
            photos = sorted(person.iterdir())
            picked = np.unique(np.linspace(0, len(photos) - 1, min(per_person, len(photos)))
                               .astype(int))
            for i in picked:
                link = into / group / person.name / photos[i].name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(photos[i].resolve())
                rows.append({"photo": str(link), "group": group, "person": person.name})
    return pd.DataFrame(rows)


def largest_faces(csv: Path) -> pd.DataFrame:
    """Per photo, its largest face (a photo without a face: no row)."""
    rows = pd.read_csv(csv, keep_default_na=False, dtype={"label": str, "nearest": str})
    rows = rows[rows["box"] != ""].copy()
    boxes = np.array([[float(v) for v in box.split()] for box in rows["box"]])
    rows["area"] = boxes[:, 2] * boxes[:, 3]
    rows["confidence"] = pd.to_numeric(rows["match_confidence"], errors="coerce").fillna(0.0)
    rows["named"] = rows["known"].astype(str) == "True"
    return rows.loc[rows.groupby("photo")["area"].idxmax()].drop(columns="group")


def score(photos: pd.DataFrame, faces: pd.DataFrame) -> dict:
    both = photos.merge(faces, on="photo", how="left")
    both["named"] = both["named"].fillna(False).astype(bool)
    both["confidence"] = both["confidence"].fillna(0.0)
    known = both[both["group"] == "known"]
    strangers = both[both["group"] == "strangers"]
    right = known["named"] & (known["label"] == known["person"])
    nearest = known["nearest"] == known["person"]
    cut = float(np.quantile(strangers["confidence"], 0.95, method="higher"))
    people = sorted(strangers["person"].unique())
    held = []
    for half in (people[0::2], people[1::2]):
        setting = strangers["person"].isin(half)
        level = float(np.quantile(strangers.loc[setting, "confidence"], 0.95, method="higher"))
        held.append([(nearest & (known["confidence"] > level)).mean(),
                     (~nearest & (known["confidence"] > level)).mean(),
                     (strangers.loc[~setting, "confidence"] > level).mean()])
    held = np.mean(held, axis=0)
    return {
        "known photos": len(known),
        "known: no face": float(known["box"].isna().mean()),
        "known: named right": float(right.mean()),
        "known: named wrong": float((known["named"] & ~right).mean()),
        "known: unknown": float((~known["named"]).mean()),
        "known: rank-1": float(nearest.mean()),
        "stranger photos": len(strangers),
        "strangers named": float(strangers["named"].mean()),
        f"strangers named at >= {CERTAIN:.0%}": float(
            (strangers["named"] & (strangers["confidence"] >= CERTAIN)).mean()),
        "named right, 95% strangers unknown": float(
            (nearest & (known["confidence"] > cut)).mean()),
        "wrong names at that cut": float((~nearest & (known["confidence"] > cut)).mean()),
        "held out: named right": float(held[0]),
        "held out: wrong names": float(held[1]),
        "held out: strangers named": float(held[2]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="known/<LFW_Name>/, strangers/<Person>/")
    parser.add_argument("--per-person", type=int, default=60)
    parser.add_argument("--work", help="folder for the photos' links and the CSVs (kept)")
    old_options(parser, "d465646", "git ref of the old path (default d465646, dlib)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, trees(args.old, args.skip_old) as versions:
        work = Path(args.work or tmp)
        photos = sample(Path(args.folder), args.per_person, work / "photos")
        people = photos.groupby("group")["person"].nunique().to_dict()
        results = {}
        for name, tree in versions:
            csv = work / f"{name.split()[0]}.csv"
            _, seconds = run_celebmodel(tree, work / name.split()[0], "predict",
                                        "lfw-public-figures", str(work / "photos"),
                                        "--csv", str(csv))
            results[name] = {**score(photos, largest_faces(csv)),
                             "photos/s": len(photos) / seconds}
    frame = pd.DataFrame(results)
    print(f"\n## Photos from other sources: {people.get('known', 0)} LFW people, "
          f"{people.get('strangers', 0)} people not in LFW (up to {args.per_person} photos "
          f"each), largest face per photo, default preset\n")
    table(frame.reset_index(names="figure").to_dict("records"), "built-in model, old beside new")


if __name__ == "__main__":
    main()
