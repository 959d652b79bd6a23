"""Sparkplug devices that leave and come back: DDEATH, then DBIRTH, in the node's seq.

A real Mosquitto at 127.0.0.1:1883, a paho subscriber that records the order, and the
gateway's Sparkplug host (it marks a device's metrics stale at its DDEATH).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from iiotbed.devices.live import LiveFactory, LiveOptions
from iiotbed.devices.network import DevicePresence
from iiotbed.devices.sim import Factory
from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode
from iiotbed.eventlog import load_records
from iiotbed.protocols.sparkplug.codec import REBIRTH_METRIC, command_payload, decode_payload
from iiotbed.scenario import Scenario, load_scenario, scenario_from_dict
from iiotbed.telemetry import Quality, Sample, Tag

BROKER = "mqtt://127.0.0.1:1883"
T0 = 1_767_225_600_000
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]


class Sink:
    def __init__(self) -> None:
        self.seen: list[Sample] = []

    def samples(self, collector: str, samples: Any) -> None:
        self.seen.extend(samples)

    def events(self, collector: str, events: Any) -> None:
        pass


async def _poll(cond: Any, what: str, wait: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + wait
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _kinds(msgs: list[tuple[str, Any]]) -> list[tuple[str, str, int, int]]:
    """(type, device, seq, timestamp) of each message, in the order the broker sent them."""
    out = []
    for topic, p in msgs:
        parts = topic.split("/")
        out.append((parts[2], parts[4] if len(parts) > 4 else "", p.seq, p.timestamp))
    return out


def _seq_continues(kinds: list[tuple[str, str, int, int]]) -> None:
    """NBIRTH starts at 0; every later message (NDEATH has none) is the one before + 1."""
    last = None
    for kind, device, seq, _ in kinds:
        if kind == "NDEATH":
            continue
        if kind == "NBIRTH":
            assert seq == 0
        else:
            assert last is not None and seq == (last + 1) % 256, (kind, device, seq, last)
        last = seq


def test_a_device_that_leaves_gets_ddeath_then_dbirth_in_the_seq() -> None:
    from test_sparkplug import Peer

    from iiotbed.gateway.collectors import SparkplugHost

    group = f"it-{uuid.uuid4().hex[:10]}"
    peer = Peer(f"spBv1.0/{group}/#")
    sink = Sink()
    devices = {"press-01": [MetricDef("Speed", "Double")],
               "oven-01": [MetricDef("Temperature", "Float", unit="CEL")]}  # fmt: skip
    seen: list[tuple[str, Any]] = []

    async def take(n: int) -> None:
        while n:
            m = await peer.next()
            if "/NCMD/" not in m.topic:  # the rebirth request below comes back too
                seen.append((m.topic, decode_payload(m.payload)))
                n -= 1

    async def main() -> None:
        host = SparkplugHost(BROKER, sink, epoch=T0 / 1000, host_id=f"h-{group}", groups=[group])
        task = asyncio.create_task(host.run())
        try:
            await _poll(lambda: host.connected, "the host online")
            node = SparkplugEdgeNode(BROKER, group, "edge-1", devices=devices, clock=lambda: T0)
            async with node:
                await take(3)  # NBIRTH, two DBIRTH
                node.set("oven-01", "Temperature", 180.0, T0 + 1000)
                await node.flush()
                await node.device_left("oven-01", T0 + 2000)
                await node.device_left("oven-01", T0 + 2100)  # already away: nothing
                node.set("oven-01", "Temperature", 190.0, T0 + 3000)  # not seen: away
                node.set("press-01", "Speed", 5.0, T0 + 3000)
                await node.flush()
                assert node.away == {"oven-01"}
                await take(3)  # DDATA oven, DDEATH oven, DDATA press
                # a rebirth while away: no DBIRTH for the device out of reach
                peer.publish(f"spBv1.0/{group}/NCMD/edge-1",
                             command_payload([(REBIRTH_METRIC, "Boolean", True)], T0))  # fmt: skip
                await take(2)  # NBIRTH, DBIRTH press
                await node.device_returned("oven-01", T0 + 5000)
                await take(1)
                await node.device_left("oven-01", T0 + 6000)
                await take(1)
            await take(2)  # close(): DDEATH of press only, then NDEATH
            await _poll(lambda: host.stats.deaths >= 4, "the host to see the deaths")
            assert host.stats.seq_gaps == 0 and host.stats.rebirths_requested == 0
            assert node.stats.device_deaths == 2 and node.stats.device_births == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            p = Peer()
            p.publish(f"spBv1.0/STATE/h-{group}", b"", retain=True)
            p.close()

    try:
        asyncio.run(main())
    finally:
        peer.close()
    kinds = _kinds(seen)
    assert [(k, d) for k, d, *_ in kinds] == [
        ("NBIRTH", ""), ("DBIRTH", "oven-01"), ("DBIRTH", "press-01"),
        ("DDATA", "oven-01"), ("DDEATH", "oven-01"), ("DDATA", "press-01"),
        ("NBIRTH", ""), ("DBIRTH", "press-01"),
        ("DBIRTH", "oven-01"), ("DDEATH", "oven-01"),
        ("DDEATH", "press-01"), ("NDEATH", ""),
    ]  # fmt: skip
    _seq_continues(kinds)
    assert kinds[4][3] == T0 + 2000 and kinds[9][3] == T0 + 6000  # dated when it left
    back = seen[8][1]
    (temp,) = back.metrics  # read again on its return: the latest value, dated then
    assert temp.float_value == 190.0 and temp.timestamp == T0 + 5000
    oven = [s for s in sink.seen if s.asset.endswith("/oven-01")]
    assert [(s.t, s.value, s.quality) for s in oven] == [
        (0.0, None, Quality.Bad),  # the first DBIRTH: no value yet (null)
        (1.0, 180.0, Quality.Good),
        (2.0, None, Quality.Bad),  # stale at its DDEATH
        (5.0, 190.0, Quality.Good),
        (6.0, None, Quality.Bad),
    ]


# ------------------------------------------------------------ the live factory's view


def _scenario(duration: float) -> Scenario:
    """The 5G line, production from t = 0, its vision link down ~every 5 min for 30-90 s."""
    sc = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    epoch = dt.datetime.fromisoformat("2026-01-05T08:00:00+08:00")
    data = sc.model_copy(update={"plant": sc.plant.model_copy(update={"epoch": epoch})}).model_dump(
        mode="json"
    )
    data["network"]["links"]["5g-embb"]["outages"] = {
        "interval": {"dist": "exponential", "mean": 300},
        "duration": {"dist": "uniform", "low": 2, "high": 90},
    }
    return scenario_from_dict(data).with_run(duration=duration)


def test_presence_follows_the_simulators_own_outage_windows() -> None:
    sc = _scenario(4 * 3600.0)
    presence = DevicePresence(sc, abort_after=5.0)
    visions = [name for st, name, _ in sc.station_paths() if st.inspection is not None
               and st.inspection.method == "vision"]  # fmt: skip
    assert visions and presence.devices == {"5g-embb": visions}
    got = presence.due(1800.0) + presence.due(1800.0) + presence.due(sc.run.duration)
    # the simulator's outage windows of that link (its own model, as a station queries it)
    factory = Factory(sc)
    model = next(s.link.model for s in factory._stations if s.link is not None)
    windows, t = [], 0.0
    while True:
        model.window_at(t)
        if model.start > sc.run.duration:
            break
        windows.append((model.start, model.end))
        t = model.end
    long = [(a, b) for a, b in windows if b - a > 5.0]
    assert len(long) < len(windows)  # some were too short to take the device away
    want = []
    for a, b in long:
        want += [(a, v, False) for v in visions]
        want += [(b, v, True) for v in visions if b <= sc.run.duration]
    assert got == want and len(long) >= 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_vision_station_leaves_with_its_link_and_counters_still_agree(tmp_path: Path) -> None:
    from test_live import Sniffer

    from iiotbed.gateway.collectors import SparkplugHost

    sc = _scenario(1800.0)
    group = f"p{uuid.uuid4().hex[:8]}"
    sniff = Sniffer(f"spBv1.0/{group}/#")
    sink = Sink()
    events = tmp_path / "events.jsonl"
    opts = LiveOptions(speed=600, opcua_port=_free_port(), broker=BROKER, sparkplug_group=group,
                       vda_manufacturer=group, events=events)  # fmt: skip
    epoch_ms = round(sc.plant.epoch.timestamp() * 1000)

    async def main() -> str:
        host = SparkplugHost(BROKER, sink, epoch=sc.plant.epoch.timestamp(),
                             host_id=f"h-{group}", groups=[group])  # fmt: skip
        task = asyncio.create_task(host.run())
        try:
            await _poll(lambda: host.connected, "the host online")
            async with LiveFactory(sc, opts) as live:
                await live.wait()
                edge = live.edge
                assert edge is not None
                edge_id = edge.edge_node_id
            await asyncio.sleep(0.5)
            assert host.stats.seq_gaps == 0 and host.stats.rebirths_requested == 0
            return edge_id
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        edge_id = asyncio.run(main())
    finally:
        sniff.close()
    presence = DevicePresence(sc, abort_after=opts.abort_after)
    vision = presence.devices["5g-embb"][0]
    want = [c for c in presence.due(sc.run.duration) if c[1] == vision]
    assert len(want) >= 4
    msgs = [(t, decode_payload(p)) for t, p in sniff.messages]
    kinds = _kinds(msgs)
    _seq_continues(kinds)
    mine = [(k, ts) for k, d, _, ts in kinds if d == vision and k in ("DDEATH", "DBIRTH")]
    expect = [("DBIRTH", epoch_ms)] + [
        ("DBIRTH" if up else "DDEATH", epoch_ms + round(t * 1000)) for t, _, up in want
    ]
    if want[-1][2]:  # in reach at the end: close() says goodbye
        expect.append(("DDEATH", epoch_ms + round(sc.run.duration * 1000)))
    assert mine == expect
    # no data of the station while it is away
    away = [(a, b) for (a, _, up), (b, _, _) in zip(want, [*want[1:], want[-1]], strict=True)
            if not up]  # fmt: skip
    data = [ts for k, d, _, ts in kinds if d == vision and k == "DDATA"]
    assert data and not [ts for ts in data for a, b in away
                         if epoch_ms + a * 1000 < ts < epoch_ms + b * 1000]  # fmt: skip
    # the station's metrics are stale (Bad) from each leave, good again from each return
    asset = f"{group}/{edge_id}/{vision}"
    power = [(s.t, s.quality) for s in sink.seen if s.asset == asset and s.tag == Tag.POWER]
    for t, _, up in want:
        assert (pytest.approx(t, abs=1e-3), Quality.Good if up else Quality.Bad) in power
    # the line's counters (another device) agree with the live run's own event log
    records = load_records(events)
    line = [
        s for s in sink.seen if s.asset.endswith(f"{edge_id}/line") and s.quality is Quality.Good
    ]
    for tag in (Tag.GOOD, Tag.SCRAP, Tag.LINE_OUTPUT):
        got = max((s for s in line if s.tag == tag), key=lambda s: s.t).value
        truth = max((r for r in records if isinstance(r, Sample) and r.tag == tag
                     and r.asset == sc.line_path), key=lambda r: r.t).value  # fmt: skip
        assert got == truth, tag
