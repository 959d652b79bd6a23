"""VDA 5050 AMR agent and master control against a real Mosquitto at 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.vda5050 import AmrAgent
from iiotbed.devices.vda5050_master import MasterControl
from iiotbed.errors import CommandRefused
from iiotbed.protocols.vda5050.messages import (
    Order,
    edge,
    instant_action,
    iso_timestamp,
    node,
)

BROKER = "mqtt://127.0.0.1:1883"
SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "vda5050"
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC).timestamp()

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]


def validator(topic: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{topic}.schema").read_text()))


VALIDATORS = {t: validator(t) for t in ("state", "visualization", "connection", "order", "instantActions")}


class Peer:
    """A plain paho client that records every message under a topic filter."""

    def __init__(self, topic: str) -> None:
        self.q: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.seen: list[tuple[str, dict[str, Any], bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex}")
        subscribed = queue.Queue[int]()
        self.client.on_message = lambda c, u, m: self.q.put(m)
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        subscribed.get(timeout=5)

    async def next_on(self, leaf: str, wait: float = 5.0) -> tuple[dict[str, Any], bool]:
        while True:
            m = await asyncio.to_thread(self.q.get, True, wait)
            kind = m.topic.rsplit("/", 1)[1]
            if not m.payload or kind in ("order", "instantActions"):
                continue  # only what the AMR publishes is recorded
            doc = json.loads(m.payload)
            self.seen.append((kind, doc, bool(m.retain)))
            if kind == leaf:
                return doc, bool(m.retain)

    async def state_where(self, pred: Any, wait: float = 5.0) -> dict[str, Any]:
        while True:
            doc, _ = await self.next_on("state", wait)
            if pred(doc):
                return doc

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def assert_all_valid(self) -> None:
        assert self.seen
        for kind, doc, _ in self.seen:
            errors = [e.message for e in VALIDATORS[kind].iter_errors(doc)]
            assert not errors, (kind, doc, errors)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mfr() -> str:
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peer(mfr: str) -> Iterator[Peer]:
    p = Peer(f"uagv/v2/{mfr}/#")
    yield p
    p.close()


def clear_retained(mfr: str, serial: str) -> None:
    p = Peer(f"uagv/v2/{mfr}/{serial}/connection")
    p.publish(f"uagv/v2/{mfr}/{serial}/connection", b"", retain=True)
    p.close()


def route(prefix: str, n: int, first_seq: int = 0, released: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A straight route of n nodes, nodes[i] at (i, 0); the first ``released`` nodes are base."""
    released = n if released is None else released
    nodes = [node(f"{prefix}{i}", first_seq + 2 * i, x=float(i), y=0.0, released=i < released,
                  actions=[instant_action("pick", f"{prefix}-pick{i}", blocking_type="HARD")] if i == n - 1 else [])
             for i in range(n)]  # fmt: skip
    edges = [edge(f"{prefix}{i}-{i + 1}", first_seq + 2 * i + 1, f"{prefix}{i}", f"{prefix}{i + 1}",
                  released=i + 1 < released) for i in range(n - 1)]  # fmt: skip
    return nodes, edges


def test_connection_is_retained_and_the_will_says_connectionbroken(mfr: str, peer: Peer) -> None:
    async def main() -> None:
        async with AmrAgent(BROKER, mfr, "amr-01", clock=lambda: T0) as amr:
            online, _ = await peer.next_on("connection")
            assert online["connectionState"] == "ONLINE"
            assert online["timestamp"] == "2026-01-01T08:00:00.000Z"
            late = Peer(f"uagv/v2/{mfr}/amr-01/connection")  # a late subscriber gets it retained
            doc, retained = await late.next_on("connection")
            assert (doc["connectionState"], retained) == ("ONLINE", True)
            amr.connection.abort()
            broken, _ = await peer.next_on("connection")
            assert broken["connectionState"] == "CONNECTIONBROKEN"
            # The Will is fixed at CONNECT, before ONLINE: it holds the headerId just before it.
            assert broken["headerId"] == online["headerId"] - 1
            again, _ = await peer.next_on("connection", wait=10)
            assert again["connectionState"] == "ONLINE"
            late.close()
        offline, _ = await peer.next_on("connection")
        assert offline["connectionState"] == "OFFLINE"
        late = Peer(f"uagv/v2/{mfr}/amr-01/connection")
        doc, retained = await late.next_on("connection")
        assert (doc["connectionState"], retained) == ("OFFLINE", True)
        late.close()
        peer.assert_all_valid()

    try:
        asyncio.run(main())
    finally:
        clear_retained(mfr, "amr-01")


