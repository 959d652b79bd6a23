"""``iiotbed health`` (the containers' healthchecks) and ``iiotbed report``'s user errors,
against the real Mosquitto and PostgreSQL on 127.0.0.1 and a real OPC UA server; no engine."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on return: nothing listens there


@pytest.fixture(scope="module")
def opcua_url() -> Iterator[str]:
    """A real asyncua server (the devices' own) in a thread, on a free port."""
    from iiotbed.devices.opcua import build_servers
    from iiotbed.scenario import load_scenario

    port = _refused_port()
    started, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        servers = build_servers(load_scenario(ROOT / "scenarios/single-machine.yaml"),
                                host="127.0.0.1", port=port)  # fmt: skip
        async with servers:
            started.set()
            await asyncio.to_thread(stop.wait)

    t = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    t.start()
    assert started.wait(30), "the OPC UA server did not start"
    yield f"opc.tcp://127.0.0.1:{port}/iiotbed/"
    stop.set()
    t.join(30)


def test_health_ok_for_each_protocol(opcua_url: str) -> None:
    r = runner.invoke(app, ["health", "mqtt://127.0.0.1:1883", "postgresql://127.0.0.1:5432/test",
                            opcua_url, "tcp://127.0.0.1:1883"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.count(": ok") == 4


def test_health_fails_when_one_endpoint_does_not_answer() -> None:
    port = _refused_port()
    r = runner.invoke(app, ["health", "mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{port}"])
    assert r.exit_code == 1, r.output
    assert "mqtt://127.0.0.1:1883: ok" in r.output
    assert f"mqtt://127.0.0.1:{port}: ConnectionRefusedError" in r.output


def test_health_knows_a_broker_from_another_server() -> None:
    # PostgreSQL accepts the TCP connection but does not speak MQTT: not healthy
    r = runner.invoke(app, ["health", "--timeout", "2", "mqtt://127.0.0.1:5432",
                            "opc.tcp://127.0.0.1:1883"])  # fmt: skip
    assert r.exit_code == 1, r.output
    assert ": ok" not in r.output


def test_health_http_status() -> None:
    r = runner.invoke(app, ["health", f"http://127.0.0.1:{_refused_port()}/api/health"])
    assert r.exit_code == 1 and "refused" in r.output, r.output


@pytest.mark.parametrize("url", ["ftp://x:1", "mqtt://", "127.0.0.1:1883"])
def test_health_bad_url_is_a_usage_error(url: str) -> None:
    r = runner.invoke(app, ["health", url])
    assert r.exit_code == 2, r.output
    assert "expected" in r.output and "Traceback" not in r.output


def test_report_needs_a_store_and_an_event_log(tmp_path: Path) -> None:
    sc = str(ROOT / "scenarios/single-machine.yaml")
    r = runner.invoke(
        app, ["report", sc, "--events", str(tmp_path / "e.jsonl")], env={"IIOTBED_STORE": ""}
    )
    assert r.exit_code == 2 and "--store" in r.output, r.output
    r = runner.invoke(app, ["report", sc, "--store", "mysql://x"], env={"IIOTBED_EVENTS": ""})
    assert r.exit_code == 2 and "--events" in r.output, r.output
    r = runner.invoke(app, ["report", sc, "--store", "mysql://x", "--events", str(tmp_path / "e")])
    assert r.exit_code == 2 and "--store" in r.output, r.output


def test_report_says_when_the_run_has_not_started(tmp_path: Path) -> None:
    sc = str(ROOT / "scenarios/single-machine.yaml")
    r = runner.invoke(app, ["report", sc, "--store", f"sqlite:///{tmp_path / 's.db'}",
                            "--events", str(tmp_path / "events.jsonl")])  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "has not started" in r.output and "Traceback" not in r.output


def test_devices_wait_for_host_needs_a_host_and_a_broker() -> None:
    sc = str(ROOT / "scenarios/single-machine.yaml")
    r = runner.invoke(app, ["devices", sc, "--wait-for-host"], env={"IIOTBED_PRIMARY_HOST": ""})
    assert r.exit_code == 2, r.output
    assert "--wait-for-host" in r.output and "Traceback" not in r.output
