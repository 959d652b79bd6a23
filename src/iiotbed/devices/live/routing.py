"""Which endpoint shows which record: a pure function of the records and the plant.

Station samples go to the OPC UA servers (plus the derived ``CycleTime``, ``Power`` and
PackML's ``EquipmentStarved`` / ``EquipmentBlocked``, from the buffers' levels);
energy, power and speed go to each station's Sparkplug device too; line counters, the
planned state and headcounts to the Sparkplug ``line`` device; technicians to the AR
headsets device; AMR samples and events to their VDA 5050 agents. No I/O: the live
factory sends what :func:`route` returns through each endpoint's link.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from iiotbed.devices.live.derived import STATE_TAGS, Derived
from iiotbed.scenario import Scenario
from iiotbed.telemetry import Event, EventName, Record, Sample, Tag

__all__ = ["HEADSETS", "LINE_METRICS", "RoutePlan", "Routed", "SparkplugChange", "route"]

#: line counters published on the Sparkplug ``line`` device
LINE_METRICS = (Tag.GOOD, Tag.SCRAP, Tag.LINE_OUTPUT)
#: the Sparkplug device of the technicians' AR headsets
HEADSETS = "ar-headsets"
_TECH_END = (EventName.REPAIR_END, EventName.PDM_END)

#: (Sparkplug device, metric, value, timestamp in ms since 1970)
SparkplugChange = tuple[str, str, object, int]


@dataclass(frozen=True)
class RoutePlan:
    """Where each asset's records go: the plant's layout, fixed for a run."""

    station_names: Mapping[str, str]  # station path -> name (its Sparkplug device)
    line: str  # the line's asset path
    amrs: frozenset[str]  # AMR asset paths
    epoch_s: float  # the scenario epoch, seconds since 1970

    @classmethod
    def of(cls, scenario: Scenario, amr_paths: Iterable[str] = ()) -> RoutePlan:
        return cls(
            station_names={path: name for _, name, path in scenario.station_paths()},
            line=scenario.line_path,
            amrs=frozenset(amr_paths),
            epoch_s=scenario.plant.epoch.timestamp(),
        )

    @property
    def technicians(self) -> str:
        return f"{self.line}/technicians"


@dataclass
class Routed:
    """One batch's messages per endpoint, in record order."""

    opcua: list[Sample] = field(default_factory=list)
    sparkplug: list[SparkplugChange] = field(default_factory=list)
    vda: list[Record] = field(default_factory=list)


def route(batch: Iterable[Record], plan: RoutePlan, derived: Derived) -> Routed:
    """The messages each endpoint gets for ``batch``; ``derived`` is advanced through it."""
    station_name = plan.station_names
    line, tech_path, amrs = plan.line, plan.technicians, plan.amrs
    epoch_ms = plan.epoch_s * 1000
    out = Routed()
    opcua, spb, vda = out.opcua, out.sparkplug, out.vda
    changed: dict[str, float] = {}
    for r in batch:
        ts = round(epoch_ms + r.t * 1000)
        if isinstance(r, Sample):
            a, tag = r.asset, r.tag
            if a in station_name:
                opcua.append(r)
                if tag == Tag.ENERGY:
                    spb.append((station_name[a], Tag.ENERGY, float(r.value or 0.0), ts))
                elif tag == Tag.PROCESSED:
                    opcua.append(Sample(r.t, a, Tag.CYCLE_TIME, derived.cycle_done(a, r.t), "SEC"))
                elif tag in STATE_TAGS:
                    derived.state(a, STATE_TAGS.index(tag), int(r.value or 0), r.t)
                    changed[a] = r.t
            elif a == line:
                if tag in LINE_METRICS:
                    spb.append(("line", tag, int(r.value or 0), ts))
                elif tag == Tag.PLANNED_STATE:
                    derived.planned = int(r.value or 0)
                    spb.append(("line", tag, derived.planned, ts))
                    changed.update(dict.fromkeys(station_name, r.t))
                elif tag.startswith(Tag.HEADCOUNT_PREFIX):
                    spb.append(("line", tag, int(r.value or 0), ts))
            elif a == tech_path and tag == Tag.BUSY:
                spb.append((HEADSETS, Tag.BUSY, int(r.value or 0), ts))
            elif a in amrs:
                vda.append(r)
            elif tag == Tag.BUFFER_LEVEL and a in derived.next_to:
                derived.level(a, int(r.value or 0))
                changed.update(dict.fromkeys(derived.next_to[a], r.t))
        elif r.asset in amrs:
            vda.append(r)
        else:
            spb += _headset(r, ts, station_name)
    for path, t in changed.items():
        kw = derived.power_change(path)
        if kw is not None:
            opcua.append(Sample(t, path, Tag.POWER, kw, "KWT"))
            spb.append((station_name[path], Tag.POWER, kw, round(epoch_ms + t * 1000)))
        flow = derived.flow_change(path)
        if flow is not None:
            opcua.append(Sample(t, path, Tag.STARVED, int(flow[0])))
            opcua.append(Sample(t, path, Tag.BLOCKED, int(flow[1])))
    return out


def _headset(ev: Event, ts: int, station_name: Mapping[str, str]) -> list[SparkplugChange]:
    """A technician's headset shows the job they are on (or none)."""
    if ev.name == EventName.TECHNICIAN_DISPATCHED:
        tech, st = str(ev.fields["technician"]), str(ev.fields["station"])
        return [(HEADSETS, f"{tech}/Busy", True, ts),
                (HEADSETS, f"{tech}/Job", str(ev.fields.get("job", "")), ts),
                (HEADSETS, f"{tech}/Station", station_name.get(st, st), ts)]  # fmt: skip
    if ev.name in _TECH_END and "technician" in ev.fields:
        tech = str(ev.fields["technician"])
        return [(HEADSETS, f"{tech}/Busy", False, ts), (HEADSETS, f"{tech}/Job", "", ts),
                (HEADSETS, f"{tech}/Station", "", ts)]  # fmt: skip
    return []
