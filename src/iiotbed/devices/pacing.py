"""Drive a SimPy environment from the asyncio loop, at ``speed`` x real time.

The pacer sleeps until the next simulation event is due, then runs the environment up
to the sim time that corresponds to "now" (``env.run(until=...)``), and hands control
back to the loop so protocol servers can publish. It never uses
``simpy.RealtimeEnvironment``, whose ``step()`` blocks the thread in ``time.sleep``.

When the host cannot keep up, the pacer does not drift silently: ``lag_s`` is how far
(in wall seconds) the simulation is behind its schedule after a step, ``max_lag_s`` the
worst seen, and a warning is logged each time the lag crosses ``warn_lag_s``.

Nor does it catch up in one go: a paced step covers at most ``max_catchup_s`` wall seconds
of sim time (``speed * max_catchup_s`` sim s), and the loop gets a turn between two steps.
After a stall, one step would otherwise hand the protocol servers the records of thousands
of sim seconds at once and block the loop for as long as they take, which makes the next
step longer still (at 3000x: 4,600 records, 2,800 sim s, 1.2 s in one step). Because a
step is bounded, the lag also counts the time the loop was busy elsewhere (to within
``max_catchup_s``): the backlog is still there after the step. Where the steps fall does not
change what the simulation does: the event log is the same.
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
        max_catchup_s: float = 0.1,
        warn_lag_s: float = 1.0,
    ) -> None:
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.env = env
        self.speed = speed
        self.on_advance = on_advance
        self.max_wait_s = max_wait_s
        self.max_step_s = max_step_s
        self.max_catchup_s = max_catchup_s
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
        behind = False  # the last step stopped short of the schedule: no waiting
        while env.now < until:
            if not self._paused.is_set():
                await self._paused.wait()
                wall0, sim0 = loop.time(), env.now  # resume from here, no catch-up burst
            if self._rebase:
                self._rebase = False
                wall0, sim0 = loop.time(), env.now  # a new speed applies from now on
            if self.speed is None:
                target = min(until, env.now + self.max_step_s)
                behind = False
            else:
                due_to = min(until, sim0 + (loop.time() - wall0) * self.speed)
                nxt = env.peek()
                if not behind and not env.now < nxt <= due_to:
                    # Nothing due yet: sleep until the next event (at most max_wait_s, so
                    # commands and speed changes are picked up promptly). peek() == now is
                    # SimPy's spent stop event of the last run(until=...), not work to do.
                    due = min(nxt if nxt > env.now else until, until)
                    wait = (due - sim0) / self.speed - (loop.time() - wall0)
                    await asyncio.sleep(min(max(wait, 0.0), self.max_wait_s))
                    due_to = min(until, sim0 + (loop.time() - wall0) * self.speed)
                target = min(due_to, env.now + self.max_catchup_s * self.speed)
                behind = target < due_to
            if target > env.now:
                env.run(until=target)
                self.advances += 1
            if self.speed is not None:
                self._measure_lag(loop.time() - wall0, sim0)
            if self.on_advance is not None:
                await self.on_advance(env.now)
            if self.speed is None or behind:
                await asyncio.sleep(0)  # the rest of the loop's work before the next step

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
