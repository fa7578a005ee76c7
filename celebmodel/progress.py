"""Progress bars the package reports through: ``tqdm`` on the console, quiet in library calls,
the page's own bars in the app (any callable that makes a tqdm-like bar, :data:`BarFactory`).

A training's stages, recorded in its run's ``status.json``, are :mod:`celebmodel.learning.stages`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

BarFactory = Callable[..., Any]  # (desc=stage key, total=..., unit=...) -> a tqdm bar


def quiet_bar(**options: Any) -> tqdm:
    """A bar that shows and records nothing (library calls without a run to report to)."""
    return tqdm(disable=True, **options)


def console_bar(**options: Any) -> tqdm:
    """A bar on standard error only (the command line's ``evaluate``)."""
    return tqdm(**options)
