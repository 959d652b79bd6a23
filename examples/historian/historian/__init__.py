"""A deliberately simple historian: listens to Sparkplug B, keeps each line's good and scrap
count, and every message it saw (for the conformance checkers)."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.protocols.sparkplug.codec import decode_payload  # or any Sparkplug B decoder

__all__ = ["Historian"]

COUNTERS = {"GoodCount": "good_count", "ScrapCount": "scrap_count"}


class Historian:
    """Counts per edge node (``counts[node]["good_count"]``) from the ``line`` device's
    GoodCount and ScrapCount: names come in DBIRTH, data carries aliases only."""

    def __init__(self, broker_url: str, prefix: str = "", group: str = "+") -> None:
        url = urlsplit(broker_url)
        self.prefix = prefix
        self.counts: dict[str, dict[str, int]] = defaultdict(dict)
        self.seen: list[tuple[str, bytes]] = []  # every message, as received
        self.deaths = threading.Event()  # an NDEATH came: the node's session ended
        self._aliases: dict[tuple[str, int], str] = {}  # (node, alias) -> metric name
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883)
        self.client.loop_start()
        self.client.subscribe(f"{prefix}spBv1.0/{group}/#", qos=1)
        if not subscribed.wait(5):  # listening before the births go out
            raise TimeoutError(f"no SUBACK from {broker_url} within 5 s")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, msg.payload))
            levels = msg.topic.removeprefix(self.prefix).split("/")
            kind, node = levels[2], levels[3]
            if kind == "NDEATH":
                self.deaths.set()
            if len(levels) != 5 or levels[4] != "line" or kind not in ("DBIRTH", "DDATA"):
                return
            for m in decode_payload(msg.payload).metrics:
                if kind == "DBIRTH":
                    self._aliases[(node, m.alias)] = m.name
                name = m.name or self._aliases.get((node, m.alias), "")
                if name in COUNTERS:
                    self.counts[node][COUNTERS[name]] = m.long_value

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
