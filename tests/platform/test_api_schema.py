"""Property-based API test (schemathesis): generated queries from the OpenAPI schema never
get a server error, over a live server and a store filled from a simulated run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from iiotbed.devices.sim import simulate
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.api import create_app
from iiotbed.platform.broker import free_port
from iiotbed.platform.catalog import RunCatalog, run_info, scenario_assets
from iiotbed.platform.queries import PlatformView
from iiotbed.platform.store import SqliteStore
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Event, Sample

pytestmark = pytest.mark.timeout(180)

ROOT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    scenario = load_scenario(ROOT_DIR / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 0, duration=12 * 3600.0)
    store = SqliteStore(f"sqlite:///{tmp_path_factory.mktemp('schema') / 'p.db'}")
    port = free_port()
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        await store.open()
        key = compute_kpis(records, Layout.from_scenario(scenario), end=12 * 3600.0).to_dict()
        await store.upsert_run(run_info(scenario, "r0", answer_key=key))
        await store.upsert_run(run_info(scenario, "r1", answer_key=key, baseline_run_id="r0"))
        await store.upsert_assets(scenario_assets(scenario))
        await store.write_samples([r for r in records if isinstance(r, Sample)], "r0")
        await store.write_events([r for r in records if isinstance(r, Event)], "r0")

    loop.run_until_complete(fill())
    app = create_app(PlatformView(store, RunCatalog(store, scenario)))
    # uvicorn installs no signal handlers outside the main thread
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),))
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.02)
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    finally:
        server.should_exit = True
        thread.join(10)
        loop.run_until_complete(store.close())
        loop.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_queries_never_get_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
