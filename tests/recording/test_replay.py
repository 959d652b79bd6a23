"""Replay: sessions re-born, ids continuous, deterministic, and a gateway ingesting it gets the
answer key's counters."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.mqtt import Message, MqttConnection
from iiotbed.platform.broker import free_port
from iiotbed.protocols.sparkplug.codec import decode_payload
from iiotbed.recording import MqttMessage, open_recording
from iiotbed.recording.replay import ReplayOptions, replay
from iiotbed.recording.resequence import plan

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "tests/data/single-machine-8h.mcap"
BROKER = "mqtt://127.0.0.1:1883"


def test_plan_renumbers_sparkplug_sessions_and_is_deterministic() -> None:
    rec = open_recording(SHIPPED)
    msgs = list(rec.mqtt_messages())
    out = list(plan(msgs, loops=2))
    assert out == list(plan(msgs, loops=2))  # same recording, same sequence
    assert len(out) == 2 * len(msgs)
    births = [o for o in out if "/NBIRTH/" in o.topic]
    deaths = [o for o in out if "/NDEATH/" in o.topic]
    assert len(births) == len(deaths) == 2
    for i, (b, d) in enumerate(zip(births, deaths, strict=True)):
        bd = {m.name: m.long_value for m in decode_payload(b.payload).metrics}["bdSeq"]
        assert bd == i and b.connect and b.will is not None
        assert decode_payload(b.will.payload).metrics[0].long_value == i  # the Will's bdSeq
        assert decode_payload(d.payload).metrics[0].long_value == i and d.disconnect
    # seq: 0 at NBIRTH, +1 on every later message of the node, mod 256
    expected = None
    for o in out:
        if "/NDEATH/" in o.topic:
            expected = None
            continue
        seq = decode_payload(o.payload).seq
        assert seq == (0 if "/NBIRTH/" in o.topic else (expected or 0)), o.topic
        expected = (seq + 1) % 256


def _vda(topic: str, body: dict[str, object], t: int) -> MqttMessage:
    return MqttMessage(t, topic, json.dumps(body).encode(), 1 if topic.endswith("connection") else 0,
                       topic.endswith("connection"), "vda5050")  # fmt: skip


def test_plan_keeps_vda5050_header_ids_continuous_across_loops() -> None:
    amr = "uagv/v2/acme/amr-01"
    head = {"version": "2.1.0", "manufacturer": "acme", "serialNumber": "amr-01", "timestamp": "x"}
    msgs = [
        _vda(f"{amr}/connection", {"headerId": 7, **head, "connectionState": "ONLINE"}, 1),
        _vda(f"{amr}/state", {"headerId": 40, **head}, 2),
        _vda("uagv/v2/acme/amr-01/order", {"headerId": 3, **head, "orderId": "o1"}, 3),
        _vda(f"{amr}/state", {"headerId": 41, **head}, 4),
        _vda(f"{amr}/connection", {"headerId": 8, **head, "connectionState": "OFFLINE"}, 5),
    ]
    out = list(plan(msgs, loops=2, topic_prefix="lab1/"))
    ids = [(o.topic.rsplit("/", 1)[1], json.loads(o.payload)["headerId"]) for o in out if o.topic]
    assert ids == [("connection", 0), ("state", 0), ("order", 0), ("state", 1), ("connection", 1),
                   ("connection", 2), ("state", 2), ("order", 1), ("state", 3), ("connection", 3)]  # fmt: skip
    first = out[0]
    assert first.connect and first.client == f"vda:{amr}" and first.topic.startswith("lab1/")
    assert first.will is not None and first.will.retain and first.will.topic == f"lab1/{amr}/connection"
    assert json.loads(first.will.payload)["connectionState"] == "CONNECTIONBROKEN"
    assert out[2].client == "vda-master:uagv/v2/acme" and out[4].disconnect


class _Sub:
    """Every message under a topic filter, in arrival order."""

    def __init__(self, pattern: str, broker: str = BROKER) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.conn = MqttConnection(broker, client_id=f"h5-sub-{uuid.uuid4().hex[:8]}",
                                   on_message=self._on, subscriptions=[(pattern, 1)])  # fmt: skip

    def _on(self, msg: Message) -> None:
        self.got.append((msg.topic, msg.payload))

    async def wait_for(self, n: int, limit: float = 20.0) -> None:
        await _until(lambda: len(self.got) >= n, limit)


async def _until(cond: Callable[[], bool], limit: float) -> None:
    """Poll ``cond`` until it holds or ``limit`` seconds passed."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(0.02)


