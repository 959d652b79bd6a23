"""Third-party clients consume a replay without noticing: pysparkplug decodes every Sparkplug B
message a paho subscriber gets, an asyncua client subscribes to a re-served machine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from iiotbed.platform.broker import EmbeddedBroker, free_port
from iiotbed.protocols.sparkplug.codec import decode_payload
from iiotbed.recording import open_recording
from iiotbed.recording.replay import ReplayOptions, ReplayStats, replay

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "tests/data/single-machine-8h.mcap"
CONSUMER = Path(__file__).with_name("pysparkplug_consumer.py")
# pysparkplug 0.6.1 declares paho-mqtt<2 (it decodes fine with paho 2): rather than break the
# venv's resolution, CI installs it apart (`pip install --no-deps --target DIR`) and names DIR
# here; the consumer runs in its own process with DIR on its path. Named but empty: a failure.
THIRD_PARTY = os.environ.get("IIOTBED_THIRD_PARTY_PATH", "")


def _pysparkplug_path() -> str | None:
    """Where pysparkplug is: "" when installed in the venv, DIR when apart, None when absent."""
    if THIRD_PARTY:
        if not (Path(THIRD_PARTY) / "pysparkplug").is_dir():
            pytest.fail(f"IIOTBED_THIRD_PARTY_PATH={THIRD_PARTY} holds no pysparkplug")
        return THIRD_PARTY
    return "" if importlib.util.find_spec("pysparkplug") is not None else None


def _recorded() -> list[tuple[str, int, list[tuple[str, Any]]]]:
    """(topic, payload timestamp, [(metric name, value)]) of every recorded Sparkplug
    message, read with iiotbed's own codec (names from the births, aliases after)."""
    names: dict[tuple[str, int], str] = {}
    out = []
    for m in open_recording(SHIPPED).mqtt_messages(["sparkplug"]):
        p = decode_payload(m.payload)
        source = m.topic.split("/", 3)[3]  # <edge node>[/<device>]
        metrics = []
        for x in p.metrics:
            if "BIRTH" in m.topic:
                names[source, x.alias] = x.name
            which = x.WhichOneof("value")
            metrics.append((x.name or names[source, x.alias], getattr(x, which) if which else None))
        out.append((m.topic, p.timestamp, metrics))
    return out


def test_pysparkplug_decodes_a_replay_as_the_recording_says() -> None:
    where = _pysparkplug_path()
    if where is None:
        pytest.skip("needs pysparkplug: pip install --no-deps pysparkplug==0.6.1 (or --target "
                    "DIR and IIOTBED_THIRD_PARTY_PATH=DIR)")  # fmt: skip
    env = dict(os.environ)
    if where:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))

    async def run() -> tuple[ReplayStats, list[dict[str, Any]]]:
        async with EmbeddedBroker() as broker:  # its own broker: the topics are the recorded ones
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(CONSUMER), str(broker.port),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                async with asyncio.timeout(20):
                    first = await proc.stdout.readline()
                assert first == b"ready\n", (first, await proc.stderr.read())  # type: ignore[union-attr]
                stats = await replay(open_recording(SHIPPED), ReplayOptions(broker.url, speed=None))
                async with asyncio.timeout(30):
                    out, err = await proc.communicate()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == 0, err.decode()
        return stats, [json.loads(line) for line in out.splitlines()]

    stats, got = asyncio.run(run())
    expected = _recorded()
    assert len(got) == stats.total == len(expected) == 251
    prev_seq = None
    for msg, (topic, timestamp, metrics) in zip(got, expected, strict=True):
        kind = msg["type"]
        assert msg["topic"] == topic
        seen = [tuple(m) for m in msg["metrics"]]
        if kind == "NDEATH":
            # pysparkplug 0.6.1 reads an NDEATH's timestamp only when there is none (a bug of
            # its own): not compared
            assert seen == [("bdSeq", 0)]  # the replay's first session
            continue
        assert msg["timestamp"] == timestamp  # the recorded time: replay keeps it
        if kind == "NBIRTH":
            assert ("bdSeq", 0) in seen
            seen = [x for x in seen if x[0] != "bdSeq"]
            metrics = [x for x in metrics if x[0] != "bdSeq"]
        assert seen == metrics, topic
        # seq: 0 at NBIRTH, then +1 on every message of the node, mod 256
        assert msg["seq"] == (0 if kind == "NBIRTH" else (prev_seq + 1) % 256), topic  # type: ignore[operator]
        prev_seq = msg["seq"]
    assert [m["type"] for m in got[:4]] == ["NBIRTH", "DBIRTH", "DBIRTH", "DBIRTH"]


def test_an_asyncua_client_subscribes_to_a_replayed_machine() -> None:
    from asyncua import Client, Node

    path = ["Machines", "bonder-01", "OperationCounters", "ProcessedCount"]
    recorded = [int(v["value"]) for _, v in open_recording(SHIPPED).opcua_values()
                if v["browse_path"] == "/".join(path)]  # fmt: skip
    seen: list[int] = []

    class Handler:
        def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
            seen.append(int(val))

    async def find(node: Node, names: list[str]) -> Node:
        for name in names:
            for child in await node.get_children():
                if (await child.read_browse_name()).Name == name:
                    node = child
                    break
            else:
                raise AssertionError(f"no {name} under {node}")
        return node

    async def run() -> None:
        async with EmbeddedBroker() as broker:
            client: Client | None = None

            async def ready(st: ReplayStats) -> None:
                nonlocal client
                client = Client(st.endpoints[0])
                await client.connect()
                node = await find(client.nodes.objects, path)
                sub = await client.create_subscription(20, Handler())
                await sub.subscribe_data_change(node)
                await asyncio.sleep(0.3)  # the initial value arrives

            try:
                # 8 h at 20000x: ~1.5 s, a value every ~2 ms of wall time
                await replay(open_recording(SHIPPED), ReplayOptions(
                    broker.url, speed=20_000, opcua_port=free_port(), only=frozenset({"opcua"}),
                    hold_s=1.0), ready=ready)  # fmt: skip
            finally:
                if client is not None:
                    await client.disconnect()

    asyncio.run(run())
    assert recorded[-1] == 761  # the shift's processed count (the answer key's)
    assert seen[-1] == recorded[-1]  # the last recorded value reached the client
    assert len(seen) > 10 and seen == sorted(seen)  # live changes, never backwards
    assert set(seen) <= {0, *recorded}
