"""Grouping at archive scale: all of LFW as strangers, methods compared, 100k/300k faces,
new photos joining an album; old beside new, in one run (``--old``: the code before grouping
scaled, d5e5885, and the first scalable grouping, b78bb13).

The faces are the package's own: every photo of an LFW folder (``--lfw``, one sub-folder per
person) through the face stage and the face network, via the face cache (``$CELEBMODEL_DATA``;
a second run reads them back in seconds), in two spaces: as the network gives them (what a
trained run's model gave albums before) and averaged with their mirror images (what albums
are grouped on now: gallery models embed so, and a trained run's own embedding is averaged
with its mirror image's). The cut comes from a gallery as a model's would, in the same space:
the faces of LFW's 8 people with the most photos (the LFW-8 model's people). Each grouping
runs in a child process of its tree (``PYTHONPATH``), so its time and peak memory are its own.

Scores: BCubed precision, recall and F (a face left alone is a group of its own) and pairwise
F, against the folder names. ``lfw_10to19`` is LFW's 96 people with 10 to 19 photos (the
faces of ``bench/grouping.py``'s folder, without the background faces).

    CELEBMODEL_DATA=/work/celeb_data python bench/grouping_scale.py --lfw /work/lfw_src/images
    python bench/grouping_scale.py --lfw LFW --skip-old --sizes 100000   # new only, one size
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, old_options, python_json, trees  # noqa: E402

EIGHT = [
    "Ariel_Sharon",
    "Colin_Powell",
    "Donald_Rumsfeld",
    "George_W_Bush",
    "Gerhard_Schroeder",
    "Hugo_Chavez",
    "Junichiro_Koizumi",
    "Tony_Blair",
]
NOISE = 0.01  # per-dimension noise of a repeated face: about 0.11 from its original
SPACES = {"mirror-averaged": True, "as embedded": False}  # the first: what albums group on

# CHILD and BASELINE run in this tree or in an old one, whose package is flat. There the new path
# must fail before any of it loads, since this tree's editable install supplies the modules an
# old tree lacks (celebmodel.scoring.cuts would import): so celebmodel.albums.grouping comes
# first, which fails where celebmodel/albums.py is a module (d5e5885, b78bb13).
CHILD = """
import json, sys, time
import numpy as np
try:
    import celebmodel.albums.grouping as grouping
    from celebmodel.scoring.cuts import group_cuts
except ImportError:  # an old tree's flat package: group_cuts, or group_distance before it
    from celebmodel import grouping
    group_cuts = getattr(grouping, "group_cuts", None)
data = np.load(sys.argv[1])
faces, gallery, labels = data["faces"], data["gallery"], data["labels"]
start = time.perf_counter()
if group_cuts is not None:
    cut = group_cuts(gallery, labels)
    cuts = list(vars(cut).values())
else:
    cut = grouping.group_distance(gallery, labels)
    cuts = [cut]
groups = grouping.group_faces(faces, cut)
seconds = time.perf_counter() - start
np.save(sys.argv[2], groups)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"seconds": seconds, "peak_mb": int(hwm.split()[1]) / 1024, "cuts": cuts}))
"""

BASELINE = """
import sys, numpy as np
np.load(sys.argv[1])["faces"]
try:
    import celebmodel.albums.grouping
except ImportError:
    import celebmodel.grouping
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024)
"""  # peak memory (VmHWM: ru_maxrss would carry the parent's over exec) before grouping


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", required=True, help="LFW photos: one folder per person")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000])
    old_options(parser, ["d5e5885", "b78bb13"], "git refs of older code", nargs="*")
    return parser.parse_args()


def lfw_faces(root: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Every LFW photo's face embedding in both spaces (through the face cache), and its
    person."""
    from celebmodel.faces.cache import cache_dir, embed_files, prepare
    from celebmodel.faces.detection import FaceStage
    from celebmodel.faces.network import FaceEmbedder

    paths = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))
    stage = FaceStage(enabled=True, detector="hog", alignment="chip", size=150)
    records = [r for r in prepare(root, paths, stage, cache_dir()) if r["crop"]]
    crops = [r["crop"] for r in records]
    spaces = {space: embed_files(crops, FaceEmbedder(flip=flip)) for space, flip in SPACES.items()}
    people = [r["path"].split("/")[0] for r in records]
    names = sorted(set(people))
    index = {name: i for i, name in enumerate(names)}
    for space, faces in spaces.items():
        spaces[space] = (faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32)
    return spaces, np.array([index[p] for p in people]), names


