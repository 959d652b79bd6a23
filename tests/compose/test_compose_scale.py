"""``docker compose up --scale gateway=2``: two gateway replicas on one run, one killed.

A stack of its own (project ``iiotbed-scale-<pid>``) on the 5G scenario from its first shift
to 11:00 at 300x (~36 s paced), with no setting of its own: each replica has its own id by
default (``gw-{host}``: the container's host name, so its own MQTT client ids, status topic
and buffer file in the shared volume), both write the run id the devices announce, and both
are the one Sparkplug Primary Host the devices follow and hold sim time for.
Must hold: two gateway containers, healthy, under two ids, both delivering; one replica is
``docker kill``'d mid-run (its Will says offline, the survivor restates online: the edge node
at most starts a new session, its store and forward fills the gap); at the end the retained
STATE says online, ``iiotbed report`` finds every KPI agreeing with the answer key (counters
exact, time KPIs within the tolerance) and the store holds one run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from compose_kit import Stack, api, devices_t, docker, exec_out, poll, stack_env

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

SPEED = 300
KILL_AT = 9.5 * 3600.0  # one replica goes once the devices are past 09:30
COUNTERS = ("good_count", "scrap_count", "processed", "failures")


def _gateways(stack: Stack) -> list[dict[str, Any]]:
    r = stack.compose("ps", "-a", "--format", "json", "gateway", timeout=60)
    text = r.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    return sorted(rows, key=lambda row: str(row["Name"]))


def _ids(stack: Stack) -> set[str]:
    """The gateway ids whose status the UNS broker holds online (retained)."""
    # -C 2: the two replicas' retained statuses come at once (mosquitto_sub exits 0)
    text = exec_out(stack, "broker-it", "mosquitto_sub", "-h", "127.0.0.1", "-t",
                    "uns/_gateway/+/status", "-v", "-C", "2", "-W", "3")  # fmt: skip
    out = set()
    for line in text.splitlines():
        topic, _, payload = line.partition(" ")
        if payload.strip() == "online":
            out.add(topic.split("/")[2])
    return out


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = stack_env("11h", SPEED)
    for k in ("RUN_ID", "GATEWAY_ID", "PRIMARY_HOST", "WAIT_FOR_HOST"):
        env.pop(k, None)  # the defaults of docker-compose.yml, as a user gets them
    s = Stack(f"iiotbed-scale-{os.getpid()}", env)
    s.compose("build", "-q", timeout=1800)
    try:
        s.compose("up", "-d", "--scale", "gateway=2", timeout=600)
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False, timeout=300)


def test_two_gateway_replicas_one_killed_still_exact(stack: Stack) -> None:
    poll(lambda: len(_gateways(stack)) == 2
         and all(g.get("Health") == "healthy" for g in _gateways(stack)), 180,
         "two healthy gateway replicas", stack=stack)  # fmt: skip
    ids = poll(lambda: (lambda i: i if len(i) == 2 else None)(_ids(stack)), 60,
               "two gateway ids online", stack=stack)  # fmt: skip
    assert all(i.startswith("gw-") for i in ids), ids
    poll(lambda: devices_t(stack) > KILL_AT, 300, "the devices past 09:30", stack=stack)
    victim = _gateways(stack)[0]
    docker("kill", victim["ID"], env=stack.env)
    stack.wait("the devices' run finished", lambda st: st.get("devices", {}).get("State")
               == "exited", 300)  # fmt: skip
    assert stack.ps()["devices"]["ExitCode"] == 0, stack.logs()
    r = stack.compose("run", "--rm", "-T", "report", "--json", "-n", "2", timeout=600,
                      check=False)  # fmt: skip
    assert r.stdout.strip(), f"no report (exit {r.returncode}):\n{r.stderr}\n{stack.logs()}"
    report = json.loads(r.stdout)
    for k in COUNTERS:
        assert report["agreement"][k]["ok"], (k, report["agreement"][k], stack.logs())
    # the devices held sim time for the shared Primary Host: the time KPIs agree too
    off = {k: v for k, v in report["agreement"].items() if not v["ok"]}
    assert not off, (off, stack.logs())
    assert report["answer_key"]["good_count"] > 0
    state = exec_out(stack, "broker-ot", "mosquitto_sub", "-h", "127.0.0.1", "-t",
                     "spBv1.0/STATE/iiotbed-gateway", "-C", "1", "-W", "3")  # fmt: skip
    assert json.loads(state)["online"] is True, state
    runs = api(stack, "/api/runs")
    assert len(runs) == 1, runs  # one run, both replicas: the one the devices announced
    assert re.fullmatch(r"[a-z0-9-]+-r0-[0-9a-f]{12}", runs[0]["run_id"]), runs
    logs = stack.compose("logs", "--no-color", "gateway", timeout=60).stdout
    assert logs.count(f"(run {runs[0]['run_id']})") >= 2, logs  # both replicas wrote it
