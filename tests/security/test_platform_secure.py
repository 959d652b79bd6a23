"""``iiotbed platform --security secure``'s service: its embedded broker is the secure
Mosquitto, and ingest gets through the ACL with the login its client id picks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from iiotbed.platform.service import Platform
from iiotbed.security import SecretsDir

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("need_mosquitto")]


def test_secure_platform_ingests_through_tls_and_the_acl(
    secrets_dir: SecretsDir, tmp_path: Path
) -> None:
    token = str(secrets_dir.read()["api"]["token"])

    async def main() -> None:
        async with asyncio.timeout(20):  # a login or ACL mistake would hang ingest's start
            async with Platform(
                store=f"sqlite:///{tmp_path / 'p.db'}", port=0, api_token=token, secrets=secrets_dir
            ) as p:
                assert p.broker_url is not None and p.broker_url.startswith("mqtts://")
                assert p.ingest is not None and p.ingest.metrics.connected
                async with httpx.AsyncClient(base_url=p.url) as c:
                    assert (await c.get("/api/runs")).status_code == 200
                    assert (await c.post("/api/runs")).status_code == 401
                    auth = {"Authorization": f"Bearer {token}"}
                    assert (await c.post("/api/runs", headers=auth)).status_code == 405

    asyncio.run(main())
