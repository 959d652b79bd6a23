"""The pacer keeps sim time on wall time x speed, and reports lag instead of drifting."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator
from typing import Any

import pytest
import simpy

from iiotbed.devices.pacing import Pacer


def _ticker(
    env: simpy.Environment, period: float, seen: list[tuple[float, float]]
) -> Generator[Any, Any, None]:
    loop = asyncio.get_running_loop()
    while True:
        yield env.timeout(period)
        seen.append((env.now, loop.time()))


def test_events_happen_on_schedule_at_speed() -> None:
    async def main() -> tuple[list[tuple[float, float]], float, Pacer]:
        env = simpy.Environment()
        seen: list[tuple[float, float]] = []
        env.process(_ticker(env, 1.0, seen))
        pacer = Pacer(env, speed=20.0)
        t0 = asyncio.get_running_loop().time()
        await pacer.run(until=10.0)
        return [(s, w - t0) for s, w in seen], asyncio.get_running_loop().time() - t0, pacer

    seen, wall, pacer = asyncio.run(main())
    # 10 sim seconds at 20x = 0.5 s of wall time
    assert 0.45 <= wall <= 0.8
    assert [s for s, _ in seen] == pytest.approx(
        [float(i) for i in range(1, 10)] + [10.0][: len(seen) - 9]
    )
    for sim, w in seen:
        # each event fires no earlier than due and within one wait slice (50 ms) + slack after
        assert sim / 20.0 - 0.005 <= w <= sim / 20.0 + 0.1
    assert pacer.max_lag_s < 0.1 and pacer.lag_warnings == 0


def test_overload_is_measured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def hog(env: simpy.Environment) -> Generator[Any, Any, None]:
        while True:
            yield env.timeout(0.01)
            time.sleep(0.02)  # the host needs 2x real time for each event

    async def main() -> Pacer:
        env = simpy.Environment()
        env.process(hog(env))
        pacer = Pacer(env, speed=1.0, warn_lag_s=0.2)
        await pacer.run(until=0.5)
        return pacer

    with caplog.at_level(logging.WARNING, logger="iiotbed.devices.pacing"):
        pacer = asyncio.run(main())
    # 50 events x 20 ms of work = 1 s of wall time for 0.5 s of sim time
    assert pacer.max_lag_s >= 0.3
    assert pacer.lag_warnings >= 1
    assert any("behind wall time" in r.message for r in caplog.records)


def test_as_fast_as_possible_and_on_advance() -> None:
    async def main() -> tuple[float, list[float], float]:
        env = simpy.Environment()
        seen: list[tuple[float, float]] = []
        env.process(_ticker(env, 1.0, seen))
        advances: list[float] = []

        async def hook(now: float) -> None:
            advances.append(now)

        t0 = time.perf_counter()
        await Pacer(env, speed=None, on_advance=hook, max_step_s=3600).run(until=86400.0)
        return env.now, advances, time.perf_counter() - t0

    now, advances, wall = asyncio.run(main())
    assert now == 86400.0
    assert len(advances) == 24 and advances[-1] == 86400.0
    assert wall < 5.0  # 86,400 events unpaced: far faster than real time


def test_pause_freezes_sim_time_and_speed_change_applies_from_now() -> None:
    async def main() -> tuple[float, float, float]:
        env = simpy.Environment()
        pacer = Pacer(env, speed=100.0)
        task = asyncio.create_task(pacer.run(until=1000.0))
        await asyncio.sleep(0.1)
        pacer.pause()
        await asyncio.sleep(0.02)
        frozen = env.now
        await asyncio.sleep(0.2)
        still = env.now
        pacer.resume()
        pacer.set_speed(1000.0)
        await asyncio.sleep(0.2)
        after = env.now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return frozen, still, after

    frozen, still, after = asyncio.run(main())
    assert 5.0 <= frozen <= 20.0  # ~0.12 s at 100x
    assert still == frozen
    assert after - still >= 100.0  # 0.2 s at 1000x = 200 sim s, no catch-up for the pause
    assert after - still <= 300.0


@pytest.mark.parametrize("speed", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_speed_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed must be a positive number"):
        Pacer(simpy.Environment(), speed=speed)
