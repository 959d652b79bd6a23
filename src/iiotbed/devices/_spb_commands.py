"""Incoming Sparkplug commands (NCMD/DCMD) at an edge node: the writes each one asks for.

Each metric of a command is either a write to hand on (its value checked against the
metric's definition) or refused with the reason; the edge node counts and logs refusals.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from iiotbed.protocols.sparkplug.codec import DATATYPES, REBIRTH_METRIC, MetricDef, metric_value, pb

__all__ = ["command_writes"]


def command_writes(
    payload: pb.Payload,
    device: str | None,
    defs: Mapping[str, MetricDef] | None,
    by_alias: Mapping[int, tuple[str | None, str]],
) -> Iterator[tuple[str, object, str | None]]:
    """``(metric, value, None)`` per valid write, ``(metric, None, reason)`` per refused one.

    ``defs`` are the metrics of ``device`` (None: the node), None for an unknown device.
    ``Node Control/Rebirth`` of the node comes as a write of a bool.
    """
    for pm in payload.metrics:
        name = pm.name
        if not pm.HasField("name") and pm.HasField("alias"):
            owner, name = by_alias.get(pm.alias, (device, f"<alias {pm.alias}>"))
            if owner != device:
                name = f"<alias {pm.alias}>"
        if device is None and name == REBIRTH_METRIC:
            if pm.WhichOneof("value") != "boolean_value":
                yield name, None, "Rebirth needs a Boolean value"
            else:
                yield name, pm.boolean_value, None
            continue
        d = defs.get(name) if defs is not None else None
        if d is None:
            yield name, None, "unknown metric" if defs is not None else "unknown device"
            continue
        if not d.writable:
            yield name, None, "metric is not writable"
            continue
        if pm.HasField("datatype") and pm.datatype != DATATYPES[d.datatype][0]:
            yield name, None, f"datatype {pm.datatype} given, the metric is {d.datatype}"
            continue
        try:
            value = metric_value(pm, d.datatype)
        except ValueError as exc:
            yield name, None, str(exc)
            continue
        if value is None:
            yield name, None, "null value"
            continue
        yield name, value, None
