"""Link shaping of the live endpoints: latency, loss and outages, on sim time.

The link model is the simulator's (:mod:`iiotbed.devices.sim.network`); this module gives
each live endpoint its own draws of it and delivers in order.

Each live endpoint (OPC UA, Sparkplug, VDA 5050) may sit behind one of the scenario's
``network.links`` (``network.endpoints``; VDA 5050 defaults to ``supply.amr.link``). What
the simulation hands that endpoint goes through a :class:`Channel`: every message gets a
delivery time = send time + outage wait + latency draw, and a loss either drops it
(``reliable=False``: an MQTT QoS 0 publish) or costs ``retransmit_timeout`` plus a new
latency draw (``reliable=True``: TCP, QoS 1). Messages keep their order (one TCP stream:
a late message holds back the ones after it). An endpoint on MQTT whose link blacks out
for longer than ``abort_after`` seconds loses its connection, so the broker fires its Will.

Draws come from named streams of their own (``live/<endpoint>/link/<name>/...``), so the
shaping is deterministic and does not disturb the simulation's streams.

:class:`DevicePresence` says when a Sparkplug device is out of the edge node's reach. The one
device behind a link of its own is a station whose inspection runs over a scenario link
(machine vision at the MEC, ``inspection.link``): its camera and meter reach the plant over
that link (an assumption: the scenario does not say how the station's telemetry travels),
so an outage of it longer than ``abort_after`` takes the station's device away from its
start to its end (DDEATH, then DBIRTH). The windows are the simulation's own: the same named
streams as the simulator's link model (``network/<link>/outages/...``), drawn in a copy, so
the station's inspection waits in exactly those windows and the simulation is not disturbed.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Generic, TypeVar

from iiotbed.devices.sim.network import Hop, Outages
from iiotbed.devices.sim.rng import Sampler, Uniforms, make_generator
from iiotbed.scenario import Dist, Link, LiveEndpoint, Scenario

__all__ = ["Channel", "DevicePresence", "LinkStats", "LiveLink", "endpoint_links"]

T = TypeVar("T")


def endpoint_links(scenario: Scenario) -> dict[LiveEndpoint, str]:
    """Which link shapes each live endpoint: ``network.endpoints``, VDA 5050 from the AMRs'."""
    out: dict[LiveEndpoint, str] = dict(scenario.network.endpoints)
    supply = scenario.supply
    if "vda5050" not in out and supply is not None and supply.amr is not None and supply.amr.link:
        out["vda5050"] = supply.amr.link
    return out


@dataclass
class LinkStats:
    """What a link did to the messages sent over it."""

    sent: int = 0
    delayed: int = 0  # delivered later than sent
    dropped: int = 0  # lost, not resent (unreliable)
    resent: int = 0  # retransmissions (reliable)
    held: int = 0  # sent during an outage, held until it ended
    outages: int = 0  # outage windows begun so far
    outage_time: float = 0.0  # seconds of outage begun so far
    aborts: int = 0  # connections aborted by a long outage
    delay_total: float = 0.0  # sum of delivery delays (s) of delivered messages

    @property
    def mean_delay(self) -> float:
        delivered = self.sent - self.dropped
        return self.delay_total / delivered if delivered else 0.0


