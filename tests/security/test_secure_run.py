"""``iiotbed run --security secure``: the whole testbed secured by one switch.

A short run of the single-machine scenario with every part secured (TLS broker with logins
and ACLs, OPC UA SignAndEncrypt with user logins, the API token): its telemetry agrees with
the answer key as an open run's does (tests/test_run.py), and while it runs, an anonymous
OPC UA client, a plain ``mqtt://`` client and an API write without the token are refused,
and one publish outside a device's ACL is the one denial the report counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.errors import ConnectorError
from iiotbed.mqtt import MqttConnection
from iiotbed.platform.broker import free_port
from iiotbed.scenario import load_scenario
from iiotbed.security import SecretsDir
from iiotbed.testbed import COUNTERS, REL_TOLERANCE, RunOptions, run_all
from iiotbed.testbed.progress import Progress
from iiotbed.testbed.secure import GATEWAY_APP_URI

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("need_mosquitto")]


def _agrees(kpis: dict[str, Any], key: dict[str, Any]) -> None:
    assert key["good_count"] > 0, "nothing produced: the check would be empty"
    for k, truth in key.items():
        got = kpis[k]
        if k in COUNTERS:
            assert got == truth, (k, got, truth)
        elif truth is None:
            assert got is None, (k, got)
        else:
            assert got is not None and math.isclose(
                got, truth, rel_tol=REL_TOLERANCE, abs_tol=1e-9
            ), (k, got, truth)


async def _refused_opcua(endpoint: str, secrets: Path, *, encrypted: bool) -> None:
    """An anonymous session: over SecurityPolicy None, or over an encrypted channel."""
    client = Client(endpoint, timeout=5)
    if encrypted:  # a certificate the server accepts, but no user: the session is refused
        client.application_uri = GATEWAY_APP_URI
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(secrets / "opcua-gateway.der"),
            str(secrets / "opcua-gateway.pem"),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    with pytest.raises((ua.UaError, ConnectionError, TimeoutError)) as err:
        await client.connect()
    if encrypted:
        assert getattr(err.value, "code", None) == ua.StatusCodes.BadIdentityTokenRejected
    with contextlib.suppress(Exception):
        await client.disconnect()


def test_secure_run_agrees_and_refuses_the_uninvited(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE).with_run(duration=10 * 3600)  # to 10:00: two paced hours
    lines: list[str] = []
    opcua_port = free_port()
    checked: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def attacks(_read: Callable[[], Progress]) -> AsyncIterator[None]:
        # every part is up, the simulation held at its start: knock on each door
        text = "\n".join(lines)
        broker = re.search(r"broker +mqtts://127\.0\.0\.1:(\d+)\?secrets=(\S+)", text)
        dashboard = re.search(r"dashboard +(http://127\.0\.0\.1:\d+)/", text)
        assert broker is not None and dashboard is not None, text
        port, secrets = int(broker[1]), Path(broker[2])
        endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/iiotbed/"
        await _refused_opcua(endpoint, secrets, encrypted=False)
        await _refused_opcua(endpoint, secrets, encrypted=True)
        with pytest.raises(ConnectorError, match="before its CONNACK"):
            async with MqttConnection(
                f"mqtt://127.0.0.1:{port}", client_id="iiotbed-plain", on_message=print
            ):
                pass
        # an edge device (its login by client id) writing the UNS: the ACL drops it
        url = f"mqtts://127.0.0.1:{port}?secrets={secrets}"
        async with MqttConnection(url, client_id="iiotbed-intruder-edge", on_message=print) as edge:
            await edge.publish_acked("uns/_stream/intruder", b"{}")  # 3.1.1: still PUBACKed
        async with httpx.AsyncClient(base_url=dashboard[1]) as api:
            checked["write"] = (await api.post("/api/runs")).status_code
            checked["read"] = (await api.get("/api/runs")).status_code
        checked["secrets"] = secrets
        yield

    async def main() -> Any:
        async with asyncio.timeout(90):
            return await run_all(
                scenario,
                RunOptions(speed=20000, opcua_port=opcua_port, verdict=False,
                           runs_dir=tmp_path / "runs", security="secure"),
                say=lines.append, watch=attacks,
            )  # fmt: skip

    report = asyncio.run(main()).to_dict()
    assert checked["write"] == 401 and checked["read"] == 200
    _agrees(report["kpis"], report["answer_key"])
    settle = report["settle"]
    assert settle["timed_out"] is False and settle["stored"] == settle["gateway_forwarded"]
    # the one intruding publish, and nothing of the factory's own traffic
    assert settle["denied"] == 1
    assert report["endpoints"]["security"] == "secure"
    assert report["endpoints"]["broker"].startswith("mqtts://127.0.0.1:")
    secrets = SecretsDir(checked["secrets"])
    assert secrets.root == tmp_path / "runs" / report["run_id"] / "secrets"
    assert (secrets.root.stat().st_mode & 0o777) == 0o700
    doc = secrets.read()
    passwords = [u["password"] for u in doc["mqtt"]["users"].values()]
    passwords += [u["password"] for u in doc["opcua"]["users"].values()]
    shown = json.dumps(report) + "\n".join(lines)
    assert not [p for p in passwords if p in shown] and doc["api"]["token"] not in shown
    assert any(line.startswith("  security   secure:") for line in lines)


def test_cli_secure_run_prints_the_profile_and_no_denials(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from iiotbed.cli import main; main()", "run", str(SINGLE),
         "--security", "secure", "--duration", "1h", "--speed", "20000",
         "--opcua-port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^  broker +mqtts://127\.0\.0\.1:\d+\?secrets=\S+  \(embedded\)$", out, re.M)
    assert "  security   secure: MQTT TLS" in out
    assert "security: secure (TLS, logins, ACLs, OPC UA SignAndEncrypt, API token); " \
        "0 publishes denied by the broker's ACL" in out
    run_dir = next((tmp_path / ".iiotbed" / "runs").iterdir())
    doc = SecretsDir(run_dir / "secrets").read()
    for user in doc["mqtt"]["users"].values():
        assert user["password"] not in out + proc.stderr


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["devices", str(SINGLE), "--security", "secure", "--broker", "mqtt://127.0.0.1:1883"],
         "mqtts://"),
        (["devices", str(SINGLE), "--security", "secure", "--secrets", "no-such-dir"],
         "iiotbed certs --dir no-such-dir"),
        (["gateway", "--scenario", str(SINGLE), "--security", "secure",
          "--broker", "mqtt://127.0.0.1:1883"], "mqtts://"),
        (["run", str(SINGLE), "--security", "secure", "--broker", "mqtt://127.0.0.1:1883"],
         "mqtts://"),
        (["run", str(SINGLE), "--security", "tight"], "use 'open' or 'secure'"),
    ],
)  # fmt: skip
def test_secure_profile_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    with contextlib.chdir(tmp_path):
        result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
