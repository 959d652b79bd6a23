"""Lab 4 reference solution: Sparkplug B by hand and by library; bdSeq, seq, a rebirth.

By hand: the payload's seq is protobuf field 3, a varint; the library
(iiotbed.protocols.sparkplug, the specification's .proto compiled) decodes the rest.
"""

import json
import os
import queue
import time
import urllib.parse

import paho.mqtt.client as mqtt

from iiotbed.protocols.sparkplug.codec import decode_payload, pb

BROKER = urllib.parse.urlsplit(os.environ.get("IIOTBED_BROKER", "mqtt://127.0.0.1:1883"))
GROUP = os.environ.get("IIOTBED_SPARKPLUG_GROUP", "tcl-huizhou")
NODE = os.environ.get("IIOTBED_SPARKPLUG_NODE", "module-assembly-line-1")
PATIENCE = 60.0  # wall seconds to wait for what we need before giving up


def varint(data, i):
    """A protobuf varint at data[i:]: (value, next index)."""
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def seq_by_hand(data):
    """Walk the payload's fields; return field 3 (seq), None when absent."""
    i = 0
    while i < len(data):
        key, i = varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(data, i)
            if field == 3:
                return value
        elif wire == 2:
            length, i = varint(data, i)
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
    return None


def main():
    got = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lab4-{os.getpid()}")
    client.on_message = lambda c, u, msg: got.put((msg.topic, msg.payload))
    client.connect(BROKER.hostname, BROKER.port or 1883)
    client.subscribe(f"spBv1.0/{GROUP}/+/{NODE}/#")
    client.subscribe(f"spBv1.0/{GROUP}/+/{NODE}")
    client.loop_start()
    deadline = time.monotonic() + PATIENCE

    def receive():
        """The next message (topic, payload); queue.Empty once PATIENCE is over."""
        return got.get(timeout=max(0.0, deadline - time.monotonic()))

    # a few data messages: seq by hand, checked against the library
    seqs = []
    while len(seqs) < 5:
        topic, data = receive()
        if topic.split("/")[2] in ("NDATA", "DDATA"):
            by_hand = seq_by_hand(data)
            assert by_hand == decode_payload(data).seq, (by_hand, decode_payload(data).seq)
            seqs.append(by_hand)

    # ask for a rebirth: an NCMD with the Boolean metric Node Control/Rebirth = true
    cmd = pb.Payload(timestamp=int(time.time() * 1000))
    cmd.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
    client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", cmd.SerializeToString(), qos=0)
    while True:
        topic, data = receive()
        if topic.split("/")[2] == "NBIRTH":
            birth = decode_payload(data)
            break
    bd_seq = next(m.long_value for m in birth.metrics if m.name == "bdSeq")
    client.loop_stop()
    client.disconnect()
    print(f"NBIRTH seq {birth.seq}, bdSeq {bd_seq}, {len(birth.metrics)} metrics; data seqs {seqs}")
    print(json.dumps({"bdSeq": bd_seq, "birth_metrics": len(birth.metrics), "seqs": seqs,
                      "rebirth": birth.seq == 0}))


main()