def test_replay_twice_gives_the_same_sequence_at_the_broker() -> None:
    rec = open_recording(SHIPPED)
    prefix = f"h5-{uuid.uuid4().hex[:8]}/"
    expected = [(o.topic, o.payload) for o in plan(rec.mqtt_messages(), topic_prefix=prefix)
                if o.topic]  # fmt: skip

    async def once() -> list[tuple[str, bytes]]:
        sub = _Sub(f"{prefix}#")
        async with sub.conn:
            stats = await replay(rec, ReplayOptions(BROKER, speed=None, topic_prefix=prefix))
            assert stats.total == len(expected) and stats.skipped == 0 and stats.sessions == 1
            await sub.wait_for(len(expected))
            await asyncio.sleep(0.1)  # nothing more comes
        return sub.got

    first, second = asyncio.run(once()), asyncio.run(once())
    assert first == expected  # nothing lost, nothing reordered
    assert second == first


def test_gateway_ingesting_a_replay_gets_the_answer_keys_counters(tmp_path: Path) -> None:
    asyncio.run(_gateway_round_trip(tmp_path))


async def _gateway_round_trip(tmp_path: Path) -> None:
    from iiotbed.gateway.service import Gateway
    from iiotbed.gateway.settings import settings_from_scenario
    from iiotbed.platform.broker import EmbeddedBroker
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout
    from iiotbed.protocols.uns import decode_batch
    from iiotbed.testbed import line_view

    rec = open_recording(SHIPPED)
    sc = rec.scenario()
    start, end = rec.answer_key.window
    # a private broker: the recording's Sparkplug group is the shipped scenario's own
    async with EmbeddedBroker() as broker:
        port = free_port()
        st = settings_from_scenario(sc, broker.url, buffer=tmp_path / "gw.db", opcua_port=port)
        assert st.opcua is not None  # it retries until the replay's servers are up: quickly
        fast = st.opcua.backoff.model_copy(update={"initial": 0.05, "max": 0.2})
        st = st.model_copy(update={"opcua": st.opcua.model_copy(update={"backoff": fast})})
        samples, events = [], []

        def on_uns(msg: Message) -> None:
            got, evs = decode_batch(msg.payload, msg.topic)
            samples.extend(u.sample for u in got)
            events.extend(evs)

        uns = MqttConnection(broker.url, client_id="h5-uns", on_message=on_uns,
                             subscriptions=[(f"{st.output.root}/_stream/#", 1)])  # fmt: skip
        async with uns, Gateway(st) as gw:
            async def connected(_stats: object) -> None:
                # the OPC UA servers are up: every collector connected before a value changes
                await _until(lambda: all(c.connected for c in gw.collectors), 20)

            stats = await replay(rec, ReplayOptions(broker.url, speed=None, opcua_port=port,
                                                    hold_s=1.0), ready=connected)  # fmt: skip
            async with asyncio.timeout(30):
                await gw.flush()
            m = gw.publish_metrics()
            spb = m["collectors"]["sparkplug"]
            assert m["malformed"] == 0 and m["dropped"] == 0, m
            assert spb.get("seq_gaps", 0) == 0 and spb.get("rebirths_requested", 0) == 0, spb
            await _until(lambda: len(samples) + len(events) >= m["forwarded"], 10)
            assert len(samples) + len(events) == m["forwarded"]
    assert stats.published["sparkplug"] == 251 and stats.opcua_values > 0
    samples.sort(key=lambda s: s.t)
    telemetry = line_view(compute_kpis(samples, Layout.from_scenario(sc), start=start, end=end))
    key = rec.answer_key
    # line counters over Sparkplug B, station counters over OPC UA: every counter exact
    for k in ("good_count", "scrap_count", "processed", "failures"):
        assert telemetry[k] == key.line[k], (k, telemetry[k], key.line[k])
    assert (key.line["good_count"], key.line["processed"], key.line["failures"]) == (753, 761, 2)


def test_replay_cli_paces_and_refuses_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    prefix = f"h5-{uuid.uuid4().hex[:8]}/"
    rec = open_recording(SHIPPED)
    paced_s = (rec.answer_key.window[1] - rec.paced_from) / 100_000  # 8 h at 100000x: 0.29 s
    t0 = time.monotonic()
    res = runner.invoke(app, ["replay", str(SHIPPED), "--broker", BROKER, "--speed", "100000",
                              "--topic-prefix", prefix, "--only", "sparkplug", "--json"])  # fmt: skip
    wall = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["published"] == {"sparkplug": 251} and d["loops"] == 1
    assert wall >= paced_s * 0.9  # never ahead of the recorded spacing
    for args, hint in (
        (["--max", "--speed", "2"], "not both"),
        (["--max", "--only", "sparkplug,bogus"], "unknown protocol bogus"),
        (["--max", "--topic-prefix", "a/#"], "wildcard"),
        (["--max", "--broker", "http://x"], "mqtt://host:port"),
    ):
        argv = ["replay", str(SHIPPED), *(["--broker", BROKER] if "--broker" not in args else []), *args]
        res = runner.invoke(app, argv)
        assert res.exit_code == 2 and hint in res.output, (args, res.output)
