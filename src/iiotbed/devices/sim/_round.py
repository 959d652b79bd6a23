"""``round(x, 6)`` and ``round(x, 3)`` of floats, bit for bit, at about half the cost.

``round(x, n)`` on a float goes through a correctly rounded decimal conversion (dtoa and
back), ~0.5 us: the model rounds every energy total, degradation reading and event time
it writes, a few hundred thousand times a simulated week. The shortcut here: with
``p = x * 10**n`` (one rounding) and ``k = round(p)`` (half to even), when ``p`` lies clearly
inside ``(k - 0.5, k + 0.5)`` the exact product rounds to ``k`` as well, and ``k / 10**n``
(one correctly rounded division) is the double nearest to ``k * 10**-n``, which is what
``round`` returns (it parses that decimal back). Anything else, a result of zero (its sign),
huge, infinite or NaN values, goes to ``round`` itself. Pinned by
``tests/devices/sim/test_round.py``.
"""

from __future__ import annotations

__all__ = ["round3", "round6"]

# |p| < 1e12: ulp(p) <= 2**-13, far below the 0.001 margin kept from a half
_LIMIT = 1e12
_MARGIN = 0.499


def round6(x: float) -> float:
    """``round(x, 6)`` for a float ``x``."""
    p = x * 1e6
    if -_LIMIT < p < _LIMIT:
        k = round(p)
        if k and -_MARGIN < p - k < _MARGIN:
            return k / 1e6
    return round(x, 6)


def round3(x: float) -> float:
    """``round(x, 3)`` for a float ``x``."""
    p = x * 1e3
    if -_LIMIT < p < _LIMIT:
        k = round(p)
        if k and -_MARGIN < p - k < _MARGIN:
            return k / 1e3
    return round(x, 3)
