"""Drive a SimPy environment from the asyncio loop, at ``speed`` x real time.

The pacer sleeps until the next simulation event is due, then runs the environment up
to the sim time that corresponds to "now" (``env.run(until=...)``), and hands control
back to the loop so protocol servers can publish. It never uses
``simpy.RealtimeEnvironment``, whose ``step()`` blocks the thread in ``time.sleep``.

When the host cannot keep up, the pacer does not drift silently: ``lag_s`` is how far
(in wall seconds) the simulation is behind its schedule, ``max_lag_s`` the worst seen,
and a warning is logged each time the lag crosses ``warn_lag_s``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import simpy

__all__ = ["Pacer"]

log = logging.getLogger(__name__)


class Pacer:
    """Maps sim time to wall time: ``wall = wall0 + (sim - sim0) / speed``.

    ``speed=None`` runs as fast as possible, still yielding to the loop every
    ``max_step_s`` of sim time so other tasks are served. ``on_advance(now)`` is awaited
    after every advance (flush protocol updates there).
    """

    def __init__(
        self,
        env: simpy.Environment,
        *,
        speed: float | None = 1.0,
        on_advance: Callable[[float], Awaitable[None]] | None = None,
        max_wait_s: float = 0.05,
        max_step_s: float = 60.0,
        warn_lag_s: float = 1.0,
    ) -> None:
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.env = env
        self.speed = speed
        self.on_advance = on_advance
        self.max_wait_s = max_wait_s
        self.max_step_s = max_step_s
        self.warn_lag_s = warn_lag_s
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.lag_warnings = 0
        self.advances = 0
        self._lagging = False
        self._rebase = False
        self._paused = asyncio.Event()
        self._paused.set()  # set = running

    def pause(self) -> None:
        """Freeze sim time (wall time keeps going; the schedule restarts on resume)."""
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()

    @property
    def paused(self) -> bool:
        return not self._paused.is_set()

    async def run(self, until: float) -> None:
        """Advance the environment to ``until`` (sim seconds), paced to the wall clock."""
        env = self.env
        loop = asyncio.get_running_loop()
        wall0, sim0 = loop.time(), env.now
        while env.now < until:
            if not self._paused.is_set():
                await self._paused.wait()
                wall0, sim0 = loop.time(), env.now  # resume from here, no catch-up burst
            if self._rebase:
                self._rebase = False
                wall0, sim0 = loop.time(), env.now  # a new speed applies from now on
            if self.speed is None:
                target = min(until, env.now + self.max_step_s)
            else:
                target = min(until, sim0 + (loop.time() - wall0) * self.speed)
                nxt = env.peek()
                if not env.now < nxt <= target:
                    # Nothing due yet: sleep until the next event (at most max_wait_s, so
                    # commands and speed changes are picked up promptly). peek() == now is
                    # SimPy's spent stop event of the last run(until=...), not work to do.
                    due = min(nxt if nxt > env.now else until, until)
                    wait = (due - sim0) / self.speed - (loop.time() - wall0)
                    await asyncio.sleep(min(max(wait, 0.0), self.max_wait_s))
                    target = min(until, sim0 + (loop.time() - wall0) * self.speed)
            if target > env.now:
                env.run(until=target)
                self.advances += 1
            if self.speed is not None:
                self._measure_lag(loop.time() - wall0, sim0)
            if self.on_advance is not None:
                await self.on_advance(env.now)
            if self.speed is None:
                await asyncio.sleep(0)

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on (takes effect on the next advance)."""
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.speed = speed
        self._rebase = True

    def _measure_lag(self, wall_elapsed: float, sim0: float) -> None:
        assert self.speed is not None
        behind = wall_elapsed - (self.env.now - sim0) / self.speed
        self.lag_s = max(0.0, behind)
        self.max_lag_s = max(self.max_lag_s, self.lag_s)
        if self.lag_s > self.warn_lag_s and not self._lagging:
            self._lagging = True
            self.lag_warnings += 1
            log.warning(
                "simulation is %.2f s behind wall time at speed %g; lower --speed or the load",
                self.lag_s,
                self.speed,
            )
        elif self.lag_s < self.warn_lag_s / 2:
            self._lagging = False
