"""Photos as the pages show them: annotated display copies, face thumbnails, face titles.

What goes to the browser is a display-sized JPEG, never the full-resolution photo: a
12-megapixel PNG is 20 MB and a second to encode.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..albums.album import Album
from ..data.dataset import name_matches
from ..data.images import load_image
from ..faces.cache import cache_dir, prepare
from ..faces.detection import face_stage
from ..recognition.people import ADDED, face_thumbnail
from ..runs.run import Run

KNOWN_COLOUR = (46, 160, 67)
UNKNOWN_COLOUR = (230, 126, 34)
SELECTED_COLOUR = (0, 114, 178)
DISPLAY_MAX_SIDE = 1460  # Streamlit's widest image: anything larger it decodes and re-encodes
LABELLED_SIDE = 400  # smaller photos, shown at their own size, carry face numbers only
TAKEN_SIDE = 400  # the several-faces gallery on Train: six photos to a row


def face_title(face: dict[str, Any]) -> str:
    """The headline of a face: the person's name, or ``Unknown`` (a video's unknown faces
    carry the name of the unknown person they are, ``title``)."""
    return face.get("title") or (face["name"] if face["known"] else "Unknown")


def search_names(names: list[str], query: str) -> list[str]:
    """Names containing every word of ``query`` (any case, any order), shortest first."""
    found = [name for name, hit in zip(names, name_matches(query, names), strict=True) if hit]
    return sorted(found, key=lambda name: (len(name), name))


def roster_matches(roster: pd.DataFrame, query: str, kind: str = "all") -> pd.DataFrame:
    """The People page's rows: those whose name or label holds every word of ``query``, of
    one ``kind`` (``all``, ``added``, ``removed``), in the roster's order."""
    chosen = roster
    if kind == "added":
        chosen = chosen[chosen["kind"] == "added"]
    elif kind == "removed":
        chosen = chosen[chosen["removed"]]
    return chosen[name_matches(query, list(chosen["name"]), list(chosen["label"]))]


def roster_table(rows: pd.DataFrame, lfw: bool, removed: bool = True) -> pd.DataFrame:
    """People as a table: name, photos, trained (or from LFW) or added, and removed (when
    anyone of the model is); for an LFW gallery (no photos shipped) a link to each LFW
    person's page. Blanks are empty strings: the table shows a missing value as "None"."""
    from ..runs.builtin import person_page

    table = pd.DataFrame({"name": rows["name"], "photos": rows["photos"], "kind": rows["kind"]})
    if removed:
        table["removed"] = rows["removed"].map({True: "removed", False: ""})
    if lfw:
        table["LFW page"] = [
            person_page(label) if kind != "added" else ""
            for label, kind in zip(rows["label"], rows["kind"], strict=True)
        ]
    return table


def group_problem(exc: Exception) -> str:
    """An album groups file's error as the page says it: the problem, without the path of a
    file the user never chose (the command line keeps it)."""
    where, _, problem = str(exc).partition(": ")
    return problem if where.endswith(".groups.npz") and problem else str(exc)


def finished_words(run: Any) -> str:
    """What a finished run in the runs list is: trained here, or a copy of another model."""
    if run.copied_from:
        return ("A copy of another model, not trained here: add, rename or remove its people "
                "on People.")
    return "Training finished and the model was evaluated on the test photos."


def skipped_lines(skipped: list[dict[str, str]]) -> list[tuple[str, str]]:
    """A page message for each photo left out of an addition, naming it and why."""
    return [("warning", f"Skipped {item['path']}: {item['reason']}") for item in skipped]


def percent_pair(value: float, needed: float, reached: bool) -> tuple[str, str]:
    """``value`` and ``needed`` as percentages with just enough decimals that they read the
    way the decision went (never "92% (needs 92%)" for a face that fell short, nor "100%"
    for less)."""
    for decimals in range(0, 6):
        shown = f"{value:.{decimals}%}", f"{needed:.{decimals}%}"
        a, b = round(value * 100, decimals), round(needed * 100, decimals)
        certain = (value < 1 and a >= 100) or (needed < 1 and b >= 100)  # "100%" for less
        if not certain and (a >= b) == reached and (a != b or reached):
            return shown
    # the same step of the stranger scores (or a value rounded past it): the decision, made
    # on the model's own scale, still reads from the numbers shown
    value = max(value, needed) if reached else min(value, needed - 5e-9)
    return f"{value:.6%}", f"{needed:.6%}"


def short_of_certain(value: float) -> str:
    """A percentage with one decimal, or as many more as it takes not to read "100%" for less
    (a threshold past every measured stranger asks for 99.997%, not for certainty)."""
    for decimals in range(1, 6):
        if value >= 1 or round(value * 100, decimals) < 100:
            return f"{value:.{decimals}%}"
    return f"{value:.6%}"


