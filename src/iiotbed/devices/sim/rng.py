"""Seeded random streams: one numpy ``Generator`` per named stochastic source.

A stream depends only on (seed, replication, name), so a source draws the same numbers in
a baseline and an upgrade scenario (common random numbers) whatever other sources exist.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from itertools import chain, repeat

from numpy.random import PCG64, Generator, SeedSequence

from iiotbed.scenario import Dist

__all__ = ["BATCH", "Sampler", "Uniforms", "make_generator"]

BATCH = 256  # draws per numpy call: one call per 256 values keeps per-draw cost low


def make_generator(seed: int, replication: int, name: str) -> Generator:
    """The generator of the source ``name`` in replication ``replication``."""
    key = (replication, zlib.crc32(name.encode()))
    return Generator(PCG64(SeedSequence(entropy=seed, spawn_key=key)))


def _stream(batch: Callable[[], list[float]]) -> Callable[[], float]:
    """The next value of the batches ``batch()`` returns one after the other, as a C-level
    callable (an iterator's ``__next__``: no Python frame per draw); a batch is drawn when
    the previous one is used up, as a loop over ``batch()`` would."""
    return chain.from_iterable(iter(batch, None)).__next__


class Uniforms:
    """Uniform draws on [0, 1) from one stream, fetched in batches.

    ``draw()`` (hot paths) and calling the object give the same stream.
    """

    __slots__ = ("_gen", "draw")

    def __init__(self, gen: Generator) -> None:
        self._gen = gen
        self.draw = _stream(self._batch)

    def _batch(self) -> list[float]:
        # a Python list iterates faster than a numpy array yields scalars
        out: list[float] = self._gen.random(BATCH).tolist()
        return out

    def __call__(self) -> float:
        return self.draw()


class Sampler:
    """Draws of a scenario :class:`Dist` from one stream, in batches.

    Values below ``floor`` (default: the distribution's lower bound, at least 0 for
    durations) are clipped to it, so a duration is never negative. ``draw()`` (hot paths)
    and calling the object give the same stream.
    """

    __slots__ = ("_dist", "_fixed", "_floor", "_gen", "draw", "mean")

    def __init__(self, gen: Generator, dist: Dist, *, floor: float | None = 0.0) -> None:
        self._gen = gen
        self._dist = dist
        lb = dist.lower_bound()
        self._floor = lb if floor is None else max(lb, floor)
        self.mean = dist.expected
        self._fixed: float | None = None
        degenerate = (dist.dist in ("lognormal", "gamma") and not dist.cv) or (
            dist.dist == "normal" and not dist.sd
        )
        if dist.dist == "fixed" or degenerate:
            self._fixed = max(self._floor, dist.expected)
        self.draw: Callable[[], float] = (
            _stream(self._batch) if self._fixed is None else repeat(self._fixed).__next__)

    def __call__(self) -> float:
        return self.draw()

    def _batch(self) -> list[float]:
        d, g, n = self._dist, self._gen, BATCH
        if d.dist == "exponential":
            assert d.mean is not None
            arr = g.exponential(d.mean, n)
        elif d.dist == "normal":
            assert d.mean is not None and d.sd is not None
            arr = g.normal(d.mean, d.sd, n)
        elif d.dist == "lognormal":
            assert d.mean is not None and d.cv is not None
            s2 = math.log1p(d.cv * d.cv)
            arr = g.lognormal(math.log(d.mean) - s2 / 2, math.sqrt(s2), n)
        elif d.dist == "gamma":
            assert d.mean is not None and d.cv is not None
            k = 1.0 / (d.cv * d.cv)
            arr = g.gamma(k, d.mean / k, n)
        elif d.dist == "weibull":
            assert d.shape is not None and d.scale is not None
            arr = d.scale * g.weibull(d.shape, n)
        elif d.dist == "uniform":
            assert d.low is not None and d.high is not None
            arr = g.uniform(d.low, d.high, n)
        else:  # triangular
            assert d.low is not None and d.mode is not None and d.high is not None
            arr = g.triangular(d.low, d.mode, d.high, n)
        if math.isfinite(self._floor):
            arr = arr.clip(min=self._floor)
        out: list[float] = arr.tolist()
        return out
