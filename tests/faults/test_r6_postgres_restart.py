"""R6: PostgreSQL stops (``pg_ctl stop -m fast``) for ~10 s mid-run and starts again.

The platform stores into a private PostgreSQL cluster. While the database is away, ingest
keeps the messages unacknowledged and retries the store with backoff; the store connects
again once the server is back. Must hold: the platform stays up, ingest retried, every
record the gateway forwarded is stored exactly once, and the counters agree exactly with
the answer key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import Mosquitto, Postgres, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

pytestmark = [pytest.mark.network, pytest.mark.timeout(180)]

SPEED = 600.0
START, END = 8 * 3600.0, 11 * 3600.0  # three paced hours: 18 s wall
OUTAGE_S = 10.0


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    yield pg
    pg.close()


def _duplicates(url: str) -> tuple[int, int]:
    """(rows, distinct sample identities) in the samples table."""
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute(
            "SELECT count(*), count(DISTINCT (series, t, value_num, value_text, quality))"
            " FROM samples"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_postgres_restart_ingest_retries_nothing_lost(
    tmp_path: Path, broker: Mosquitto, postgres: Postgres
) -> None:
    with running(tmp_path, broker, duration=END, speed=SPEED, store=postgres.url) as tb:
        tb.start_all()
        wait_for(lambda: tb.ingest()["stored"] > 300, 60, "the first samples stored")
        postgres.stop("fast")
        stopped = time.monotonic()
        wait_for(lambda: tb.ingest()["store_retries"] > 0, 15, "ingest to retry the store")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
        assert tb.procs["platform"].alive, tb.procs["platform"].tail()
        postgres.start()
        back = time.monotonic()
        retries = tb.ingest()["store_retries"]
        assert tb.procs["devices"].wait(120) == 0
        tb.wait_agreement(START, END)
        tb.procs["gateway"].stop()
        m = re.findall(r"received (\d+), forwarded (\d+)", tb.procs["gateway"].output())
        assert m, tb.procs["gateway"].tail()
        forwarded = int(m[-1][1])
        # everything forwarded (samples and events) is stored, once (one row per id)
        wait_for(lambda: tb.stored_records() == forwarded, 30,
                 f"{forwarded} forwarded records stored (have {tb.stored_records()})")  # fmt: skip
        rows, distinct = _duplicates(postgres.url)
        assert rows == distinct, f"{rows - distinct} samples stored twice"
        ingest = tb.ingest()
        assert ingest["malformed"] == 0 and ingest["unknown_run"] == 0
        print(f"R6: PostgreSQL down {back - stopped:.1f} s; ingest retried {retries} times; "
              f"{forwarded} records forwarded, all stored once ({rows} sample rows)")