def confidence_needed(recognizer: Any, threshold: float) -> float | None:
    """The match confidence a threshold on the model's own scale asks for; ``None`` for a run
    trained before stranger scores were kept (similarity decides there)."""
    value = recognizer.match_confidence(threshold)
    return None if value is None else float(value)


def face_details(face: dict[str, Any], recognizer: Any, threshold: float) -> str:
    """The line under the headline: the match confidence against what is needed, the raw
    similarity, and for an unknown face the closest person (whose face is closest)."""
    needed = confidence_needed(recognizer, threshold)
    closest = f"closest: {face['nearest_name']} · " if not face["known"] else ""
    if face.get("match_confidence") is None or needed is None:  # similarity decides
        from ..scoring.open_set import similarity

        value, need = percent_pair(face["similarity"], float(similarity(threshold)),
                                   face["known"])
        line = f"{closest}similarity {value} (needs {need})"
        if face.get("match_confidence") is not None:
            line += f" · match confidence {face['match_confidence']:.0%}"
        return line
    value, need = percent_pair(face["match_confidence"], needed, face["known"])
    return (f"{closest}match confidence {value} (needs {need}) · similarity "
            f"{face['similarity']:.0%}")


def top_k_line(face: dict[str, Any]) -> str:
    """The most likely people of a known face, on one line (text: a grid per face costs the
    browser more than the rest of the result), in the order of the numbers shown: class
    probabilities for a trained run, else the similarity of each one's closest photo."""
    if not face["top_k"]:
        return ""
    if "probability" in face["top_k"][0]:
        words = [f"{t['name']} {t['probability']:.0%}" for t in face["top_k"]]
        return "likely (probability): " + " · ".join(words)
    words = [f"{t['name']} {t['similarity']:.0%}" for t in face["top_k"]]
    return "likely (similarity of the closest photo): " + " · ".join(words)


def evidence_line(same: list[dict[str, Any]], other: list[dict[str, Any]]) -> str:
    """"Looks most like these 3 photos of X (similarity 93% / 91% / 90%); next: Y 41%"."""
    words = " / ".join(f"{e['similarity']:.0%}" for e in same)
    which = "this photo" if len(same) == 1 else f"these {len(same)} photos"
    line = f"Looks most like {which} of {same[0]['name']} (similarity {words})"
    if other:
        line += f"; next: {other[0]['name']} {other[0]['similarity']:.0%}"
    return line


def evidence_links(items: list[dict[str, Any]]) -> str:
    """Evidence of the built-in model as Markdown: each LFW photo's file name and similarity,
    and a link to each person's page on the LFW site (no photo is shipped)."""
    lines, linked = [], set()
    for item in items:
        photo = item.get("photo") or item["path"] or "(added later)"
        text = f"`{photo}` similarity {item['similarity']:.0%}"
        if item.get("link") and item["label"] not in linked:
            text += f" · [{item['name']} on the LFW site]({item['link']})"
            linked.add(item["label"])
        lines.append(f"- {text}")
    return "\n".join(lines)


PRESET_MEANING = {
    "gallery": "Measured on this model by leaving each person out of it in turn (strangers) "
    "and holding out one photo at a time (known faces).",
    "elsewhere": "Strangers: {source}, none of them known to the model; look-alikes: each of "
    "its own people left out in turn. Known faces: one photo held out at a time.",
    "classifier": "Measured on the model's own validation faces; strangers are each of them "
    "scored with their own person left out. Balanced is the calibrated value.",
}


def preset_words(name: str, option: dict[str, Any]) -> str:
    """What a preset means on this model, in words."""
    parts = []
    if option.get("known_elsewhere_named") is not None:  # what users bring, first
        parts.append(
            f"names {_share(option['known_elsewhere_named'])} of its people's photos from "
            f"elsewhere ({_share(option['known_elsewhere_wrong'])} under a wrong name"
            + (f"; {_share(option['known_named'])} of LFW's own)"
               if option.get("known_named") is not None else ")")
        )
    elif option.get("known_named") is not None:
        parts.append(f"names {_share(option['known_named'])} of known faces")
    measured = option.get("strangers_measured") or 0
    if option.get("strangers_named") is not None and option["strangers_named"] * measured <= 0.5:
        parts.append(f"none of the {measured:,} strangers measured")
    elif option.get("strangers_named") is not None:
        parts.append(f"{_share(option['strangers_named'])} of strangers wrongly")
    if option.get("lookalikes_named") is not None:
        parts.append(f"{_share(option['lookalikes_named'])} of look-alikes")
    return f"{name}: " + (", ".join(parts) if parts else "the calibrated threshold")


