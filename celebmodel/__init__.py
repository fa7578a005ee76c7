"""celebmodel: fine-tune, evaluate and use celebrity face recognisers.

The heavy parts (TensorFlow, dlib) load on first use: ``celebmodel.Recognizer`` and
``celebmodel.train_run`` are resolved lazily so that ``import celebmodel`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Recognizer": "recognize",
    "TrainConfig": "config",
    "train_run": "train",
    "evaluate_run": "evaluate",
    "scan_dataset": "data",
    "make_split": "data",
    "load_image": "data",
    "Run": "runs",
    "list_runs": "runs",
    "load_run": "runs",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'celebmodel' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_LAZY[name]}", __name__), name)


__all__ = sorted(_LAZY)
