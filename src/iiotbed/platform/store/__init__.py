"""Stores of runs: an embedded SQLite file by default, PostgreSQL for long or large runs.

``open_store(url)`` picks the backend from the URL; use the store with ``async with``.
"""

from __future__ import annotations

from iiotbed.errors import StorageError
from iiotbed.platform.store.base import Agg, AssetInfo, Counts, Point, RunInfo, Store
from iiotbed.platform.store.sqlite import DEFAULT_PATH, SqliteStore

__all__ = [
    "DEFAULT_PATH",
    "Agg",
    "AssetInfo",
    "Counts",
    "Point",
    "RunInfo",
    "SqliteStore",
    "Store",
    "open_store",
]


def open_store(url: str | None = None) -> Store:
    """A store for ``url``, not yet opened: ``sqlite:///file.db`` (or a bare path, or None
    for ``./iiotbed.db``) or ``postgresql://user@host:port/db[?schema=name]``."""
    scheme = url.split("://", 1)[0].lower() if url is not None and "://" in url else "sqlite"
    if scheme == "sqlite":
        return SqliteStore(url)
    if scheme in ("postgresql", "postgres"):
        # psycopg is imported only when a PostgreSQL store is asked for
        from iiotbed.platform.store.postgres import PostgresStore

        return PostgresStore(url)  # type: ignore[arg-type]
    raise StorageError(
        f"unknown store URL scheme {scheme!r} in {url!r}; use sqlite:///path/to/file.db "
        f"or postgresql://user@host:5432/database",
        url=url,
    )
