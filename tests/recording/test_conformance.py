"""Conformance checkers: clean on real output (a recording, a replay seen at a broker, the UNS
producer's payloads), and each rule caught on a deliberately broken stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from iiotbed.protocols import uns
from iiotbed.protocols.sparkplug.codec import decode_payload, pb
from iiotbed.recording import open_recording
from iiotbed.recording.replay import ReplayOptions
from iiotbed.telemetry import Event, Sample
from iiotbed.testing import (
    Capture,
    Finding,
    ReplayHandle,
    assert_conformant,
    check_sparkplug,
    check_stream,
    check_uns,
    check_vda5050,
)
from iiotbed.testing.conformance import RULES, protocol_of

SHIPPED = Path(__file__).resolve().parents[2] / "tests/data/single-machine-8h.mcap"
BROKER = "mqtt://127.0.0.1:1883"
NODE = "spBv1.0/iiotbed-lab/{}/teaching-line-1"

Stream = list[tuple[str, bytes]]


@pytest.fixture(scope="module")
def spb() -> Stream:
    """The shipped recording's Sparkplug B traffic, as a subscriber saw it."""
    return [(m.topic, m.payload) for m in open_recording(SHIPPED).mqtt_messages(["sparkplug"])]


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def edit(payload: bytes, change: Callable[[pb.Payload], None]) -> bytes:
    p = decode_payload(payload)
    change(p)
    return p.SerializeToString()


def first(stream: Stream, kind: str, device: str = "") -> int:
    topic = NODE.format(kind) + (f"/{device}" if device else "")
    return next(i for i, (t, _) in enumerate(stream) if t == topic)


# --------------------------------------------------------------------------- real output


def test_a_real_recording_and_the_uns_producers_output_conform(spb: Stream) -> None:
    assert len(spb) == 251 and {protocol_of(t) for t, _ in spb} == {"sparkplug"}
    assert check_sparkplug(spb) == [] and check_stream(spb) == []
    assert_conformant(spb)
    # the UNS as the gateway encodes it, from the recording's event log
    rec = open_recording(SHIPPED)
    records = rec.records()
    samples = [r for r in records if isinstance(r, Sample)]
    events = [r for r in records if isinstance(r, Event)]
    assert len(samples) > 4000 and len(events) > 500
    # every 5th sample: jsonschema takes ~1.5 ms a document
    current = [(uns.current_topic(s.asset, s.tag),
                uns.encode_sample(s, epoch=rec.epoch_s, run_id="r1", gateway_ts=rec.epoch_s + s.t))
               for s in samples[::5]]  # fmt: skip
    batch = uns.encode_batch(samples[:300], epoch=rec.epoch_s, run_id="r1",
                             gateway_ts=rec.epoch_s, events=events[:100])  # fmt: skip
    stream = [*current, (uns.stream_topic("iiotbed/lab/teaching/line-1"), batch)]
    assert check_uns(stream) == [] and check_stream(stream) == []


@pytest.mark.network
@pytest.mark.timeout(60)
def test_a_replay_captured_at_a_broker_conforms() -> None:
    prefix = f"conf-{uuid.uuid4().hex[:8]}/"
    capture = Capture(BROKER, [prefix + "#"])
    capture.start()
    try:
        replay = ReplayHandle(SHIPPED, ReplayOptions(BROKER, topic_prefix=prefix))
        replay.start()
        stats = replay.wait(60)
        capture.wait_for(lambda ms: len(ms) >= stats.total and "NDEATH" in ms[-1].topic)
    finally:
        capture.stop()
    assert len(capture.messages) == stats.total == 251
    assert check_stream(capture.messages, topic_prefix=prefix) == []
    # the prefix matters: unstripped, none of the topics is a protocol's
    assert check_stream(capture.messages) == []
    assert {protocol_of(m.topic) for m in capture.messages} == {None}


# --------------------------------------------------------------------------- Sparkplug B


def test_sparkplug_topic_and_payload(spb: Stream) -> None:
    bad = [*spb[:3], ("spBv1.0/iiotbed-lab/NSTATUS/teaching-line-1", spb[3][1]),
           ("spBv1.0/iiotbed-lab/DDATA/teaching-line-1", spb[3][1])]  # fmt: skip
    found = check_sparkplug(bad)
    assert [(f.rule, f.index) for f in found] == [("sparkplug/topic", 3), ("sparkplug/topic", 4)]
    i = first(spb, "DDATA", "line")
    broken = [*spb[:i], (spb[i][0], b"\xff\xff\xff"), *spb[i + 1 :]]
    found = check_sparkplug(broken)
    assert (found[0].rule, found[0].index) == ("sparkplug/payload", i)


def test_sparkplug_nbirth_first(spb: Stream) -> None:
    found = check_sparkplug(spb[1:])  # the NBIRTH lost
    assert found and {f.rule for f in found if f.rule != "sparkplug/seq"} == {
        "sparkplug/nbirth-first"
    }
    assert found[0].index == 0 and "no session" in found[0].detail
    # and after the NDEATH, data is outside a session too
    late = [*spb, spb[first(spb, "DDATA", "line")]]
    assert check_sparkplug(late)[0].rule == "sparkplug/nbirth-first"


