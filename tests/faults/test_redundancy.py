"""Redundant gateways and two ingest processes on one shared subscription, into PostgreSQL.

One line (scenarios/single-machine.yaml) live; two ``iiotbed gateway`` processes with the
same run id collect it (each its own id and Sparkplug host; the devices follow no Primary
Host, so either gateway's death leaves the other fed); two ``iiotbed platform --share``
processes split the UNS stream and write to one PostgreSQL schema. One gateway is killed
(``kill -9``) mid-run. Must hold: the store's counters equal the answer key, each sample is
stored once (no (asset, tag, t) holds more samples than the event log has values there),
nothing the devices logged after the gateways first heard a tag is missing, both ingest
processes stored part of the stream, and the redundant copies were dropped as duplicates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kit import CLI, SCENARIOS, Mosquitto, Proc, Testbed, free_port, wait_for
from redundancy import gateway_config, logged_keys, pg_schema, stored_keys

from iiotbed.gateway.settings import new_run_id

pytestmark = pytest.mark.network

SPEED = 600.0
START, END = 8 * 3600.0, 10 * 3600.0  # two hours of the first shift at 600x: 12 s wall
UNTIL = END - 600.0  # the devices' last publishing interval may go down with them
SCENARIO = SCENARIOS / "single-machine.yaml"


def test_redundant_gateways_and_shared_ingest_store_each_sample_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    run_id = new_run_id("redundancy")
    with pg_schema() as store:
        tb = Testbed(tmp_path, broker, SCENARIO, duration=END, speed=SPEED, store=store,
                     primary_host=None)  # fmt: skip
        tb.run_id = run_id  # the gateways' (their gateway.yaml); the devices take none
        ports = [tb.api_port, free_port()]
        share = ["--share", "ingest", "--scenario", str(SCENARIO)]
        platforms = [
            Proc(f"platform-{i}", [*CLI, "platform", "--broker", broker.url, "--store", store,
                                   "--port", str(port), *share], tmp_path / f"platform-{i}.log")
            for i, port in enumerate(ports)
        ]  # fmt: skip
        configs = {
            n: gateway_config(tmp_path / f"gw-{n}.yaml", SCENARIO, broker.url,
                              opcua_port=tb.opcua_port, gw_id=f"gw-{n}", run_id=run_id)
            for n in ("a", "b")
        }  # fmt: skip
        gateways = [
            Proc(
                f"gateway-{n}", [*CLI, "gateway", "--config", str(c)], tmp_path / f"gateway-{n}.log"
            )
            for n, c in configs.items()
        ]
        tb.procs.update({p.name: p for p in [*platforms, *gateways]})

        def ingest(i: int) -> dict[str, float]:
            return dict(_get(ports[i], "/api/health")["ingest"])  # type: ignore[call-overload]

        try:
            for i, p in enumerate(platforms):  # one after the other: the first makes the schema
                p.start().wait_output(r"ingesting \$share/ingest/uns/_stream/# from .* as "
                                      r"iiotbed-platform-")  # fmt: skip
                wait_for(lambda i=i: ingest(i)["connected"], 30, f"platform {i}'s ingest")
            ids = {p.wait_output(r" as (iiotbed-platform-\S+)").group(1) for p in platforms}
            assert len(ids) == 2, ids  # each member its own session
            tb.start_devices()
            for g in gateways:
                g.start().wait_output(rf"\(run {run_id}\)")
            # mid-run: both gateways have delivered (the redundant copies come back duplicate)
            wait_for(lambda: sum(ingest(i)["stored"] for i in (0, 1)) > 300
                     and sum(ingest(i)["duplicates"] for i in (0, 1)) > 100,
                     60, "the first samples stored by both gateways")  # fmt: skip
            gateways[0].kill()
            killed_at = sum(ingest(i)["stored"] for i in (0, 1))
            assert tb.procs["devices"].wait(120) == 0, tb.logs()
            tb.wait_agreement(START, UNTIL)  # /api/kpis from the store: the whole stream
            wait_for(lambda: all(ingest(i)["pending"] == 0 for i in (0, 1)), 30, "ingest drained")
            m = [ingest(i) for i in (0, 1)]
        except BaseException:
            print(tb.logs())
            raise
        finally:
            tb.close()

        stored = stored_keys(store, run_id)
        logged = logged_keys(tb.events, 0.0, END)
        # each process stored part of the stream; together, each row once
        assert m[0]["stored"] > 0 and m[1]["stored"] > 0, m
        assert m[0]["stored"] + m[1]["stored"] == sum(stored.values()), (m, sum(stored.values()))
        assert sum(stored.values()) > killed_at  # the survivor carried on alone
        # a shared subscription hands each message to one member: with plain subscriptions
        # each process would receive the whole stream (the survivor's alone is all of it)
        assert all(x["received"] < sum(stored.values()) for x in m), m
        # (up to UNTIL: at the run's end the survivor adds its Bad marks of the ended session)
        doubled = {k: n for k, n in stored.items()
                   if k[2] <= UNTIL and n > max(logged.get(k, 1), 1)}  # fmt: skip
        assert not doubled, list(doubled.items())[:10]
        # nothing lost: every logged sample of a forwarded tag, from the gateways' first
        first: dict[tuple[str, str], float] = {}
        for a, tag, t in stored:
            if t >= START:
                first[a, tag] = min(first.get((a, tag), UNTIL), t)
        lost = sorted(k for k in logged if START <= k[2] <= UNTIL and (k[0], k[1]) in first
                      and k[2] > first[k[0], k[1]] and k not in stored)  # fmt: skip
        print(f"redundancy: stored {sum(stored.values())} samples ({m[0]['stored']} + "
              f"{m[1]['stored']}), duplicates dropped {m[0]['duplicates']} + "
              f"{m[1]['duplicates']}, lost {len(lost)}")  # fmt: skip
        assert not lost, lost[:10]


def _get(port: int, path: str) -> dict[str, object]:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    r.raise_for_status()
    out: dict[str, object] = r.json()
    return out
