"""The one link model: latency draws, losses (dropped or paid with a retransmission), outages.

A link's outage schedule (:class:`Outages`) is one stream shared by every user of the
link; each user (:class:`Hop`: a vision station, the AMR dispatcher, a live endpoint)
draws its own latencies and losses. The simulator builds them from its context
(:class:`LinkModel`, :class:`LinkUser`); the live shaping (``iiotbed.devices.network``)
builds them from streams of its own, so it does not disturb the simulation's draws.
Pure: no I/O, no clock but the times it is given.
"""

from __future__ import annotations

from collections.abc import Callable

from iiotbed.devices.sim._signals import Context
from iiotbed.devices.sim.rng import Sampler, Uniforms
from iiotbed.scenario import Link

__all__ = ["Hop", "LinkModel", "LinkUser", "Outages"]

Window = tuple[float, float]


class Outages:
    """Outage windows ``[start, end)`` of one link, generated forward in time as queried.

    Without samplers the link never goes down. ``on_begin(start, end)`` is told of each
    window once, when a query first reaches its start. Query times must not decrease.
    """

    __slots__ = ("_duration", "_interval", "_on_begin", "_told", "end", "start")

    def __init__(
        self,
        interval: Sampler | None = None,
        duration: Sampler | None = None,
        on_begin: Callable[[float, float], None] | None = None,
    ) -> None:
        self._interval, self._duration, self._on_begin = interval, duration, on_begin
        self._told = False
        self.start = self.end = float("inf")  # the current (or next) window
        if interval is not None:
            assert duration is not None, "outages need an interval and a duration"
            self.start = interval()
            self.end = self.start + duration()

    def _reach(self, t: float) -> None:
        while self.start <= t:
            if not self._told:
                self._told = True
                if self._on_begin is not None:
                    self._on_begin(self.start, self.end)
            if self.end > t:
                return
            assert self._interval is not None and self._duration is not None
            self.start = self.end + self._interval()
            self.end = self.start + self._duration()
            self._told = False

    def window_at(self, t: float) -> Window | None:
        """The window containing ``t``, if any."""
        self._reach(t)
        return (self.start, self.end) if self.start <= t else None

    def wait(self, t: float) -> float:
        """Seconds from ``t`` until the link is up again (0 if it is up at ``t``)."""
        self._reach(t)
        return self.end - t if self.start <= t else 0.0


class Hop:
    """One user's view of a link: its own latency and loss draws over the shared outages.

    ``held``, ``resent`` and ``dropped`` count what the link did to this user's messages.
    """

    __slots__ = ("_latency", "_loss", "_p", "_rto", "dropped", "held", "link", "outages", "resent")

    def __init__(self, link: Link, outages: Outages, latency: Sampler, loss: Uniforms) -> None:
        self.link, self.outages = link, outages
        self._latency, self._loss = latency, loss
        self._p = link.loss
        self._rto = link.retransmit_timeout
        self.held = self.resent = self.dropped = 0

    def delay(self, t: float, *, reliable: bool = True) -> float | None:
        """Delay of a message sent at ``t``: outage wait, latency, retransmissions.

        A loss costs ``retransmit_timeout`` plus a new latency draw when ``reliable`` (TCP,
        MQTT QoS 1); otherwise (QoS 0) the message is gone: None.
        """
        wait = self.outages.wait(t)
        if wait > 0.0:
            self.held += 1
        d = wait + self._latency.draw()
        if self._p > 0.0:
            while self._loss.draw() < self._p:
                if not reliable:
                    self.dropped += 1
                    return None
                self.resent += 1
                d += self._rto + self._latency.draw()
        return d

    def one_way(self, t: float) -> float:
        """Delay of a message sent at ``t`` over a reliable transport."""
        d = self.delay(t)
        assert d is not None  # a reliable transport loses nothing
        return d

    def round_trip(self, t: float) -> float:
        """Request and reply, the reply sent when the request arrives."""
        there = self.one_way(t)
        return there + self.one_way(t + there)


class LinkModel(Outages):
    """The simulator's outage schedule of the scenario link ``name``."""

    __slots__ = ("link", "name")

    def __init__(self, ctx: Context, name: str, link: Link) -> None:
        self.name, self.link = name, link
        if link.outages is None:
            super().__init__()
            return
        base = f"network/{name}/outages"
        super().__init__(ctx.sampler(base + "/interval", link.outages.interval),
                         ctx.sampler(base + "/duration", link.outages.duration))  # fmt: skip

    def outage_wait(self, t: float) -> float:
        """Seconds until the link is up again (0 if it is up at ``t``)."""
        return self.wait(t)


class LinkUser(Hop):
    """The simulator's user ``user`` of a link: draws from its own named streams."""

    __slots__ = ("model",)

    def __init__(self, ctx: Context, model: LinkModel, user: str) -> None:
        self.model = model
        base = f"{user}/link/{model.name}"
        super().__init__(model.link, model, ctx.sampler(base + "/latency", model.link.latency),
                         ctx.uniforms(base + "/loss"))  # fmt: skip
