"""celebmodel: fine-tune, evaluate and use celebrity face recognisers.

The names a Python user needs, in one place::

    import celebmodel

    run = celebmodel.train("photos/", backbone="dlib128")     # a finished run directory
    print(run.metrics("test")["accuracy"])
    faces = celebmodel.Recognizer.from_run(run).identify("group.jpg")
    celebmodel.enroll(run, "Ada_Lovelace", ["ada1.jpg", "ada2.jpg"])

The heavy parts (TensorFlow, dlib) load on first use: every name is resolved lazily, so
``import celebmodel`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {  # public name -> (module, name in it)
    "train": ("learning.training", "train"),
    "evaluate": ("learning.evaluation", "evaluate"),
    "Recognizer": ("recognition.recognize", "Recognizer"),
    "enroll": ("recognition.people", "enroll"),
    "TrainConfig": ("config", "TrainConfig"),
    "Run": ("runs.run", "Run"),
    "list_runs": ("runs.run", "list_runs"),
    "load_run": ("runs.run", "load_run"),
    "load_image": ("data.images", "load_image"),
    "scan_dataset": ("data.dataset", "scan_dataset"),
    "CelebmodelError": ("errors", "CelebmodelError"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'celebmodel' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    return getattr(import_module(f".{module}", __name__), attribute)


__all__ = sorted(_LAZY)
