"""How to run live (:class:`LiveOptions`) and what a live run did (:class:`LiveSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from iiotbed.devices.network import LinkStats

if TYPE_CHECKING:  # asyncua: loaded only when a run starts
    from iiotbed.devices.opcua import Security

__all__ = ["LiveOptions", "LiveSummary"]


@dataclass
class LiveOptions:
    """How to run live. ``speed=None`` runs as fast as possible; ``broker=None`` = OPC UA only."""

    speed: float | None = 60.0
    duration: float | None = None  # sim seconds (default: the scenario's)
    replication: int = 0
    host: str = "127.0.0.1"
    opcua_port: int = 4840
    opcua_layout: Literal["line", "machine"] = "line"
    security: Security | None = None
    broker: str | None = None
    sparkplug_group: str | None = None  # default <enterprise>-<site>
    edge_node: str | None = None  # default <area>-<line>
    primary_host: str | None = None
    vda_manufacturer: str | None = None  # default the fleet's manufacturer
    events: Path | None = None
    abort_after: float = 5.0  # an MQTT link outage longer than this (sim s) drops the connection
    # run unpaced up to the first production window (a scenario's epoch is often midnight,
    # hours before the first shift); pacing starts there
    fast_forward: bool = True
    # a resume file (:mod:`.resume`): kept ahead of what is published; when it exists at the
    # start, the run continues from its sim time instead of t = 0; the Sparkplug edge node's
    # store file (<stem>.sparkplug.db) lives beside it, so held values survive a restart
    resume: Path | None = None


@dataclass
class LiveSummary:
    """What a live run did."""

    sim_time: float = 0.0
    records: int = 0
    max_lag_s: float = 0.0
    opcua_writes: int = 0
    sparkplug_published: int = 0
    vda_published: int = 0
    orders_sent: int = 0
    commands_accepted: int = 0
    commands_refused: int = 0
    links: dict[str, LinkStats] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [
            f"sim time reached: {self.sim_time:.0f} s ({self.sim_time / 3600:.2f} h)",
            f"records: {self.records}",
            f"max lag: {self.max_lag_s:.3f} s",
            f"messages: {self.opcua_writes} OPC UA writes, {self.sparkplug_published} Sparkplug, "
            f"{self.vda_published} VDA 5050 (orders sent: {self.orders_sent})",
            f"commands: {self.commands_accepted} accepted, {self.commands_refused} refused",
        ]
        for name, s in self.links.items():
            out.append(
                f"link {name}: {s.sent} sent, {s.delayed} delayed (mean {s.mean_delay * 1000:.1f} ms), "
                f"{s.dropped} dropped, {s.resent} resent, {s.outages} outages, {s.aborts} aborts"
            )
        return out
