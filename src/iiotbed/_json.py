"""The one NaN -> null rule: JSON has no NaN or infinity, so they travel as ``null``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["finite", "finite_map"]

T = TypeVar("T")


def finite(x: T) -> T | None:
    """``x``, or None when it is a NaN or an infinity (anything else passes unchanged)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def finite_map(values: Mapping[str, T]) -> dict[str, T | None]:
    """A copy of ``values`` with every NaN or infinity as None."""
    return {k: finite(v) for k, v in values.items()}
