"""Units flowing through the line, the buffers between stages and the maintenance crew."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from iiotbed.devices.sim._signals import Context, Signal
from iiotbed.devices.sim._simpy import Fifo
from iiotbed.telemetry import EventName, Tag

__all__ = ["Buffer", "Crew", "Unit"]


class Unit:
    """One product instance; ``origin`` names the station that made it defective."""

    __slots__ = ("defective", "id", "origin", "product", "released", "stations", "t_in", "waits")

    def __init__(self, uid: str, product: int, released: float) -> None:
        self.id = uid
        self.product = product
        self.released = released
        self.t_in = released
        self.defective = False
        self.origin: Any = None  # the Station that made it defective
        self.stations: list[str] = []
        self.waits: list[float] = []  # seconds spent in each stage's input buffer


class Buffer:
    """A stage's input buffer (FIFO, bounded) with its Level tag."""

    def __init__(self, ctx: Context, path: str, capacity: int) -> None:
        self.path = path
        self.store: Fifo[Unit] = Fifo(ctx.env, capacity)
        self.items = self.store.items
        self.level = Signal(ctx, path, Tag.BUFFER_LEVEL, 0, "C62")


class Crew:
    """Technicians as a store of their ids: a repair takes one, ``Busy`` counts them out."""

    def __init__(self, ctx: Context, path: str, count: int) -> None:
        self.ctx = ctx
        self.path = path
        self.count = count
        self.store: Fifo[str] = Fifo(ctx.env)
        self.store.items.extend(f"tech-{i + 1:02d}" for i in range(count))
        self.busy = Signal(ctx, path, Tag.BUSY, 0, "C62")

    def work(
        self, asset: str, duration: float, what: str
    ) -> Generator[simpy.Event, Any, tuple[str, float]]:
        """Wait for a technician, keep them ``duration`` s; returns (id, waiting time)."""
        env = self.ctx.env
        t0 = env.now
        tech: str = yield self.store.get()
        self.busy.set(self.count - len(self.store.items))
        waited = env.now - t0
        self.ctx.event(self.path, EventName.TECHNICIAN_DISPATCHED,
                            {"technician": tech, "station": asset, "job": what})
        yield env.timeout(duration)
        yield self.store.put(tech)
        self.busy.set(self.count - len(self.store.items))
        return tech, waited
