"""Protocol collectors: OPC UA subscriptions, Sparkplug B host, VDA 5050, generic JSON over MQTT.

Each turns one protocol's traffic into telemetry records for a :class:`Sink`, counts what
it refuses (:class:`CollectorStats`) and reconnects by itself. ``opcua`` is the only
gateway module importing asyncua.
"""

from iiotbed.gateway.collectors.base import Collector, CollectorStats, MalformedLog, Sink
from iiotbed.gateway.collectors.json_mqtt import JsonMapping, JsonMqttCollector, resolve_pointer
from iiotbed.gateway.collectors.opcua import OpcUaCollector
from iiotbed.gateway.collectors.sparkplug import SparkplugHost, SparkplugHostStats
from iiotbed.gateway.collectors.vda5050 import Vda5050Collector
from iiotbed.mqtt import Backoff

__all__ = [
    "Backoff",
    "Collector",
    "CollectorStats",
    "JsonMapping",
    "JsonMqttCollector",
    "MalformedLog",
    "OpcUaCollector",
    "Sink",
    "SparkplugHost",
    "SparkplugHostStats",
    "Vda5050Collector",
    "resolve_pointer",
]