def test_state_goes_out_on_change_and_at_least_every_30_s(mfr: str, peer: Peer) -> None:
    async def main() -> None:
        async with AmrAgent(BROKER, mfr, "amr-02", clock=lambda: T0) as amr:
            first, _ = await peer.next_on("state")  # the state after connecting
            assert amr.update(T0 + 1.0, position=(1.0, 2.0), theta=0.5, battery=80.0) is False
            assert amr.update(T0 + 29.9, position=(1.5, 2.0)) is False
            assert amr.update(T0 + 30.5, battery=79.0) is True  # 30 s since the first state
            assert amr.update(T0 + 31.0, driving=True) is True  # a change
            assert amr.update(T0 + 32.0, driving=True) is False
            s1, _ = await peer.next_on("state")
            s2, _ = await peer.next_on("state")
            assert [first["headerId"], s1["headerId"], s2["headerId"]] == [0, 1, 2]
            assert s1["timestamp"] == iso_timestamp(T0 + 30.5) == "2026-01-01T08:00:30.500Z"
            assert s1["batteryState"]["batteryCharge"] == 79.0 and s1["driving"] is False
            assert s1["agvPosition"]["x"] == 1.5 and s1["agvPosition"]["theta"] == 0.5
            assert s2["driving"] is True
            viz = [d for k, d, _ in peer.seen if k == "visualization"]
            assert [v["headerId"] for v in viz] == [0, 1]
            assert viz[0]["agvPosition"]["y"] == 2.0
        peer.assert_all_valid()

    try:
        asyncio.run(main())
    finally:
        clear_retained(mfr, "amr-02")


def test_orders_are_accepted_updated_and_stale_updates_refused(mfr: str, peer: Peer) -> None:
    orders: list[Order] = []
    states: list[dict[str, Any]] = []

    async def main() -> None:
        async with AmrAgent(BROKER, mfr, "amr-03", on_order=orders.append, clock=lambda: T0) as amr, \
                MasterControl(BROKER, mfr, on_state=lambda s, d: states.append(d), clock=lambda: T0,
                              client_id=f"mc-{mfr}") as mc:  # fmt: skip
            nodes, edges = route("n", 4, released=2)
            sent = mc.send_order("amr-03", "o-1", 0, nodes, edges)
            assert not list(VALIDATORS["order"].iter_errors(sent))
            st = await peer.state_where(lambda d: d["orderId"] == "o-1")
            assert [n["sequenceId"] for n in st["nodeStates"]] == [0, 2, 4, 6]
            assert [e["released"] for e in st["edgeStates"]] == [True, False, False]
            assert st["actionStates"] == [{"actionId": "n-pick3", "actionType": "pick", "actionStatus": "WAITING"}]
            assert len(orders) == 1 and orders[0].nodes[1].position == (1.0, 0.0)
            assert orders[0].nodes[3].actions[0].action_type == "pick"

            amr.update(T0 + 5, node_reached=("n0", 0), driving=True)
            st = await peer.state_where(lambda d: d["lastNodeId"] == "n0")
            assert [n["nodeId"] for n in st["nodeStates"]] == ["n1", "n2", "n3"]
            assert [e["edgeId"] for e in st["edgeStates"]] == ["n0-1", "n1-2", "n2-3"]

            upd_nodes, upd_edges = route("n", 4)  # release the horizon: starts at base end n1/2
            mc.send_order("amr-03", "o-1", 1, upd_nodes[1:], upd_edges[1:])
            st = await peer.state_where(lambda d: d["orderUpdateId"] == 1)
            assert all(n["released"] for n in st["nodeStates"])
            mc.send_order("amr-03", "o-1", 0, nodes, edges)  # stale update
            st = await peer.state_where(lambda d: d["errors"])
            (err,) = st["errors"]
            assert (err["errorType"], err["errorLevel"]) == ("orderUpdateError", "WARNING")
            refs = {r["referenceKey"]: r["referenceValue"] for r in err["errorReferences"]}
            assert refs["topic"] == "order" and refs["headerId"] == "2" and refs["orderUpdateId"] == "0"
            mc.send_order("amr-03", "o-2", 0, *route("m", 2))  # busy with o-1
            st = await peer.state_where(lambda d: len(d["errors"]) == 2)
            assert st["errors"][1]["errorType"] == "orderError"
            assert len(orders) == 2 and amr.order_id == "o-1"
            amr.update(T0 + 9, action_status={"n-pick3": "FINISHED"})
            st = await peer.state_where(lambda d: d["actionStates"][0]["actionStatus"] == "FINISHED")
            for _ in range(50):
                if states and states[-1]["headerId"] == st["headerId"]:
                    break
                await asyncio.sleep(0.05)
            assert states[-1] == st  # the master control follows the same states
            assert mc.stats.invalid_received == 0
        peer.assert_all_valid()

    try:
        asyncio.run(main())
    finally:
        clear_retained(mfr, "amr-03")


