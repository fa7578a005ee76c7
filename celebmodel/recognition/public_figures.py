"""The built-in model, "LFW public figures": everyone in Labeled Faces in the Wild, named out
of the box, built from an LFW folder by :func:`build` and shipped as numbers and names only.

What ships (``celebmodel/builtin/lfw-public-figures/``, a read-only run folder): the people's
names, the face network's flip-averaged embedding of every LFW photo that gave a face
(float16), each embedding's normalisation statistics, the decision and its calibration
(:mod:`celebmodel.scoring.matching`), the open-set protocol's figures
(:mod:`celebmodel.scoring.protocol`) and ``provenance.json`` (source, counts, date, command,
licence note, and the sha256 of every file, checked when the model is opened). No photo is shipped.
Rebuilding from the same LFW gives the same files (``SOURCE_DATE_EPOCH`` fixes the date in the
provenance).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import zipfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import TrainConfig
from ..errors import DatasetError
from ..faces.detection import FaceStage, face_stage
from ..faces.network import get_network
from ..runs.builtin import NAME, TITLE, folder
from ..storage import atomic_folder, file_sha256
from ..vectors import l2_normalize

if TYPE_CHECKING:
    from ..progress import BarFactory

log = logging.getLogger("celebmodel")
LFW_SITE = "https://vis-www.cs.umass.edu/lfw/"
NAMES_FILE = Path(__file__).parents[1] / "builtin" / "lfw-names.txt"  # LFW's own list and counts
LICENCE = (
    "Labeled Faces in the Wild (University of Massachusetts, Amherst) is a research data set "
    "of news photos; its photos are for research. No photo is shipped here: only the people's "
    "names, numbers derived from each photo by a face network (its own licence: "
    "provenance.json's network), and the statistics computed from them."
)
NETWORK = "mbf512"  # the face network the built-in model is built on
PRESET_FARS = {"Strict": 0.01, "Balanced": 0.05, "Lenient": 0.10}  # strangers wrongly named
SAME_PHOTO = 0.97  # two faces at least this alike (cosine) are one photo (LFW's duplicates)
SIMULATED = 6000  # known and stranger identifications simulated to fit and calibrate
PHOTO = re.compile(r"^(?P<label>.+)_(?P<number>\d{4})\.jpg$")


def stage_of(network: str) -> FaceStage:
    """The face stage of a gallery of ``network``: a run of that backbone's, as it trains."""
    return face_stage(TrainConfig(data_dir="LFW", backbone=network))


@cache
def lfw_people() -> dict[str, int]:
    """LFW's own list of its people and how many photos each has (``lfw-names.txt``)."""
    return read_people(NAMES_FILE)


def read_people(path: str | Path) -> dict[str, int]:
    """A list of people and photo counts in the format of LFW's ``lfw-names.txt`` (a name, a
    tab, a count, per line)."""
    people = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the list of people ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            name, count = line.split("\t")
            people[name] = int(count)
        except ValueError:
            raise DatasetError(f"{path}: line {number} is not 'name<TAB>count'") from None
    return people


# Checking an LFW folder ----------------------------------------------------------------------


