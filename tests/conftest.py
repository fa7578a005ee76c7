"""Shared fixtures: tiny generated datasets and runs trained on them once per session.

Nothing here reads ``../shared``: every photo is made by the tests (or shipped by scikit-image).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data as skdata
from streamlit.testing.v1 import AppTest

from celebmodel.runs.run import Run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Three test workers (and their servers and trainings) share two cores: each process computes
# on one thread, so none spins waiting for a second core another holds. Subprocesses inherit it.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

# The keys every metrics_<subset>.json must hold (issue 2), written out, not imported.
METRIC_KEYS = {
    "accuracy",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "top5_accuracy",
    "per_class",
    "labels",
    "confusion_matrix",
    "subset",
    "n",
}

COLOURS = [(200, 40, 40), (40, 180, 40), (40, 40, 200)]


def make_dataset(root: Path, per_class: int = 10, size: int = 48, seed: int = 0) -> Path:
    """Three "celebrities" told apart by colour and texture, small enough to be tight crops."""
    rng = np.random.default_rng(seed)
    for c, colour in enumerate(COLOURS):
        folder = root / f"Celebrity_{'ABC'[c]}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0, 35, (size, size, 3))
            stripes = (np.arange(size) % (4 + 2 * c) < 2)[None, :, None] * 60
            pixels = np.clip(np.array(colour) + noise + stripes, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"photo_{i:02d}.jpg", quality=95)
    return root


def write_blank_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A valid bilevel PNG of width x height that is all zeros, streamed so it stays cheap."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def awkward_photos(colour: tuple[int, int, int] = COLOURS[0], size: int = 32) -> dict[str, bytes]:
    """Valid photos in every awkward encoding (alpha, 16-bit, CMYK, palette, animated GIF,
    EXIF rotation): each must be read, not refused."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    frames = [Image.new("RGB", (size, size), c) for c in (colour, (0, 0, 0))]
    cmyk = tuple(255 - v for v in colour) + (0,)
    return {
        "alpha.png": _encoded(Image.new("RGBA", (size, size), (*colour, 128)), "PNG"),
        "deep16.png": _encoded(Image.fromarray(np.full((size, size), 40000, np.uint16)), "PNG"),
        "cmyk.jpg": _encoded(Image.new("CMYK", (size, size), cmyk), "JPEG"),
        "palette.gif": _encoded(Image.new("RGB", (size, size), colour).convert("P"), "GIF"),
        "animated.gif": _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rotated.jpg": _encoded(Image.new("RGB", (size + 8, size), colour), "JPEG", exif=exif),
    }