def test_sparkplug_bdseq(spb: Stream) -> None:
    d = first(spb, "NDEATH")

    def bump(p: pb.Payload) -> None:
        next(m for m in p.metrics if m.name == "bdSeq").long_value += 1

    found = check_sparkplug([*spb[:d], (spb[d][0], edit(spb[d][1], bump))])
    assert [(f.rule, f.index) for f in found] == [("sparkplug/bdseq", d)]
    assert "differs from the NBIRTH's" in found[0].detail

    def drop(p: pb.Payload) -> None:
        keep = [m for m in p.metrics if m.name != "bdSeq"]
        del p.metrics[:]
        p.metrics.extend(keep)

    found = check_sparkplug([(spb[0][0], edit(spb[0][1], drop)), *spb[1:]])
    assert rules(found) == {"sparkplug/bdseq"} and "NBIRTH without" in found[0].detail


def test_sparkplug_seq_continuous_and_wrapping(spb: Stream) -> None:
    i = first(spb, "DDATA", "line")
    found = check_sparkplug([*spb[:i], *spb[i + 1 :]])  # one message lost
    assert [(f.rule, f.index) for f in found] == [("sparkplug/seq", i)]
    assert f"expected {i}" in found[0].detail

    def seq(n: int) -> Callable[[pb.Payload], None]:
        def change(p: pb.Payload) -> None:
            p.seq = n

        return change

    # 300 data messages after the births: 255 wraps to 0 and that is right
    births = spb[: first(spb, "DDATA", "line")]
    data = spb[i]
    long = births + [(data[0], edit(data[1], seq((len(births) + k) % 256))) for k in range(300)]
    assert check_sparkplug(long) == []
    k = 255 - len(births) + 1  # the message after seq 255 counts on to 256 instead of 0
    wrong = [
        *long[: len(births) + k],
        (data[0], edit(data[1], seq(256))),
        *long[len(births) + k + 1 :],
    ]
    found = check_sparkplug(wrong)
    assert (found[0].rule, found[0].index) == ("sparkplug/seq", len(births) + k)
    assert "expected 0 (previous 255)" in found[0].detail
    found = check_sparkplug([(spb[0][0], edit(spb[0][1], seq(7))), *spb[1:]])
    assert found[0].rule == "sparkplug/seq" and "NBIRTH seq must be 0, got 7" in found[0].detail


def test_sparkplug_dbirth_first(spb: Stream) -> None:
    b = first(spb, "DBIRTH", "bonder-01")
    found = check_sparkplug([*spb[:b], *spb[b + 1 :]])
    assert "sparkplug/dbirth-first" in rules(found)
    assert all(f.index >= b for f in found)
    assert next(f for f in found if f.rule == "sparkplug/dbirth-first").topic.endswith("/bonder-01")


def test_sparkplug_birth_metrics_and_aliases(spb: Stream) -> None:
    b = first(spb, "DBIRTH", "line")

    def unname(p: pb.Payload) -> None:
        p.metrics[0].name = ""

    found = check_sparkplug([*spb[:b], (spb[b][0], edit(spb[b][1], unname)), *spb[b + 1 :]])
    assert "sparkplug/birth-metrics" in rules(found)

    def clash(p: pb.Payload) -> None:
        p.metrics[1].alias = p.metrics[0].alias

    found = check_sparkplug([*spb[:b], (spb[b][0], edit(spb[b][1], clash)), *spb[b + 1 :]])
    assert rules(found) == {"sparkplug/alias"} and "already used" in found[0].detail
    d = first(spb, "DDATA", "line")

    def undeclared(p: pb.Payload) -> None:
        p.metrics[0].alias = 9999

    found = check_sparkplug([*spb[:d], (spb[d][0], edit(spb[d][1], undeclared)), *spb[d + 1 :]])
    assert [(f.rule, f.index) for f in found] == [("sparkplug/alias", d)]
    assert "alias 9999 was not declared" in found[0].detail


def test_sparkplug_timestamp(spb: Stream) -> None:
    d = first(spb, "DDATA", "line")

    def untime(p: pb.Payload) -> None:
        p.ClearField("timestamp")

    found = check_sparkplug([*spb[:d], (spb[d][0], edit(spb[d][1], untime)), *spb[d + 1 :]])
    assert [(f.rule, f.index) for f in found] == [("sparkplug/timestamp", d)]


# --------------------------------------------------------------------------- UNS


def _uns_sample(**changes: Any) -> bytes:
    s = Sample(t=3600.0, asset="acme/plant/line-1/bonder-01", tag="GoodCount", value=7, unit="C62")
    d = uns.sample_dict(s, epoch=1.7e9, run_id="r1", gateway_ts=1.7e9 + 3600)
    d.update(changes)
    return json.dumps(d).encode()


