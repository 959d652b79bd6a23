"""Tag values that emit a Sample only when they change, and the shared model context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import simpy

from iiotbed.devices.sim._rng import Sampler, Uniforms, make_generator
from iiotbed.devices.sim.calendar import ProductionCalendar
from iiotbed.scenario import Dist, Scenario
from iiotbed.telemetry import Record, Sample

__all__ = ["Context", "Counter", "Signal"]


@dataclass(slots=True)
class Context:
    """What every model part shares: the clock, the sink, the scenario, the streams."""

    env: simpy.Environment
    sink: Callable[[Record], None]
    scenario: Scenario
    replication: int
    calendar: ProductionCalendar

    def sampler(self, name: str, dist: Dist, *, floor: float | None = 0.0) -> Sampler:
        gen = make_generator(self.scenario.run.seed, self.replication, name)
        return Sampler(gen, dist, floor=floor)

    def uniforms(self, name: str) -> Uniforms:
        return Uniforms(make_generator(self.scenario.run.seed, self.replication, name))


class Signal:
    """One tag of one asset; emits its initial value now and then every change."""

    __slots__ = ("asset", "env", "sink", "tag", "unit", "value")

    def __init__(
        self, ctx: Context, asset: str, tag: str, value: float | int | str, unit: str | None = None
    ) -> None:
        self.env = ctx.env
        self.sink = ctx.sink
        self.asset = asset
        self.tag = tag
        self.unit = unit
        self.value = value
        self.sink(Sample(self.env.now, asset, tag, value, unit))

    def set(self, value: float | int | str) -> None:
        if value != self.value:
            self.value = value
            self.sink(Sample(self.env.now, self.asset, self.tag, value, self.unit))


class Counter(Signal):
    """A monotonic count (UNECE C62)."""

    __slots__ = ()

    def __init__(self, ctx: Context, asset: str, tag: str) -> None:
        super().__init__(ctx, asset, tag, 0, "C62")

    def inc(self, n: int = 1) -> None:
        self.value = v = int(self.value) + n
        self.sink(Sample(self.env.now, self.asset, self.tag, v, self.unit))
