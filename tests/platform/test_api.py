"""The HTTP API in process over a store filled from a real simulation of single-machine.yaml."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from iiotbed.devices.sim import simulate
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.api import create_app
from iiotbed.platform.catalog import RunCatalog, run_info, scenario_assets, shift_windows
from iiotbed.platform.queries import PlatformView
from iiotbed.platform.stats import compare_paired
from iiotbed.platform.store import RunInfo, SqliteStore
from iiotbed.scenario import Scenario, load_scenario
from iiotbed.telemetry import Event, Record, Sample, Tag

pytestmark = pytest.mark.timeout(120)

ROOT_DIR = Path(__file__).resolve().parents[2]
DAY = 86400.0
RUN = "single-r0"


class Client:
    """A synchronous face on an in-process httpx client (ASGI transport, one event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
        self.loop = loop
        self.client = client

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path, params=params))


class World:
    def __init__(self, scenario: Scenario, records: list[Record], client: Client) -> None:
        self.scenario = scenario
        self.records = records
        self.client = client
        self.layout = Layout.from_scenario(scenario)
        self.station = scenario.station_paths()[0][2]

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def _upgrade(scenario: Scenario) -> Scenario:
    techs = scenario.technicians.model_copy(update={"count": 2, "repair_time_factor": 0.5})
    return scenario.model_copy(update={"technicians": techs, "name": "Single machine, AR repair"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    scenario = load_scenario(ROOT_DIR / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 0, duration=DAY)
    layout = Layout.from_scenario(scenario)
    path = tmp_path_factory.mktemp("api") / "store.db"
    store = SqliteStore(f"sqlite:///{path}")
    upgrade = _upgrade(scenario)

    async def fill() -> None:
        await store.open()
        key = compute_kpis(records, layout, start=0.0, end=DAY).to_dict()
        await store.upsert_run(run_info(scenario, RUN, answer_key=key, status="finished"))
        await store.upsert_assets(scenario_assets(scenario))
        await store.write_samples([r for r in records if isinstance(r, Sample)], RUN)
        await store.write_events([r for r in records if isinstance(r, Event)], RUN)
        # three paired replications of a baseline and an upgrade, answer keys only
        for i in range(3):
            for sc, side in ((scenario, "base"), (upgrade, "upg")):
                rep = compute_kpis(simulate(sc, i, duration=DAY), layout, start=0.0, end=DAY)
                await store.upsert_run(
                    run_info(
                        sc,
                        f"{side}-{i}",
                        replication=i,
                        answer_key=rep.to_dict(),
                        baseline_run_id=f"base-{i}" if side == "upg" else None,
                        goal=0.2,
                        status="finished",
                    )
                )
        await store.upsert_run(RunInfo("orphan", "no such scenario", epoch="2026-01-05T00:00:00Z"))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(fill())
    view = PlatformView(store, RunCatalog(store, scenario))
    app = create_app(view, broker="mqtt://127.0.0.1:1")
    # raise_app_exceptions=False: a server error must show as a 500 response, as on the wire
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://platform.test")
    try:
        yield World(scenario, records, Client(loop, client))
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(store.close())
        loop.close()


def _approx(got: dict[str, Any], want: dict[str, float]) -> None:
    for k, w in want.items():
        if math.isnan(w):
            assert got[k] is None, k
        else:
            assert got[k] == pytest.approx(w, rel=1e-9), k


# --------------------------------------------------------------------------- endpoints


def test_openapi_docs_and_health(world: World) -> None:
    spec = world.get("/openapi.json")
    for p in ("/api/runs", "/api/kpis", "/api/compare", "/api/series", "/api/health",
              "/api/resolve/{identifier}", "/api/assets/{path}/latest"):
        assert p in spec["paths"], p
    assert "swagger" in world.client.get("/docs").text.lower()
    health = world.get("/api/health")
    assert health["status"] == "ok" and health["store"].startswith("sqlite:///")


def test_runs_and_run_detail(world: World) -> None:
    runs = world.get("/api/runs")
    ids = [r["run_id"] for r in runs]
    assert RUN in ids and "upg-2" in ids
    detail = world.get(f"/api/runs/{RUN}")
    samples = [r for r in world.records if isinstance(r, Sample)]
    assert detail["samples"] == len(samples)
    assert detail["events"] == sum(isinstance(r, Event) for r in world.records)
    assert detail["last_t"] == max(s.t for s in samples)
    assert detail["answer_key"]["line"]["good_count"] > 0


def test_asset_tree_with_identification_and_latest_values(world: World) -> None:
    line = world.scenario.line_path
    assets = world.get("/api/assets", prefix=line)
    station = next(a for a in assets if a["kind"] == "station")
    assert station["path"] == world.station
    assert station["identification"]["Manufacturer"] == "Example Bonding Co."
    assert station["identification"]["identifier"] == "88.999.1/bonder-01"
    assert world.get("/api/assets", prefix=line + "/bonding/bonder-01x") == []

    latest = world.get(f"/api/assets/{world.station}/latest", run_id=RUN)
    by_tag = {s["tag"]: s for s in latest["samples"]}
    want: dict[str, Sample] = {}
    for r in world.records:
        if isinstance(r, Sample) and r.asset == world.station:
            want[r.tag] = r
    assert set(by_tag) == set(want)
    assert by_tag[Tag.PROCESSED]["value"] == want[Tag.PROCESSED].value
    sub = world.get(f"/api/assets/{line}/latest", run_id=RUN, subtree="true")
    assert {s["asset"] for s in sub["samples"]} > {line, world.station}


def test_series_ranges_and_downsampling(world: World) -> None:
    energy = [
        r for r in world.records
        if isinstance(r, Sample) and r.asset == world.station and r.tag == Tag.ENERGY
    ]
    raw = world.get("/api/series", asset=world.station, tag=Tag.ENERGY, run_id=RUN)
    assert [p[0] for p in raw["points"]] == [s.t for s in energy]
    window = world.get(
        "/api/series", asset=world.station, tag=Tag.ENERGY, start=30000, end=40000, run_id=RUN
    )
    assert [p[0] for p in window["points"]] == [s.t for s in energy if 30000 <= s.t < 40000]
    hourly = world.get(
        "/api/series", asset=world.station, tag=Tag.ENERGY, every=3600, agg="max", run_id=RUN
    )
    buckets: dict[float, float] = {}
    for s in energy:
        b = math.floor(s.t / 3600) * 3600
        buckets[b] = max(buckets.get(b, -math.inf), float(s.value))  # type: ignore[arg-type]
    assert [p[0] for p in hourly["points"]] == sorted(buckets)
    assert [p[1] for p in hourly["points"]] == pytest.approx([buckets[b] for b in sorted(buckets)])
    counted = world.get(
        "/api/series", asset=world.station, tag=Tag.ENERGY, every=86400, agg="count", run_id=RUN
    )
    per_day: dict[float, int] = {}
    for s in energy:
        per_day[math.floor(s.t / DAY) * DAY] = per_day.get(math.floor(s.t / DAY) * DAY, 0) + 1
    assert counted["points"] == [[t, n] for t, n in sorted(per_day.items())]
    capped = world.get("/api/series", asset=world.station, tag=Tag.ENERGY, limit=3, run_id=RUN)
    assert len(capped["points"]) == 3 and capped["truncated"]


def test_kpis_by_line_stage_station_and_shift(world: World) -> None:
    want = compute_kpis(world.records, world.layout, start=3600.0, end=80000.0)
    line = world.get("/api/kpis", run_id=RUN, start=3600, end=80000)
    assert line["source"] == "store"
    _approx(line["line"], dict(want.line))
    stations = world.get("/api/kpis", run_id=RUN, start=3600, end=80000, by="station")
    _approx(stations["stations"][world.station], dict(want.stations[world.station]))
    stages = world.get("/api/kpis", run_id=RUN, start=3600, end=80000, by="stage")
    _approx(stages["stages"]["bonding"], dict(want.stages["bonding"]))

    shifts = world.get("/api/kpis", run_id=RUN, by="shift", end=DAY)
    windows = shift_windows(world.scenario, 0.0, DAY)
    assert [s["shift"] for s in shifts["shifts"]] == [w.label for w in windows]
    assert shifts["shifts"][0]["shift"] == "2026-01-05 day"
    for s, w in zip(shifts["shifts"], windows, strict=True):
        _approx(s["line"], dict(compute_kpis(world.records, world.layout, start=w.start,
                                             end=w.end).line))


def test_compare_from_stored_answer_keys(world: World) -> None:
    body = world.get("/api/compare", run_id="upg-0")
    pairs = body["pairs"]
    assert [p["run_id"] for p in pairs] == ["upg-0", "upg-1", "upg-2"]
    want = compare_paired(
        "labour_productivity",
        [p["baseline"] for p in pairs],
        [p["upgrade"] for p in pairs],
        0.2,
    )
    assert body["verdict"] == want.verdict.value
    assert body["improvement"]["mean"] == pytest.approx(want.improvement.mean)
    assert body["goal"] == 0.2 and body["source"] == "answer key"
    # values really are the replications' answer keys
    run = world.get("/api/runs/base-1")
    assert pairs[1]["baseline"] == run["answer_key"]["line"]["labour_productivity"]
    other = world.get("/api/compare", run_id="base-0", metric="mttr", goal=0.1)
    assert other["metric"] == "mttr" and other["goal"] == 0.1 and not other["higher_is_better"]


def test_resolve_a_unit_with_its_genealogy(world: World) -> None:
    events = [r for r in world.records if isinstance(r, Event)]
    produced = next(e for e in events if e.name == "UnitProduced")
    unit = produced.fields["unit"]
    body = world.get(f"/api/resolve/{unit}")
    assert body["type"] == "unit" and body["record"]["run_id"] == RUN
    assert body["record"]["status"] == "produced"
    assert body["record"]["product"] == produced.fields["product"]
    assert [s["name"] for s in body["genealogy"]["stations"]] == produced.fields["stations"]
    assert body["genealogy"]["stations"][0]["path"] == world.station
    assert body["record"]["lead_time_s"] == pytest.approx(produced.t - produced.fields["released"])

    scrapped = next(e for e in events if e.name == "UnitScrapped")
    sbody = world.get(f"/api/resolve/{scrapped.fields['unit']}", run_id=RUN)
    assert sbody["record"]["status"] == "scrapped"
    assert sbody["genealogy"]["scrap"][0]["at"] == scrapped.asset
    defects = [e for e in events if e.name == "DefectIntroduced"
               and e.fields["unit"] == scrapped.fields["unit"]]
    assert len(sbody["genealogy"]["defects"]) == len(defects) >= 1

    asset = world.get("/api/resolve/88.999.1/bonder-01")
    assert asset["type"] == "asset" and asset["record"]["path"] == world.station
    assert world.get(f"/api/resolve/{world.station}")["record"]["kind"] == "station"


def test_live_snapshot_for_the_dashboard(world: World) -> None:
    snap = world.get("/api/live", run_id=RUN)
    assert snap["stations"][0]["name"] == "bonder-01"
    assert snap["stations"][0]["state_name"] in {"NotExecuting", "Executing", "OutOfService"}
    want = compute_kpis(world.records, world.layout, start=0.0, end=snap["t"])
    assert snap["line"]["kpis"]["oee"] == pytest.approx(want.line["oee"])
    assert snap["technicians"]["count"] == 1
    good = sum(p["units_per_h"] for p in snap["throughput"])
    every = snap["throughput"][1]["t"] - snap["throughput"][0]["t"]
    assert good * every / 3600 == pytest.approx(want.line["good_count"])
    assert snap["goal"]["available"] is False  # a run without a baseline
    upg = world.get("/api/live", run_id="upg-0")  # no samples: still an answer
    assert upg["goal"]["baseline"] is not None


def test_dashboard_files_are_served(world: World) -> None:
    page = world.client.get("/")
    assert page.status_code == 200 and "/dashboard/app.js" in page.text
    for f in ("app.js", "style.css"):
        assert world.client.get(f"/dashboard/{f}").status_code == 200
    assert not re.search(r"https?://(?!www\.w3\.org)", world.client.get("/dashboard/app.js").text)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("/api/runs/nope", {}, 404, "no run 'nope'"),
        ("/api/kpis", {"run_id": "nope"}, 404, "GET /api/runs"),
        ("/api/kpis", {"run_id": RUN, "start": 10, "end": 5}, 400, "must not precede"),
        ("/api/kpis", {"run_id": RUN, "start": "nan"}, 422, ""),
        ("/api/kpis", {"run_id": RUN, "end": "inf"}, 422, ""),
        ("/api/kpis", {"run_id": RUN, "by": "week"}, 422, ""),
        ("/api/kpis", {"run_id": "orphan"}, 400, "no known scenario"),
        ("/api/kpis", {"run_id": RUN, "by": "shift", "end": 1e9}, 400, "narrow"),
        # found by schemathesis: shift windows 26,000 years before the epoch
        ("/api/kpis", {"run_id": RUN, "by": "shift", "start": -830392317149.6774,
                       "end": -11299118791.014282}, 400, "narrow"),
        ("/api/kpis", {"run_id": RUN, "by": "shift", "start": -8e11, "end": -8e11 + 3600}, 400,
         "outside the calendar"),
        ("/api/series", {"run_id": RUN, "asset": "a", "tag": "b", "every": 0}, 422, ""),
        ("/api/series", {"run_id": RUN, "asset": "a", "tag": "b", "agg": "median"}, 422, ""),
        ("/api/series", {"run_id": RUN, "tag": "b"}, 422, ""),
        ("/api/series", {"run_id": RUN, "asset": "a", "tag": "b", "start": 5, "end": 1}, 400, ""),
        ("/api/series", {"asset": "a", "tag": "b", "start": 0, "end": 1e9, "every": 1e-3}, 400,
         "wider"),
        ("/api/compare", {"metric": "happiness"}, 400, "unknown KPI"),
        ("/api/compare", {"run_id": RUN, "goal": 1e6}, 422, ""),
        ("/api/compare", {"run_id": "orphan"}, 404, "baseline"),
        ("/api/resolve/88.999.1/panel-999999", {}, 404, "unit id"),
        ("/api/assets/no/such/asset/latest", {"run_id": RUN}, 404, "unknown"),
        ("/api/series", {"asset": "a\x00b", "tag": "x"}, 400, "NUL"),
    ],
)
def test_bad_queries_get_4xx_with_a_message(
    world: World, path: str, params: dict[str, Any], status: int, says: str
) -> None:
    r = world.client.get(path, params=params)
    assert r.status_code == status, r.text
    assert says in str(r.json()["detail"])