def test_instant_actions_pause_resume_and_cancel(mfr: str, peer: Peer) -> None:
    seen: list[str] = []

    def on_action(a: Any) -> bool:
        seen.append(a.action_type)
        if a.action_id == "ia-7":
            raise CommandRefused("the AMR is charging", target="amr-04", command=a.action_type)
        return a.action_type == "factsheetRequest"

    async def main() -> None:
        async with AmrAgent(BROKER, mfr, "amr-04", on_instant_action=on_action) as amr, \
                MasterControl(BROKER, mfr, client_id=f"mc-{mfr}") as mc:  # fmt: skip
            mc.send_order("amr-04", "o-9", 0, *route("p", 3))
            await peer.state_where(lambda d: d["orderId"] == "o-9")
            sent = mc.send_instant_actions("amr-04", [instant_action("startPause", "ia-1")])
            assert not list(VALIDATORS["instantActions"].iter_errors(sent))
            st = await peer.state_where(lambda d: d["paused"])
            assert {"actionId": "ia-1", "actionType": "startPause", "actionStatus": "FINISHED"} in st["actionStates"]
            mc.send_instant_actions("amr-04", [instant_action("stopPause", "ia-2")])
            st = await peer.state_where(lambda d: not d["paused"])
            amr.update(T0 + 1, driving=True)
            mc.send_instant_actions("amr-04", [instant_action("cancelOrder", "ia-3")])
            st = await peer.state_where(lambda d: not d["nodeStates"])
            status = {a["actionId"]: a["actionStatus"] for a in st["actionStates"]}
            assert status["p-pick2"] == "FAILED" and status["ia-3"] == "FINISHED"
            # VDA 5050 2.1 6.6.3: stopped, node and edge states gone, orderId/orderUpdateId kept
            assert st["edgeStates"] == [] and (st["orderId"], st["orderUpdateId"]) == ("o-9", 0)
            assert st["driving"] is False and st["errors"] == []
            mc.send_instant_actions("amr-04", [instant_action("cancelOrder", "ia-4"),
                                               instant_action("factsheetRequest", "ia-5"),
                                               instant_action("teleport", "ia-6")])  # fmt: skip
            st = await peer.state_where(lambda d: len(d["errors"]) == 2)
            assert [e["errorType"] for e in st["errors"]] == ["noOrderToCancel", "actionNotSupported"]
            status = {a["actionId"]: a["actionStatus"] for a in st["actionStates"]}
            assert (status["ia-4"], status["ia-5"], status["ia-6"]) == ("FAILED", "FINISHED", "FAILED")
            # 6.6.3.2: the order was cancelled already: FAILED, noOrderToCancel naming the
            # actionId, and the vehicle is not asked
            refs = {r["referenceKey"]: r["referenceValue"] for r in st["errors"][0]["errorReferences"]}
            assert refs["actionId"] == "ia-4" and st["errors"][0]["errorLevel"] == "WARNING"
            assert seen == ["startPause", "stopPause", "cancelOrder", "factsheetRequest", "teleport"]
            assert amr.stats.instant_actions == 6
            # a refusal (CommandRefused) is an error in the state; the AMR is not paused
            mc.send_instant_actions("amr-04", [instant_action("startPause", "ia-7")])
            st = await peer.state_where(lambda d: len(d["errors"]) == 3)
            err = st["errors"][2]
            assert (err["errorType"], err["errorLevel"]) == ("actionRefused", "WARNING")
            assert "the AMR is charging" in err["errorDescription"]
            assert {"referenceKey": "actionId", "referenceValue": "ia-7"} in err["errorReferences"]
            status = {a["actionId"]: a["actionStatus"] for a in st["actionStates"]}
            assert status["ia-7"] == "FAILED" and not st["paused"] and not amr.paused
        peer.assert_all_valid()

    try:
        asyncio.run(main())
    finally:
        clear_retained(mfr, "amr-04")


