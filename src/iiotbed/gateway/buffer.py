"""Durable store-and-forward queue between collection and output: SQLite in WAL mode.

Items are encoded UNS objects. They are appended in batches, read oldest first, and
acknowledged (by position, in order) only after the output confirmed them, so a
restarted process replays every un-acknowledged item in its original order.

Items are named tuples, not dataclasses: tens of thousands are built per second.

Storage: one SQLite row per appended batch (a *segment*: payloads, lengths, ids, routes,
receive times packed in blobs). A row per item costs 10-20 µs in B-tree and WAL work; a
row per batch costs about 1.5 µs per item. An item's position is
``segment << 20 | index``, so positions are ordered integers like a rowid.

Bounds and policies:

* **Overflow — drop oldest.** When un-acked items exceed ``max_rows`` or ``max_bytes``,
  the oldest un-acked items are skipped for good, counted in ``stats.dropped`` and
  logged: fresh data is worth more than old data to a live dashboard, and counters are
  monotonic totals, so a later value still carries the dropped deltas.
* **Dedup by id, within one run.** An id seen among the last ``dedup_window`` stored items
  (pending or acknowledged, across restarts) is ignored and counted in ``stats.duplicates``.
  A buffer opened for another ``run_id`` than the one it last held forgets the items already
  sent: what it remembers of an earlier run cannot drop a new run's samples.
* **Durability.** ``synchronous=NORMAL`` in WAL mode: a committed append survives a
  process crash; the last commits may be lost on power failure.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import orjson

from iiotbed._aio import AsyncClosing
from iiotbed.errors import StorageError

__all__ = ["BufferItem", "BufferStats", "DurableBuffer", "PendingItem"]

log = logging.getLogger(__name__)

_SHIFT: Final = 20
_MASK: Final = (1 << _SHIFT) - 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL,
    size INTEGER NOT NULL,
    ids TEXT NOT NULL,
    routes BLOB NOT NULL,
    route_idx BLOB NOT NULL,
    lens BLOB NOT NULL,
    ts BLOB NOT NULL,
    payloads BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('acked', 0);
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class BufferItem(NamedTuple):
    """One encoded record to store: dedup ``id``, routing ``asset``/``tag``, receive ``ts``."""

    id: str
    asset: str
    tag: str
    payload: bytes
    ts: float


class PendingItem(NamedTuple):
    """A stored, not yet acknowledged item and its queue position."""

    pos: int
    id: str
    asset: str
    tag: str
    payload: bytes
    ts: float


@dataclass
class BufferStats:
    """Counters since the buffer was opened, and the current backlog."""

    appended: int = 0
    duplicates: int = 0
    dropped: int = 0
    acked: int = 0
    pending_rows: int = 0
    pending_bytes: int = 0


class _Segment:
    __slots__ = ("ids", "lens", "pos", "routes", "ts")

    def __init__(
        self,
        pos: int,
        ids: list[str],
        routes: list[tuple[str, str]],
        lens: array[int],
        ts: array[float],
    ) -> None:
        self.pos, self.ids, self.routes, self.lens, self.ts = pos, ids, routes, lens, ts


class DurableBuffer(AsyncClosing):
    """An on-disk FIFO of :class:`BufferItem` that survives restarts.

    The ``*_sync`` methods block (SQLite); the async ones run them in a worker thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = 1_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        dedup_window: int = 100_000,
        cache_items: int = 65_536,
        run_id: str | None = None,
    ) -> None:
        if max_rows < 1 or max_bytes < 1 or dedup_window < 0:
            raise ValueError(
                f"buffer bounds must be positive, got max_rows={max_rows}, "
                f"max_bytes={max_bytes}, dedup_window={dedup_window}"
            )
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.dedup_window = dedup_window
        self.run_id = run_id  # None: the dedup memory is kept whatever run comes next
        self.stats = BufferStats()
        self._db: sqlite3.Connection | None = None
        self._acked = 0
        self._recent: deque[str] = deque()
        self._seen: set[str] = set()
        self._segments: deque[tuple[int, int]] = deque()  # (pos, n) of every stored segment
        self._retained = 0  # items in those segments
        self.cache_items = cache_items
        self._cache: dict[int, list[PendingItem]] = {}
        self._cached = 0
        self._cache_low = 0  # no segment below this one is cached
        # asyncio.to_thread may use a different pool thread per call: one lock serialises them.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def open_sync(self) -> None:
        """Open (creating if needed) the database and load the backlog and dedup state."""
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            (acked,) = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
            self._db, self._acked = db, int(acked)
            if self.run_id is not None:
                self._scope(db, self.run_id)
            self._load_state(db)
        except sqlite3.Error as exc:
            self._db = None
            if db is not None:
                db.close()  # not left to the GC (3.13 warns: "unclosed database")
            raise StorageError(
                f"cannot open the gateway buffer {self.path}: {exc}; is the directory writable "
                "and the file a buffer database?",
                url=str(self.path),
            ) from exc
        if self.stats.pending_rows:
            log.info("buffer %s replays %d un-acked items", self.path, self.stats.pending_rows)

    def close_sync(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def open(self) -> None:
        # sqlite3 calls block on disk I/O: they run in a worker thread, never in the loop.
        await asyncio.to_thread(self.open_sync)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    @property
    def acked_through(self) -> int:
        """Position of the last acknowledged (or dropped) item; 0 when none."""
        return self._acked

    # ------------------------------------------------------------------ operations

    async def append(self, items: Sequence[BufferItem]) -> int:
        """Store ``items`` in order; returns how many were new (not duplicates)."""
        # A batch insert with its commit (WAL write) blocks: keep it off the event loop.
        return await asyncio.to_thread(self.append_sync, items)

    async def read(self, n: int, after: int | None = None) -> list[PendingItem]:
        """The oldest ``n`` un-acked items (after position ``after``), in order."""
        return await asyncio.to_thread(self.read_sync, n, after)

    async def ack(self, through: int) -> int:
        """Acknowledge every item up to position ``through``; returns how many."""
        return await asyncio.to_thread(self.ack_sync, through)

    def append_sync(self, items: Sequence[BufferItem]) -> int:
        added = 0
        for k in range(0, len(items), _MASK):  # a segment holds at most 2**20 - 1 items
            added += self._append_segment(items[k : k + _MASK])
        return added

    def _append_segment(self, items: Sequence[BufferItem]) -> int:
        with self._lock:
            db = self._conn()
            seen = self._seen
            ids: list[str] = []
            payloads: list[bytes] = []
            routes: dict[tuple[str, str], int] = {}
            route_idx = array("I")
            lens = array("I")
            ts = array("d")
            kept: list[BufferItem] = []
            for it in items:
                if it.id in seen:
                    continue
                seen.add(it.id)
                kept.append(it)
                ids.append(it.id)
                payloads.append(it.payload)
                lens.append(len(it.payload))
                ts.append(it.ts)
                key = (it.asset, it.tag)
                r = routes.get(key)
                if r is None:
                    r = routes[key] = len(routes)
                route_idx.append(r)
            added = len(ids)
            self.stats.duplicates += len(items) - added
            if not added:
                return 0
            size = sum(lens)
            try:
                db.execute("BEGIN")
                cur = db.execute(
                    "INSERT INTO segments (n, size, ids, routes, route_idx, lens, ts, payloads) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (
                        added, size, "\n".join(ids), orjson.dumps(list(routes)),
                        route_idx.tobytes(), lens.tobytes(), ts.tobytes(), b"".join(payloads),
                    ),
                )  # fmt: skip
                assert cur.lastrowid is not None
                seg = cur.lastrowid
                self.stats.pending_rows += added
                self.stats.pending_bytes += size
                dropped = self._enforce_bounds(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                for i in ids:
                    seen.discard(i)
                self._load_state(db)
                raise self._error("append to", exc) from exc
            self._remember(ids)
            base = seg << _SHIFT
            self._cache_put(seg, [PendingItem(base | i, *it) for i, it in enumerate(kept)])
            self._segments.append((seg, added))
            self._retained += added
        self.stats.appended += added
        if dropped:
            self.stats.dropped += dropped
            log.warning(
                "buffer %s full (max %d rows / %d bytes): dropped the %d oldest un-acked items "
                "(%d dropped so far)",
                self.path, self.max_rows, self.max_bytes, dropped, self.stats.dropped,
            )  # fmt: skip
        return added

    def read_sync(self, n: int, after: int | None = None) -> list[PendingItem]:
        with self._lock:
            start = self._acked if after is None else max(after, self._acked)
            out: list[PendingItem] = []
            self._conn()  # raises when not open
            if not self._segments:
                return out
            pos, first = start >> _SHIFT, (start & _MASK) + 1
            if pos < self._segments[0][0]:
                pos, first = self._segments[0][0], 0
            last = self._segments[-1][0]
            # segment numbers are consecutive (AUTOINCREMENT, deletions only at the old end)
            while len(out) < n and pos <= last:
                seg = self._cache.get(pos)
                if seg is None:
                    seg = self._load_segment(pos)
                    self._cache_put(pos, seg)
                out.extend(seg[first : first + n - len(out)])
                pos, first = pos + 1, 0
        return out

    def _load_segment(self, pos: int) -> list[PendingItem]:
        try:
            row = (
                self._conn()
                .execute(
                    "SELECT ids, routes, route_idx, lens, ts, payloads FROM segments WHERE pos = ?",
                    (pos,),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise self._error("read from", exc) from exc
        return [] if row is None else _decode(pos, *row)

    def _cache_put(self, pos: int, items: list[PendingItem]) -> None:
        # Recent segments stay decoded in memory, so the publisher, which reads right
        # behind the appends, rarely touches SQLite; a backlog is read from disk.
        if self._cached + len(items) <= self.cache_items:
            self._cache[pos] = items
            self._cached += len(items)

    def _cache_drop_through(self, through: int) -> None:
        seg, idx = through >> _SHIFT, through & _MASK
        for pos in range(self._cache_low, seg + 1):
            items = self._cache.get(pos)
            if items is not None and (pos < seg or idx + 1 >= len(items)):
                del self._cache[pos]
                self._cached -= len(items)
        self._cache_low = max(self._cache_low, seg)

    def ack_sync(self, through: int) -> int:
        with self._lock:
            if through <= self._acked:
                return 0
            db = self._conn()
            try:
                count, size = self._span(db, self._acked, through)
                db.execute("BEGIN")
                self._set_acked(db, through)
                self._prune(db, through)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._error("acknowledge in", exc) from exc
            self._acked = through
            self._cache_drop_through(through)
            self.stats.acked += count
            self.stats.pending_rows -= count
            self.stats.pending_bytes -= size
        return count

    # ------------------------------------------------------------------ internals

    def _span(self, db: sqlite3.Connection, lo: int, hi: int) -> tuple[int, int]:
        """Number and bytes of items with lo < position <= hi."""
        count = size = 0
        for pos, n, seg_size, lens_b in db.execute(
            "SELECT pos, n, size, lens FROM segments WHERE pos >= ? AND pos <= ? ORDER BY pos",
            (lo >> _SHIFT, hi >> _SHIFT),
        ):
            first = (lo & _MASK) + 1 if pos == lo >> _SHIFT else 0
            last = min(n - 1, hi & _MASK) if pos == hi >> _SHIFT else n - 1
            if first == 0 and last == n - 1:
                count, size = count + n, size + seg_size
            elif last >= first:
                lens = array("I")
                lens.frombytes(lens_b)
                count += last - first + 1
                size += sum(lens[first : last + 1])
        return count, size

    def _enforce_bounds(self, db: sqlite3.Connection) -> int:
        excess_rows = self.stats.pending_rows - self.max_rows
        excess_bytes = self.stats.pending_bytes - self.max_bytes
        if excess_rows <= 0 and excess_bytes <= 0:
            return 0
        count = size = 0
        cutoff = self._acked
        for pos, lens_b in db.execute(
            "SELECT pos, lens FROM segments WHERE pos >= ? ORDER BY pos", (self._acked >> _SHIFT,)
        ):
            lens = array("I")
            lens.frombytes(lens_b)
            first = (self._acked & _MASK) + 1 if pos == self._acked >> _SHIFT else 0
            for i in range(first, len(lens)):
                if count >= excess_rows and size >= excess_bytes:
                    break
                count, size, cutoff = count + 1, size + lens[i], (pos << _SHIFT) | i
            else:
                continue
            break
        self._set_acked(db, cutoff)
        self._acked = cutoff
        self._cache_drop_through(cutoff)
        self.stats.pending_rows -= count
        self.stats.pending_bytes -= size
        return count

    def _set_acked(self, db: sqlite3.Connection, through: int) -> None:
        db.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (through,))

    def _prune(self, db: sqlite3.Connection, through: int) -> None:
        """Delete fully handled segments while the rest still covers the dedup window."""
        segs, cutoff = self._segments, None
        while segs and (segs[0][0] << _SHIFT) | (segs[0][1] - 1) <= through:
            if self._retained - segs[0][1] < self.dedup_window:
                break
            pos, n = segs.popleft()
            self._retained -= n
            cutoff = pos
        if cutoff is not None:
            db.execute("DELETE FROM segments WHERE pos <= ?", (cutoff,))

    def _scope(self, db: sqlite3.Connection, run_id: str) -> None:
        """Make ``run_id`` the buffer's run; on a change, delete what was already sent."""
        row = db.execute("SELECT value FROM run WHERE key = 'run_id'").fetchone()
        if row is not None and row[0] == run_id:
            return
        db.execute("BEGIN")
        # segments wholly acknowledged: only the dedup memory of the earlier run kept them
        db.execute("DELETE FROM segments WHERE ((pos << ?) | (n - 1)) <= ?", (_SHIFT, self._acked))
        db.execute("INSERT OR REPLACE INTO run (key, value) VALUES ('run_id', ?)", (run_id,))
        db.execute("COMMIT")
        if row is not None:
            log.info("buffer %s: run %s follows run %s, dedup memory cleared", self.path, run_id, row[0])

    def _remember(self, ids: list[str]) -> None:
        recent, seen = self._recent, self._seen
        recent.extend(ids)
        while len(recent) > self.dedup_window:
            seen.discard(recent.popleft())

    def _load_state(self, db: sqlite3.Connection) -> None:
        """Backlog counters, segment list and dedup ids from what is on disk."""
        self._segments = deque(
            (int(p), int(n)) for p, n in db.execute("SELECT pos, n FROM segments ORDER BY pos")
        )
        self._retained = sum(n for _, n in self._segments)
        self._cache, self._cached = {}, 0
        self._cache_low = self._acked >> _SHIFT
        ids: list[str] = []
        for (ids_s,) in db.execute("SELECT ids FROM segments ORDER BY pos DESC"):
            if len(ids) >= self.dedup_window:
                break
            ids[:0] = ids_s.split("\n")
        self._recent = deque(ids[max(0, len(ids) - self.dedup_window) :])
        self._seen = set(self._recent)
        if (
            self._segments
            and (last := self._segments[-1])[0] << _SHIFT | (last[1] - 1) > self._acked
        ):
            count, size = self._span(db, self._acked, last[0] << _SHIFT | (last[1] - 1))
        else:
            count, size = 0, 0
        self.stats.pending_rows, self.stats.pending_bytes = count, size

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(
                f"gateway buffer {self.path} is not open: use it as `async with DurableBuffer(...)`",
                url=str(self.path),
            )
        return self._db

    def _error(self, action: str, exc: sqlite3.Error) -> StorageError:
        return StorageError(
            f"cannot {action} the gateway buffer {self.path}: {exc}; is the disk full?",
            url=str(self.path),
        )


def _decode(
    seg: int, ids_s: str, routes_b: bytes, idx_b: bytes, lens_b: bytes, ts_b: bytes, blob: bytes
) -> list[PendingItem]:
    ids = ids_s.split("\n")
    routes = [tuple(r) for r in orjson.loads(routes_b)]
    idx = array("I")
    idx.frombytes(idx_b)
    lens = array("I")
    lens.frombytes(lens_b)
    ts = array("d")
    ts.frombytes(ts_b)
    base = seg << _SHIFT
    out = []
    start = 0
    for i, length in enumerate(lens):
        asset, tag = routes[idx[i]]
        out.append(PendingItem(base | i, ids[i], asset, tag, blob[start : start + length], ts[i]))
        start += length
    return out
