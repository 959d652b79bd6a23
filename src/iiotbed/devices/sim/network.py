"""Network links: latency draws, losses paid with a retransmission, and outages.

A link's outage schedule is one stream shared by every user of the link; each user
(a vision station, the AMR dispatcher) draws its own latencies and losses.
"""

from __future__ import annotations

from iiotbed.devices.sim._signals import Context
from iiotbed.scenario import Link

__all__ = ["LinkModel", "LinkUser"]


class LinkModel:
    """Outage schedule of one link, generated forward in time as it is queried."""

    def __init__(self, ctx: Context, name: str, link: Link) -> None:
        self.name = name
        self.link = link
        self._start = self._end = float("inf")
        if link.outages is not None:
            base = f"network/{name}/outages"
            self._interval = ctx.sampler(base + "/interval", link.outages.interval)
            self._duration = ctx.sampler(base + "/duration", link.outages.duration)
            self._start = self._interval()
            self._end = self._start + self._duration()

    def outage_wait(self, t: float) -> float:
        """Seconds until the link is up again (0 if it is up at ``t``)."""
        while self._end <= t:
            self._start = self._end + self._interval()
            self._end = self._start + self._duration()
        return self._end - t if self._start <= t else 0.0


class LinkUser:
    """One endpoint's view of a link: its own latency and loss draws."""

    def __init__(self, ctx: Context, model: LinkModel, user: str) -> None:
        self.model = model
        base = f"{user}/link/{model.name}"
        self._latency = ctx.sampler(base + "/latency", model.link.latency)
        self._loss = ctx.uniforms(base + "/loss")
        self._p = model.link.loss
        self._rto = model.link.retransmit_timeout

    def one_way(self, t: float) -> float:
        """Delay of a message sent at ``t``: outage wait, latency, retransmissions."""
        d = self.model.outage_wait(t) + self._latency()
        if self._p > 0.0:
            while self._loss() < self._p:
                d += self._rto + self._latency()
        return d

    def round_trip(self, t: float) -> float:
        """Request and reply, the reply sent when the request arrives."""
        there = self.one_way(t)
        return there + self.one_way(t + there)
