"""What a live lab runs on: the testbed's services started for a student, and what they did.

:class:`LabRig` (an ``async with``) starts :class:`~iiotbed.testbed.Services` for a scenario
(embedded broker unless one is given, platform, live factory, gateway) in a temporary runs
directory, lets sim time run at the lab's speed, and :class:`Watcher` polls the simulation
(the answer key) for what a checker needs to see: station states and paused AMRs, with
the sim time each was first seen. The student's script runs as a child process with the
endpoints in its environment (:meth:`LabRig.script_env`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from iiotbed._aio import ExcInfo

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario
    from iiotbed.testbed import Services

__all__ = ["LabRig", "Watcher", "free_port"]

#: how often the watcher looks at the simulation (wall s): a state lasting a few sim
#: seconds at a few hundred x is still seen
POLL_S = 0.01


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when nothing listens there on 127.0.0.1, else a port the OS picks."""
    if preferred is not None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
            except OSError:
                pass
            else:
                return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Watcher:
    """What the simulation did while a lab ran: each change with its sim time."""

    states: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # station -> changes
    paused: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)  # amr -> changes

    def states_between(self, station: str, t0: float, t1: float) -> list[str]:
        """States the station was in during sim time [t0, t1], in order."""
        changes = self.states.get(station, [])
        before = [s for t, s in changes if t <= t0][-1:]
        return before + [s for t, s in changes if t0 < t <= t1]

    def first(self, station: str, state: str, after: float = -1.0) -> float | None:
        """Sim time the station entered ``state`` at or after ``after`` (None: never)."""
        return next((t for t, s in self.states.get(station, []) if s == state and t >= after), None)

    def pauses(self, amr: str) -> list[tuple[float, bool]]:
        return self.paused.get(amr, [])


class LabRig:
    """The services a live lab needs, running; see the module docstring."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        speed: float = 300.0,
        broker: str | None = None,
        opcua_port: int | None = None,
        runs_dir: Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.speed = speed
        self.broker = broker
        self.opcua_port = opcua_port
        self._runs_dir = runs_dir
        self.watcher = Watcher()
        self._stack: AsyncExitStack | None = None
        self._services: Services | None = None
        self._stop = asyncio.Event()
        self._last_state: dict[str, str] = {}
        self._last_paused: dict[str, bool] = {}

    # ------------------------------------------------------------------ the parts

    @property
    def services(self) -> Services:
        assert self._services is not None, "use inside 'async with'"
        return self._services

    @property
    def now(self) -> float:
        """Sim time now (s since the scenario epoch)."""
        return self.services.live.now

    @property
    def opcua_url(self) -> str:
        servers = self.services.live.servers
        assert servers is not None
        return servers.endpoints[0]

    @property
    def api_url(self) -> str:
        return self.services.platform.url

    @property
    def sparkplug_group(self) -> str:
        return self.services.live.group_id

    @property
    def edge_node(self) -> str:
        return self.services.live.edge_node_id

    def script_env(self) -> dict[str, str]:
        """What a student's script finds in its environment (documented in docs/labs.md)."""
        live = self.services.live
        return {
            "IIOTBED_OPCUA": self.opcua_url,
            "IIOTBED_BROKER": self.services.broker_url,
            "IIOTBED_API": self.api_url,
            "IIOTBED_SPARKPLUG_GROUP": live.group_id,
            "IIOTBED_SPARKPLUG_NODE": live.edge_node_id,
            "IIOTBED_VDA_MANUFACTURER": live.manufacturer,
            "IIOTBED_SPEED": f"{self.speed:g}",
            "IIOTBED_RUN_ID": self.services.plan.run_id,
            "IIOTBED_SCENARIO": str(Path(self.scenario.source_path or "").resolve()),
        }

    def describe(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.script_env().items()]

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        from iiotbed.testbed import RunOptions, Services, plan_run

        async with AsyncExitStack() as stack:
            if self._runs_dir is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="iiotbed-lab-"))
                self._runs_dir = Path(tmp)
            options = RunOptions(
                speed=self.speed, broker=self.broker, port=0, verdict=False,
                opcua_port=free_port(self.opcua_port or 4840), runs_dir=self._runs_dir,
            )  # fmt: skip
            plan = plan_run(self.scenario, options, has_base=False)
            await asyncio.to_thread(plan.run_dir.mkdir, parents=True, exist_ok=True)  # file I/O
            self._services = await stack.enter_async_context(
                Services(self.scenario, plan, options)
            )
            self.look()
            runner = asyncio.ensure_future(self._services.run(self._stop))
            watcher = asyncio.ensure_future(self._watch_loop())
            stack.push_async_callback(self._end, runner, watcher)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(*exc_info)

    async def _end(self, runner: asyncio.Future[Any], watcher: asyncio.Future[None]) -> None:
        self._stop.set()
        watcher.cancel()
        # both owned here: stopped and awaited before the services close
        await asyncio.wait([runner, watcher])
        if not runner.cancelled():
            runner.result()  # raises what stopped the simulation

    # ------------------------------------------------------------------ watching

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            self.look()

    def look(self) -> None:
        """Record what changed in the simulation since the last look (every POLL_S anyway;
        a checker looks once more when the student's script ends)."""
        live = self.services.live
        now = live.now
        for station in live.factory.stations.values():
            name = station.path.rsplit("/", 1)[-1]
            state = station.state
            if self._last_state.get(name) != state:
                self._last_state[name] = state
                self.watcher.states.setdefault(name, []).append((now, state))
        for name, amr in live.factory.amrs.items():
            paused = amr.paused
            if self._last_paused.get(name) != paused:
                self._last_paused[name] = paused
                self.watcher.paused.setdefault(name, []).append((now, paused))

    def set_speed(self, speed: float) -> None:
        """Run sim time at ``speed`` from now on (a rig shared by several labs, one of them
        faster: lab 6 waits for the line's first break). Call it on the rig's event loop."""
        self.services.live.pacer.set_speed(speed)
        self.speed = speed

    def state(self, station: str) -> str:
        """The station's state now (``executing``, ``stopped``, ``suspended``...)."""
        return self.services.live.factory.station(station).state


def merged_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``extra`` on top (for a student's script)."""
    env = dict(os.environ)
    env.update(extra)
    return env
