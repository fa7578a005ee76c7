"""The public API: what ``celebmodel`` exports, and the README's example, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_dataset
from PIL import Image
from skimage import data as skdata

import celebmodel

ROOT = Path(__file__).resolve().parents[1]


def test_the_public_names_resolve_to_the_package_objects():
    from celebmodel.errors import CelebmodelError, ImageError, RunError
    from celebmodel.learning.evaluation import evaluate
    from celebmodel.learning.training import train
    from celebmodel.recognition.people import enroll
    from celebmodel.recognition.recognize import Recognizer

    assert set(celebmodel.__all__) >= {
        "train",
        "evaluate",
        "Recognizer",
        "enroll",
        "list_runs",
        "load_run",
        "Run",
        "TrainConfig",
        "CelebmodelError",
    }
    assert (celebmodel.train, celebmodel.evaluate) == (train, evaluate)
    assert (celebmodel.Recognizer, celebmodel.enroll) == (Recognizer, enroll)
    assert celebmodel.CelebmodelError is CelebmodelError
    assert issubclass(ImageError, CelebmodelError) and issubclass(RunError, CelebmodelError)
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        celebmodel.fit  # noqa: B018


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has lost its API example"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    """Five lines: train, read a metric, identify, enrol; in a folder made for them."""
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 6
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "photos", per_class=6)
    astronaut = Image.fromarray(skdata.astronaut())
    astronaut.save(tmp_path / "group.jpg")
    twin = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for i, name in enumerate(("ada1.jpg", "ada2.jpg")):
        twin.rotate(4 * i).save(tmp_path / name)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    from celebmodel.storage import runs_root

    run = scope["run"]
    assert run.state == "finished" and run.path.parent == runs_root()
    assert len(scope["faces"]) == 1 and {"label", "box", "known"} <= set(scope["faces"][0])
    assert run.labels()[-1] == "Ada_Lovelace"
    assert isinstance(run.metrics("test")["accuracy"], float)
