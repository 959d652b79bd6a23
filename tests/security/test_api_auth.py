"""Platform API access: reads open, writes need the bearer token (secure) or a loopback
client (open), no CORS for other origins, no broker password in the health route."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iiotbed.platform.api import create_app
from iiotbed.platform.catalog import RunCatalog
from iiotbed.platform.queries import PlatformView
from iiotbed.platform.store import SqliteStore
from iiotbed.scenario import load_scenario

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken-for-the-platform-api-123"
SCENARIO = Path(__file__).parents[2] / "scenarios" / "single-machine.yaml"


@pytest.fixture
def view(tmp_path: Path) -> Iterator[PlatformView]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'p.db'}")
    asyncio.run(store.open())
    try:
        yield PlatformView(store, RunCatalog(store, load_scenario(SCENARIO)))
    finally:
        asyncio.run(store.close())


def call(view: PlatformView, method: str, path: str, *, token: str | None = None,
         client: str = "127.0.0.1", headers: dict[str, str] | None = None,
         broker: str | None = None) -> httpx.Response:  # fmt: skip
    app = create_app(view, broker=broker, api_token=token)

    @app.post("/api/test/write")  # stands for every write and run-control route
    async def write() -> dict[str, bool]:
        return {"written": True}

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.request(method, path, headers=headers)

    return asyncio.run(go())


def test_a_write_without_the_token_gets_401(view: PlatformView) -> None:
    r = call(view, "POST", "/api/test/write", token=TOKEN)
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"] and r.headers["www-authenticate"].startswith("Bearer")
    # a wrong token, another scheme, and any other non-GET method are refused alike
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    assert call(view, "POST", "/api/test/write", token=TOKEN, headers=wrong).status_code == 401
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert call(view, "POST", "/api/test/write", token=TOKEN, headers=basic).status_code == 401
    for method in ("PUT", "PATCH", "DELETE"):
        assert call(view, method, "/api/runs", token=TOKEN).status_code == 401


def test_a_write_with_the_token_passes(view: PlatformView) -> None:
    ok = {"Authorization": f"Bearer {TOKEN}"}
    r = call(view, "POST", "/api/test/write", token=TOKEN, headers=ok, client="10.1.2.3")
    assert r.status_code == 200 and r.json() == {"written": True}


def test_reads_stay_open(view: PlatformView) -> None:
    assert call(view, "GET", "/api/runs", token=TOKEN, client="10.1.2.3").status_code == 200


def test_open_profile_takes_writes_from_loopback_only(view: PlatformView) -> None:
    assert call(view, "POST", "/api/test/write").status_code == 200
    assert call(view, "POST", "/api/test/write", client="::1").status_code == 200
    r = call(view, "POST", "/api/test/write", client="192.168.7.9")
    assert r.status_code == 403 and "this machine" in r.json()["detail"]


def test_no_cors_for_a_foreign_origin(view: PlatformView) -> None:
    origin = {"Origin": "http://evil.example"}
    r = call(view, "GET", "/api/runs", token=TOKEN, headers=origin)
    assert r.status_code == 200
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    pre = {**origin, "Access-Control-Request-Method": "POST"}
    r = call(view, "OPTIONS", "/api/test/write", token=TOKEN, headers=pre)
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    assert r.status_code in (401, 405)


def test_health_never_shows_the_broker_password(view: PlatformView) -> None:
    r = call(view, "GET", "/api/health", broker="mqtts://ingest:hunter2hunter2@127.0.0.1:8883")
    assert r.json()["broker"] == "mqtts://ingest:***@127.0.0.1:8883"


def test_a_short_token_is_refused(view: PlatformView) -> None:
    with pytest.raises(ValueError, match="16 characters"):
        create_app(view, api_token="short")