def scores(truth: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """BCubed precision, recall, F and pairwise F; group 0 (or below) is a face alone."""
    groups = np.asarray(groups).copy()
    alone = groups <= 0
    groups[alone] = groups.max(initial=0) + 1 + np.arange(alone.sum())
    _, g = np.unique(groups, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    table = sparse.coo_matrix((np.ones(len(g)), (g, t))).tocsr()
    table.sum_duplicates()
    n = table.data
    rows = np.repeat(np.arange(table.shape[0]), np.diff(table.indptr))
    group_size = np.asarray(table.sum(1)).ravel()
    truth_size = np.asarray(table.sum(0)).ravel()
    precision = float((n**2 / group_size[rows]).sum() / len(g))
    recall = float((n**2 / truth_size[table.indices]).sum() / len(g))
    same = (n * (n - 1) / 2).sum()
    pair_p = same / max((group_size * (group_size - 1) / 2).sum(), 1)
    pair_r = same / max((truth_size * (truth_size - 1) / 2).sum(), 1)
    return {
        "BCubed P": precision,
        "BCubed R": recall,
        "BCubed F": 2 * precision * recall / (precision + recall),
        "pairwise F": float(2 * pair_p * pair_r / max(pair_p + pair_r, 1e-12)),
    }


def in_child(tree: Path, faces: np.ndarray, gallery, labels, work: Path) -> dict:
    """Group ``faces`` with ``tree``'s code in a child process: groups, time, peak memory."""
    data, out = work / "input.npz", work / "groups.npy"
    np.savez(data, faces=faces, gallery=gallery, labels=labels)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "2"}
    base = float(python_json("-c", BASELINE, data, env=env, cwd=tree))
    try:
        result = python_json("-c", CHILD, data, out, env=env, cwd=tree)
    except subprocess.CalledProcessError as failed:
        return {"error": failed.stderr.strip().splitlines()[-1]}
    result["groups"] = np.load(out)
    result["added_mb"] = result["peak_mb"] - base
    return result


def line(name: str, values: dict) -> None:
    shown = "  ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
    )
    print(f"{name:44} {shown}", flush=True)