def test_invalid_input_becomes_errors_and_the_agent_keeps_working(mfr: str, peer: Peer) -> None:
    orders: list[Order] = []

    async def main() -> None:
        async with AmrAgent(BROKER, mfr, "amr-05", on_order=orders.append) as amr, \
                MasterControl(BROKER, mfr, client_id=f"mc-{mfr}") as mc:  # fmt: skip
            topic = f"uagv/v2/{mfr}/amr-05/order"
            good = mc.send_order("amr-05", "o-1", 0, *route("q", 2))  # builds a valid message...
            await peer.state_where(lambda d: d["orderId"] == "o-1")
            bad = {k: v for k, v in good.items() if k != "nodes"}  # ...missing nodes
            bad["headerId"] = 77
            peer.publish(topic, json.dumps(bad).encode())
            odd = json.loads(json.dumps(good))
            odd.update(orderId="o-odd", headerId=78)
            odd["nodes"][1]["sequenceId"] = 3
            peer.publish(topic, json.dumps(odd).encode())
            other = dict(good, serialNumber="amr-99", headerId=79)
            peer.publish(topic, json.dumps(other).encode())
            peer.publish(topic, b"{not json")
            peer.publish(f"uagv/v2/{mfr}/amr-05/instantActions", b"\xff\xfe")
            st = await peer.state_where(lambda d: len(d["errors"]) == 5)
            assert [e["errorType"] for e in st["errors"]] == ["validationError"] * 5
            refs = [{r["referenceKey"]: r["referenceValue"] for r in e["errorReferences"]} for e in st["errors"]]
            assert [r.get("headerId") for r in refs] == ["77", "78", "79", None, None]
            assert [r["topic"] for r in refs] == ["order"] * 4 + ["instantActions"]
            assert "nodes" in st["errors"][0]["errorDescription"]
            assert "sequenceId" in st["errors"][1]["errorDescription"]
            assert amr.stats.invalid_messages == 4 and amr.stats.orders_rejected == 4
            amr.update(0, node_reached=("q1", 2))  # finish o-1, then a new order is accepted
            mc.send_order("amr-05", "o-2", 0, *route("r", 3))
            st = await peer.state_where(lambda d: d["orderId"] == "o-2")
            assert st["errors"] == [] and [o.order_id for o in orders] == ["o-1", "o-2"]
        peer.assert_all_valid()

    try:
        asyncio.run(main())
    finally:
        clear_retained(mfr, "amr-05")


# --------------------------------------------------------------------------- the simulated fleet

ROOT = Path(__file__).resolve().parents[2]
# amr-01's trip 1 (kits for assembler-01): to the warehouse at 748 s, loads, then drives
# (0, 0) -> (85, 10) from 934.0 s to 1005.3 s, unloads, delivers at 1185 s
LEG_2 = ((0.0, 0.0), (85.0, 10.0), 934.02, 1005.34)


