"""The model's fast rounding equals ``round(x, n)`` bit for bit (sign of zero included)."""

from __future__ import annotations

import math
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from iiotbed.devices.sim._round import round3, round6


def _same(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


@settings(max_examples=1000, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float(x: float) -> None:
    assert _same(round6(x), round(x, 6))
    assert _same(round3(x), round(x, 3))


def test_halves_and_near_halves() -> None:
    # exact ties (k + 0.5) / 10**n with a dyadic x, and their float neighbours
    cases = [0.0078125, -0.0078125, 0.0625, 2.5e-6, 0.5e-6, 1.5e-6, 0.0005, 0.0015, 2.675,
             1e-7, -1e-7, 0.0, -0.0, 1e12, 1e6 + 0.5e-6, 123456.0000005]
    for i in range(1, 2000):
        cases.append(i / 128.0)
        cases.append((2 * i + 1) / 2e6)
        cases.append((2 * i + 1) / 2e3)
    for c in list(cases):
        cases.extend([math.nextafter(c, math.inf), math.nextafter(c, -math.inf)])
    for x in cases:
        assert _same(round6(x), round(x, 6)), x
        assert _same(round3(x), round(x, 3)), x


def test_model_like_values() -> None:
    rng = random.Random(7)
    for _ in range(100_000):
        x = rng.uniform(0.0, 10.0) ** rng.uniform(0.0, 7.0) * rng.choice((1.0, -1.0))
        assert _same(round6(x), round(x, 6)), x
        assert _same(round3(x), round(x, 3)), x