def zip_bytes(photos: dict[str, Image.Image | bytes]) -> bytes:
    """A .zip of ``photos`` (name: a PIL image, saved as PNG, or the file's bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, photo in photos.items():
            if not isinstance(photo, bytes):
                content = io.BytesIO()
                photo.save(content, format="PNG")
                photo = content.getvalue()
            archive.writestr(name, photo)
    return buffer.getvalue()


def broken_photos(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    """Files no photo can be read from, with the problem the message must name."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = _encoded(Image.fromarray(noise), "JPEG", quality=95)  # half of it holds the header
    bomb = write_blank_bilevel_png(tmp_path / "bomb.png", 20_000, 20_000).read_bytes()
    return {
        "zero.jpg": (b"", "empty file"),
        "truncated.jpg": (good[: len(good) // 2], "cannot decode"),
        "text.jpg": (b"not a photo at all", "not an image"),
        "one_pixel.png": (_encoded(Image.new("RGB", (1, 1), COLOURS[0]), "PNG"), "too small"),
        "bomb.png": (bomb, "too large"),
    }


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Runs and caches of a test never land in the working tree."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("CELEBMODEL_RUNS", str(base / "runs"))
    monkeypatch.setenv("CELEBMODEL_DATA", str(base / "appdata"))


@pytest.fixture(autouse=True)
def _no_builtin(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The shipped built-in model stays out of a test unless the test asks for it (the
    ``shipped_builtin`` or ``tiny_builtin`` fixtures): a test of a fresh install without it,
    or of the first trained model, means exactly that."""
    from celebmodel.runs import builtin as builtin_model

    absent = tmp_path_factory.getbasetemp() / "no-builtin-model"
    monkeypatch.setattr(builtin_model, "folder", lambda: absent)


SHIPPED_BUILTIN = Path(__file__).resolve().parents[1] / "celebmodel" / "builtin"


@pytest.fixture
def shipped_builtin(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The built-in model as shipped in the package."""
    from celebmodel.runs import builtin as builtin_model

    shipped = SHIPPED_BUILTIN / builtin_model.NAME
    monkeypatch.setattr(builtin_model, "folder", lambda: shipped)
    return shipped


def tiny_lfw(root: Path) -> dict[str, int]:
    """A tiny tree in LFW's layout (``<Person>/<Person>_0001.jpg``): the astronaut (a real
    face), and small tight crops of scikit-image's other photos standing in for more people
    (small crops are taken whole as faces). The cameraman is left out: the stranger. Returns
    the list of people and photo counts, as ``lfw-names.txt`` has it."""
    rng = np.random.default_rng(0)

    def crops(pixels: np.ndarray, n: int) -> list[Image.Image]:
        image, out = Image.fromarray(pixels), []
        for _ in range(n):
            x, y = rng.integers(0, max(1, min(image.size) - 200), 2)
            out.append(image.crop((int(x), int(y), int(x) + 200, int(y) + 200)).resize((112, 112)))
        return out

    people = {
        "Astro_Naut": astronauts(5, seed=3),
        "Chelsea_Cat": crops(skdata.chelsea(), 4),
        "Coffee_Cup": crops(skdata.coffee(), 3),
        "Rocket_Launch": crops(skdata.rocket(), 2),
        "Hubble_Field": crops(skdata.hubble_deep_field(), 1),
        "Retina_Scan": crops(skdata.retina(), 2),
        "Coin_Tray": crops(np.stack([skdata.coins()] * 3, axis=-1), 1),
    }
    for person, photos in people.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for i, photo in enumerate(photos, start=1):
            photo.convert("RGB").save(root / person / f"{person}_{i:04d}.jpg", quality=92)
    return {person: len(photos) for person, photos in sorted(people.items())}


def write_names(people: dict[str, int], path: Path) -> Path:
    path.write_text("".join(f"{name}\t{count}\n" for name, count in people.items()))
    return path


@pytest.fixture(scope="session")
def tiny_builtin_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built-in model built by the real command from :func:`tiny_lfw`'s tree, once."""
    from celebmodel.interfaces.cli import main

    base = tmp_path_factory.mktemp("tiny-builtin")
    os.environ["CELEBMODEL_DATA"] = str(base / "appdata")
    names = write_names(tiny_lfw(base / "lfw"), base / "names.txt")
    out = base / "lfw-public-figures"
    assert (
        main(["build-lfw-model", str(base / "lfw"), "--out", str(out), "--names", str(names)]) == 0
    )
    return out


@pytest.fixture
def tiny_builtin(tiny_builtin_files: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny built-in model in the package's place."""
    from celebmodel.runs import builtin as builtin_model

    monkeypatch.setattr(builtin_model, "folder", lambda: tiny_builtin_files)
    return tiny_builtin_files


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "dataset")


def _train(tmp_path_factory: pytest.TempPathFactory, dataset: Path, name: str, **settings):
    from celebmodel.config import TrainConfig
    from celebmodel.learning.training import train_run

    base = tmp_path_factory.getbasetemp()
    os.environ["CELEBMODEL_DATA"] = str(base / "appdata")
    config = TrainConfig(data_dir=str(dataset), **settings)
    return train_run(config, base / "runs" / name)


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path):
    """A finished VGG16 run (random weights, 32 px, no face stage): the classic code path."""
    return _train(
        tmp_path_factory,
        tiny_dataset,
        "cnn",
        backbone="vgg16",
        weights="none",
        recipe="improved",
        image_size=32,
        max_epochs=3,
        faces=False,
    )


@pytest.fixture(scope="session")
def dlib_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path):
    """A finished dlib128 run: the tiny photos have no detectable face, so they go whole."""
    return _train(tmp_path_factory, tiny_dataset, "dlib", backbone="dlib128", max_epochs=20)


# Pages under AppTest -------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty runs folder and data folder of this test only."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    runs.mkdir()
    monkeypatch.setenv("CELEBMODEL_RUNS", str(runs))
    monkeypatch.setenv("CELEBMODEL_DATA", str(data))
    return runs, data


def add_run(runs: Path, source: Run, name: str) -> Run:
    shutil.copytree(source.path, runs / name, ignore=shutil.ignore_patterns(".lock"))
    return Run(runs / name)


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)


