"""How many cores work may use: this process's share of the machine, and numpy's BLAS held to
one thread where its spinning threads would take the cores of the next step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from threadpoolctl import ThreadpoolController


def workers_available() -> int:
    """The cores this process may use (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread inside the block. After each call its threads spin for a
    while, taking the cores that the detector and the face network need next; one photo's
    products with a gallery are small (identify with the built-in model: 55 ms to 38 ms on 2
    cores, ``bench/public_figures.py``)."""
    with _threadpools().limit(limits=1, user_api="blas"):
        yield
