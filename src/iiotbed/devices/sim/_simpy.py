"""Every use of SimPy's private internals, in one place (pinned by ``tests/devices/sim/test_fifo.py``).

The model's hot paths skip a few of SimPy's public calls; what they touch instead:

- ``Environment._now`` — the clock ``Environment.now`` returns (no property call): read
  through :data:`now_of`, a C-level getter, a few times per unit;
- ``Environment._queue`` and ``Environment._eid`` — the event heap of
  ``(time, priority, id, event)`` and the id counter ``Environment.schedule`` uses;
- ``Event._ok`` and ``Event._value`` — what ``Event.succeed`` sets; ``Timeout._delay``;
- the attributes ``Event.__init__`` sets (``env``, ``callbacks``, ``_value = PENDING``): events
  are made with ``object.__new__`` and these set directly, without the ``__init__`` frame.

:class:`Fifo` triggers its events with these (two thirds of a line's events are its puts
and gets); :func:`sleep` is ``env.timeout(delay)`` in one call instead of three;
:func:`events_processed` counts events from them (the benchmark). If a SimPy release
changes any of them, the pin test fails before a golden hash does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from heapq import heappush
from operator import attrgetter
from typing import Generic, TypeVar

import simpy
from simpy.events import NORMAL, PENDING, Event, Timeout

__all__ = ["Fifo", "events_processed", "now_of", "sleep", "trigger"]

T = TypeVar("T")

#: ``now_of(env)`` is ``env.now`` without the property's Python frame.
now_of: Callable[[simpy.Environment], float] = attrgetter("_now")


def trigger(env: simpy.Environment, ev: Event, value: object) -> None:
    """``ev.succeed(value)``, as SimPy does it: mark it ok and queue it now at NORMAL priority."""
    ev._ok = True
    ev._value = value
    heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))


_new = object.__new__


def sleep(env: simpy.Environment, delay: float) -> Timeout:
    """``env.timeout(delay)``: the same Timeout, scheduled the same way, in one call frame."""
    if delay < 0:
        raise ValueError(f"Negative delay {delay}")
    ev: Timeout = _new(Timeout)
    ev.env = env
    ev.callbacks = []
    ev._value = None
    ev._delay = delay
    ev._ok = True
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), ev))
    return ev


def events_processed(env: simpy.Environment) -> int:
    """Events processed so far: ids issued (each scheduled event takes one) minus those queued."""
    # itertools.count: its next value = ids issued so far. Read from its repr ("count(N)"),
    # so the environment's own counter (event order ties) is left alone; copying a count
    # is deprecated since Python 3.13 and goes in 3.14.
    issued = int(repr(env._eid)[6:-1])
    return issued - len(env._queue)


class Fifo(Generic[T]):
    """A bounded FIFO with the exact event order of ``simpy.Store``, at a fraction of its cost.

    As in ``Store``: a put (get) that can complete is triggered at once, else it waits in
    line; when a put event is processed the first waiting get is served, and when a get
    event is processed the first waiting put is let in. Plain ``simpy.Event`` objects
    replace Store's request classes (context managers, bound classes, queue scans): the
    same events are scheduled in the same order, so runs are unchanged.

    Triggering is :func:`trigger` inlined (no two calls of ``succeed`` and ``schedule``,
    not even one of ``trigger``): this is the line's hottest code.
    """

    __slots__ = ("_env", "_gets", "_on_get", "_on_put", "_puts", "capacity", "items")

    def __init__(self, env: simpy.Environment, capacity: float = math.inf) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self._env = env
        self.capacity = capacity
        self.items: deque[T] = deque()
        self._puts: deque[tuple[simpy.Event, T]] = deque()
        self._gets: deque[simpy.Event] = deque()
        # the callbacks each put (get) event carries, bound once
        self._on_put = self._serve_get
        self._on_get = self._serve_put

    def put(self, item: T) -> simpy.Event:
        """An event triggered once ``item`` is in."""
        env = self._env
        ev: Event = _new(Event)  # Event(env) without its __init__ frame
        ev.env = env
        ev.callbacks = [self._on_put]
        if not self._puts and len(self.items) < self.capacity:
            self.items.append(item)
            ev._ok = True  # trigger(env, ev, None) inlined
            ev._value = None
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
            return ev
        ev._value = PENDING
        self._puts.append((ev, item))
        self._serve_put()
        return ev

    def get(self) -> simpy.Event:
        """An event whose value is the first item, triggered once there is one."""
        env = self._env
        ev: Event = _new(Event)  # Event(env) without its __init__ frame
        ev.env = env
        ev.callbacks = [self._on_get]
        if not self._gets and self.items:
            ev._ok = True  # trigger(env, ev, item) inlined
            ev._value = self.items.popleft()
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
            return ev
        ev._value = PENDING
        self._gets.append(ev)
        self._serve_get()
        return ev

    def _serve_put(self, _: simpy.Event | None = None) -> None:
        if self._puts and len(self.items) < self.capacity:
            ev, item = self._puts.popleft()
            self.items.append(item)
            env = self._env
            ev._ok = True  # trigger(env, ev, None) inlined
            ev._value = None
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))

    def _serve_get(self, _: simpy.Event | None = None) -> None:
        if self._gets and self.items:
            ev = self._gets.popleft()
            env = self._env
            ev._ok = True  # trigger(env, ev, item) inlined
            ev._value = self.items.popleft()
            heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))
