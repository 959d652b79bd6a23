"""Random streams: draws come batch after batch from the source's own numpy generator."""

from __future__ import annotations

import math

from iiotbed.devices.sim.rng import BATCH, Sampler, Uniforms, make_generator
from iiotbed.scenario import Dist


def test_uniforms_are_the_generator_batches_in_order() -> None:
    u = Uniforms(make_generator(7, 1, "a/quality"))
    ref = make_generator(7, 1, "a/quality")
    expected = [x for _ in range(3) for x in ref.random(BATCH).tolist()]
    got = [u() if i % 2 else u.draw() for i in range(3 * BATCH)]
    assert got == expected


def test_sampler_clips_at_its_floor_and_fixed_never_draws() -> None:
    d = Dist(dist="normal", mean=0.0, sd=1.0)
    s = Sampler(make_generator(7, 0, "x"), d, floor=0.0)
    ref = make_generator(7, 0, "x")
    expected = [max(v, 0.0) for _ in range(2) for v in ref.normal(0.0, 1.0, BATCH).tolist()]
    assert [s.draw() for _ in range(2 * BATCH)] == expected
    fixed = Sampler(make_generator(7, 0, "y"), Dist(dist="fixed", value=3.0))
    assert {fixed(), fixed.draw(), fixed()} == {3.0} and not math.isnan(fixed.mean)
