"""Where a paced run is, read for a progress display: :class:`Progress`.

Sim time is the simulation's own clock (sim seconds from the scenario's epoch), never the
wall clock; the counters are the ones the run's report settles on (gateway received,
platform stored). Reading is cheap and does not touch a socket or a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveFactory
    from iiotbed.testbed.services import Services

__all__ = ["Phase", "Progress", "live_progress", "run_progress"]

#: "fast-forward": unpaced up to the first shift; "paced": sim time follows the wall
#: clock at the speed asked (or as fast as possible, asked None); "paused": frozen
Phase = Literal["fast-forward", "paced", "paused"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One reading of a running simulation (see the module docstring)."""

    sim_s: float  # the simulation clock
    end_s: float  # where the run window ends (it starts at sim time 0)
    speed: float | None  # sim s per wall s asked; None: as fast as possible
    phase: Phase
    lag_s: float  # wall s the pacer is behind its schedule
    records: int  # records the simulation emitted
    received: int | None = None  # samples and events the gateway received
    stored: int | None = None  # samples and events the platform stored


def live_progress(live: LiveFactory) -> Progress:
    """The :class:`Progress` of a live factory alone (no gateway, no platform)."""
    pacer, asked = live.pacer, live.options.speed
    phase: Phase = "paced"
    if pacer.paused:
        phase = "paused"
    elif pacer.speed is None and asked is not None:
        phase = "fast-forward"
    return Progress(
        sim_s=live.now, end_s=live.duration, speed=asked, phase=phase, lag_s=pacer.lag_s,
        records=live.summary.records,
    )  # fmt: skip


def run_progress(services: Services) -> Progress:
    """The :class:`Progress` of a whole run: the factory's, with the samples the gateway
    received and the platform stored (the report's ``settle`` counters)."""
    p = live_progress(services.live)
    received = sum(c.stats.samples + c.stats.events for c in services.gateway.collectors)
    ingest = services.platform.ingest
    stored = None if ingest is None else ingest.metrics.stored + ingest.metrics.events_stored
    return Progress(p.sim_s, p.end_s, p.speed, p.phase, p.lag_s, p.records, received, stored)
