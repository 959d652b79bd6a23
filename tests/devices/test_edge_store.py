"""The Sparkplug edge node's store file: write, reopen, drain, another run, a corrupt file;
and an edge node that stops while holding values sends them after its next start."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from iiotbed.devices.edge_store import EdgeStore
from iiotbed.devices.sparkplug import MetricDef, SparkplugEdgeNode

BROKER = "mqtt://127.0.0.1:1883"
T0 = 1_767_225_600_000


def test_written_rows_come_back_in_order_and_leave_once_removed(tmp_path: Path) -> None:
    path = tmp_path / "spb.db"
    store = EdgeStore(path, "run-a|g/e")
    assert store.open() == []
    rows = [
        (1, ("press", "Speed", 1.5, T0)),
        (2, (None, "Energy", math.nan, T0 + 1)),
        (3, ("press", "Running", True, T0 + 2)),
        (4, ("press", "Count", 7, T0 + 3)),
        (5, ("press", "Recipe", None, T0 + 4)),
        (6, ("press", "Blob", b"\x00\x01", T0 + 5)),
    ]
    store.write(rows, [])
    store.close()

    again = EdgeStore(path, "run-a|g/e")
    got = again.open()
    assert [rid for rid, _ in got] == [1, 2, 3, 4, 5, 6]
    by_id = dict(got)
    assert by_id[1] == ("press", "Speed", 1.5, T0)
    assert math.isnan(by_id[2][2]) and by_id[2][0] is None  # type: ignore[arg-type]
    assert by_id[3][2] is True and by_id[4][2] == 7 and type(by_id[4][2]) is int
    assert by_id[5][2] is None and by_id[6][2] == b"\x00\x01"
    again.write([], [1, 2, 3])  # drained: acknowledged by the broker
    again.close()

    third = EdgeStore(path, "run-a|g/e")
    assert [rid for rid, _ in third.open()] == [4, 5, 6]
    third.close()


def test_rows_of_another_run_are_discarded_never_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spb.db"
    old = EdgeStore(path, "run-a|g/e")
    old.open()
    old.write([(1, ("press", "Speed", 1.0, T0)), (2, ("press", "Speed", 2.0, T0 + 1))], [])
    old.close()
    with caplog.at_level(logging.WARNING):
        new = EdgeStore(path, "run-b|g/e")
        assert new.open() == []
        new.close()
    assert "discarded 2 held values of another run" in caplog.text
    back = EdgeStore(path, "run-a|g/e")
    assert back.open() == []  # gone for good, not kept aside
    back.close()


@pytest.mark.parametrize(
    "content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000]
)
def test_a_corrupt_file_is_set_aside_and_the_store_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "spb.db"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR):
        store = EdgeStore(path, "run-a|g/e")
        assert store.open() == []
    assert "is unreadable" in caplog.text and "starting with an empty store" in caplog.text
    assert "Traceback" not in caplog.text
    assert (tmp_path / "spb.db.corrupt").read_bytes() == content
    store.write([(1, ("press", "Speed", 1.0, T0))], [])  # the new file works
    store.close()
    again = EdgeStore(path, "run-a|g/e")
    assert [rid for rid, _ in again.open()] == [1]
    again.close()


def test_a_file_of_another_format_or_bad_rows_is_refused_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "spb.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE held (id INTEGER PRIMARY KEY, scope TEXT, device TEXT, "
               "metric TEXT, value BLOB, ts INTEGER)")  # fmt: skip
    db.execute("INSERT INTO held VALUES (1, 'run-a|g/e', 'press', 'Speed', 42, 'soon')")
    db.commit()
    db.close()
    with caplog.at_level(logging.ERROR):
        store = EdgeStore(path, "run-a|g/e")
        assert store.open() == []
        store.close()
    assert "is unreadable" in caplog.text and "is not a held value" in caplog.text


# ---------------------------------------------------------------- an edge node on disk

DEVICES = {"press": [MetricDef("Speed", "Double"), MetricDef("Count", "UInt64")]}


def _node(group: str, host: str, path: Path, scope: str) -> SparkplugEdgeNode:
    return SparkplugEdgeNode(BROKER, group, "edge-1", devices=DEVICES, primary_host_id=host,
                             clock=lambda: T0 + 60_000, store_path=path, store_scope=scope)  # fmt: skip


@pytest.mark.network
@pytest.mark.timeout(60)
def test_values_held_at_stop_reach_the_host_after_the_next_start(tmp_path: Path) -> None:
    # the host is away: the node holds every value (births wait for its STATE); the process
    # stops; the next start with the same store reads them back and, after its births,
    # sends them as historical at QoS 1; acknowledged, they leave the file
    from test_sparkplug import Peer

    group, host = f"it-{uuid.uuid4().hex[:10]}", f"h-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "devices.sparkplug.db"
    peer = Peer(f"spBv1.0/{group}/#")
    values = [("press", "Speed", 10.0 + i, T0 + i * 1000) for i in range(5)]

    async def first() -> None:
        async with _node(group, host, path, "run-1") as node:
            for d, m, v, ts in values:
                node.set(d, m, v, ts)
                node.set(d, "Count", int(v), ts)
                await node.flush()
            assert node.stored == 10 and not node.born

    async def second() -> list[Any]:
        node = _node(group, host, path, "run-1")
        async with node:
            assert node.stats.loaded == 10
            peer.publish(f"spBv1.0/STATE/{host}", json.dumps({"online": True, "timestamp": 1}).encode(),
                         retain=True)  # fmt: skip
            _, dbirth = await peer.next_on("DBIRTH")
            msg, hist = await peer.next_on("DDATA")
            assert msg.qos == 1  # sent at QoS 1: the broker acknowledged it before the delete
            deadline = asyncio.get_running_loop().time() + 5
            while node.stats.forwarded < 10:
                assert asyncio.get_running_loop().time() < deadline, "never acknowledged"
                await asyncio.sleep(0.02)
            await node.flush()  # the deletes reach the file
            assert dbirth.seq == 1 and hist.seq == 2
            return list(hist.metrics)

    try:
        asyncio.run(first())
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM held").fetchone()[0] == 10
        db.close()
        metrics = asyncio.run(second())
        assert all(m.is_historical for m in metrics)
        speeds = [(m.timestamp, m.double_value) for m in metrics if m.alias == 1]
        assert speeds == [(ts, v) for _, _, v, ts in values]
        store = EdgeStore(path, "run-1|" + f"{group}/edge-1")
        assert store.open() == []  # drained
        store.close()
    finally:
        peer.publish(f"spBv1.0/STATE/{host}", b"", retain=True)
        peer.close()


@pytest.mark.network
@pytest.mark.timeout(30)
def test_a_node_on_a_corrupt_file_starts_empty_and_keeps_the_bound_on_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    group, host = f"it-{uuid.uuid4().hex[:10]}", f"h-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "devices.sparkplug.db"
    path.write_bytes(b"garbage, not a store" * 50)

    async def main() -> SparkplugEdgeNode:
        node = SparkplugEdgeNode(BROKER, group, "edge-1", devices=DEVICES, primary_host_id=host,
                                 store_limit=3, store_path=path, store_scope="run-1")  # fmt: skip
        async with node:
            assert node.stats.loaded == 0
            for i in range(5):  # the host never comes: every value is held, 3 at most
                node.set("press", "Speed", float(i), T0 + i)
                await node.flush()
            assert node.stored == 3
        return node

    with caplog.at_level(logging.WARNING):
        node = asyncio.run(main())
    assert "is unreadable" in caplog.text and "Traceback" not in caplog.text
    assert (tmp_path / "devices.sparkplug.db.corrupt").exists()
    assert node.stats.store_dropped == 2 and node.stats.stored == 5
    store = EdgeStore(path, f"run-1|{group}/edge-1")
    held = store.open()
    store.close()
    assert [c[2] for _, c in held] == [2.0, 3.0, 4.0]  # the oldest dropped from the file too