def _share(value: float) -> str:
    """A share as it reads: one decimal near the ends (4.6%, 99.5%: never "100%" for less)."""
    return f"{value:.1%}" if value < 0.1 or value > 0.99 else f"{value:.0%}"


def preset_help(scoring: str, calibration: dict[str, Any]) -> str:
    """How a model's presets were measured: by which strangers."""
    source = calibration.get("strangers_source")
    if scoring == "gallery" and source:
        return PRESET_MEANING["elsewhere"].format(
            source=f"{source['photos']:,} photos of {source['people']:,} "
            f"{'person' if source['people'] == 1 else 'people'} from other sources than the "
            "model's own photos"
        )
    return PRESET_MEANING.get(scoring, PRESET_MEANING["classifier"])


def looser(scoring: str, threshold: float, balanced: float) -> bool:
    """Whether ``threshold`` names more faces than Balanced does."""
    if scoring == "gallery":
        return threshold < balanced - 1e-9
    return threshold > balanced + 1e-9


def needs_words(recognizer: Any, threshold: float) -> str:
    """What a threshold asks of a face, in words."""
    needed = confidence_needed(recognizer, threshold)
    if needed is not None:
        return f"match confidence at least {short_of_certain(needed)}"
    from ..scoring.open_set import similarity

    return f"similarity at least {float(similarity(threshold)):.0%}"


def preset_effect(faces: list[dict[str, Any]], recognizer: Any, options: dict) -> str:
    """What the presets change on these faces: which would be named under each, or that they
    all give the same answers here."""
    if not faces:
        return ""
    named = {
        name: sum(recognizer.is_known(face["score"], option["threshold"]) for face in faces)
        for name, option in options.items()
    }
    if len(set(named.values())) == 1:
        which = "this face" if len(faces) == 1 else f"these {len(faces)} faces"
        return f"Every preset gives the same answers on {which}."
    return "Faces named under each preset here: " + ", ".join(
        f"{name} {count} of {len(faces)}" for name, count in named.items()
    ) + "."


def display_copy(pixels: np.ndarray) -> tuple[Image.Image, float]:
    """The photo sized for the page: at most :data:`DISPLAY_MAX_SIDE` long (a small one at its
    own size: enlarged, it would only blur); and the scale from the original."""
    image = Image.fromarray(pixels)
    scale = min(1.0, DISPLAY_MAX_SIDE / max(image.size))
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        factor = int(1 / scale) if scale < 1 else 1  # shrink by a whole factor first: cheap
        small = image.reduce(factor) if factor > 1 else image
        image = small.resize(size, Image.Resampling.BILINEAR)
    return image.convert("RGB"), scale


def jpeg(image: Image.Image, quality: int = 85) -> bytes:
    """A photo encoded for the browser (a 12-megapixel PNG is 20 MB and a second to encode)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def draw_faces(
    image: Image.Image,
    faces: list[dict[str, Any]],
    scale: float = 1.0,
    selected: int | None = None,
    numbered: bool = True,
) -> Image.Image:
    """Numbered boxes with the name inside each (green known, orange unknown, blue and thicker
    the selected one), drawn on ``image`` in place; ``scale`` maps boxes to its pixels
    (``numbered=False``: the name alone). On a
    photo under :data:`LABELLED_SIDE` the number alone: a name would hide the face, and the
    cards under the photo name each number."""
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 300))
    for number, face in enumerate(faces, start=1):
        x, y, w, h = (round(v * scale) for v in face["box"])
        colour = KNOWN_COLOUR if face["known"] else UNKNOWN_COLOUR
        thick = width
        if selected == number:
            colour, thick = SELECTED_COLOUR, 2 * width
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=thick)
        text = (f"{number}. {face_title(face)}" if max(image.size) >= LABELLED_SIDE
                else str(number))
        if not numbered:  # a video's frame: the names are the people's on its timeline
            text = face_title(face)
        size = max(11, min(round(w / 7), round(max(image.size) / 40)))
        font = ImageFont.load_default(size=size)
        while size > 9 and draw.textlength(text, font=font) > max(w - 2 * thick, 40):
            size -= 1  # the label fits inside the box (or at least 40 px of it)
            font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        inside_y = y + thick
        draw.rectangle(
            [x, inside_y, x + min(w, right - left + 2 * thick), inside_y + bottom - top + thick],
            fill=colour,
        )
        draw.text((x + thick, inside_y + thick // 2 - top), text, fill=(255, 255, 255), font=font)
    return image


def annotate(
    pixels: np.ndarray, faces: list[dict[str, Any]], selected: int | None = None
) -> Image.Image:
    """A display-sized copy of the photo with every face boxed, numbered and named."""
    image, scale = display_copy(pixels)
    return draw_faces(image, faces, scale, selected)


def face_crop(pixels: np.ndarray, box: list[int]) -> Image.Image:
    """The face's box cut out of the photo, for a thumbnail beside its chart."""
    x, y, w, h = box
    return Image.fromarray(pixels[max(0, y) : y + h, max(0, x) : x + w])


