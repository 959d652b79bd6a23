"""Durable store-and-forward queue between collection and output: SQLite in WAL mode.

Items are encoded UNS objects. They are appended in batches, read oldest first, and
acknowledged (by position, in order) only after the output confirmed them, so a
restarted process replays every un-acknowledged item in its original order.

Bounds and policies:

* **Overflow — drop oldest.** When the un-acked items exceed ``max_rows`` or
  ``max_bytes``, the oldest un-acked items are deleted, counted in ``stats.dropped``
  and logged: fresh data is worth more than old data to a live dashboard, and counters
  are monotonic totals, so a later value still carries the dropped deltas.
* **Dedup by id.** An id already pending, or acknowledged within the last
  ``dedup_window`` positions, is ignored (counted in ``stats.duplicates``).
* **Durability.** ``synchronous=NORMAL`` in WAL mode: a committed append survives a
  process crash; the last commits may be lost on power failure.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from iiotbed.errors import StorageError

__all__ = ["BufferItem", "BufferStats", "DurableBuffer", "PendingItem"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    asset TEXT NOT NULL,
    tag TEXT NOT NULL,
    payload BLOB NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('acked', 0);
"""


@dataclass(frozen=True, slots=True)
class BufferItem:
    """One encoded record to store: dedup ``id``, routing ``asset``/``tag``, receive ``ts``."""

    id: str
    asset: str
    tag: str
    payload: bytes
    ts: float


@dataclass(frozen=True, slots=True)
class PendingItem:
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


class DurableBuffer:
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
        self.stats = BufferStats()
        self._db: sqlite3.Connection | None = None
        self._acked = 0
        # asyncio.to_thread may use a different pool thread per call: one lock serialises them.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def open_sync(self) -> None:
        """Open (creating if needed) the database and load the backlog counters."""
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            (acked,) = db.execute("SELECT value FROM meta WHERE key = 'acked'").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open the gateway buffer {self.path}: {exc}; is the directory writable "
                "and the file a buffer database?",
                url=str(self.path),
            ) from exc
        self._db, self._acked = db, int(acked)
        self._recount()
        if self.stats.pending_rows:
            log.info("buffer %s replays %d un-acked items", self.path, self.stats.pending_rows)

    def close_sync(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    async def __aenter__(self) -> Self:
        # sqlite3 calls block on disk I/O: they run in a worker thread, never in the loop.
        await asyncio.to_thread(self.open_sync)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close_sync)

    @property
    def acked_through(self) -> int:
        """Position of the last acknowledged item (0 when none)."""
        return self._acked

    # ------------------------------------------------------------------ operations

    async def append(self, items: Sequence[BufferItem]) -> int:
        """Store ``items`` in order; returns how many were new (not duplicates)."""
        # A batch insert with its commit (fsync of the WAL) blocks: keep it off the loop.
        return await asyncio.to_thread(self.append_sync, items)

    async def read(self, n: int, after: int | None = None) -> list[PendingItem]:
        """The oldest ``n`` un-acked items (after position ``after``), in order."""
        return await asyncio.to_thread(self.read_sync, n, after)

    async def ack(self, through: int) -> int:
        """Acknowledge every item up to position ``through``; returns how many."""
        return await asyncio.to_thread(self.ack_sync, through)

    def append_sync(self, items: Sequence[BufferItem]) -> int:
        if not items:
            return 0
        with self._lock:
            db = self._conn()
            before = db.total_changes
            try:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT OR IGNORE INTO items (id, asset, tag, payload, ts) VALUES (?,?,?,?,?)",
                    [(i.id, i.asset, i.tag, i.payload, i.ts) for i in items],
                )
                added = db.total_changes - before
                dropped = self._enforce_bounds(db, added, items)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                self._recount()
                raise self._error("append to", exc) from exc
        self.stats.appended += added
        self.stats.duplicates += len(items) - added
        if dropped:
            self.stats.dropped += dropped
            log.warning(
                "buffer %s full (max %d rows / %d bytes): dropped the %d oldest un-acked items "
                "(%d dropped so far)",
                self.path,
                self.max_rows,
                self.max_bytes,
                dropped,
                self.stats.dropped,
            )
        return added

    def read_sync(self, n: int, after: int | None = None) -> list[PendingItem]:
        start = self._acked if after is None else max(after, self._acked)
        with self._lock:
            try:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT pos, id, asset, tag, payload, ts FROM items WHERE pos > ? "
                        "ORDER BY pos LIMIT ?",
                        (start, n),
                    )
                    .fetchall()
                )
            except sqlite3.Error as exc:
                raise self._error("read from", exc) from exc
        return [PendingItem(*r) for r in rows]

    def ack_sync(self, through: int) -> int:
        with self._lock:
            if through <= self._acked:
                return 0
            db = self._conn()
            try:
                db.execute("BEGIN")
                count, size = db.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM items "
                    "WHERE pos > ? AND pos <= ?",
                    (self._acked, through),
                ).fetchone()
                db.execute("UPDATE meta SET value = ? WHERE key = 'acked'", (through,))
                # acked rows stay for dedup_window positions, then go
                db.execute("DELETE FROM items WHERE pos <= ?", (through - self.dedup_window,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._error("acknowledge in", exc) from exc
            self._acked = through
            self.stats.acked += count
            self.stats.pending_rows -= count
            self.stats.pending_bytes -= size
        return int(count)

    # ------------------------------------------------------------------ internals

    def _enforce_bounds(
        self, db: sqlite3.Connection, added: int, items: Sequence[BufferItem]
    ) -> int:
        if added == len(items):
            self.stats.pending_rows += added
            self.stats.pending_bytes += sum(len(i.payload) for i in items)
        else:  # some were duplicates: which ones is known only to SQLite
            self._recount(db)
        excess_rows = self.stats.pending_rows - self.max_rows
        excess_bytes = self.stats.pending_bytes - self.max_bytes
        if excess_rows <= 0 and excess_bytes <= 0:
            return 0
        count = size = 0
        cutoff = self._acked
        for pos, length in db.execute(
            "SELECT pos, length(payload) FROM items WHERE pos > ? ORDER BY pos", (self._acked,)
        ):
            if count >= excess_rows and size >= excess_bytes:
                break
            count, size, cutoff = count + 1, size + length, pos
        db.execute("DELETE FROM items WHERE pos > ? AND pos <= ?", (self._acked, cutoff))
        self.stats.pending_rows -= count
        self.stats.pending_bytes -= size
        return count

    def _recount(self, db: sqlite3.Connection | None = None) -> None:
        db = db or self._conn()
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM items WHERE pos > ?",
            (self._acked,),
        ).fetchone()
        self.stats.pending_rows, self.stats.pending_bytes = int(rows), int(size)

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
