"""A Sparkplug B consumer that knows nothing of iiotbed: paho subscribes, pysparkplug decodes.

Run as ``python pysparkplug_consumer.py PORT``: subscribes to ``spBv1.0/#`` on
127.0.0.1:PORT, prints ``ready``, then one JSON line per message (topic, timestamp, seq,
[[metric name, value]...]) until an NDEATH arrived or nothing came for 10 s. A process of
its own: pysparkplug registers the same protobuf package as iiotbed's codec, and one
process holds only one of them.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import paho.mqtt.client as paho
import pysparkplug as ps
from paho.mqtt.enums import CallbackAPIVersion


def main(port: int) -> None:
    got: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
    subscribed: queue.SimpleQueue[bool] = queue.SimpleQueue()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="pysparkplug-consumer")
    c.on_message = lambda _c, _u, msg: got.put(msg)
    c.on_subscribe = lambda *a: subscribed.put(True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe("spBv1.0/#", 1)
    subscribed.get(timeout=5)
    print("ready", flush=True)
    births: dict[tuple[str, str | None], Any] = {}
    while True:
        try:
            msg = got.get(timeout=10)
        except queue.Empty:
            break
        topic = ps.Topic.from_str(msg.topic)
        key = (topic.edge_node_id, topic.device_id)
        decoded = ps.Message.from_mqtt_message(msg, birth=births.get(key))
        kind = topic.message_type
        if kind in (ps.MessageType.NBIRTH, ps.MessageType.DBIRTH):
            births[key] = decoded.payload
        p = decoded.payload
        # an NDEATH carries its one metric, bdSeq, apart
        ms = [p.bd_seq_metric] if kind == ps.MessageType.NDEATH else p.metrics
        metrics = [[m.name, m.value] for m in ms]
        print(json.dumps({"topic": msg.topic, "type": str(kind), "timestamp": p.timestamp,
                          "seq": getattr(p, "seq", None), "metrics": metrics}), flush=True)  # fmt: skip
        if kind == ps.MessageType.NDEATH:
            break
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
