"""A three-line plant in one piece: three device processes, two gateway processes, two ingest
processes on one shared subscription, one Mosquitto, one PostgreSQL (issue 15).

``run: {lines: 3}`` over scenarios/single-machine.yaml: lines ``line-1-1`` .. ``line-1-3``
(seeds 7..9), each in its own ``iiotbed devices --line`` process (its OPC UA port, its
Sparkplug edge node; no Primary Host, so either gateway's death leaves the other fed).

The gateways split nothing: each is a hot standby of the other. ``iiotbed gateway --line
line-1-1 --line line-1-2 --line line-1-3 --id gw-a --run-id RUN`` collects every line (one
gateway per line in the process, run ``RUN-<line>``), and so does ``gw-b``. Sparkplug cannot
be shared by an MQTT shared subscription (a node's births and its data would reach different
members, which could not decode the data), and OPC UA is a session per client, so splitting
the lines between the two would leave a line uncollected the moment its gateway dies; both
collecting everything, on the same run ids, makes the store's natural-key dedup drop the
second copy, and the survivor carries on without a takeover step.

Two ``iiotbed platform --share ingest`` processes split the UNS stream into one PostgreSQL
schema of the case's own. Gateway ``gw-a`` is killed (``kill -9``) mid-run. Must hold, line
by line: the platform's counters equal that line's answer key (replayed from its devices'
event log); no (asset, tag, t) holds more samples than the event log has values there; no
sample the devices logged after the gateways first heard its tag is missing; each run holds
its own line's stations only. Both gateways delivered before the kill (duplicates dropped),
the survivor stored more after it, and both ingest processes stored part of the stream.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from kit import CLI, Mosquitto, Proc, free_port, wait_for
from plant_kit import LineBed, free_ports, plant_file, rows_at, stored_exact
from redundancy import logged_keys, pg_schema

from iiotbed.gateway.settings import new_run_id

pytestmark = [pytest.mark.network, pytest.mark.timeout(240)]

SPEED = 300.0
START, END = 8 * 3600.0, 10 * 3600.0  # two hours of the first shift at 300x: 24 s paced
UNTIL = END - 600.0  # the devices' last publishing interval may go down with them
LINES = ("line-1-1", "line-1-2", "line-1-3")


def _get(port: int, path: str) -> dict[str, object]:
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)
    r.raise_for_status()
    out: dict[str, object] = r.json()
    return out


def test_three_lines_two_gateways_two_ingests_one_postgres(
    tmp_path: Path, broker: Mosquitto
) -> None:
    began = time.monotonic()
    plant = plant_file(tmp_path / "plant.yaml", len(LINES))
    run = new_run_id("plant3")
    base = free_ports(len(LINES))  # line i's OPC UA server on base + i - 1
    with pg_schema("h_plant3") as store:
        ports = [free_port(), free_port()]
        platforms = [
            Proc(f"platform-{i}", [*CLI, "platform", "--broker", broker.url, "--store", store,
                                   "--port", str(port), "--share", "ingest", "--scenario",
                                   str(plant)], tmp_path / f"platform-{i}.log")
            for i, port in enumerate(ports)
        ]  # fmt: skip
        beds = [
            LineBed(tmp_path / line, broker, plant, line, duration=END, speed=SPEED, store=store,
                    api_port=ports[0], opcua_port=base + i)
            for i, line in enumerate(LINES)
        ]  # fmt: skip
        for bed in beds:
            bed.run_id = f"{run}-{bed.line}"  # the gateways' (--run-id RUN, several --line)
        lines = [a for line in LINES for a in ("--line", line)]
        gateways = {
            n: Proc(f"gateway-{n}", [*CLI, "gateway", "--scenario", str(plant), "--broker",
                                     broker.url, "--opcua-port", str(base), *lines, "--id",
                                     f"gw-{n}", "--run-id", run, "--buffer",
                                     str(tmp_path / "buffer-{id}.db")],
                    tmp_path / f"gateway-{n}.log")
            for n in ("a", "b")
        }  # fmt: skip
        procs = [*platforms, *gateways.values(), *(p for b in beds for p in b.procs.values())]

        def ingest(i: int) -> dict[str, float]:
            return dict(_get(ports[i], "/api/health")["ingest"])  # type: ignore[call-overload]

        def total(key: str) -> float:
            return sum(ingest(i)[key] for i in (0, 1))

        def logs() -> str:
            own = "\n".join(f"--- {p.name}.log\n{p.tail()}" for p in [*platforms,
                                                                     *gateways.values()])  # fmt: skip
            return "\n".join([own, *(b.logs() for b in beds)])

        try:
            for i, p in enumerate(platforms):  # one after the other: the first makes the schema
                p.start().wait_output(r"ingesting \$share/ingest/uns/_stream/# from .* as "
                                      r"iiotbed-platform-", 60)  # fmt: skip
                wait_for(lambda i=i: ingest(i)["connected"], 30, f"platform {i}'s ingest")
            for bed in beds:  # the three lines start together, each in its own process
                bed._proc("devices", bed.devices_args()).start()
            for bed in beds:
                bed.procs["devices"].wait_output(r"live at", 60)
            for g in gateways.values():
                g.start()
            for n, g in gateways.items():
                for line in LINES:  # one gateway per line in the process, ids carry --id
                    g.wait_output(rf"gateway gw-{n}-{line}: .*\(run {run}-{line}\)", 60)
                    assert f"Sparkplug host id iiotbed-gw-{n}-{line}" in g.output()
            # mid-run: both gateways have delivered (the second copies come back duplicate)
            wait_for(lambda: total("stored") > 600 and total("duplicates") > 200, 60,
                     "the first samples stored by both gateways")  # fmt: skip
            gateways["a"].kill()
            killed_at = total("stored")
            for bed in beds:
                assert bed.procs["devices"].wait(120) == 0, bed.logs()
            assert gateways["b"].alive, gateways["b"].tail()
            found = []
            for bed in beds:
                got = bed.wait_agreement(START, UNTIL)  # counters exact, line by line
                assert got["good_count"] > 0, got
                found.append(got)
                st = bed.get("/api/kpis", run_id=bed.run_id, start=START, end=UNTIL, by="station")
                assert st["stations"], st
                for path in st["stations"]:  # the run holds its own line's stations only
                    assert f"/{bed.line}/" in path, (bed.line, path)
            wait_for(lambda: all(ingest(i)["pending"] == 0 for i in (0, 1)), 30, "ingest drained")
            m = [ingest(i) for i in (0, 1)]
            runs = {r["run_id"]: r for r in beds[0].get("/api/runs")}
        except BaseException:
            print(logs())
            raise
        finally:
            for p in procs:
                if p.alive:
                    p.stop(20)

        assert len({tuple(sorted(f.items())) for f in found}) == len(LINES)  # own streams
        for bed in beds:
            assert runs[bed.run_id]["scenario"].endswith(f" - {bed.line}"), runs[bed.run_id]
        per_line = {bed.line: stored_exact(store, str(bed.run_id)) for bed in beds}
        stored = sum(sum(c.values()) for c in per_line.values())
        # each ingest stored part of the stream; together, each row once
        assert m[0]["stored"] > 0 and m[1]["stored"] > 0, m
        assert m[0]["stored"] + m[1]["stored"] == stored, (m, stored)
        assert all(x["received"] < stored for x in m), m  # a shared subscription: a part each
        assert stored > killed_at  # the survivor carried on alone
        lost_all = 0
        for bed in beds:
            got = per_line[bed.line]
            logged = logged_keys(bed.events, 0.0, END)
            # (up to UNTIL: at the run's end the survivor adds its Bad marks of the ended session)
            # (the event log's keys are to the ms, as is a Sparkplug time)
            doubled = {k: n for k, n in got.items()
                       if k[2] <= UNTIL and n > max(logged.get((k[0], k[1], round(k[2], 3)), 1), 1)}  # fmt: skip
            assert not doubled, (bed.line, rows_at(store, str(bed.run_id), list(doubled)[:6]))
            first: dict[tuple[str, str], float] = {}
            for a, tag, t in got:
                if t >= START:
                    first[a, tag] = min(first.get((a, tag), UNTIL), t)
            have = {(a, tag, round(t, 3)) for a, tag, t in got}
            lost = sorted(k for k in logged if START <= k[2] <= UNTIL and (k[0], k[1]) in first
                          and k[2] > first[k[0], k[1]] and k not in have)  # fmt: skip
            assert not lost, (bed.line, lost[:10])
            lost_all += len(lost)
        print(f"plant of 3 lines: stored {stored} samples ({m[0]['stored']} + {m[1]['stored']} "
              f"by the two ingests), {killed_at:.0f} before gw-a was killed, duplicates dropped "
              f"{m[0]['duplicates']} + {m[1]['duplicates']}, lost {lost_all}; "
              f"{time.monotonic() - began:.1f} s")  # fmt: skip
