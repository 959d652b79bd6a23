"""Lab 5 reference solution: pause an AMR with a VDA 5050 instant action, then resume it."""

import datetime as dt
import json
import os
import queue
import time
import urllib.parse

import paho.mqtt.client as mqtt

BROKER = urllib.parse.urlsplit(os.environ.get("IIOTBED_BROKER", "mqtt://127.0.0.1:1883"))
MAKER = os.environ.get("IIOTBED_VDA_MANUFACTURER", "ForwardX")
AMR = os.environ.get("IIOTBED_LAB_AMR", "amr-01")
SPEED = float(os.environ.get("IIOTBED_SPEED", "60"))
HOLD = 1800.0  # sim seconds to keep it paused
PATIENCE = 60.0  # wall seconds to wait for a state before giving up
ROOT = f"uagv/v2/{MAKER}/{AMR}"


def action(header, kind):
    return json.dumps({
        "headerId": header, "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "version": "2.1.0", "manufacturer": MAKER, "serialNumber": AMR,
        "actions": [{"actionId": f"{kind}-{header}", "actionType": kind, "blockingType": "HARD"}],
    })


def main():
    got = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lab5-{os.getpid()}")
    client.on_message = lambda c, u, msg: got.put((msg.topic, json.loads(msg.payload)))
    client.connect(BROKER.hostname, BROKER.port or 1883)
    client.subscribe([(f"{ROOT}/state", 1), (f"{ROOT}/order", 1)])
    client.loop_start()

    order_id = None
    deadline = time.monotonic() + PATIENCE

    def next_state():
        """The next state message; keeps the last order id seen (order or state)."""
        nonlocal order_id
        while True:
            topic, body = got.get(timeout=max(0.0, deadline - time.monotonic()))
            order_id = body.get("orderId") or order_id
            if topic.endswith("/state"):
                return body

    client.publish(f"{ROOT}/instantActions", action(1, "startPause"), qos=1)
    state = next_state()
    while not state.get("paused"):
        state = next_state()
    # hold it paused HOLD sim seconds: a paused AMR that stands still sends few states, so
    # wait on the wall clock, at the factory's speed
    time.sleep(HOLD / SPEED)
    client.publish(f"{ROOT}/instantActions", action(2, "stopPause"), qos=1)
    deadline = time.monotonic() + PATIENCE
    while state.get("paused"):
        state = next_state()
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"amr": AMR, "paused_seen": True, "order_id": order_id}))


main()
