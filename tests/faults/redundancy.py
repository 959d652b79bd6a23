"""Helpers of the redundancy case: gateways of one line under their own ids, a PostgreSQL
schema of its own, and what the store holds per (asset, tag, t).

``iiotbed gateway --scenario`` names a line's gateway ``gw-<line>`` (its MQTT client ids)
and its Sparkplug host ``iiotbed-gateway``: a second gateway of the same line needs its own
of both, so each redundant gateway runs from a ``gateway.yaml`` (``--config``) derived from
the scenario as ``--scenario`` would, with its own id, host id and buffer and the shared
run id.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import yaml

PG = "postgresql://127.0.0.1:5432/test"


def gateway_config(
    path: Path, scenario: Path, broker: str, *, opcua_port: int, gw_id: str, run_id: str
) -> Path:
    """Write a gateway.yaml for ``scenario``'s line: id ``gw_id``, Sparkplug host
    ``iiotbed-<gw_id>``, buffer next to ``path``, run ``run_id``; returns ``path``."""
    from iiotbed.gateway.settings import settings_from_scenario
    from iiotbed.scenario import load_scenario

    s = settings_from_scenario(
        load_scenario(scenario), broker, opcua_port=opcua_port,
        buffer=path.with_suffix(".db"), run_id=run_id, id=gw_id,
    )  # fmt: skip
    assert s.sparkplug is not None
    s = s.model_copy(
        update={"sparkplug": s.sparkplug.model_copy(update={"host_id": f"iiotbed-{gw_id}"})}
    )
    path.write_text(yaml.safe_dump(s.model_dump(mode="json", exclude_none=True)))
    return path


@contextlib.contextmanager
def pg_schema(prefix: str = "h_redundancy") -> Iterator[str]:
    """A store URL on the shared PostgreSQL (database ``test``) in a fresh schema, dropped
    afterwards; skips when the server is not reachable."""
    import psycopg
    import pytest

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        psycopg.connect(PG, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG} is not reachable: {exc}")
    try:
        yield f"{PG}?schema={schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def stored_keys(store: str, run_id: str, *, ms: bool = True) -> Counter[tuple[str, str, float]]:
    """How many samples the PostgreSQL store holds per (asset, tag, t) of ``run_id``; ``t``
    rounded to the ms (``ms``) or as stored."""
    import psycopg

    url, schema = store.split("?schema=")
    with psycopg.connect(url) as db:
        rows = db.execute(
            f'SELECT s.asset, s.tag, x.t, count(*) FROM "{schema}".samples x '
            f'JOIN "{schema}".series s ON s.id = x.series '
            f'JOIN "{schema}".run_keys r ON r.id = s.run WHERE r.run_id = %s '
            "GROUP BY s.asset, s.tag, x.t",
            (run_id,),
        ).fetchall()
    out: Counter[tuple[str, str, float]] = Counter()
    for a, tag, t, n in rows:
        out[a, tag, round(t, 3) if ms else t] += n  # within 1 ms: one key, as in logged_keys
    return out


def logged_keys(events: Path, start: float, end: float) -> Counter[tuple[str, str, float]]:
    """How many distinct values the devices' event log has per (asset, tag, t) in
    ``[start, end]``."""
    from iiotbed.eventlog import load_records
    from iiotbed.telemetry import Sample

    seen: set[tuple[str, str, float, object]] = set()
    for r in load_records(events):
        if isinstance(r, Sample) and start <= r.t <= end:
            seen.add((r.asset, r.tag, round(r.t, 3), r.value))
    return Counter((a, tag, t) for a, tag, t, _ in seen)
