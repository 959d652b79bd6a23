"""The gateway end to end: live devices → collectors → buffer → UNS on Mosquitto → a subscriber."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from gwkit import ROOT, Relay, UnsSubscriber, clear_retained, five_g, free_port, last_values, until
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.live import LiveFactory, LiveOptions
from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.devices.vda5050 import AmrAgent
from iiotbed.errors import ScenarioError
from iiotbed.eventlog import load_records
from iiotbed.gateway.service import Gateway
from iiotbed.gateway.settings import (
    GatewaySettings,
    JsonMqttSettings,
    MappingSettings,
    OutputSettings,
    SparkplugSettings,
    Vda5050Settings,
    load_settings,
    settings_from_scenario,
)
from iiotbed.protocols.sparkplug import _sparkplug_b_pb2 as pb
from iiotbed.telemetry import Quality

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

IIOTBED = str(Path(sys.executable).with_name("iiotbed"))
COUNTERS = ("ProcessedCount", "DefectiveCount", "ConsumedCount", "FailureCount", "GoodCount",
            "ScrapCount", "OutputCount")  # fmt: skip


def _settings(tmp_path: Path, tag: str, *, opcua_port: int, output: str = "mqtt://127.0.0.1:1883",
              duration: float = 1500) -> tuple[Any, GatewaySettings]:  # fmt: skip
    sc = five_g(duration)
    st = settings_from_scenario(
        sc, output, opcua_port=opcua_port, root=f"uns-{tag}", buffer=tmp_path / "gw.db",
        sparkplug_group=f"g{tag}", vda_manufacturer=f"m{tag}", metrics_interval=0.5,
    )  # fmt: skip
    assert st.sparkplug is not None and st.vda5050 is not None
    spb = st.sparkplug.model_copy(update={"host_id": f"h{tag}", "broker": "mqtt://127.0.0.1:1883"})
    vda = st.vda5050.model_copy(update={"broker": "mqtt://127.0.0.1:1883"})
    return sc, st.model_copy(update={"id": f"gw-{tag}", "sparkplug": spb, "vda5050": vda})


def _check_totals(sub: UnsSubscriber, records: list[Any]) -> int:
    truth = {k: v for k, v in last_values(records).items() if k[1] in COUNTERS}
    got = sub.last()
    missing = [k for k in truth if k not in got or got[k].value != truth[k]]
    assert not missing, [(k, truth[k], got.get(k)) for k in missing[:5]]
    return sum(v for (_, tag), v in truth.items() if tag == "ProcessedCount")


def test_live_factory_to_uns_counters_equal_the_event_log(tmp_path: Path, tag: str) -> None:
    asyncio.run(_end_to_end(tmp_path, tag))


async def _end_to_end(tmp_path: Path, tag: str) -> None:
    port = free_port()
    sc, st = _settings(tmp_path, tag, opcua_port=port)
    events = tmp_path / "live.jsonl"
    sub = UnsSubscriber(st.output.root, extra=[f"{st.output.root}/_gateway/#"])
    opts = LiveOptions(speed=300, opcua_port=port, broker="mqtt://127.0.0.1:1883",
                       sparkplug_group=f"g{tag}", vda_manufacturer=f"m{tag}",
                       primary_host=f"h{tag}", events=events)  # fmt: skip
    try:
        async with LiveFactory(sc, opts) as live, Gateway(st) as gw:
            await live.wait()
            await asyncio.sleep(2.0)  # the last OPC UA publish and MQTT messages come in
            async with asyncio.timeout(30):
                await gw.flush()
            m = gw.publish_metrics()
            assert m["healthy"] and m["malformed"] == 0 and m["dropped"] == 0
            assert all(c["received"] > 0 and c["connected"] for c in m["collectors"].values())
        records = load_records(events)
        await until(lambda: len(sub.samples) >= m["forwarded"], what="every forwarded sample")
        produced = _check_totals(sub, records)
        assert produced > 50
        assert sub.last()[(f"{sc.line_path}/amr-01", "BatteryLevel")].unit == "P1"
        metrics = orjson.loads(sub.retained[f"{st.output.root}/_gateway/gw-{tag}/metrics"])
        assert metrics["forwarded"] == m["forwarded"] and metrics["collectors"]["opcua"]["samples"] > 0
        assert sub.retained[f"{st.output.root}/_gateway/gw-{tag}/status"] == b"offline"
    finally:
        sub.close()
        _clear(st, tag)


def _clear(st: GatewaySettings, tag: str) -> None:
    base = f"{st.output.root}/_gateway/gw-{tag}"
    clear_retained([f"{base}/metrics", f"{base}/status", f"spBv1.0/STATE/h{tag}"]
                   + [f"uagv/v2/m{tag}/amr-{i:02d}/connection" for i in range(1, 7)])  # fmt: skip


def test_output_unreachable_for_a_while_loses_and_doubles_nothing(tmp_path: Path, tag: str) -> None:
    asyncio.run(_outage(tmp_path, tag))


async def _outage(tmp_path: Path, tag: str) -> None:
    port = free_port()
    relay = Relay(free_port(), 1883)
    sc, st = _settings(tmp_path, tag, opcua_port=port, output=f"mqtt://127.0.0.1:{relay.port}")
    out = st.output.model_copy(update={"backoff": st.output.backoff.model_copy(update={"initial": 0.05, "max": 0.3})})
    st = st.model_copy(update={"output": out, "sparkplug": None, "vda5050": None})
    events = tmp_path / "live.jsonl"
    sub = UnsSubscriber(st.output.root)
    opts = LiveOptions(speed=300, opcua_port=port, events=events)
    await relay.up()
    try:
        async with LiveFactory(sc, opts) as live, Gateway(st) as gw:
            await until(lambda: gw.publisher.metrics.forwarded > 100, what="first samples out")
            await relay.down()  # the output goes away mid-run
            stored = gw.buffer.stats.appended
            await until(lambda: gw.buffer.stats.appended > stored + 200, what="buffering while down")
            assert not gw.publisher.connected and gw.metrics()["buffered"] > 0
            await asyncio.sleep(1.0)
            await relay.up()
            await live.wait()
            await asyncio.sleep(1.0)
            async with asyncio.timeout(30):
                await gw.flush()
            stored = gw.buffer.stats.appended
            assert gw.publisher.metrics.connects >= 2
        records = load_records(events)
        await until(lambda: len(sub.samples) >= stored, what="every stored sample at the subscriber")
        assert len(sub.samples) == stored  # nothing missing; resends share an id: nothing doubled
        keys = [(u.sample.asset, u.sample.tag, u.sample.t, u.sample.value) for u in sub.samples.values()]
        assert len(set(keys)) == len(keys)
        stations = {path for _, _, path in sc.station_paths()}
        assert _check_totals(sub, [r for r in records if r.asset in stations]) > 50
    finally:
        await relay.down()
        sub.close()


# --------------------------------------------------------------------------- fuzz


def _garbage(rng: random.Random, n: int, group: str, mfr: str, prefix: str) -> list[tuple[str, bytes]]:
    """Messages every MQTT collector must refuse: random bytes, truncated protobuf, wrong JSON
    types, unknown aliases, topics outside the schema."""
    out: list[tuple[str, bytes]] = []
    ddata = f"spBv1.0/{group}/DDATA/edge-1/line"
    good = pb.Payload(timestamp=1, seq=3)
    good.metrics.add(alias=1, timestamp=1, long_value=5)
    full = good.SerializeToString()
    while len(out) < n:
        k = len(out) % 9
        if k == 0:
            raw = rng.randbytes(rng.randint(1, 60))
            try:
                pb.Payload.FromString(raw)
            except Exception:
                out.append((ddata, raw))  # random bytes that are not a Sparkplug payload
        elif k == 1:
            out.append((ddata, full[: rng.randint(len(full) - 4, len(full) - 1)]))  # truncated
        elif k == 2:
            p = pb.Payload(timestamp=1, seq=rng.randint(0, 255))
            p.metrics.add(alias=rng.randint(1000, 9999), long_value=1)  # an unknown alias
            out.append((ddata, p.SerializeToString()))
        elif k == 3:
            p = pb.Payload(timestamp=1, seq=rng.randint(0, 255))
            p.metrics.add(name="GoodCount", string_value="many")  # wrong type
            out.append((ddata, p.SerializeToString()))
        elif k == 4:
            out.append((f"spBv1.0/{group}/BOGUS/edge-1", b"\x08\x01"))  # outside the schema
        elif k == 5:
            out.append((f"uagv/v2/{mfr}/amr-01/state", rng.randbytes(rng.randint(1, 40))))
        elif k == 6:
            bad = {"headerId": 1, "timestamp": "2026-01-05T00:00:01Z", "driving": "yes",
                   "batteryState": {"batteryCharge": 50, "charging": False}, "errors": []}  # fmt: skip
            out.append((f"uagv/v2/{mfr}/amr-01/state", json.dumps(bad).encode()))
        elif k == 7:
            out.append((f"{prefix}/s1/temp", json.dumps({"v": {"deep": [1]}}).encode()))
        else:
            out.append((f"{prefix}/s1/temp", b"{" + rng.randbytes(8).replace(b"}", b"")))
    return out


def test_fuzz_malformed_messages_never_block_valid_traffic(tmp_path: Path, tag: str) -> None:
    asyncio.run(_fuzz(tmp_path, tag))


async def _fuzz(tmp_path: Path, tag: str) -> None:
    broker = "mqtt://127.0.0.1:1883"
    group, mfr, prefix = f"f{tag}", f"m{tag}", f"json-{tag}"
    line = "tcl/huizhou/module-assembly/line-1"
    st = GatewaySettings(
        id=f"gw-{tag}", run_id="fuzz", epoch="2026-01-05T00:00:00Z", line=line,  # type: ignore[arg-type]
        output=OutputSettings(broker=broker, root=f"uns-{tag}", buffer=tmp_path / "gw.db"),
        sparkplug=SparkplugSettings(host_id=f"h{tag}", groups=[group], assets={"line": line}),
        vda5050=Vda5050Settings(manufacturer=mfr, prefix=line),
        json_mqtt=JsonMqttSettings(mappings=[MappingSettings(
            topic=f"{prefix}/+/temp", asset=line + "/{1}", tag="Temperature", value="/v",
            unit="CEL", timestamp="/ts")]),
    )  # fmt: skip
    epoch_ms = 1_767_571_200_000
    garbage = _garbage(random.Random(7), 10_000, group, mfr, prefix)
    sub = UnsSubscriber(st.output.root)
    pubc = paho.Client(CallbackAPIVersion.VERSION2)
    pubc.connect("127.0.0.1", 1883)
    pubc.loop_start()
    node = SparkplugEdgeNode(broker, group, "edge-1", devices={"line": [MetricDef("GoodCount", "UInt64")]},
                             primary_host_id=f"h{tag}", client_id=f"edge-{tag}")  # fmt: skip
    try:
        async with Gateway(st) as gw, node, AmrAgent(broker, mfr, "amr-01", clock=lambda: 1_767_571_200.0,
                                                     client_id=f"amr-{tag}") as amr:  # fmt: skip
            spb = gw.collectors[0].stats
            await until(lambda: getattr(spb, "births", 0) >= 2, what="the host to see the births")
            await until(lambda: gw.metrics()["collectors"]["vda5050"]["received"] > 0, what="AMR state")
            sent_valid = 0
            done = threading.Event()

            def blast() -> None:
                for k in range(0, len(garbage), 250):
                    infos = [pubc.publish(t, p, qos=1) for t, p in garbage[k : k + 250]]
                    for i in infos:
                        i.wait_for_publish(10)
                done.set()

            blaster = asyncio.create_task(asyncio.to_thread(blast))
            i = 0
            while not done.is_set() or i < 50:
                i += 1
                node.set("line", "GoodCount", i, epoch_ms + i * 1000)
                await node.flush()
                amr.update(1_767_571_200.0 + i, battery=100.0 - i * 0.1, position=(float(i), 1.0))
                body = json.dumps({"v": 20.0 + i, "ts": epoch_ms + i * 1000}).encode()
                await asyncio.to_thread(lambda b=body: pubc.publish(f"{prefix}/s1/temp", b, qos=1).wait_for_publish(5))
                sent_valid = i
                await asyncio.sleep(0.005)
            await blaster
            malformed = lambda: sum(c["malformed"] for c in gw.metrics()["collectors"].values())  # noqa: E731
            try:
                await until(lambda: malformed() >= len(garbage), 30, what="every malformed message")
            except AssertionError:
                raise AssertionError(gw.metrics()) from None
            await asyncio.sleep(0.5)
            m = gw.metrics()
            async with asyncio.timeout(30):
                await gw.flush()
            assert gw.healthy and m["healthy"]
            assert malformed() == len(garbage), m["collectors"]
            # garbage never moved seq, nor asked for a rebirth
            assert (getattr(spb, "seq_gaps", None), getattr(spb, "rebirths_requested", None)) == (0, 0)
        def values() -> set[tuple[str, str, Any]]:
            with sub.lock:
                return {(u.sample.asset, u.sample.tag, u.sample.value) for u in sub.samples.values()}

        await until(lambda: (line, "GoodCount", sent_valid) in values(), what="the last count")
        got = values()
        for k in range(1, sent_valid + 1):  # every valid sample of every collector arrived
            assert (line, "GoodCount", k) in got
            assert (f"{line}/s1", "Temperature", 20.0 + k) in got
            assert (f"{line}/amr-01", "PositionX", float(k)) in got
        temp = sub.last()[(f"{line}/s1", "Temperature")]
        assert (temp.unit, temp.t, temp.quality) == ("CEL", float(sent_valid), Quality.Good)
    finally:
        pubc.disconnect()
        pubc.loop_stop()
        sub.close()
        clear_retained([f"uagv/v2/{mfr}/amr-01/connection", f"spBv1.0/STATE/h{tag}",
                        f"uns-{tag}/_gateway/gw-{tag}/metrics", f"uns-{tag}/_gateway/gw-{tag}/status"])  # fmt: skip


# --------------------------------------------------------------------------- settings and CLI


def test_example_settings_load_and_errors_carry_file_and_line(tmp_path: Path) -> None:
    st = load_settings(ROOT / "examples/gateway.yaml")
    assert st.opcua is not None and st.json_mqtt is not None and st.output.root == "uns"
    bad = tmp_path / "gw.yaml"
    bad.write_text(
        "run_id: r1\nepoch: 2026-01-05T00:00:00Z\nline: a/b\n"
        "output:\n  broker: http://x\n  batch_sise: 3\n"
        "json_mqtt:\n  mappings:\n    - topic: a/#/b\n      asset: x\n      tag: y\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_settings(bad)
    text = str(err.value)
    assert f"{bad}:5: output.broker:" in text and "mqtt://host:port" in text
    assert f"{bad}:6: output.batch_sise: unknown key" in text
    bad.write_text("run_id: r1\nepoch: 2026-01-05T00:00:00Z\nline: a/b\noutput: {broker: mqtt://h:1}\n"
                   "json_mqtt:\n  mappings:\n    - {topic: a/#/b, asset: x, tag: y}\n")  # fmt: skip
    with pytest.raises(ScenarioError, match=r"gw.yaml:7: json_mqtt.mappings\[0\]: .*'#' must be the last"):
        load_settings(bad)


def test_cli_gateway_runs_and_exits_2_on_bad_config(tmp_path: Path, tag: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    bad = tmp_path / "gw.yaml"
    bad.write_text("run_id: r\nepoch: 2026-01-05T00:00:00Z\nline: a/b\noutput: {broker: mqtt://h:1, root: 3/}\n")
    proc = subprocess.run([IIOTBED, "gateway", "--config", str(bad)], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert proc.returncode == 2 and f"{bad}:4: output.root" in proc.stderr
    both = subprocess.run([IIOTBED, "gateway"], capture_output=True, text=True, timeout=60, env=env)
    assert both.returncode == 2 and "--scenario" in both.stderr
    root = f"uns-{tag}"
    proc = subprocess.run(
        [IIOTBED, "gateway", "--scenario", str(ROOT / "scenarios/single-machine.yaml"),
         "--broker", "mqtt://127.0.0.1:1883", "--opcua-port", str(free_port()), "--root", root,
         "--buffer", str(tmp_path / "b.db"), "--stop-after", "2"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "opcua, sparkplug" in proc.stdout and "received 0, forwarded 0" in proc.stdout
    clear_retained([f"{root}/_gateway/gw-line-1/metrics", f"{root}/_gateway/gw-line-1/status",
                    "spBv1.0/STATE/iiotbed-gateway"])  # fmt: skip


# --------------------------------------------------------------------------- lifecycle


def test_gateway_async_with_passes_the_body_exception_through(tmp_path: Path, tag: str) -> None:
    st = GatewaySettings(
        id=f"gw-{tag}", run_id="exc", epoch="2026-01-05T00:00:00Z", line="a/b",  # type: ignore[arg-type]
        output=OutputSettings(broker="mqtt://127.0.0.1:1883", root=f"uns-{tag}", buffer=tmp_path / "gw.db"),
    )  # fmt: skip

    async def body() -> None:
        gw = Gateway(st, collectors=[])
        boom = LookupError("from the body")
        with pytest.raises(LookupError) as err:  # itself, not wrapped in an ExceptionGroup
            async with gw:
                raise boom
        assert err.value is boom
        assert all(t.done() for t in gw._tasks.values())  # every task it started has ended
        # the same for a cancellation of the task running the gateway
        gw = Gateway(st, collectors=[])

        async def hold() -> None:
            async with gw:
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert all(t.done() for t in gw._tasks.values())

    try:
        asyncio.run(body())
    finally:
        clear_retained([f"uns-{tag}/_gateway/gw-{tag}/metrics", f"uns-{tag}/_gateway/gw-{tag}/status"])
