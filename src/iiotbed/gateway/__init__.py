"""The gateway: collect → normalise → durable buffer (store-and-forward) → UNS publisher.

Protocol collectors (OPC UA subscriptions, Sparkplug host, VDA 5050) turn device traffic
into :class:`~iiotbed.telemetry.Sample` records with :mod:`iiotbed.gateway.normalise`,
hand them to :meth:`UnsPublisher.submit`, which buffers them on disk in a
:class:`DurableBuffer` and forwards them to MQTT under the UNS (:mod:`iiotbed.protocols.uns`).
"""

from iiotbed.gateway.buffer import BufferItem, BufferStats, DurableBuffer, PendingItem
from iiotbed.gateway.normalise import (
    UNIT_CODES,
    StaleMonitor,
    mark_stale,
    normalise_value,
    quality_from_status,
    seconds_since,
    to_sample,
    unit_code,
    unit_from_opcua,
)
from iiotbed.gateway.publisher import PublisherMetrics, UnsPublisher

__all__ = [
    "UNIT_CODES",
    "BufferItem",
    "BufferStats",
    "DurableBuffer",
    "PendingItem",
    "PublisherMetrics",
    "StaleMonitor",
    "UnsPublisher",
    "mark_stale",
    "normalise_value",
    "quality_from_status",
    "seconds_since",
    "to_sample",
    "unit_code",
    "unit_from_opcua",
]
