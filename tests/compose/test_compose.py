"""docker-compose.yml for real: healthy, the KPIs agree, OT and IT are segmented, down -v.

One stack for the session (``conftest.stack``); the cases run in file order: the report
after the devices finished, the segmentation, then ``down -v`` leaving nothing.
"""

from __future__ import annotations

import json
import time

import pytest
from compose_kit import SERVICES, Stack

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]

COUNTERS = ("good_count", "scrap_count", "processed", "failures")


def _reach(stack: Stack, service: str, targets: list[tuple[str, int]], *,
           running: bool = True) -> dict[str, bool]:  # fmt: skip
    """Which ``host:port`` a TCP connection opens to (3 s each) from where ``service`` sits:
    one Python run in its container (``exec``) or, when it may have exited, a fresh one."""
    code = (
        "import json, socket, sys\n"
        "out = {}\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        out[f'{host}:{port}'] = True\n"
        "    except OSError:\n"
        "        out[f'{host}:{port}'] = False\n"
        "print(json.dumps(out))\n"
    )
    r = stack.python(service, code, running=running)
    assert r.returncode == 0, (service, r.stdout, r.stderr)
    result: dict[str, bool] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def test_config_is_valid(stack: Stack) -> None:
    r = stack.compose("--profile", "report", "config", "--format", "json")
    doc = json.loads(r.stdout)
    assert set(SERVICES) | {"report"} == set(doc["services"])
    assert doc["networks"]["ot"].get("internal") is True
    published = {s: d["ports"] for s, d in doc["services"].items() if d.get("ports")}
    assert list(published) == ["platform"], published
    assert all(p.get("host_ip") == "127.0.0.1" for p in published["platform"])
    for name, svc in doc["services"].items():
        assert svc.get("healthcheck", {}).get("test") or name == "report", name


def test_the_run_agrees_with_the_answer_key(stack: Stack) -> None:
    # the devices end at the run's duration (exit 0, restart on-failure: they stay down)
    stack.timings["devices done"] = stack.wait(
        "the devices' run finished with status 0",
        lambda st: st.get("devices", {}).get("State") == "exited", 300,
    )  # fmt: skip
    assert stack.ps()["devices"]["ExitCode"] == 0, stack.logs()
    t0 = time.monotonic()
    r = stack.compose("run", "--rm", "-T", "report", "--json", "-n", "2", timeout=600,
                      check=False)  # fmt: skip
    stack.timings["report"] = time.monotonic() - t0
    assert r.stdout.strip(), f"no report (exit {r.returncode}):\n{r.stderr}\n{stack.logs()}"
    report = json.loads(r.stdout)
    agreement = report["agreement"]
    for k in COUNTERS:
        assert agreement[k]["ok"], (k, agreement[k], stack.logs())
    assert report["answer_key"]["good_count"] > 0  # a real run, not two empty columns
    assert report["window"]["end"] == 11 * 3600.0
    assert report["agrees"], (agreement, r.stderr)
    assert r.returncode == 0, r.stderr
    assert report["verdict"] in ("met", "not met", "inconclusive"), report
    assert report["improvement"]["n"] == 2


def test_report_prints_the_table_and_verdict(stack: Stack) -> None:
    r = stack.compose("run", "--rm", "-T", "report", "-n", "2", timeout=600, check=False)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    for text in ("answer key", "good_count", "verdict:", "telemetry: platform stored"):
        assert text in r.stdout, r.stdout


def test_ot_and_it_are_segmented(stack: Stack) -> None:
    ips = {s: stack.ip(s) for s in ("broker-ot", "broker-it", "postgres", "platform")}
    # the one conduit reaches both zones (else the negative checks below prove nothing)
    gw = _reach(stack, "gateway", [("broker-ot", 1883), ("broker-it", 1883), ("postgres", 5432)])
    assert all(gw.values()), gw
    # the OT zone: the devices reach their broker and nothing of IT, by name or address,
    # nor anything outside the host
    it = [("postgres", 5432), ("broker-it", 1883), (ips["postgres"]["it"], 5432),
          (ips["broker-it"]["it"], 1883), (ips["platform"]["it"], 8000), ("1.1.1.1", 443)]  # fmt: skip
    dev = _reach(stack, "devices", [("broker-ot", 1883), *it], running=False)
    assert dev.pop("broker-ot:1883"), dev
    assert not any(dev.values()), f"devices reached {[t for t, ok in dev.items() if ok]}"
    # the IT zone: the platform reaches nothing of OT
    ot = [("devices", 4840), ("broker-ot", 1883), (ips["broker-ot"]["ot"], 1883)]
    plat = _reach(stack, "platform", [("postgres", 5432), *ot])
    assert plat.pop("postgres:5432"), plat
    assert not any(plat.values()), f"platform reached {[t for t, ok in plat.items() if ok]}"


def test_down_v_leaves_nothing(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300)
    left = stack.leftovers()
    assert left == {"containers": [], "volumes": [], "networks": []}, left
