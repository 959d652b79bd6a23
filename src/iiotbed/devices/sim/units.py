"""Units flowing through the line, the buffers between stages and the maintenance crew."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator
from heapq import heappush
from typing import Any, Generic, TypeVar

import simpy
from simpy.events import NORMAL, Event

from iiotbed.devices.sim._signals import Context, Signal
from iiotbed.telemetry import EventName, Tag

__all__ = ["Buffer", "Crew", "Fifo", "Unit"]

T = TypeVar("T")


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


class Fifo(Generic[T]):
    """A bounded FIFO with the exact event order of ``simpy.Store``, at a fraction of its cost.

    As in ``Store``: a put (get) that can complete is triggered at once, else it waits in
    line; when a put event is processed the first waiting get is served, and when a get
    event is processed the first waiting put is let in. Plain ``simpy.Event`` objects
    replace Store's request classes (context managers, bound classes, queue scans): the
    same events are scheduled in the same order, so runs are unchanged.

    Two thirds of a line's events are these puts and gets, so triggering one is inlined:
    what ``Event.succeed`` and ``Environment.schedule`` do (set ``_ok`` and ``_value``,
    push ``(now, NORMAL, next id, event)`` on the queue), without their two calls. These
    are SimPy private attributes; ``tests/devices/sim/test_fifo.py`` checks that they still
    mean this (and that the order matches ``simpy.Store``).
    """

    __slots__ = ("_env", "_gets", "_puts", "capacity", "items")

    def __init__(self, env: simpy.Environment, capacity: float = math.inf) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._env = env
        self.capacity = capacity
        self.items: deque[T] = deque()
        self._puts: deque[tuple[simpy.Event, T]] = deque()
        self._gets: deque[simpy.Event] = deque()

    def put(self, item: T) -> simpy.Event:
        """An event triggered once ``item`` is in."""
        env = self._env
        ev = Event(env)
        ev.callbacks.append(self._serve_get)
        if not self._puts and len(self.items) < self.capacity:
            self.items.append(item)
            ev._ok = True  # ev.succeed() inlined, see the class docstring
            ev._value = None
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
            return ev
        self._puts.append((ev, item))
        self._serve_put()
        return ev

    def get(self) -> simpy.Event:
        """An event whose value is the first item, triggered once there is one."""
        env = self._env
        ev = Event(env)
        ev.callbacks.append(self._serve_put)
        if not self._gets and self.items:
            ev._ok = True  # ev.succeed(item) inlined, see the class docstring
            ev._value = self.items.popleft()
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
            return ev
        self._gets.append(ev)
        self._serve_get()
        return ev

    def _serve_put(self, _: simpy.Event | None = None) -> None:
        if self._puts and len(self.items) < self.capacity:
            ev, item = self._puts.popleft()
            self.items.append(item)
            env = self._env
            ev._ok = True  # ev.succeed() inlined, see the class docstring
            ev._value = None
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))

    def _serve_get(self, _: simpy.Event | None = None) -> None:
        if self._gets and self.items:
            ev = self._gets.popleft()
            env = self._env
            ev._ok = True  # ev.succeed(item) inlined, see the class docstring
            ev._value = self.items.popleft()
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))


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
