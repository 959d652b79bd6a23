"""The light FIFO behind buffers and the crew keeps simpy.Store's event order exactly, and the
SimPy internals ``devices/sim/_simpy.py`` relies on still mean what it assumes."""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappush
from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st
from simpy.events import NORMAL

from iiotbed.devices.sim._simpy import Fifo, events_processed, now_of, trigger

Trace = list[tuple[float, str, Any]]


def _trace(make: Callable[[simpy.Environment, int], Any], capacity: int,
           producers: list[list[int]], consumers: list[list[int]]) -> Trace:
    """Producers put items after the given delays, consumers get after theirs; who got what, when."""
    env = simpy.Environment()
    store = make(env, capacity)
    out: Trace = []

    def producer(i: int, delays: list[int]) -> Generator[simpy.Event, Any, None]:
        for k, d in enumerate(delays):
            if d:
                yield env.timeout(d)
            yield store.put(f"p{i}-{k}")
            out.append((env.now, f"put p{i}", k))

    def consumer(i: int, delays: list[int]) -> Generator[simpy.Event, Any, None]:
        for d in delays:
            if d:
                yield env.timeout(d)
            item = yield store.get()
            out.append((env.now, f"get c{i}", item))

    for i, delays in enumerate(producers):
        env.process(producer(i, delays))
    for i, delays in enumerate(consumers):
        env.process(consumer(i, delays))
    env.run(until=1000)
    out.append((env.now, "left", list(store.items)))
    return out


_delays = st.lists(st.lists(st.integers(0, 3), max_size=8), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), _delays, _delays)
def test_same_order_as_simpy_store(capacity: int, producers: list[list[int]],
                                   consumers: list[list[int]]) -> None:
    expected = _trace(simpy.Store, capacity, producers, consumers)
    assert _trace(Fifo, capacity, producers, consumers) == expected


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be > 0"):
        Fifo(simpy.Environment(), 0)


def test_simpy_internals_fifo_relies_on() -> None:
    """Fifo triggers events as Event.succeed does; if SimPy changes how, this fails."""
    assert simpy.__version__.startswith("4."), "re-check _simpy.py against this SimPy release"
    env = simpy.Environment(5.0)
    ours, theirs = simpy.Event(env), simpy.Event(env)
    theirs.succeed("x")
    # what Fifo does in place of ours.succeed("x")
    ours._ok = True
    ours._value = "x"
    heappush(env._queue, (env._now, NORMAL, next(env._eid), ours))
    assert ours.triggered and ours.ok and ours.value == "x"
    (t1, p1, id1, e1), (t2, p2, id2, e2) = sorted(env._queue)
    assert (t1, p1, e1) == (5.0, NORMAL, theirs) and (t2, p2, e2) == (5.0, NORMAL, ours)
    assert id2 == id1 + 1
    seen: list[simpy.Event] = []
    ours.callbacks.append(seen.append)  # type: ignore[union-attr]
    env.run()
    assert seen == [ours] and ours.processed and env.now == env._now == 5.0


def test_trigger_is_succeed() -> None:
    """_simpy.trigger is the inlined form Fifo uses; it must equal Event.succeed."""
    env = simpy.Environment(2.0)
    ours, theirs = simpy.Event(env), simpy.Event(env)
    theirs.succeed(7)
    trigger(env, ours, 7)
    assert ours.triggered and ours.ok and ours.value == 7
    (_, _, id1, e1), (_, _, id2, e2) = sorted(env._queue)
    assert (e1, e2) == (theirs, ours) and id2 == id1 + 1
    env.run()
    assert ours.processed


def test_now_of_and_events_processed_read_the_clock_and_the_heap() -> None:
    env = simpy.Environment(1.5)
    assert now_of(env) == env.now == 1.5
    assert events_processed(env) == 0

    def proc() -> Generator[simpy.Event, Any, None]:
        for _ in range(3):
            yield env.timeout(2.0)
            assert now_of(env) == env.now

    env.process(proc())
    steps = 0
    while env.peek() < 5.0:  # step by hand, counting: Initialize (1.5), the first timeout (3.5)
        env.step()
        steps += 1
    assert now_of(env) == env.now == 3.5
    assert steps == 2 and events_processed(env) == steps
    assert events_processed(env) == steps  # reading it issues no id
