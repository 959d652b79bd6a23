"""The Sparkplug edge node's store and forward: a bounded store, and its file on disk.

:class:`HeldStore` is the bounded store in memory; :class:`EdgeStore` the small SQLite file
(WAL) that mirrors it.

Values the edge node could not publish (no session, or its Primary Host offline) are kept
here as well as in memory, so a process stopped while holding them (Ctrl-C, SIGTERM, the
broker away) sends them after the next start's births. A row leaves the file only when the
broker acknowledged the historical DATA carrying it, or when the in-memory bound drops it.

Rows carry a ``scope`` (the run and the edge node): a file left by another run, or by
another edge node, is never replayed; its rows are discarded at open (logged). A file that
is not a store (corrupt, another format) is set aside as ``<name>.corrupt`` and the node
starts with an empty store, with one clear log line. :class:`EdgeStore`'s methods block
(sqlite): :class:`HeldStore` runs them in a worker thread.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["Change", "EdgeStore", "Held", "HeldStore", "RecentlySent", "Sent"]

log = logging.getLogger(__name__)

#: one change: (device or None for the node, metric, value, timestamp in epoch ms)
Change = tuple[str | None, str, object, int]
#: a change with its row id in the store
Held = tuple[int, Change]
#: a change published, with the metric's (value, timestamp) before it
Sent = tuple[Change, tuple[object, int | None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id     INTEGER PRIMARY KEY,
    scope  TEXT NOT NULL,
    device TEXT,
    metric TEXT NOT NULL,
    value  BLOB,
    ts     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS about (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_FORMAT = "iiotbed-sparkplug-store/1"


def _encode(value: object) -> object:
    # bytes as a BLOB, everything else as JSON text (keeps bool apart from int, and NaN,
    # which sqlite would turn into NULL)
    return value if isinstance(value, bytes) else json.dumps(value)


def _decode(raw: object) -> object:
    if isinstance(raw, bytes):
        return raw
    if not isinstance(raw, str):
        raise ValueError(f"a stored value must be JSON text or bytes, got {type(raw).__name__}")
    return json.loads(raw)


class EdgeStore:
    """Held values of one edge node (``scope``) in the SQLite file ``path``; blocking."""

    def __init__(self, path: Path, scope: str) -> None:
        self.path = path
        self.scope = scope
        self._db: sqlite3.Connection | None = None
        self.failed = False  # a write failed: the store went on in memory only (logged)

    def open(self) -> list[Held]:
        """Open (or create) the file; the rows of this scope, oldest first. Never raises for
        a bad file: it is set aside and the store starts empty (logged)."""
        try:
            return self._open()
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            self._close_db()
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("Sparkplug store %s is unreadable (%s): set aside as %s, starting with "
                      "an empty store", self.path, exc, aside.name)  # fmt: skip
            try:
                for suffix in ("-wal", "-shm"):
                    self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
                os.replace(self.path, aside)
                self._open()
            except (OSError, sqlite3.DatabaseError) as again:
                self._close_db()
                self.failed = True
                log.error("Sparkplug store %s cannot be created (%s): held values stay in "
                          "memory only", self.path, again)  # fmt: skip
            return []
        except OSError as exc:
            self._close_db()
            self.failed = True
            log.error("Sparkplug store %s cannot be opened (%s): held values stay in memory "
                      "only", self.path, exc)  # fmt: skip
            return []

    def _open(self) -> list[Held]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM about WHERE key = 'format'").fetchone()
        if row is None:
            db.execute("INSERT INTO about VALUES ('format', ?)", (_FORMAT,))
        elif row[0] != _FORMAT:
            raise ValueError(f"format {row[0]!r}, expected {_FORMAT!r}")
        stale = db.execute("DELETE FROM held WHERE scope != ?", (self.scope,)).rowcount
        if stale:
            log.warning("Sparkplug store %s: discarded %d held values of another run or edge "
                        "node (this one: %s)", self.path, stale, self.scope)  # fmt: skip
        out: list[Held] = []
        rows = db.execute(
            "SELECT id, device, metric, value, ts FROM held WHERE scope = ? ORDER BY id",
            (self.scope,),
        )
        for rid, device, metric, value, ts in rows:
            if not isinstance(rid, int) or not isinstance(metric, str) or not isinstance(ts, int):
                raise ValueError(f"row {rid!r} is not a held value")
            if device is not None and not isinstance(device, str):
                raise ValueError(f"row {rid}: device {device!r} is not text")
            out.append((rid, (device, metric, _decode(value), ts)))
        return out

    def write(self, add: Sequence[Held], remove: Sequence[int]) -> None:
        """Add and remove rows in one transaction; a failure is logged once and turns the
        file off (the values stay in memory)."""
        db = self._db
        if db is None or (not add and not remove):
            return
        try:
            with db:  # BEGIN ... COMMIT (isolation_level=None: explicit)
                db.execute("BEGIN")
                if remove:
                    db.executemany("DELETE FROM held WHERE id = ?", ((i,) for i in remove))
                if add:
                    db.executemany(
                        "INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?, ?)",
                        ((i, self.scope, d, m, _encode(v), ts) for i, (d, m, v, ts) in add),
                    )
        except (sqlite3.Error, TypeError, ValueError) as exc:
            self.failed = True
            self._close_db()
            log.error("Sparkplug store %s: write failed (%s); held values stay in memory only",
                      self.path, exc)  # fmt: skip

    def close(self) -> None:
        self._close_db()

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


class _Counts(Protocol):
    stored: int
    store_dropped: int


class HeldStore:
    """The edge node's bounded store of held changes, oldest first, each with a row id;
    mirrored to an :class:`EdgeStore` file when given one (written by :meth:`sync`).

    ``limit`` values at most: past it the oldest is dropped and counted. Not storing (a
    session is up) is ``active == False``; :meth:`keep` starts storing.
    """

    def __init__(self, limit: int, file: EdgeStore | None, owner: str, counts: _Counts) -> None:
        self.limit = limit
        self.file = file if limit else None
        self._owner = owner
        self._counts = counts
        self._rows: deque[Held] | None = None
        self._ids = itertools.count(1)
        self._add: list[Held] = []  # rows to write at the next sync
        self._remove: list[int] = []  # rows to delete (acknowledged, or dropped by the bound)

    def __len__(self) -> int:
        return 0 if self._rows is None else len(self._rows)

    @property
    def active(self) -> bool:
        return self._rows is not None

    def begin(self) -> bool:
        """Start storing; False if it already was (or the store is off)."""
        if self._rows is not None or not self.limit:
            return False
        self._rows = deque()
        return True

    def keep(self, change: Change, rid: int | None = None) -> None:
        """Hold ``change`` (a new row, or row ``rid`` already in the file)."""
        if not self.limit:
            return  # no store and forward: the next birth carries the latest value
        rows = self._rows
        if rows is None:
            rows = self._rows = deque()
        if len(rows) >= self.limit:
            gone, _ = rows.popleft()
            if self.file is not None:
                self._remove.append(gone)
            c = self._counts
            c.store_dropped += 1
            if c.store_dropped == 1 or c.store_dropped % 10_000 == 0:
                log.warning("store of %s full (%d values): dropped the oldest, %d so far",
                            self._owner, self.limit, c.store_dropped)  # fmt: skip
        if rid is None:
            rid = next(self._ids)
            if self.file is not None:
                self._add.append((rid, change))
        rows.append((rid, change))
        self._counts.stored += 1

    def keep_again(self, rows: Sequence[Held]) -> None:
        """Rows taken but not delivered: held again (the file still has them)."""
        for rid, change in rows:
            self.keep(change, rid)

    def begin_after_loss(
        self, recent: list[Sent], last: Iterable[tuple[str | None, str, object, int | None]]
    ) -> None:
        """A session ended: store from here on, led by every metric's value as last known
        delivered (``last``, or the value before the first ``recent`` change of it), then
        the ``recent`` changes the lost link may have swallowed."""
        if not self.begin():
            return
        before: dict[tuple[str | None, str], tuple[object, int | None]] = {}
        for (device, name, _, _), prev in recent:
            before.setdefault((device, name), prev)
        for device, name, value, ts in last:
            value, t = before.get((device, name), (value, ts))
            if t is not None:
                self.keep((device, name, value, t))
        for change, _ in recent:
            self.keep(change)

    def take(self, skip: Callable[[str | None], bool]) -> tuple[int, dict[str | None, list[Held]]]:
        """Every held row by node/device, each in time order (stable: one metric's
        transitions keep their order), and how many; storing ends. Rows of a device ``skip``
        names are given up."""
        rows, self._rows = self._rows, None
        out: dict[str | None, list[Held]] = {}
        for held in rows or ():
            if skip(held[1][0]):
                self.done([held[0]])
            else:
                out.setdefault(held[1][0], []).append(held)
        for device_rows in out.values():
            device_rows.sort(key=lambda h: h[1][3])
        return len(rows or ()), out

    def done(self, rids: Iterable[int]) -> None:
        """Rows delivered (or given up): they leave the file at the next sync."""
        if self.file is not None:
            self._remove.extend(rids)

    async def load(self, known: Callable[[Change], bool]) -> int:
        """Hold what the file holds (rows ``known`` refuses are deleted); how many it held."""
        if self.file is None:
            return 0
        held = await asyncio.to_thread(self.file.open)  # sqlite blocks
        if self.file.failed:
            self.file = None
        if held:
            self._ids = itertools.count(max(rid for rid, _ in held) + 1)
            for rid, change in held:
                if known(change):
                    self.keep(change, rid)
                else:  # the scenario changed under the file: not a metric of this node
                    self._remove.append(rid)
            log.info("%s read %d held values back from %s", self._owner, len(held),
                     self.file.path if self.file else "its store")  # fmt: skip
        return len(held)

    async def sync(self) -> None:
        """Write the rows added and removed since the last sync."""
        file = self.file
        if file is None or not (self._add or self._remove):
            return
        add, self._add = self._add, []
        remove, self._remove = self._remove, []
        await asyncio.to_thread(file.write, add, remove)  # sqlite blocks
        if file.failed:
            self.file = None

    async def close(self) -> None:
        """Sync and close the file; a last word on what is still held."""
        file = self.file
        if file is not None:
            await self.sync()
            self.file = None
            await asyncio.to_thread(file.close)  # sqlite blocks
        if not len(self):
            return
        if file is not None and not file.failed:
            log.warning("%s closes holding %d values: kept in %s for the next start",
                        self._owner, len(self), file.path)  # fmt: skip
        else:
            log.warning("%s closes with %d stored values never forwarded", self._owner, len(self))


class RecentlySent:
    """DATA published within the last ``window`` seconds: DATA is QoS 0, so a lost link may
    have swallowed it, and a store begun after the loss starts before it."""

    def __init__(self, window: float, enabled: bool = True) -> None:
        self.window = window
        self.enabled = enabled
        self._sent: deque[tuple[float, Sent]] = deque()

    def add(self, sent: Iterable[Sent]) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        recent = self._sent
        recent.extend((now, s) for s in sent)
        horizon = now - self.window
        while recent and recent[0][0] < horizon:
            recent.popleft()

    def take(self) -> list[Sent]:
        """What was published within the window; forgotten here."""
        horizon = time.monotonic() - self.window
        out = [s for mono, s in self._sent if mono >= horizon]
        self._sent.clear()
        return out

    def clear(self) -> None:
        self._sent.clear()
