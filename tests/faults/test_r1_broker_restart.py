"""R1: the broker ``kill -9`` mid-run and started again on the same port.

Must hold: every client (devices' Sparkplug edge node, the gateway's collectors and UNS
publisher, the platform's ingest) reconnects within 5 s of the broker's return, the edge
node births again, and the counters agree exactly with the answer key. What the edge node
published while the broker was away comes after its rebirth as Sparkplug historical data
(store and forward; its births wait for the gateway's host, its Primary Host), so the
time-based KPIs agree too, even when the line's planned state changed (a break began and
ended) inside the outage: the second case kills the devices' broker and keeps the UNS one
up (compose's two zones) and requires PBT and availability equal to the answer key's.

Before store and forward, the birth after the return carried only the latest values (a
break inside the outage vanished: PBT and availability off), and a value restated at the
host's stale mark repeated the sample sent before it exactly, so dedup by id dropped it and
the gap stayed open until the metric next changed (the line counters resumed ~6 s late).

One broker that forgets its sessions (no persistence, as here) used to drop what the
gateway published to the UNS before the platform had subscribed again, and what it had
confirmed but not yet delivered when it died. The hand-over (the ingest's retained
presence, the publisher's hold and resend window; test_r1_uns_handover.py forces the worse
order) closes that: the first case requires every forwarded record stored once.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kit import SCENARIOS, Mosquitto, Testbed, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

from iiotbed.telemetry import Tag

pytestmark = pytest.mark.network

SPEED = 600.0
# the outage starts ~08:30 (sim); after it, an hour and more of sim time (~6 s wall) for
# every client's backoff to bring it back while the devices still run
START, END = 8 * 3600.0, 10.5 * 3600.0
UNTIL = END - 600.0  # the devices' last publishing interval may go down with them
KILL_AT = 8.5 * 3600.0
OUTAGE_S = 3.0
TIME_KPIS = ("pbt_h", "availability")  # from the line's PlannedState (Sparkplug) and states
REL = 1e-6  # the answer key's tolerance for time-based KPIs (testbed.agreement)


def _count(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def _host_metrics(broker: Mosquitto, wait: float = 3.0) -> dict[str, Any]:
    """The gateway's Sparkplug host counters, from its retained metrics (published every
    5 s; the broker restart lost the old retained copy); {} when none came in ``wait`` s."""
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        pytest.skip("mosquitto_sub is not installed")
    out = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "uns/_gateway/+/metrics",
         "-C", "1", "-W", str(max(1, round(wait)))], capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    if not out.stdout.strip():
        return {}
    got: dict[str, Any] = json.loads(out.stdout)["collectors"]["sparkplug"]
    return got


def _time_kpis_agree(tb: Testbed, start: float, end: float) -> dict[str, tuple[float, float]]:
    """The line's PBT and availability, telemetry against the answer key; fails if they
    differ by more than the answer key's relative tolerance."""
    key, got = tb.answer_key(start, end), tb.kpis(start, end)
    out = {k: (got[k], key[k]) for k in TIME_KPIS}
    wrong = {k: v for k, v in out.items() if not math.isclose(v[0], v[1], rel_tol=REL)}
    if wrong:
        assert tb.run_id is not None
        st = tb.get("/api/kpis", run_id=tb.run_id, start=start, end=end, by="station")
        pytest.fail(f"(telemetry, answer key) differ: {wrong}; line {got}; stations {st}")
    assert got["unknown_h"] == 0.0, got  # no time left unobserved: the gap was filled
    return out


def _resume_t(resume: Path) -> float:
    """The devices' resume mark: ahead of their sim time by up to one wall second's worth
    (``AHEAD`` sim s), moved in steps of about that."""
    return float(json.loads(resume.read_text())["t"]) if resume.exists() else 0.0


AHEAD = SPEED


