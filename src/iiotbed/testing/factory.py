"""A live factory for a synchronous test: the devices of ``iiotbed devices`` in a thread.

:class:`FactoryHandle` runs a scenario live (OPC UA servers, the Sparkplug B edge node,
the VDA 5050 AMRs on a broker) in its own event loop, recording what it publishes as
``iiotbed record`` does, so at the end it holds the answer key of the window it ran
(and the recording). ``start()`` returns once the endpoints are up; ``wait()`` blocks until
the run reached its end. With ``hold`` sim time stays at 0 until :meth:`release`: connect
your OPC UA clients first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iiotbed.testing.replay import _LoopThread

if TYPE_CHECKING:
    import asyncio

    from iiotbed.devices.live import LiveFactory
    from iiotbed.recording import AnswerKey, Recording, RecordSummary
    from iiotbed.scenario import Scenario

__all__ = ["FactoryEndpoints", "FactoryHandle"]


@dataclass
class FactoryEndpoints:
    """Where the live factory's devices are."""

    broker: str
    opcua: list[str] = field(default_factory=list)  # one URL per OPC UA server
    sparkplug_group: str = ""
    edge_node: str = ""
    vda_manufacturer: str = ""  # "" when the scenario has no AMRs
    amrs: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # as `iiotbed devices` prints them


class FactoryHandle(_LoopThread):
    """``scenario_file`` live on ``broker`` until ``duration`` (from the first shift, as
    ``iiotbed record --duration``; None: the scenario's), recorded into ``out``."""

    def __init__(self, scenario_file: Path | str, broker: str, out: Path, *,
                 speed: float = 2000.0, duration: float | str | None = None,
                 replication: int = 0, sparkplug_group: str | None = None,
                 opcua_port: int | None = None, hold: bool = False,
                 linger_s: float = 1.0) -> None:  # fmt: skip
        from iiotbed.scenario import load_scenario

        super().__init__("iiotbed-factory")
        if not speed > 0:
            raise ValueError(f"speed must be > 0 sim seconds per wall second, got {speed!r}")
        self.scenario_file = Path(scenario_file)
        scenario = load_scenario(self.scenario_file)
        self.end = _end(scenario, duration)
        self.scenario: Scenario = scenario.with_run(duration=self.end)
        self.broker, self.out, self.speed = broker, Path(out), speed
        self.replication, self.sparkplug_group = replication, sparkplug_group
        self.opcua_port, self.hold, self.linger_s = opcua_port, hold, linger_s
        self.endpoints = FactoryEndpoints(broker)
        self.summary: RecordSummary | None = None
        self._live: LiveFactory | None = None
        self._up = threading.Event()

    def start(self, timeout: float = 60.0) -> None:
        """Start the factory; returns once its endpoints are up."""
        super().start()
        self._up.wait(timeout)
        if self._live is None:  # failed before its endpoints came up: the thread is ending
            self.done.wait(10)
        if self.error is not None:
            raise self.error
        if self._live is None:
            self.halt()
            raise TimeoutError(f"the live factory of {self.scenario_file} did not come up "
                               f"within {timeout:g} s")  # fmt: skip

    @property
    def now(self) -> float:
        """The factory's sim time (seconds since the scenario's epoch)."""
        return self._live.now if self._live is not None else 0.0

    def release(self) -> None:
        """Let sim time run (after ``hold=True``)."""
        live, loop = self._live, self._loop
        if live is not None and loop is not None:
            loop.call_soon_threadsafe(live.pacer.resume)

    def wait(self, timeout: float = 120.0) -> RecordSummary:
        """Block until the run reached its end and its recording is written."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"the live factory of {self.scenario_file} is at sim time "
                               f"{self.now:.0f} s of {self.end:.0f} s after {timeout:g} s")  # fmt: skip
        if self.error is not None:
            raise self.error
        if self.summary is None:
            raise RuntimeError("the live factory was stopped before its end: no answer key")
        return self.summary

    @property
    def answer_key(self) -> AnswerKey:
        """The simulator's KPIs over the window the factory ran (after :meth:`wait`)."""
        return self.wait(0).answer_key

    @property
    def recording(self) -> Recording:
        """What the factory published, as a recording (after :meth:`wait`)."""
        from iiotbed.recording import open_recording

        return open_recording(self.wait(0).path)

    def stop(self) -> None:
        """End the run now: NDEATH and VDA 5050 OFFLINE go out, nothing is recorded."""
        self.halt()

    async def body(self, halt: asyncio.Event) -> None:
        import asyncio  # here, not at the top: importing iiotbed.testing stays cheap

        from iiotbed.platform.broker import free_port
        from iiotbed.recording import RecordOptions, record

        opts = RecordOptions(speed=self.speed, end=self.end, broker=self.broker,
                             replication=self.replication,
                             opcua_port=self.opcua_port or free_port(),
                             sparkplug_group=self.sparkplug_group)  # fmt: skip
        run = asyncio.ensure_future(
            record(self.scenario, self.scenario_file, self.out, opts, watch=self._watch)
        )
        halted = asyncio.ensure_future(halt.wait())
        try:
            await asyncio.wait({run, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, halted):  # both owned here: cancelled and awaited
                task.cancel()
            await asyncio.gather(run, halted, return_exceptions=True)
            self._up.set()
        if not run.cancelled():
            self.summary = run.result()  # record()'s error, if any, goes to wait()

    @contextlib.asynccontextmanager
    async def _watch(self, live: LiveFactory) -> AsyncIterator[None]:
        import asyncio

        # entered before the pacer's first step: pausing here holds sim time at its start
        if self.hold:
            live.pacer.pause()
        ep = self.endpoints
        ep.opcua = list(live.servers.endpoints) if live.servers is not None else []
        ep.sparkplug_group, ep.edge_node = live.group_id, live.edge_node_id
        ep.amrs = list(live.agents)
        ep.vda_manufacturer = live.manufacturer if live.agents else ""
        ep.lines = live.endpoints
        self._live = live
        self._up.set()
        try:
            yield None
        finally:
            # as `iiotbed devices`: an OPC UA subscription publishes the last values only at
            # its next publishing interval
            await asyncio.sleep(self.linger_s)


def _end(scenario: Scenario, duration: float | str | None) -> float:
    """The sim time to stop at: ``duration`` after the first shift starts."""
    from iiotbed.devices.sim.calendar import ProductionCalendar
    from iiotbed.scenario import parse_duration

    if duration is None:
        return float(scenario.run.duration)
    d = float(parse_duration(duration))
    if not d > 0:
        raise ValueError(f"duration must be > 0, got {duration!r}")
    try:
        first = float(ProductionCalendar(scenario).next_production(0.0))
    except ValueError:
        first = 0.0
    return first + d