def identify_photo(
    recognizer: Any, content: bytes, name: str, threshold: float | None = None
) -> dict[str, Any]:
    """Identify the faces of one uploaded photo, timed, with the annotated picture as JPEG.

    The upload is decoded once; the picture sent to the browser is a display-sized copy.
    Raises :class:`celebmodel.errors.ImageError` naming ``name`` when the bytes are no image.
    """
    started = time.perf_counter()
    pixels = load_image(content, name=name)
    faces = recognizer.identify(pixels, threshold=threshold)
    seconds = time.perf_counter() - started
    faces.sort(key=lambda face: (face["box"][0], face["box"][1]))  # numbered left to right
    return {
        "pixels": pixels,
        "size": (pixels.shape[1], pixels.shape[0]),
        "annotated": jpeg(annotate(pixels, faces)),
        "faces": faces,
        "seconds": seconds,
    }


def photo_size(content: bytes) -> str:
    """``4000×3000, 3.9 MB`` from the header alone (for the spinner while it works)."""
    megabytes = f"{len(content) / 1e6:.1f} MB"
    try:
        with Image.open(io.BytesIO(content)) as image:
            return f"{image.width}×{image.height}, {megabytes}"
    except Exception:  # noqa: BLE001 (only a label: the real decode names the problem)
        return megabytes


def thumbnail(image: Image.Image, side: int = 96) -> Image.Image:
    """A square-ish small copy for tables and strips."""
    small = image.copy()
    small.thumbnail((side, side))
    return small


def album_thumbnails(
    album: Album, photos: Sequence[tuple[str, Any]], side: int = 64
) -> list[Image.Image]:
    """One small face per row of ``album``, in its row order: each photo decoded once for
    all its faces (photos without a face, or unreadable, are not opened again)."""
    sources = dict(photos)
    thumbs = []
    for name, boxes in album.rows.groupby("photo", sort=False)["box"]:
        pixels = load_image(sources[name], name=name)
        thumbs += [thumbnail(face_crop(pixels, box), side) for box in boxes]
    return thumbs


def album_table(album: Album, thumbs: list[Image.Image]) -> pd.DataFrame:
    """The album as the Identify page's table, one row per face: its thumbnail (inlined), the
    name shown (or Unknown), the closest person, the match confidence, the similarity and the
    group."""
    table = album.rows[["photo", "face", "similarity", "known", "group"]].copy()
    table.insert(0, "thumbnail", [data_uri(thumb) for thumb in thumbs])
    table.insert(3, "name", [face_title(face) for face in album.faces])
    table.insert(4, "closest", album.rows["nearest_name"])
    table.insert(5, "match confidence", album.rows["match_confidence"])
    return table


def data_uri(image: Image.Image) -> str:
    """A small image inlined for a table cell (``st.column_config.ImageColumn``)."""
    import base64

    return "data:image/jpeg;base64," + base64.b64encode(jpeg(image, 80)).decode()


def evidence_image(run: Run, path: str) -> Image.Image | None:
    """The face behind a piece of evidence: the aligned crop of a training photo, or the kept
    face of a person added later; ``None`` when the photo was not kept."""
    if not path:
        return None
    if path.startswith(ADDED):
        return face_thumbnail(run, path)
    return crop_for(run, path)


def taken_face(run: Run, path: str, box: list[int] | None = None) -> Image.Image:
    """A dataset photo with several faces, display-sized, the face training took boxed:
    ``box`` as ``faces.csv`` recorded it, else as the face cache holds it (runs from before
    boxes were recorded; nothing is detected again when the cache has it)."""
    pixels = load_image(run.photo_path(path), name=path)
    if box is None:
        config = run.config()
        box = prepare(config.data_dir, [path], face_stage(config), cache_dir())[0].get("box")
    image = Image.fromarray(pixels)
    scale = min(1.0, TAKEN_SIDE / max(image.size))  # a gallery cell, not a full view
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    if box is None:
        return image
    return draw_faces(image, [{"box": box, "known": True, "name": "taken"}], scale)


def crop_for(run: Run, path: str) -> Image.Image | None:
    """The aligned crop the model saw for a dataset photo, through the run's own face stage.

    Uses the face cache (what training wrote), detecting again only when it was cleared.
    """
    config = run.config()
    record = prepare(config.data_dir, [path], face_stage(config), cache_dir())[0]
    if not record.get("crop"):
        return None
    return Image.open(record["crop"]).convert("RGB")