def test_uns_rules() -> None:
    topic = uns.current_topic("acme/plant/line-1/bonder-01", "GoodCount")
    assert check_uns([(topic, _uns_sample())]) == []
    found = check_uns([(topic, b"{"), (topic, _uns_sample(quality="Fine")),
                       ("uns/acme/plant/line-1/bonder-02/GoodCount", _uns_sample()),
                       (uns.stream_topic("acme/plant/line-1"), _uns_sample()),
                       (topic, b'{"samples": []}')])  # fmt: skip
    assert [(f.rule, f.index) for f in found] == [
        ("uns/json", 0), ("uns/schema", 1), ("uns/topic", 2), ("uns/topic", 3), ("uns/topic", 4),
    ]  # fmt: skip
    assert "quality" in found[1].detail and "'Fine'" in found[1].detail
    assert "names acme/plant/line-1/bonder-01/GoodCount" in found[2].detail


# --------------------------------------------------------------------------- VDA 5050

STATE: dict[str, Any] = {
    "headerId": 0, "timestamp": "2026-01-04T16:00:00.000Z", "version": "2.1.0",
    "manufacturer": "ForwardX", "serialNumber": "amr-01", "orderId": "", "orderUpdateId": 0,
    "lastNodeId": "", "lastNodeSequenceId": 0, "nodeStates": [], "edgeStates": [],
    "driving": False, "paused": False, "actionStates": [],
    "batteryState": {"batteryCharge": 100.0, "charging": False}, "operatingMode": "AUTOMATIC",
    "errors": [], "safetyState": {"eStop": "NONE", "fieldViolation": False},
}  # fmt: skip
VDA_TOPIC = "uagv/v2/ForwardX/amr-01/state"


def _state(**changes: Any) -> bytes:
    return json.dumps({**STATE, **changes}).encode()


def test_vda5050_rules() -> None:
    good = [(VDA_TOPIC, _state(headerId=n)) for n in range(3)]
    assert check_vda5050(good) == [] and check_stream(good) == []
    no_battery = {k: v for k, v in STATE.items() if k != "batteryState"}
    found = check_vda5050([
        ("uagv/v2/ForwardX/amr-01/status", _state()),
        (VDA_TOPIC, b"[1]"),
        (VDA_TOPIC, json.dumps(no_battery).encode()),
        (VDA_TOPIC, _state(headerId=1, operatingMode="TURBO")),
        (VDA_TOPIC, _state(headerId=2, serialNumber="amr-02")),
        (VDA_TOPIC, _state(headerId=3, version="3.0.0")),
        (VDA_TOPIC, _state(headerId=3)),
    ])  # fmt: skip
    assert [(f.rule, f.index) for f in found] == [
        ("vda5050/topic", 0), ("vda5050/json", 1), ("vda5050/schema", 2), ("vda5050/schema", 3),
        ("vda5050/identity", 4), ("vda5050/identity", 5), ("vda5050/header", 6),
    ]  # fmt: skip
    assert "batteryState" in found[2].detail and "TURBO" in found[3].detail
    assert "headerId 3 after 3" in found[6].detail
    # header ids count per topic: another AMR's start again from 0
    other = [(VDA_TOPIC, _state(headerId=5)),
             ("uagv/v2/ForwardX/amr-02/state", _state(headerId=0, serialNumber="amr-02"))]  # fmt: skip
    assert check_vda5050(other) == []


# --------------------------------------------------------------------------- the assert helper


def test_assert_conformant_names_rule_index_and_topic(spb: Stream) -> None:
    i = first(spb, "DDATA", "line")
    with pytest.raises(AssertionError) as info:
        assert_conformant([*spb[:i], *spb[i + 1 :], (VDA_TOPIC, b"{")])
    text = str(info.value)
    assert text.startswith("2 conformance finding(s) (sparkplug/seq x1, vda5050/json x1):")
    assert f"message {i} on {spb[i + 1][0]}: sparkplug/seq: DDATA seq" in text
    assert f"message {len(spb) - 1} on {VDA_TOPIC}: vda5050/json: not JSON" in text
    with pytest.raises(AssertionError, match="1 conformance finding"):
        assert_conformant(check_vda5050([(VDA_TOPIC, b"{")]))
    assert_conformant(spb, protocols=["sparkplug"])
    with pytest.raises(ValueError, match=r"unknown protocol\(s\) \['opcua'\]"):
        check_stream(spb, protocols=["opcua"])
    assert set(RULES) >= {"sparkplug/seq", "uns/schema", "vda5050/header"}


def test_capture_without_a_broker_says_so_at_once() -> None:
    from iiotbed.errors import ConnectorError
    from iiotbed.platform.broker import free_port

    capture = Capture(f"mqtt://127.0.0.1:{free_port()}", ["x/#"])
    with pytest.raises(ConnectorError, match="cannot connect to MQTT broker"):
        capture.start(timeout=10)
    assert capture.done.is_set()
    with pytest.raises(ValueError, match="at least one topic filter"):
        Capture(BROKER, [])