def lfw_photos(
    root: str | Path, missing_ok: tuple[str, ...] = (), people: dict[str, int] | None = None
) -> list[str]:
    """Every photo of an LFW folder (``<Person>/<Person>_0001.jpg``, LFW's archive layout),
    checked against LFW's list (or ``people``): anything missing or foreign is named and
    nothing is built.

    ``missing_ok`` names people known to be absent from this copy (they are left out and
    recorded in the provenance).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise DatasetError(f"{root}: {what} (give the folder that holds LFW's <Person>/ "
                           "folders)")
    expected = people or lfw_people()
    unknown_ok = sorted(set(missing_ok) - set(expected))
    if unknown_ok:
        raise DatasetError(f"--missing-ok: {', '.join(unknown_ok)} not in LFW's list of people")
    found = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    foreign = sorted(found - set(expected))
    problems = []
    if foreign:
        problems.append(f"{len(foreign)} folder(s) that are not LFW people: "
                        f"{_few(foreign)}")
    photos, missing_people, missing_photos = [], [], []
    for person, count in expected.items():
        if person not in found:
            if person not in missing_ok:
                missing_people.append(person)
            continue
        wanted = [f"{person}_{i:04d}.jpg" for i in range(1, count + 1)]
        present = {p.name for p in (root / person).iterdir() if not p.name.startswith(".")}
        missing_photos += [f"{person}/{n}" for n in wanted if n not in present]
        extra = sorted(present - set(wanted))
        if extra:
            problems.append(f"{person}: files LFW does not have: {_few(extra)}")
        photos += [f"{person}/{n}" for n in wanted if n in present]
    if missing_people:
        problems.append(f"{len(missing_people)} of LFW's {len(expected):,} people missing: "
                        f"{_few(missing_people)}")
    if missing_photos:
        problems.append(f"{len(missing_photos)} photo(s) missing: {_few(missing_photos)}")
    if problems:
        raise DatasetError(f"{root}: not a complete LFW folder; nothing was built. "
                           + "; ".join(problems))
    return photos


def _few(items: list[str], shown: int = 8) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# Building -------------------------------------------------------------------------------------


def build(
    lfw: str | Path,
    out: str | Path | None = None,
    missing_ok: tuple[str, ...] = (),
    bar: BarFactory | None = None,
    people: dict[str, int] | None = None,
    network: str = NETWORK,
    strangers: str | Path | None = None,
    known_elsewhere: str | Path | None = None,
) -> Path:
    """Build the built-in model from an LFW folder into ``out`` (default: the package's own
    folder) on a face ``network``, replacing what is there only once every file is written.

    ``strangers``: photos of people who are not in LFW, taken elsewhere (one folder per
    person), which define the match confidence and the presets: users bring photos from
    elsewhere, and LFW's own people left out in turn (its look-alikes, in its own kind of
    photo) reach other scores than they do. Without it, the look-alikes define them.
    ``known_elsewhere``: photos of LFW people taken elsewhere (one folder per person, named as
    in LFW): what each preset names of them, right and wrong, is what users bringing their
    own photos meet (LFW's own photos, held out one at a time, are easier).
    ``people`` replaces LFW's list (tests build from a small generated tree).
    """
    from ..scoring.matching import Confidence, Matcher, fit_decision, simulate

    started = time.perf_counter()
    root = Path(lfw).expanduser().resolve()
    spec, stage = get_network(network), stage_of(network)
    expected = people or lfw_people()
    photos = lfw_photos(root, missing_ok, expected)
    records, embeddings = embed_photos(root, photos, bar, network)
    usable = [r for r in records if r["crop"]]
    names = sorted({r["path"].split("/")[0] for r in usable})
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[r["path"].split("/")[0]] for r in usable], np.int64)
    # Stored as float16; everything below is computed from the stored values, so a model
    # loaded from the files is exactly the one calibrated here.
    stored = embeddings.astype(np.float16)
    matcher = Matcher().fit(stored.astype(np.float32), labels)
    seen = simulate(matcher, np.random.default_rng(0), SIMULATED, SIMULATED)
    decision = fit_decision(np.r_[seen["genuine"], seen["stranger"]],
                            np.r_[seen["genuine_correct"], seen["stranger_correct"]])
    lookalikes = np.sort(decision(seen["stranger"]))
    known = decision(seen["genuine"])
    elsewhere = (None if strangers is None
                 else strangers_from_elsewhere(strangers, expected, matcher, decision, network))
    calibrating = lookalikes if elsewhere is None else elsewhere["scores"]  # the strangers
    known_there = (None if known_elsewhere is None
                   else known_from_elsewhere(known_elsewhere, names, matcher, decision, network))
    confidence = Confidence(calibrating)
    presets = {}
    for name, far in PRESET_FARS.items():
        threshold = confidence.threshold(far)
        presets[name] = {
            "threshold": _round(threshold),
            "strangers_named": float(far),
            "lookalikes_named": _round(float(np.mean(lookalikes >= threshold))),
            "known_named": _round(float(np.mean(seen["genuine_correct"]
                                                & (known >= threshold)))),
        }
        if known_there is not None:
            named = known_there["scores"] >= threshold
            presets[name]["known_elsewhere_named"] = _round(
                float(np.mean(named & known_there["correct"])))
            presets[name]["known_elsewhere_wrong"] = _round(
                float(np.mean(named & ~known_there["correct"])))
    errors = label_errors(stored.astype(np.float32), labels, names, [r["path"] for r in usable])
    left_out = [index[name] for name in errors["people_involved"] if name in index]
    protocol = _protocol(stored.astype(np.float32), labels, left_out)
    who = ("each LFW person left out in turn" if elsewhere is None else
           f"{elsewhere['photos']:,} photos of {elsewhere['people']} people not in LFW, from "
           "other sources than LFW")
    calibration = {
        "method": "gallery",
        "description": "AS-norm against the gallery, logistic decision on "
                       "[z1, z1 - z2, s1, s1 - s2]; confidence = 1 - share of strangers "
                       f"({who}) reaching the decision",
        "decision": decision.to_dict(),
        "threshold": presets["Balanced"]["threshold"],
        "presets": presets,
        "strangers": [_round(v) for v in calibrating],
        "lookalikes": [_round(v) for v in lookalikes],
        "known": [_round(v) for v in np.sort(known)],
        "known_correct": float(np.mean(seen["genuine_correct"])),
        "simulated": {"known": int(len(known)), "strangers": int(len(lookalikes)), "seed": 0},
        **({} if elsewhere is None else {"strangers_source": {
            k: v for k, v in elsewhere.items() if k != "scores"}}),
        **({} if known_there is None else {"known_source": {
            k: v for k, v in known_there.items() if k not in ("scores", "correct")}}),
    }
    no_face = [r["path"] for r in records if not r["crop"]]
    files = _model_files(
        names, stored, labels, usable, matcher, calibration, protocol, stage, network
    )
    when = _build_date()
    provenance = {
        "model": NAME,
        "title": TITLE,
        "source": {
            "dataset": "Labeled Faces in the Wild",
            "site": LFW_SITE,
            "folder": root.name,
            "people_listed": len(expected),
            "photos_listed": int(sum(expected.values())),
            "missing_people": sorted(missing_ok),
            "photos_read": len(photos),
            "photos_with_a_face": len(usable),
            "photos_without_a_face": no_face,
            "people": len(names),
        },
        "face_stage": {"detector": stage.detector, "alignment": stage.alignment,
                       "chip": stage.size, "subject": "the face nearest the centre"},
        "network": {"name": spec.name, "title": spec.title, "sha256": spec.digest(),
                    "licence": spec.licence, "flip_averaged": True},
        "built": when,
        "command": f"celebmodel build-lfw-model {root.name} --network {network}"
        + (f" --missing-ok {' '.join(sorted(missing_ok))}" if missing_ok else "")
        + (f" --strangers {Path(strangers).name}" if strangers else "")
        + (f" --known-elsewhere {Path(known_elsewhere).name}" if known_elsewhere else ""),
        "licence": LICENCE,
        "label_errors": errors,
    }
    target = Path(out) if out else folder()
    _write_model(target, files, provenance)
    log.info("built %s in %.0f s", target, time.perf_counter() - started)
    return target


def strangers_from_elsewhere(
    folder_path: str | Path, people: dict[str, int], matcher: Any, decision: Any, network: str,
) -> dict[str, Any]:
    """The decision values of photos of people not in LFW (``folder_path``, one folder per
    person; each photo's subject face, as for LFW's photos) against the whole gallery, sorted;
    with how many photos and people gave them. A folder named after an LFW person is refused:
    their photos would be counted as strangers the model should know."""
    from ..data.dataset import scan_dataset

    scan = scan_dataset(folder_path)
    inside = sorted(set(scan.items["label"]) & set(people))
    if inside:
        raise DatasetError(f"{scan.root}: {_few(inside)}: in LFW, so not strangers; photos of "
                           "people who are not in LFW only")
    records, embeddings = embed_photos(scan.root, list(scan.items["path"]), network=network)
    if not len(embeddings):
        raise DatasetError(f"{scan.root}: no face found in any photo; nothing was built")
    faces = [r["path"].split("/")[0] for r in records if r["crop"]]
    candidates = matcher.candidates(embeddings, k=2)
    return {
        "scores": np.sort(decision(candidates.features())),
        "folder": scan.root.name,
        "photos": len(faces),
        "people": len(set(faces)),
        "photos_without_a_face": len(records) - len(faces),
    }


def known_from_elsewhere(
    folder_path: str | Path, names: list[str], matcher: Any, decision: Any, network: str,
) -> dict[str, Any]:
    """The decision values of photos of the model's own people taken elsewhere
    (``folder_path``, one folder per person, named as in LFW; each photo's subject face) and
    whether the person named is theirs. A folder of someone the model does not know is
    refused: they would count as its people."""
    from ..data.dataset import scan_dataset

    scan = scan_dataset(folder_path)
    outside = sorted(set(scan.items["label"]) - set(names))
    if outside:
        raise DatasetError(f"{scan.root}: {_few(outside)}: not in the model (folders named as "
                           "LFW names its people only)")
    records, embeddings = embed_photos(scan.root, list(scan.items["path"]), network=network)
    if not len(embeddings):
        raise DatasetError(f"{scan.root}: no face found in any photo; nothing was built")
    faces = [r["path"].split("/")[0] for r in records if r["crop"]]
    candidates = matcher.candidates(embeddings, k=2)
    truth = np.array([names.index(face) for face in faces])
    return {
        "scores": decision(candidates.features()),
        "correct": candidates.people[:, 0] == truth,
        "folder": scan.root.name,
        "photos": len(faces),
        "people": len(set(faces)),
        "photos_without_a_face": len(records) - len(faces),
    }


def label_errors(
    embeddings: np.ndarray, labels: np.ndarray, names: list[str], paths: list[str]
) -> dict[str, Any]:
    """LFW's own label errors, which cap every result at low false-accept rates: the same
    photo under two names (faces of two people at least :data:`SAME_PHOTO` alike) and one
    person under two names (the same words in another order or spelling)."""
    unit = l2_normalize(embeddings)
    photos = []
    for start in range(0, len(unit), 2048):
        block = unit[start : start + 2048] @ unit.T
        rows, columns = np.nonzero(block >= SAME_PHOTO)
        for row, column in zip(rows + start, columns, strict=True):
            if column > row and labels[row] != labels[column]:
                photos.append([paths[row], paths[column], _round(block[row - start, column])])
    words: dict[tuple[str, ...], list[str]] = {}
    for name in names:
        words.setdefault(tuple(sorted(re.split(r"[_\-\s]+", name.lower()))), []).append(name)
    people = sorted(sorted(group) for group in words.values() if len(group) > 1)
    involved = sorted({p.split("/")[0] for pair in photos for p in pair[:2]}
                      | {name for group in people for name in group})
    return {"same_photo_two_names": photos, "one_person_two_names": people,
            "people_involved": involved, "same_photo_at": SAME_PHOTO}


def _protocol(
    embeddings: np.ndarray, labels: np.ndarray, left_out: list[int] | None = None
) -> dict[str, Any]:
    """The open-set protocol's figures of these faces, with the plain nearest-face baseline
    beside them (and the figures again without the people ``left_out``: those of LFW's label
    errors); a note instead when there are too few people for it (a test's tiny tree)."""
    from ..scoring.protocol import (
        DESCRIPTION,
        GALLERY_PEOPLE,
        LEARN_PEOPLE,
        nearest_face,
        normalised_decision,
        run_protocol,
    )

    people = len(np.unique(labels))
    found: dict[str, Any] = {"protocol": DESCRIPTION, "photos": len(labels), "people": people}
    if people < LEARN_PEOPLE + GALLERY_PEOPLE + 100:
        return {**found, "note": f"{people} people: too few for the protocol, which keeps "
                f"{LEARN_PEOPLE:,} for learning and {GALLERY_PEOPLE:,} for the gallery"}
    cleaned = {}
    if left_out:
        kept = ~np.isin(labels, left_out)
        cleaned = {"without_label_errors": {
            "people_left_out": len(left_out),
            "figures": run_protocol(embeddings[kept], labels[kept], normalised_decision),
        }}
    return {
        **found,
        "figures": run_protocol(embeddings, labels, normalised_decision),
        "baseline": run_protocol(embeddings, labels, nearest_face),
        **cleaned,
        "method": "flip-averaged embeddings, AS-norm against the gallery, logistic decision "
                  "(celebmodel.scoring.matching)",
        "baseline_method": "cosine similarity to the nearest gallery photo, same embeddings",
    }


def embed_photos(
    root: Path, photos: list[str], bar: BarFactory | None = None, network: str = NETWORK
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Each photo's face stage record and, for the photos that gave a face, the gallery
    models' embedding (flip-averaged), both through the cache training uses."""
    from ..faces.cache import cache_dir, embed_files, prepare
    from ..faces.network import FaceEmbedder
    from ..progress import quiet_bar

    bar = bar or quiet_bar
    records = prepare(root, photos, stage_of(network), cache_dir(), bar=bar)
    crops = [r["crop"] for r in records if r["crop"]]
    return records, embed_files(crops, FaceEmbedder(network, flip=True), bar=bar)


def protocol_figures(
    folder_path: str | Path, bar: BarFactory | None = None, network: str = NETWORK
) -> dict[str, Any]:
    """The open-set protocol (:mod:`celebmodel.scoring.protocol`) measured on any folder of LFW's
    layout (one folder per person), with the gallery models' method and the plain
    nearest-face baseline: what ``celebmodel evaluate lfw-public-figures --protocol
    open-set LFW_FOLDER`` prints."""
    from ..data.dataset import scan_dataset
    from ..scoring.protocol import nearest_face, normalised_decision, run_protocol

    scan = scan_dataset(folder_path)
    records, embeddings = embed_photos(scan.root, list(scan.items["path"]), bar, network)
    usable = [i for i, r in enumerate(records) if r["crop"]]
    people = list(scan.items["label"].iloc[usable])
    index = {name: i for i, name in enumerate(sorted(set(people)))}
    labels = np.array([index[p] for p in people], np.int64)
    return {
        "folder": str(scan.root),
        "photos": len(usable),
        "people": len(index),
        "trials": 10,
        "figures": run_protocol(embeddings, labels, normalised_decision),
        "figures_title": "this model's method (AS-norm + learned decision)",
        "baseline": run_protocol(embeddings, labels, nearest_face),
        "baseline_title": "nearest-face cosine similarity, same embeddings",
    }


def _round(value: float) -> float:
    """Six significant digits: rebuilding gives the same files even where the last bits of
    a floating-point sum differ between machines."""
    return float(f"{float(value):.6g}")


def _build_date() -> str:
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    when = (dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc) if stamp
            else dt.datetime.now(dt.timezone.utc))
    return when.date().isoformat()


def _model_files(
    names: list[str], stored: np.ndarray, labels: np.ndarray, usable: list[dict],
    matcher: Any, calibration: dict, protocol: dict, stage: FaceStage, network: str,
) -> dict[str, bytes]:
    """Every file of the model folder but the provenance, as bytes."""
    config = {
        "data_dir": "LFW", "backbone": network, "weights": "pretrained",
        "recipe": "improved", "faces": True, "detector": stage.detector,
        "image_size": stage.size,
        "run": {"n_celebrities": len(names), "n_photos": len(usable), "builtin": True,
                "scoring": "gallery"},
    }
    text = {
        "config.json": config,
        "labels.json": names,
        "status.json": {"state": "finished", "epochs": 0},
        "meta.json": {"name": TITLE, "notes": "Built into celebmodel: every person of "
                      "Labeled Faces in the Wild. Read-only: make your own copy to change it."},
        "calibration.json": calibration,
        "protocol.json": protocol,
    }
    files = {name: (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
             for name, data in text.items()}
    files["gallery.npz"] = npz_bytes({
        "embeddings": stored,
        "labels": labels.astype(np.int32),
        "paths": np.asarray([r["path"] for r in usable], dtype=str),
        "cohort_mean": matcher.gallery_mean_.astype(np.float32),
        "cohort_spread": matcher.gallery_spread_.astype(np.float32),
    })
    return files


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (what ``np.load`` reads) with fixed time stamps, so the same arrays always
    give the same bytes (``np.savez`` stamps each entry with the current time)."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(array), allow_pickle=False)
            archive.writestr(info, data.getvalue())
    return buffer.getvalue()


def _write_model(target: Path, files: dict[str, bytes], provenance: dict) -> None:
    """Write the folder beside ``target`` and swap it in: all files or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as partial:
        for name, data in files.items():
            (partial / name).write_bytes(data)
        provenance = {**provenance, "files": {n: file_sha256(partial / n) for n in sorted(files)}}
        (partial / "provenance.json").write_text(
            json.dumps(provenance, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
