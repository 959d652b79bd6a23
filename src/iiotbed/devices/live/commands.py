"""Commands from the protocols to the simulation, and each accepted one mirrored on the others.

OPC UA methods and ``SpeedSetpoint`` writes reach a station through a
:class:`CountingControl`; Sparkplug ``DCMD`` writes of ``SpeedSetpoint`` through
:meth:`Commands.on_dcmd`; VDA 5050 instant actions through :meth:`Commands.action_handler`.
A refusal is a :class:`~iiotbed.errors.CommandRefused`, which each protocol maps once
(OPC UA status code, Sparkplug refused-command count, VDA 5050 error in the state). A
speed set over one protocol shows on the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from iiotbed.devices.sim import AmrControl, StationControl
from iiotbed.errors import CommandRefused
from iiotbed.telemetry import Sample, Tag

if TYPE_CHECKING:  # paho: loaded only when a run starts
    from iiotbed.devices.sparkplug import SparkplugEdgeNode
    from iiotbed.protocols.vda5050.messages import Action

__all__ = ["Commands", "CountingControl"]

log = logging.getLogger(__name__)


class CountingControl:
    """A station control that counts what it accepted and refused (for the summary)."""

    def __init__(
        self,
        control: StationControl,
        counts: list[int],
        on_speed: Callable[[str, float], None] | None = None,
    ) -> None:
        self._c = control
        self._counts = counts  # [accepted, refused]
        self.path = control.path
        self._on_speed = on_speed

    @property
    def speed(self) -> float:
        return self._c.speed

    def _do(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CommandRefused:
            self._counts[1] += 1
            raise
        self._counts[0] += 1

    def start(self) -> None:
        self._do(self._c.start)

    def stop(self) -> None:
        self._do(self._c.stop)

    def hold(self) -> None:
        self._do(self._c.hold)

    def unhold(self) -> None:
        self._do(self._c.unhold)

    def reset(self) -> None:
        self._do(self._c.reset)

    def set_speed(self, factor: float) -> None:
        self._do(lambda: self._c.set_speed(factor))
        if self._on_speed is not None:
            self._on_speed(self.path, factor)


class Commands:
    """The live factory's command handlers; ``counts`` = [accepted, refused] of each kind."""

    def __init__(
        self,
        stations: Mapping[str, StationControl],
        station_names: Mapping[str, str],
        *,
        edge: Callable[[], SparkplugEdgeNode | None],
        to_opcua: Callable[[Sample], object],
        clock_ms: Callable[[], int],
        now: Callable[[], float],
    ) -> None:
        self._stations = stations
        self._names = station_names
        self._by_name = {n: p for p, n in station_names.items()}
        self._edge = edge
        self._to_opcua = to_opcua
        self._clock_ms = clock_ms
        self._now = now
        self.station_counts = [0, 0]  # OPC UA commands: accepted, refused
        self.vda_counts = [0, 0]  # VDA 5050 instant actions: accepted, refused

    def controls(self) -> dict[str, CountingControl]:
        """The controls the OPC UA servers drive, per station path."""
        return {p: CountingControl(c, self.station_counts, self.speed_from_opcua)
                for p, c in self._stations.items()}  # fmt: skip

    def on_dcmd(self, device: str | None, metric: str, value: object) -> bool:
        """A Sparkplug write; raises CommandRefused when the station refuses the value."""
        if device is None or metric != Tag.SPEED_SETPOINT:
            return False
        path = self._by_name.get(device)
        if path is None or not isinstance(value, float):
            return False
        self._stations[path].set_speed(value)
        edge = self._edge()
        assert edge is not None
        edge.set(device, Tag.SPEED_SETPOINT, value, self._clock_ms())
        # show it on the machine's OPC UA SpeedSetpoint too
        now = self._now()
        self._to_opcua(Sample(now, path, Tag.SPEED_SETPOINT, value))
        return True

    def speed_from_opcua(self, path: str, factor: float) -> None:
        """An OPC UA write of SpeedSetpoint: mirror it on the Sparkplug meter's metric
        (a value that came from a DCMD is reported once: the edge skips unchanged values)."""
        edge = self._edge()
        if edge is not None:
            edge.set(self._names[path], Tag.SPEED_SETPOINT, factor, self._clock_ms())
        # and back to the machine's OPC UA server as a sample: PackML MachSpeed follows it
        self._to_opcua(Sample(self._now(), path, Tag.SPEED_SETPOINT, factor))

    def action_handler(
        self, amr: AmrControl, order_id: Callable[[], str] | None = None
    ) -> Callable[[Action], bool]:
        """The agent's ``on_instant_action``: pause, resume, or call off the simulated AMR's
        trip. ``order_id`` is the agent's current order: ``cancelOrder`` is refused when
        the simulation's trip under way is another one (the agent's has ended in the
        simulation, its end still crossing the link), so the two never part ways."""

        def on_action(action: Action) -> bool:
            kind = action.action_type
            try:
                if kind == "startPause":
                    amr.pause()
                elif kind == "stopPause":
                    amr.resume()
                elif kind == "cancelOrder":
                    current = order_id() if order_id is not None else f"trip-{amr.trip}"
                    if not amr.trip or current != f"trip-{amr.trip}":
                        raise CommandRefused(f"order {current!r} is already done in the simulation",
                                             target=amr.name, command=kind)  # fmt: skip
                    trip = amr.cancel()
                    log.info("%s: trip %d called off (cancelOrder %s)", amr.name, trip, action.action_id)
                else:
                    self.vda_counts[1] += 1
                    return False
            except CommandRefused:
                self.vda_counts[1] += 1
                raise
            self.vda_counts[0] += 1
            return True

        return on_action
