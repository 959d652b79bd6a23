"""After the loop was blocked, the pacer catches up in bounded steps with the loop served
in between, and its lag reports the time the loop was blocked (it was hidden before: one
step swallowed the whole backlog and measured only its own ``env.run``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Generator
from typing import Any

import pytest
import simpy

from iiotbed.devices.pacing import Pacer

SPEED = 100.0  # sim s per wall s
BLOCK_S = 0.6  # wall s the loop is blocked: 60 sim s of backlog
CATCHUP_S = 0.1  # wall s of sim time one step may cover (the default): 10 sim s


def _ticker(env: simpy.Environment) -> Generator[Any, Any, None]:
    while True:
        yield env.timeout(0.5)


async def _blocked_run(pacer: Pacer, served: list[int]) -> None:
    async def other_work() -> None:  # another task of the loop: counts its turns
        while True:
            await asyncio.sleep(0)
            served[0] += 1

    # a long callback elsewhere: the loop runs nothing else meanwhile
    asyncio.get_running_loop().call_later(0.2, time.sleep, BLOCK_S)
    tasks = [asyncio.create_task(other_work())]
    try:
        await pacer.run(until=120.0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _run(caplog: pytest.LogCaptureFixture) -> tuple[Pacer, list[tuple[float, int]]]:
    steps: list[tuple[float, int]] = []  # (sim time after the step, turns of the other task)
    served = [0]

    async def main() -> Pacer:
        env = simpy.Environment()
        env.process(_ticker(env))

        async def on_advance(now: float) -> None:
            steps.append((now, served[0]))

        pacer = Pacer(env, speed=SPEED, on_advance=on_advance, warn_lag_s=0.3)
        assert pacer.max_catchup_s == CATCHUP_S  # the default
        await _blocked_run(pacer, served)
        return pacer

    with caplog.at_level(logging.WARNING, logger="iiotbed.devices.pacing"):
        pacer = asyncio.run(main())
    return pacer, steps


def test_catch_up_after_a_blocked_loop_is_in_bounded_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, steps = _run(caplog)
    assert steps[-1][0] == 120.0
    spans = [b[0] - a[0] for a, b in itertools.pairwise(steps)]
    # the 60 sim s of backlog: in steps of at most 10 sim s, not in one
    assert max(spans) <= SPEED * CATCHUP_S + 1e-9
    catch_up = [i for i, s in enumerate(spans) if s > SPEED * 0.06]  # wider than a wait slice
    assert len(catch_up) >= 4
    # and the loop's other work ran between any two of those steps
    for i in catch_up:
        assert steps[i + 1][1] > steps[i][1]


def test_lag_counts_the_time_the_loop_was_blocked(caplog: pytest.LogCaptureFixture) -> None:
    pacer, _ = _run(caplog)
    # blocked 0.6 s: after the first bounded step the sim is still ~0.5 s behind the wall
    assert pacer.max_lag_s >= BLOCK_S - CATCHUP_S - 0.05
    assert pacer.lag_warnings >= 1
    assert any("behind wall time" in r.message for r in caplog.records)
    assert pacer.lag_s < 0.3  # caught up by the end
