"""The Sparkplug edge node's counters and metric slots (:mod:`iiotbed.devices.sparkplug`)."""

from __future__ import annotations

from dataclasses import dataclass

from iiotbed.protocols.sparkplug.codec import MetricDef

__all__ = ["NodeMetric", "SparkplugStats"]


@dataclass
class SparkplugStats:
    """Counters of one edge node (since construction)."""

    published: int = 0
    births: int = 0
    commands_accepted: int = 0
    commands_refused: int = 0
    malformed: int = 0
    restart_failures: int = 0  # session restarts (Primary Host offline) that raised
    stored: int = 0  # metric values kept while offline (store and forward)
    store_dropped: int = 0  # stored values dropped, oldest first, because the store was full
    forwarded: int = 0  # stored values sent as historical metrics after a birth
    loaded: int = 0  # held values read back from the store file at the start
    device_deaths: int = 0  # DDEATH of a device that left (close() not counted)
    device_births: int = 0  # DBIRTH of a device that came back


class NodeMetric:
    """One metric of the node or a device: its definition, alias and last value sent."""

    __slots__ = ("alias", "defn", "timestamp_ms", "value")

    def __init__(self, defn: MetricDef, alias: int) -> None:
        self.defn = defn
        self.alias = alias
        self.value: object = None
        self.timestamp_ms: int | None = None