class LiveLink:
    """One endpoint's view of a scenario link: the simulator's link model on streams of its own.

    The model (:class:`~iiotbed.devices.sim.network.Outages` and
    :class:`~iiotbed.devices.sim.network.Hop`) is the one the simulator uses; this adds
    the endpoint's transport (``reliable``), in-order delivery and statistics.
    """

    def __init__(
        self,
        endpoint: str,
        name: str,
        link: Link,
        *,
        seed: int,
        replication: int = 0,
        reliable: bool = True,
        abort_after: float = 5.0,
    ) -> None:
        self.endpoint, self.name, self.link = endpoint, name, link
        self.reliable = reliable
        self.abort_after = abort_after
        self.stats = LinkStats()
        base = f"live/{endpoint}/link/{name}"

        def sampler(what: str, dist: Dist) -> Sampler:
            return Sampler(make_generator(seed, replication, f"{base}/{what}"), dist)

        self._new: list[tuple[float, float]] = []  # begun, not yet returned by outages_begun
        if link.outages is None:
            self.outages = Outages()
        else:
            self.outages = Outages(
                sampler("outages/interval", link.outages.interval),
                sampler("outages/duration", link.outages.duration),
                on_begin=self._begun,
            )
        loss = Uniforms(make_generator(seed, replication, f"{base}/loss"))
        self._hop = Hop(link, self.outages, sampler("latency", link.latency), loss)
        self._last_due = 0.0

    def _begun(self, start: float, end: float) -> None:
        self._new.append((start, end))
        self.stats.outages += 1
        self.stats.outage_time += end - start

    def outage_at(self, t: float) -> tuple[float, float] | None:
        """The outage window containing ``t``, if any (``t`` must not decrease between calls)."""
        return self.outages.window_at(t)

    def outages_begun(self, t: float) -> list[tuple[float, float]]:
        """Outage windows that began up to ``t`` and were not returned before."""
        self.outages.window_at(t)
        new, self._new = self._new, []
        return new

    def send(self, t: float) -> float | None:
        """Delivery time of a message sent at ``t``; None if the link lost it."""
        st, hop = self.stats, self._hop
        st.sent += 1
        d = hop.delay(t, reliable=self.reliable)
        st.held, st.resent, st.dropped = hop.held, hop.resent, hop.dropped
        if d is None:
            return None
        due = max(t + d, self._last_due)  # in order: one stream
        self._last_due = due
        if due > t:
            st.delayed += 1
        st.delay_total += due - t
        return due


class Channel(Generic[T]):
    """Messages to one endpoint, released when their delivery (sim) time has come.

    Without a link every message is due at once.
    """

    def __init__(self, link: LiveLink | None = None) -> None:
        self.link = link
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def send(self, t: float, item: T) -> bool:
        """Queue ``item`` sent at ``t``; False if the link dropped it."""
        due = t if self.link is None else self.link.send(t)
        if due is None:
            return False
        heapq.heappush(self._heap, (due, next(self._seq), item))
        return True

    def due(self, now: float) -> list[T]:
        """Items whose delivery time is ``<= now``, in order."""
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def drain(self) -> list[T]:
        """Every queued item, in order (the end of a run)."""
        return self.due(float("inf"))


class DevicePresence:
    """When the Sparkplug devices of stations on a link are out of the edge node's reach.

    See the module docstring: a vision station's device is away through every outage of
    its ``inspection.link`` longer than ``abort_after`` (sim s).
    """

    def __init__(
        self, scenario: Scenario, *, replication: int = 0, abort_after: float = 5.0
    ) -> None:
        self.abort_after = abort_after
        self.devices: dict[str, list[str]] = {}  # link -> station names behind it
        for stage, name, _ in scenario.station_paths():
            insp = stage.inspection
            if insp is not None and insp.method == "vision" and insp.link is not None:
                self.devices.setdefault(insp.link, []).append(name)
        self._links: dict[str, Outages] = {}
        self._begun: list[tuple[str, float, float]] = []  # (link, start, end), not yet handled
        self._returns: list[tuple[float, str]] = []  # (end, link) of outages under way
        seed = scenario.run.seed
        for link_name in self.devices:
            o = scenario.network.links[link_name].outages
            if o is None:
                continue
            base = f"network/{link_name}/outages"  # the simulator's streams (sim.network.LinkModel)

            def begun(start: float, end: float, link: str = link_name) -> None:
                self._begun.append((link, start, end))

            self._links[link_name] = Outages(
                Sampler(make_generator(seed, replication, f"{base}/interval"), o.interval),
                Sampler(make_generator(seed, replication, f"{base}/duration"), o.duration),
                on_begin=begun,
            )

    def due(self, t: float) -> list[tuple[float, str, bool]]:
        """``(time, device, present)`` for every change up to ``t`` not returned before, in
        time order (``t`` must not decrease between calls)."""
        for outages in self._links.values():
            outages.window_at(t)  # tells every window begun up to t, once
        out: list[tuple[float, str, bool]] = []
        for link, start, end in self._begun:
            if end - start > self.abort_after:
                out += [(start, d, False) for d in self.devices[link]]
                self._returns.append((end, link))
        self._begun.clear()
        still: list[tuple[float, str]] = []
        for end, link in self._returns:
            if end <= t:
                out += [(end, d, True) for d in self.devices[link]]
            else:
                still.append((end, link))
        self._returns = still
        out.sort(key=lambda c: c[0])
        return out