def open_page(at: AppTest, page: str | None = None) -> AppTest:
    """Run the app (on ``page``) and fail on any exception element: users see no traceback."""
    if page is None:
        at.run()
    else:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def group_key(at: AppTest, what: str, number: int) -> str:
    """An album group widget's key as the page makes it (``pages.ui.group_widget_key``)."""
    version = 0  # AppTest's session state has no ``get``
    if "groups-version" in at.session_state:
        version = at.session_state["groups-version"]
    return f"group-{what}-{number}-v{version}"


def texts(at: AppTest) -> str:
    """All visible text of the current page, for phrase checks."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(e.value) for e in at.error] + [str(e.value) for e in at.success]
    return "\n".join(parts)


def fill_disk_at(monkeypatch: pytest.MonkeyPatch, module, name: str = "model.keras") -> None:
    """``module``'s ``os.replace`` (:mod:`celebmodel.storage`'s: every write goes through it)
    fails with a full disk when it would put ``name`` in place: the moment a run's files,
    written beside it, become the run."""
    real = os.replace

    def replace(source, target, **kwargs):
        if Path(target).name == name:
            raise OSError(28, "No space left on device (simulated)")
        return real(source, target, **kwargs)

    monkeypatch.setattr(module.os, "replace", replace)


# Real faces (scikit-image's photos) --------------------------------------------------------


def jpeg(image: Image.Image) -> bytes:
    """A photo as the JPEG bytes an upload carries."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def astronauts(n: int, seed: int, mirrored: bool = False) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(skdata.astronaut())
    if mirrored:
        base = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    photos = []
    for _ in range(n):
        photo = base.rotate(rng.uniform(-10, 10))
        photo = ImageEnhance.Brightness(photo).enhance(rng.uniform(0.8, 1.2))
        x, y = rng.integers(0, 50, 2)
        photos.append(photo.crop((x, y, x + 430, y + 430)))
    return photos


def cameramen(n: int, seed: int, turn: float = 6, light: float = 0.15) -> list[Image.Image]:
    """The cameraman turned up to ``turn`` degrees and lit 1 ± ``light``. Grouping tests
    use ``turn=2, light=0.05``: the astro run's gallery (shifted copies of one photo) is far
    tighter than real photos of a person, and so is the cut it gives."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(np.stack([skdata.camera()] * 3, axis=-1))
    return [
        ImageEnhance.Brightness(base.rotate(rng.uniform(-turn, turn))).enhance(
            rng.uniform(1 - light, 1 + light)
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def astro(tmp_path_factory):
    """A dlib128 run that knows the astronaut (and a cat, as small tight crops): the
    cameraman is a stranger to it."""
    from celebmodel.config import TrainConfig
    from celebmodel.learning.training import train_run

    base = tmp_path_factory.mktemp("astro")
    os.environ["CELEBMODEL_DATA"] = str(base / "appdata")
    dataset = base / "dataset"
    (dataset / "Astronaut").mkdir(parents=True)
    (dataset / "Cat").mkdir()
    for i, photo in enumerate(astronauts(10, seed=1)):
        photo.save(dataset / "Astronaut" / f"{i}.jpg")
    cat = Image.fromarray(skdata.chelsea())
    for i in range(10):
        cat.crop((100 + 5 * i, 20, 300 + 5 * i, 220)).resize((112, 112)).save(
            dataset / "Cat" / f"{i}.jpg"
        )
    config = TrainConfig(data_dir=str(dataset), backbone="dlib128", max_epochs=60)
    return train_run(config, base / "run")


def write_video(
    path: Path,
    scenes: list[tuple[float, tuple[int, int, int], Image.Image | None]],
    fps: int = 10,
    size: tuple[int, int] = (640, 360),
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    gop: int | None = None,
) -> Path:
    """A video encoded with PyAV: each scene is (seconds, background colour, face photo or
    None), the face pasted at the left third, 240 pixels tall, in every frame of its scene;
    ``gop``: frames between key frames (where a reading can seek to)."""
    import av

    width, height = size
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for seconds, colour, face in scenes:
            canvas = Image.new("RGB", size, colour)
            if face is not None:
                side = min(240, height - 20)
                canvas.paste(face.convert("RGB").resize((side, side)), (width // 3 - side // 2, 10))
            frame = av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