def five_g(duration: float) -> Any:
    """The 5G line with its epoch at the day shift's start (production from t = 0)."""
    import datetime as dt

    from iiotbed.scenario import load_scenario

    sc = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    epoch = dt.datetime.fromisoformat("2026-01-05T08:00:00+08:00")
    sc = sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})})
    return sc.with_run(duration=duration)


def events(records: Any, name: str, asset_end: str = "") -> list[Any]:
    from iiotbed.telemetry import Event

    return [r for r in records if isinstance(r, Event) and r.name == name and r.asset.endswith(asset_end)]


def test_cancel_stops_the_amr_mid_leg_and_the_kits_come_by_a_later_trip() -> None:
    from iiotbed.devices.sim import Factory

    sc = five_g(2500)
    free, cut = Factory(sc), Factory(sc)
    free.run(2500)
    cut.run(960.0)
    amr = cut.amr("amr-01")
    assert amr.trip == 1 and amr.leg is not None
    (x0, y0), (x1, y1), t0, t1 = amr.leg
    assert t0 < cut.env.now < t1
    here = amr.position_at(cut.env.now)
    assert amr.cancel() == 1
    with pytest.raises(CommandRefused, match="not on a delivery trip"):
        amr.cancel()  # once is enough
    cut.run(961.0)
    assert amr.position == pytest.approx(here) and amr.trip == 0 and amr.leg is None
    cut.run(2500)
    (ev,) = events(cut.records, "AmrTripCancelled")
    assert ev.asset.endswith("amr-01") and ev.fields["trip"] == 1 and ev.t == pytest.approx(960.0)
    assert ev.fields["station"].endswith("assembler-01")
    # it stopped on the leg, where it was at the cancel (not at the warehouse)
    f = (here[0] - x0) / (x1 - x0) if x1 != x0 else (here[1] - y0) / (y1 - y0)
    assert 0 < f < 1
    # the station's kits come later, with another trip; the uncommanded run differs
    ends = [e for e in events(cut.records, "AmrTripEnd") if e.fields["station"].endswith("assembler-01")]
    assert ends and ends[0].fields["trip"] != 1
    first_free = events(free.records, "KitDelivery", "assembler-01")[0]
    first_cut = events(cut.records, "KitDelivery", "assembler-01")[0]
    assert first_cut.t > first_free.t and ends[0].t == first_cut.t
    assert all(e.fields["trip"] != 1 for e in events(cut.records, "AmrTripEnd"))
    # deterministic: the same cancel at the same sim time gives the same log
    again = Factory(sc)
    again.run(960.0)
    again.amr("amr-01").cancel()
    again.run(961.0)
    again.run(2500)
    assert again.records == cut.records
    idle = Factory(sc)
    idle.run(10.0)
    with pytest.raises(CommandRefused, match="not on a delivery trip"):
        idle.amr("amr-01").cancel()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until(cond: Any, what: str, wait: float = 15.0) -> None:
    import time

    end = time.monotonic() + wait
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_live_positions_move_along_the_edge_and_cancel_order_replans_the_delivery(
    mfr: str, peer: Peer, tmp_path: Path
) -> None:
    from iiotbed.devices.live import LiveFactory, LiveOptions
    from iiotbed.devices.sim import simulate
    from iiotbed.eventlog import load_records

    sc = five_g(1800)
    log_path = tmp_path / "events.jsonl"
    opts = LiveOptions(speed=50, opcua_port=_free_port(), broker=BROKER, sparkplug_group=f"g{mfr}",
                       vda_manufacturer=mfr, events=log_path)  # fmt: skip
    base = f"uagv/v2/{mfr}/amr-01"
    (x0, y0), (x1, y1), t0, t1 = LEG_2
    epoch = sc.plant.epoch.timestamp()
    seen: list[tuple[str, dict[str, Any]]] = []

    def sim_t(doc: dict[str, Any]) -> float:
        return datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp() - epoch

    def pump() -> None:
        while not peer.q.empty():
            m = peer.q.get()
            if m.topic.startswith(base + "/") and m.payload:
                seen.append((m.topic.rsplit("/", 1)[1], json.loads(m.payload)))

    def on_leg_2() -> list[dict[str, Any]]:
        pump()
        return [d for k, d in seen if k == "visualization" and t0 < sim_t(d) < t1]

    async def main() -> None:
        async with LiveFactory(sc, opts) as live:
            live.pacer.set_speed(2000)  # to just before the leg; the interval stays 5 s (50x)
            await _until(lambda: live.now >= 820, "sim time 820 s")  # advances are <= 60 s
            live.pacer.set_speed(50)
            await _until(lambda: len(on_leg_2()) >= 3, "amr-01 driving to assembler-01")
            peer.publish(f"{base}/instantActions", json.dumps({
                "headerId": 0, "timestamp": iso_timestamp(epoch + live.now), "version": "2.1.0",
                "manufacturer": mfr, "serialNumber": "amr-01",
                "actions": [instant_action("cancelOrder", "cancel-1")]}).encode())  # fmt: skip

            def cancelled() -> dict[str, Any] | None:
                pump()
                for k, d in seen:
                    if k == "state" and any(a["actionId"] == "cancel-1" for a in d["actionStates"]):
                        return d
                return None

            await _until(lambda: cancelled() is not None, "the state after cancelOrder")
            st = cancelled()
            assert st is not None
            status = {a["actionId"]: a["actionStatus"] for a in st["actionStates"]}
            assert status == {"cancel-1": "FINISHED"}
            assert (st["orderId"], st["orderUpdateId"]) == ("trip-1", 0)  # kept (6.6.3)
            assert st["nodeStates"] == [] and st["edgeStates"] == [] and st["errors"] == []
            assert st["driving"] is False and st["lastNodeId"] == "warehouse"
            assert live.factory.amr("amr-01").trip == 0
            live.pacer.set_speed(2000)
            await live.wait()
        pump()
        # positions while driving: on the edge, every 5 s of sim time, monotonically onwards
        records = load_records(log_path)
        (ev,) = events(records, "AmrTripCancelled")  # the event log records the cancel
        assert ev.asset.endswith("amr-01") and ev.fields["trip"] == 1 and t0 < ev.t < t1
        viz = [d for d in on_leg_2() if sim_t(d) <= ev.t]
        ts = [sim_t(d) for d in viz]
        assert len(viz) >= 3
        assert all(round(t / 5.0, 3) == round(t / 5.0) for t in ts[:-1]), (ts, ev.t)  # the stop: at ev.t
        assert ts[-1] == pytest.approx(ev.t, abs=1e-3)
        xs = [d["agvPosition"]["x"] for d in viz]
        assert all(a < b for a, b in itertools.pairwise(xs))
        for d, t in zip(viz, ts, strict=True):
            f = (t - t0) / (t1 - t0)
            assert d["agvPosition"]["x"] == pytest.approx(x0 + (x1 - x0) * f, abs=0.01)
            assert d["agvPosition"]["y"] == pytest.approx(y0 + (y1 - y0) * f, abs=0.01)
            assert d["agvPosition"]["theta"] == pytest.approx(0.1171, abs=1e-3)  # atan2(10, 85)
        # the kits come later by another trip
        deliveries = events(records, "KitDelivery", "assembler-01")
        free = events(simulate(sc, 0, duration=1800), "KitDelivery", "assembler-01")
        assert deliveries and deliveries[0].t > free[0].t  # the answer key differs
        ends = [e for e in events(records, "AmrTripEnd") if e.fields["station"].endswith("assembler-01")]
        assert ends[0].fields["trip"] != 1 and ends[0].t == deliveries[0].t
        for kind, doc in seen:  # all of it valid VDA 5050 2.1
            assert not [e.message for e in VALIDATORS[kind].iter_errors(doc)], (kind, doc)

    try:
        asyncio.run(main())
    finally:
        for n in range(1, 7):
            clear_retained(mfr, f"amr-{n:02d}")