def test_broker_restart_everyone_reconnects_nothing_lost(tmp_path: Path, broker: Mosquitto) -> None:
    resume = tmp_path / "devices.resume.json"
    with running(tmp_path, broker, duration=END, speed=SPEED) as tb:
        base = tb.devices_args
        tb.devices_args = lambda: [*base(), "--resume", str(resume)]  # type: ignore[method-assign]
        tb.start_platform()
        tb.start_devices()
        gw = tb.start_gateway()
        connects = _count(gw.output(), r"UNS publisher connected")
        wait_for(lambda: _resume_t(resume) >= KILL_AT, 60, "the run to reach ~08:20")
        assert _resume_t(resume) - AHEAD < KILL_AT + 1800.0, "the run is too far for the case"
        births = _host_metrics(broker, wait=0.5).get("births", 0)  # 0: not published yet
        broker.kill()
        time.sleep(OUTAGE_S)
        broker.start()
        back = time.monotonic()
        # the UNS publisher, the platform's ingest: connected again within 5 s
        wait_for(lambda: _count(gw.output(), r"UNS publisher connected") > connects, 5.0,
                 "the gateway's UNS publisher to reconnect", interval=0.05)  # fmt: skip
        wait_for(lambda: tb.ingest()["connected"], 5.0, "the platform to reconnect", interval=0.05)
        took = time.monotonic() - back
        # the edge node births again for the host (STATE online) on the new broker, and
        # sends what it kept meanwhile as historical data
        # (the gateway's metrics come every 5 s once its health connection is back)
        wait_for(lambda: _host_metrics(broker).get("births", 0) > births, 30.0,
                 "a Sparkplug rebirth after the restart")  # fmt: skip
        historical = wait_for(lambda: _host_metrics(broker).get("historical"), 30.0,
                              "historical data from the edge node")  # fmt: skip
        assert tb.procs["devices"].wait(120) == 0
        tb.wait_agreement(START, UNTIL)
        gw.stop()
        m = re.findall(r"received (\d+), forwarded (\d+)", gw.output())
        assert m, gw.tail()
        forwarded = int(m[-1][1])
        # nothing the gateway forwarded is lost on the forgetful broker, nothing doubled
        wait_for(lambda: tb.stored_records() == forwarded, 30,
                 f"{forwarded} forwarded records stored (have {tb.stored_records()})")  # fmt: skip
        key, got = tb.answer_key(START, UNTIL), tb.kpis(START, UNTIL)
        kpis = {k: (got[k], key[k]) for k in TIME_KPIS}
        print(f"R1: gateway and platform reconnected {took:.2f} s after the broker's return; "
              f"{historical} historical values forwarded; (telemetry, key): {kpis}")  # fmt: skip


def test_devices_broker_outage_across_a_break_keeps_the_planned_state(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # Two brokers, as the two zones of compose: the devices' (killed here) and the UNS one
    # (gateway -> platform, up throughout): the case isolates the Sparkplug path. The
    # teaching line's break moves into the first paced hours, 09:15-09:25, inside the outage.
    text = (SCENARIOS / "single-machine.yaml").read_text()
    moved = text.replace('{start: "12:00", duration: 30min}', '{start: "09:15", duration: 10min}')
    assert moved != text, "the scenario's break line changed: update this case"
    scenario = tmp_path / "single-machine-break.yaml"
    scenario.write_text(moved)
    brk, brk_end = 9.25 * 3600.0, 9.25 * 3600.0 + 600.0
    resume = tmp_path / "devices.resume.json"
    uns = Mosquitto(tmp_path / "uns-broker").start()
    try:
        with running(tmp_path, broker, scenario=scenario, duration=END, speed=SPEED,
                     uns_broker=uns) as tb:  # fmt: skip
            base = tb.devices_args
            tb.devices_args = lambda: [*base(), "--resume", str(resume)]  # type: ignore[method-assign]
            tb.start_all()
            wait_for(lambda: _resume_t(resume) >= brk - AHEAD, 60, "the run to reach ~09:05")
            broker.kill()
            down = _resume_t(resume) - AHEAD  # the sim time, at most
            assert down < brk - 60.0, f"too late for the case: the devices were past {down:g} s"
            # away until the break has begun and ended (sim time), ~2-3 s wall at 600x
            wait_for(lambda: _resume_t(resume) > brk_end + 120.0 + AHEAD, 30, "the break to pass")
            broker.start()
            historical = wait_for(lambda: _host_metrics(uns).get("historical"), 30.0,
                                  "historical data from the edge node")  # fmt: skip
            assert tb.procs["devices"].wait(120) == 0
            tb.wait_agreement(START, UNTIL)
            kpis = _time_kpis_agree(tb, START, UNTIL)
            # the break is in the store at its own times (the edge's history, not the birth)
            assert tb.run_id is not None
            series = tb.get("/api/series", run_id=tb.run_id, asset=_line(tb),
                            tag=Tag.PLANNED_STATE, start=brk - 1.0, end=brk_end + 1.0)  # fmt: skip
            planned = [tuple(p) for p in series["points"]]
            assert {t for t, _ in planned} >= {brk, brk_end}, planned
            print(f"R1 across a break: devices' broker down from sim <= {down:.0f} s; "
                  f"{historical} historical values; (telemetry, key): {kpis}; "
                  f"PlannedState in the break: {planned}")  # fmt: skip
    finally:
        uns.kill()


def _line(tb: Testbed) -> str:
    from iiotbed.platform.layout import Layout
    from iiotbed.scenario import load_scenario

    return Layout.from_scenario(load_scenario(tb.scenario)).line