def compare_methods(faces, truth, gallery, labels) -> None:
    """The candidates on the same faces and gallery, in this process."""
    from sklearn.cluster import HDBSCAN

    from celebmodel.albums import grouping
    from celebmodel.albums.grouping import group_faces, neighbour_edges
    from celebmodel.scoring.cuts import Cuts, group_cuts

    cuts = group_cuts(gallery, labels)
    n = len(faces)
    a, b, d = neighbour_edges(faces, 2.0)
    graph = sparse.coo_matrix((d + 1e-6, (a, b)), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    start = time.perf_counter()
    _, piece = sparse.csgraph.connected_components(graph, directed=False)
    found = np.zeros(n, int)
    for part in np.unique(piece):  # HDBSCAN needs a connected graph: each piece on its own
        members = np.flatnonzero(piece == part)
        if len(members) > 2:
            sub = graph[members][:, members]
            fitted = HDBSCAN(min_cluster_size=2, min_samples=1, metric="precomputed").fit(sub)
            found[members] = np.where(fitted.labels_ >= 0, fitted.labels_ + 1 + found.max(), 0)
        elif len(members) == 2:
            found[members] = found.max() + 1
    line(
        "HDBSCAN on the 10-NN graph (no cut)",
        {**scores(truth, found), "s": time.perf_counter() - start},
    )
    close = graph.copy()
    close.data[close.data > cuts.pair] = 0
    close.eliminate_zeros()
    _, single = sparse.csgraph.connected_components(close, directed=False)
    line(
        f"single linkage on the graph at {cuts.pair:.3f}",
        scores(truth, grouping.number_groups(single)),
    )
    for name, cut in (
        ("one cut (pair)", Cuts(cuts.pair, cuts.pair, cuts.pair)),
        ("one cut (group)", Cuts(cuts.group, cuts.group, cuts.group)),
        ("one cut (loose)", Cuts(cuts.loose, cuts.loose, cuts.loose)),
        ("cut by size, no loose pass", Cuts(cuts.pair, cuts.group, cuts.group)),
        ("loose pass, no margin", None),
        ("cut by size + loose pass (new)", cuts),
    ):
        start = time.perf_counter()
        if cut is None:  # every rival as far as can be: the loose cut alone decides
            margin, grouping.MARGIN = grouping.MARGIN, np.inf
            found = group_faces(faces, cuts)
            grouping.MARGIN = margin
        else:
            found = group_faces(faces, cut)
        line(
            f"graph average linkage, {name}",
            {**scores(truth, found), "s": time.perf_counter() - start},
        )


def full_linkage_sweep(faces, truth, method: str) -> None:
    """The ceiling of one cut over every pair of faces (scipy's exact linkage, all cuts)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    tree = linkage(pdist(faces.astype(np.float64)), method=method)
    best = max(
        (
            (cut, scores(truth, fcluster(tree, cut, "distance")))
            for cut in np.arange(0.30, 0.43, 0.01)
        ),
        key=lambda item: item[1]["BCubed F"],
    )
    line(f"{method} linkage, all pairs, best cut {best[0]:.2f}*", best[1])


def repeated(faces: np.ndarray, truth: np.ndarray, size: int, seed: int = 0):
    """``size`` faces: every LFW face, then random ones again with a little noise."""
    rng = np.random.default_rng(seed)
    pick = np.r_[np.arange(len(faces)), rng.integers(0, len(faces), size - len(faces))]
    noisy = faces[pick] + rng.normal(0, NOISE, (size, faces.shape[1])).astype(np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True), truth[pick]


def incremental(faces, truth, gallery, labels, work: Path) -> None:
    """10,000 faces grouped into a file, then 1,000 new photos' faces added."""
    from celebmodel.albums.grouping import UNGROUPED, group_faces
    from celebmodel.albums.groups import AlbumGroups
    from celebmodel.scoring.cuts import group_cuts

    cuts = group_cuts(gallery, labels)
    order = np.random.default_rng(1).permutation(len(faces))[:11_000]
    photos = [f"photo{i}.jpg" for i in order]
    book = AlbumGroups.open(work / "album.groups.npz", "bench")
    start = time.perf_counter()
    before = book.assign(photos[:10_000], [1] * 10_000, faces[order[:10_000]], cuts)
    first = time.perf_counter() - start
    start = time.perf_counter()
    book = AlbumGroups.open(work / "album.groups.npz", "bench")
    after = book.assign(photos, [1] * 11_000, faces[order], cuts)
    added = time.perf_counter() - start
    grouped = before != UNGROUPED
    moved = int((after[:10_000][grouped] != before[grouped]).sum())
    joined = int(((before == UNGROUPED) & (after[:10_000] != UNGROUPED)).sum())
    new_in_old = int(np.isin(after[10_000:], np.unique(before[grouped])).sum())
    line("new: 10,000 faces grouped into a file", {"s": first})
    line(
        "new: +1,000 faces (open, place, save)",
        {
            "s": added,
            "old faces moved": moved,
            "lone old faces now grouped": joined,
            "new faces joining old groups": new_in_old,
            **scores(truth[order], after),
        },
    )
    start = time.perf_counter()
    again = group_faces(faces[order], cuts)
    line(
        "new: all 11,000 grouped afresh instead",
        {"s": time.perf_counter() - start, **scores(truth[order], again)},
    )


def main() -> None:
    args = parse_args()
    spaces, truth, names = lfw_faces(Path(args.lfw))
    mask = np.isin(truth, [names.index(n) for n in EIGHT if n in names])
    counts = np.bincount(truth)[truth]
    middle = (counts >= 10) & (counts <= 19)
    print(
        f"LFW: {len(truth)} faces of {len(names)} people; gallery {mask.sum()} faces of "
        f"{len(np.unique(truth[mask]))} people; lfw_10to19: {middle.sum()} faces of "
        f"{len(np.unique(truth[middle]))} people; load {os.getloadavg()[0]:.1f}\n"
    )
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        versions = dict(stack.enter_context(trees(None, True)))
        for ref in [] if args.skip_old else args.old:
            versions.update(stack.enter_context(trees(ref, False)))
        print("## Old beside new: each in a child process of its tree\n")
        for space, faces in spaces.items():
            for label, subset in (("all of LFW", slice(None)), ("lfw_10to19", middle)):
                for name, tree in versions.items():
                    result = in_child(tree, faces[subset], faces[mask], truth[mask], work)
                    if "error" in result:
                        line(f"{name}: {label}, {space}", {"error": result["error"]})
                        continue
                    line(
                        f"{name}: {label}, {space}",
                        {
                            **scores(truth[subset], result["groups"]),
                            "s": result["seconds"],
                            "MB": result["added_mb"],
                            "cuts": " ".join(f"{c:.3f}" for c in result["cuts"]),
                        },
                    )
        faces = spaces["mirror-averaged"]
        gallery, labels = faces[mask], truth[mask]
        print(
            "\n## Methods on all of LFW, mirror-averaged (same faces, same gallery; * = cut"
            " chosen on the answers, a ceiling)\n"
        )
        compare_methods(faces, truth, gallery, labels)
        for method in ("average", "weighted"):
            full_linkage_sweep(faces, truth, method)
        print("\n## lfw_10to19 by the same methods\n")
        compare_methods(faces[middle], truth[middle], gallery, labels)
        print(f"\n## Size: LFW's faces repeated with noise {NOISE}/dimension, true people kept\n")
        points = []
        for size in args.sizes:
            big, big_truth = repeated(faces, truth, size)
            result = in_child(versions["new"], big, gallery, labels, work)
            line(
                f"new: {size:,} faces",
                {
                    **scores(big_truth, result["groups"]),
                    "s": result["seconds"],
                    "MB": result["added_mb"],
                },
            )
            points.append((size, result["seconds"], result["added_mb"]))
        if len(points) >= 2:
            (n1, t1, m1), (n2, t2, m2) = points[-2:]
            power = np.log(t2 / t1) / np.log(n2 / n1)
            memory = np.log(max(m2, 1) / max(m1, 1)) / np.log(n2 / n1)
            t = t2 * (1e6 / n2) ** power
            m = m2 * (1e6 / n2) ** memory
            print(
                f"\nprojected to 1,000,000 faces: {t:.0f} s (time ~ n^{power:.2f}), "
                f"{m:.0f} MB added (memory ~ n^{memory:.2f}), plus the faces (512 MB)"
            )
        print("\n## An album of 10,000 grouped faces takes 1,000 more\n")
        incremental(faces, truth, gallery, labels, work)
    print(f"\nload at the end {os.getloadavg()[0]:.1f} (2 cores); tree {ROOT}")


if __name__ == "__main__":
    main()
