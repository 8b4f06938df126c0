"""Training that has diverged: the check of a result's numbers, and the error that stops a stage.

A NaN or infinite loss poisons every later update and checkpoint, so a stage stops at
the first iteration that reports one, before it is saved: the last checkpoint on disk
is then the last good one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping


class NonFiniteError(ValueError):
    """A loss or value of a training stage became NaN or infinite."""


def non_finite(values: Mapping, prefix: str = "") -> list[tuple[str, float]]:
    """(path, value) of every NaN or infinite number in `values`, nested mappings included
    (paths joined by '/', under `prefix`)."""
    found = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += non_finite(value, f"{path}/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
            found.append((path, float(value)))
    return found


def describe(found: list[tuple[str, float]]) -> str:
    """'critic_loss = nan' (and how many more), for an error message."""
    (name, value), more = found[0], len(found) - 1
    return f"{name} = {value}" + (f" (and {more} more)" if more else "")
