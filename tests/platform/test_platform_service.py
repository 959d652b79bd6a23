"""The platform service: ``iiotbed platform`` end to end, and its start-up errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from iiotbed.errors import ConnectorError
from iiotbed.platform.service import Platform

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]


def test_cli_serves_the_api_with_an_embedded_broker_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "platform", "--port", "0", "--store", f"sqlite:///{tmp_path / 'p.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IIOTBED_BROKER": ""},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
        assert m, first + (proc.stderr.read() if proc.stderr else "")
        health = httpx.get(f"{m.group(1)}/api/health", timeout=10).json()
        assert health["status"] == "ok"
        assert health["broker"].startswith("mqtt://127.0.0.1:")
        assert not health["broker"].endswith(":1883")  # an embedded broker on its own port
        assert health["ingest"]["connected"] is True
        assert httpx.get(f"{m.group(1)}/api/runs", timeout=10).json() == []
        page = httpx.get(f"{m.group(1)}/", timeout=10)
        assert page.status_code == 200 and "iiotbed" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert (tmp_path / "p.db").exists()


def test_cli_refuses_a_bad_broker_url(tmp_path: Path) -> None:
    r = subprocess.run(
        [*CLI, "platform", "--broker", "tcp://x", "--store", f"sqlite:///{tmp_path / 'p.db'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "mqtt://host:port" in r.stderr


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            with pytest.raises(ConnectorError, match="choose another --port"):
                async with Platform(
                    broker="mqtt://127.0.0.1:1883", store=f"sqlite:///{tmp_path / 'p.db'}",
                    port=port,
                ):
                    pass

        asyncio.run(main())


def test_the_body_exception_passes_through_and_everything_closes(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    async def main() -> None:
        before = {t for t in asyncio.all_tasks() if not t.done()}
        platform = Platform(
            broker="mqtt://127.0.0.1:1883", store=f"sqlite:///{tmp_path / 'p.db'}", port=0
        )
        err = Boom("from the body")
        with pytest.raises(Boom) as caught:
            async with platform:
                port = platform.port
                async with httpx.AsyncClient() as client:
                    health = await client.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
                assert health.status_code == 200
                raise err
        assert caught.value is err  # the same object, not wrapped in an ExceptionGroup
        await asyncio.sleep(0)
        left = {t for t in asyncio.all_tasks() if not t.done()} - before
        assert not left, left
        with pytest.raises(httpx.ConnectError):  # the API's socket is closed
            async with httpx.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{port}/api/health", timeout=2)

    asyncio.run(main())
