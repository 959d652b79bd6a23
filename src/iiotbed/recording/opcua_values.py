"""The ``/iiotbed/opcua`` stream: what the machines' OPC UA servers were given, and when.

The live factory hands its servers the station samples that :func:`iiotbed.devices.live.route`
picks (a pure function of the records), over a reliable link: running the same routing over
the recorded event log gives exactly those values. Each carries the node's browse path
(from ``Objects``), data type, status and source timestamp, so a reader needs no asyncua.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from iiotbed.protocols.opcua import MACHINES, MONITORING, OPERATION_COUNTERS, STATE_MACHINES
from iiotbed.telemetry import Quality, Record, Sample, Tag

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = ["opcua_values", "samples_of"]

_STATE_OBJECT = {tag: obj for obj, tag in STATE_MACHINES.items()}


def opcua_values(
    scenario: Scenario, records: Iterable[Record]
) -> Iterator[tuple[float, dict[str, Any]]]:
    """``(sim t, value)`` for every value the OPC UA servers were given, in order."""
    from iiotbed.devices.live.derived import Derived
    from iiotbed.devices.live.routing import RoutePlan, route
    from iiotbed.devices.opcua.spec import machine_specs

    specs = {s.path: s for s in machine_specs(scenario)}
    counters = {p: set(s.counters) for p, s in specs.items()}
    epoch = scenario.plant.epoch
    plan = RoutePlan.of(scenario)
    routed = route(records, plan, Derived(scenario))
    for s in routed.opcua:
        spec = specs.get(s.asset)
        if spec is None:
            continue
        node, dtype = _node(s.tag, counters[s.asset])
        yield s.t, {
            "browse_path": f"{MACHINES}/{spec.name}/{node}",
            "asset": s.asset, "tag": s.tag, "value": s.value, "unit": s.unit,
            "data_type": dtype, "status": s.quality.name, "t": s.t,
            "source_ts": (epoch + dt.timedelta(seconds=s.t)).astimezone(dt.UTC).isoformat(),
        }  # fmt: skip


def samples_of(values: Iterable[dict[str, Any]]) -> Iterator[Sample]:
    """The recorded values back as samples (what :meth:`MachineServers.apply_many` takes)."""
    for v in values:
        yield Sample(float(v["t"]), v["asset"], v["tag"], v["value"], v.get("unit"),
                     Quality[v.get("status", "Good")])  # fmt: skip


def _node(tag: str, counters: set[str]) -> tuple[str, str]:
    if tag in _STATE_OBJECT:
        return f"{_STATE_OBJECT[tag]}/CurrentState/Number", "UInt32"
    if tag in counters:
        return f"{OPERATION_COUNTERS}/{tag}", "UInt64"
    if tag == Tag.ENERGY:
        return f"{OPERATION_COUNTERS}/{tag}", "Double"
    if tag == Tag.FAULT:
        return f"{MONITORING}/{tag}", "Boolean"
    return f"{MONITORING}/{tag}", "Double"
