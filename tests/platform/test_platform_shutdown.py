"""Ctrl-C stops ``iiotbed platform`` within a bound even while a client holds a response
open (a dashboard that stopped reading): uvicorn's graceful shutdown is bounded."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iiotbed.platform.store import RunInfo, open_store
from iiotbed.telemetry import Sample

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]
POINTS = 400_000  # a response of several MB: more than the sockets' buffers hold


async def _fill(url: str) -> None:
    async with open_store(url) as store:
        await store.upsert_run(RunInfo(run_id="r", scenario="s"))
        for i in range(0, POINTS, 50_000):
            await store.write_samples(
                [Sample(float(t), "m", "X", float(t)) for t in range(i, i + 50_000)], "r"
            )


def test_ctrl_c_stops_the_platform_while_a_client_stalls_a_response(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    asyncio.run(_fill(url))
    proc = subprocess.Popen(
        [*CLI, "platform", "--port", "0", "--store", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IIOTBED_BROKER": ""},
    )
    client = socket.socket()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert m, first
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", int(m.group(1))))
        client.sendall(b"GET /api/series?asset=m&tag=X&limit=1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.recv(12) == b"HTTP/1.1 200"  # the response is on its way; read no more
        proc.send_signal(signal.SIGINT)
        # a generous bound: without one the server waits for this client as long as it stalls
        out, err = proc.communicate(timeout=60)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out
