"""OPC UA re-served from a recording: live asyncua servers built from the recorded scenario.

The address space is the one the live run served (``build_servers`` over the scenario in
the file: same browse paths, node ids and types); the recorded values (``/iiotbed/opcua``)
are set at their recorded times on the replay's clock, so a client subscribes as if the
machines were live. Methods and the speed setpoint answer, but drive nothing: a recording
cannot change what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from iiotbed.recording.opcua_values import samples_of

if TYPE_CHECKING:
    from iiotbed.devices.opcua import MachineServers
    from iiotbed.recording.reader import Recording
    from iiotbed.scenario import Scenario
    from iiotbed.telemetry import Sample

__all__ = ["OpcUaReplay"]

_SLOT_S = 0.002  # values due within 2 ms of each other are set together


class OpcUaReplay:
    """The recorded machines as OPC UA servers on ``host:port`` (``async with``)."""

    def __init__(self, recording: Recording, *, host: str = "127.0.0.1", port: int = 4840) -> None:
        self.recording = recording
        self.host = host
        self.port = port
        self.applied = 0
        self._servers: MachineServers | None = None
        self._values: list[tuple[int, Sample]] = []

    @property
    def endpoints(self) -> list[str]:
        return self._servers.endpoints if self._servers is not None else []

    async def __aenter__(self) -> OpcUaReplay:
        from iiotbed.devices.opcua import build_servers

        def load() -> tuple[Scenario, list[tuple[int, Sample]]]:
            rows = list(self.recording.opcua_values())
            samples = list(samples_of(v for _, v in rows))
            return self.recording.scenario(), [
                (ns, s) for (ns, _), s in zip(rows, samples, strict=True)
            ]

        # reading the file and loading the scenario: blocking I/O, in a worker thread
        scenario, self._values = await asyncio.to_thread(load)
        self._servers = build_servers(scenario, host=self.host, port=self.port)
        await self._servers.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        servers, self._servers = self._servers, None
        if servers is not None:
            await servers.__aexit__(None, None, None)

    async def play(
        self, speed: float | None, paced_ns: int, start: float, halt: asyncio.Event
    ) -> None:
        """Set every recorded value at its time (``speed`` None: at once, in order)."""
        assert self._servers is not None, "use inside 'async with'"
        values: Sequence[tuple[int, Sample]] = self._values
        i = 0
        while i < len(values) and not halt.is_set():
            ns = values[i][0]
            if speed is not None and ns > paced_ns:
                wait = start + (ns - paced_ns) / 1e9 / speed - time.monotonic()
                if wait > 0:
                    try:
                        async with asyncio.timeout(wait):
                            await halt.wait()
                        return
                    except TimeoutError:
                        pass
            j = i + 1
            limit = ns + (round(_SLOT_S * 1e9 * speed) if speed is not None else 10**18)
            while j < len(values) and values[j][0] <= limit and j - i < 512:
                j += 1
            self.applied += await self._servers.apply_many(s for _, s in values[i:j])
            i = j
