"""The durable store-and-forward buffer: order, ack, restart replay, overflow, dedup."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from iiotbed.errors import StorageError
from iiotbed.gateway import BufferItem, DurableBuffer


def items(start: int, n: int, size: int = 10) -> list[BufferItem]:
    return [
        BufferItem(f"id-{i:06d}", "e/s/a/l/st/m", f"Tag{i % 3}", bytes([i % 256]) * size, float(i))
        for i in range(start, start + n)
    ]


def ids(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [r.id for r in rows]


@pytest.mark.parametrize("cache_items", [65536, 6, 0])
def test_order_is_preserved_across_appends_and_reads(tmp_path: Path, cache_items: int) -> None:
    async def run() -> None:
        async with DurableBuffer(tmp_path / "b.db", cache_items=cache_items) as buf:
            assert await buf.append(items(0, 5)) == 5
            assert await buf.append(items(5, 7)) == 7
            first = await buf.read(4)
            assert ids(first) == [f"id-{i:06d}" for i in range(4)]
            assert [r.pos for r in first] == sorted(r.pos for r in first)
            # reading does not consume; reading after a position pipelines
            assert ids(await buf.read(4)) == ids(first)
            nxt = await buf.read(100, after=first[-1].pos)
            assert ids(nxt) == [f"id-{i:06d}" for i in range(4, 12)]
            assert nxt[0].payload == bytes([4]) * 10 and nxt[0].tag == "Tag1" and nxt[0].ts == 4.0
            assert buf.stats.pending_rows == 12 and buf.stats.pending_bytes == 120

    asyncio.run(run())


def test_ack_removes_only_through_the_position(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.db")
    buf.open_sync()
    buf.append_sync(items(0, 10))
    rows = buf.read_sync(10)
    assert buf.ack_sync(rows[3].pos) == 4
    assert buf.ack_sync(rows[3].pos) == 0  # idempotent
    assert buf.ack_sync(rows[1].pos) == 0  # never backwards
    assert ids(buf.read_sync(100)) == ids(rows[4:])
    assert buf.read_sync(100, after=0)[0].id == rows[4].id  # acked items never come back
    assert (buf.stats.pending_rows, buf.stats.pending_bytes, buf.stats.acked) == (6, 60, 4)
    buf.ack_sync(rows[-1].pos)
    assert buf.read_sync(100) == [] and buf.stats.pending_rows == 0
    buf.close_sync()


def test_restart_replays_unacked_items_in_order(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = DurableBuffer(path)
    buf.open_sync()
    buf.append_sync(items(0, 50))
    rows = buf.read_sync(20)
    buf.ack_sync(rows[-1].pos)
    buf.read_sync(20, after=rows[-1].pos)  # read but never acked: must replay
    buf.close_sync()

    again = DurableBuffer(path)
    again.open_sync()
    assert again.stats.pending_rows == 30 and again.stats.pending_bytes == 300
    replay = again.read_sync(1000)
    assert ids(replay) == [f"id-{i:06d}" for i in range(20, 50)]
    # new items queue behind the replayed ones
    again.append_sync(items(50, 2))
    assert ids(again.read_sync(1000))[-3:] == ["id-000049", "id-000050", "id-000051"]
    again.close_sync()


def test_a_killed_process_loses_no_committed_append(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = DurableBuffer(path)
    buf.open_sync()
    buf.append_sync(items(0, 100))
    buf.ack_sync(buf.read_sync(10)[-1].pos)
    # no close: a second connection sees what a crash would leave behind
    again = DurableBuffer(path)
    again.open_sync()
    assert ids(again.read_sync(1000)) == [f"id-{i:06d}" for i in range(10, 100)]
    again.close_sync()
    buf.close_sync()


def test_overflow_drops_the_oldest_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buf = DurableBuffer(tmp_path / "b.db", max_rows=10)
    buf.open_sync()
    buf.append_sync(items(0, 8))
    buf.ack_sync(buf.read_sync(2)[-1].pos)  # acked items do not count toward the bound
    with caplog.at_level(logging.WARNING, logger="iiotbed.gateway.buffer"):
        buf.append_sync(items(8, 7))
    assert buf.stats.dropped == 3
    assert "dropped the 3 oldest" in caplog.text
    assert ids(buf.read_sync(100)) == [f"id-{i:06d}" for i in range(5, 15)]
    assert buf.stats.pending_rows == 10
    buf.close_sync()

    by_bytes = DurableBuffer(tmp_path / "c.db", max_bytes=95)
    by_bytes.open_sync()
    by_bytes.append_sync(items(0, 12))  # 120 bytes: the 3 oldest go
    assert by_bytes.stats.dropped == 3 and by_bytes.stats.pending_bytes == 90
    assert by_bytes.read_sync(1)[0].id == "id-000003"
    by_bytes.close_sync()


def test_dedup_by_id_pending_and_recently_acked(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.db", dedup_window=5)
    buf.open_sync()
    assert buf.append_sync(items(0, 4)) == 4
    assert buf.append_sync(items(2, 4)) == 2  # id-2, id-3 already pending
    assert buf.stats.duplicates == 2 and buf.stats.pending_rows == 6
    assert buf.stats.pending_bytes == 60
    assert ids(buf.read_sync(100)) == [f"id-{i:06d}" for i in range(6)]
    buf.ack_sync(buf.read_sync(100)[-1].pos)
    assert buf.append_sync(items(4, 1)) == 0  # resent after ack, inside the window
    buf.append_sync(items(100, 10))
    buf.ack_sync(buf.read_sync(100)[-1].pos)
    assert buf.append_sync(items(0, 1)) == 1  # far outside the window: accepted again
    buf.close_sync()


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path / "b.db")
    with pytest.raises(StorageError, match="not open"):
        buf.read_sync(1)
    bogus = tmp_path / "not-a-db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="not-a-db") as info:
        DurableBuffer(bogus).open_sync()
    assert info.value.url == str(bogus)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(ValueError, match="positive"):
        DurableBuffer(tmp_path / "x.db", max_rows=0)


def test_dedup_survives_a_restart_and_reads_cross_segments(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    buf = DurableBuffer(path)
    buf.open_sync()
    for k in range(0, 30, 3):  # ten small segments
        buf.append_sync(items(k, 3))
    rows = buf.read_sync(7, after=buf.read_sync(2)[-1].pos)
    assert ids(rows) == [f"id-{i:06d}" for i in range(2, 9)]
    buf.ack_sync(rows[-1].pos)
    buf.close_sync()
    again = DurableBuffer(path)
    again.open_sync()
    assert again.append_sync(items(0, 35)) == 5  # acked and pending ids are both remembered
    assert again.stats.pending_rows == 21 + 5 and again.stats.duplicates == 30
    assert ids(again.read_sync(2)) == ["id-000009", "id-000010"]
    again.close_sync()


def test_dedup_memory_is_scoped_to_the_run(tmp_path: Path) -> None:
    """Another run on the same file forgets what the last run sent (its pending items still
    replay); a restart of the same run keeps the dedup memory."""
    path = tmp_path / "b.db"
    buf = DurableBuffer(path, run_id="run-a")
    buf.open_sync()
    buf.append_sync(items(0, 10))
    buf.append_sync(items(10, 5))
    buf.ack_sync(buf.read_sync(10)[-1].pos)  # ids 0..9 sent, 10..14 pending
    buf.close_sync()

    same = DurableBuffer(path, run_id="run-a")  # a restart of run-a
    same.open_sync()
    assert same.append_sync(items(0, 15)) == 0 and same.stats.duplicates == 15
    same.close_sync()

    other = DurableBuffer(path, run_id="run-b")
    other.open_sync()
    # run-a's un-sent items replay first, in order
    assert ids(other.read_sync(100)) == [f"id-{i:06d}" for i in range(10, 15)]
    # what run-a sent drops nothing of run-b; pending ids still guard against resends
    assert other.append_sync(items(0, 15)) == 10
    assert other.stats.duplicates == 5 and other.stats.pending_rows == 15
    other.close_sync()
    with closing(sqlite3.connect(path)) as db:  # sqlite3's own `with` commits, never closes
        assert db.execute("SELECT value FROM run").fetchall() == [("run-b",)]
