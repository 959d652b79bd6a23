"""The Grafana profile's provisioning, checked without Grafana (its image cannot run here).

Every panel's SQL of ``docker/grafana/dashboards/*.json`` runs against a PostgreSQL store
(127.0.0.1:5432, db ``test``, a schema of its own) holding 14 h of the 5G scenario written
through the platform's store API, with Grafana's macros replaced as Grafana replaces them.
The numbers must be the platform's: each station's OEE, availability, performance and
quality equal ``Store.kpis`` over the same whole hours, the throughput and counters too,
the hourly good units add up to the window's, the answer-key panel shows the answer key.
The provisioning YAML is checked key by key (datasource uid, type, the provider's path as
docker-compose.yml mounts it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from iiotbed.devices.sim import simulate
from iiotbed.platform.catalog import run_info, scenario_assets
from iiotbed.platform.kpi import compute_kpis
from iiotbed.platform.layout import Layout
from iiotbed.platform.store import open_store
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample, Tag

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "iiotbed-line.json"
PG = "postgresql://127.0.0.1:5432/test"
HOURS = 14.0
DS_UID = "iiotbed-postgres"

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]
#: dashboard time ranges in hours since the run's epoch; the panels read the whole hours
#: inside, up to the last closed one (the hour holding the newest sample stays open)
RANGES = [(0.0, 20.0), (7.5, 12.25)]


def panel_sql() -> dict[str, str]:
    """Every panel's SQL by title (each panel has exactly one raw SQL target)."""
    dash = json.loads(DASHBOARD.read_text())
    out: dict[str, str] = {}
    for p in dash["panels"]:
        (t,) = p["targets"]
        assert t["datasource"]["uid"] == DS_UID and p["datasource"]["uid"] == DS_UID
        assert t["rawQuery"] and t["editorMode"] == "code", p["title"]
        out[p["title"]] = t["rawSql"]
    return out


def grafana(sql: str, run_id: str, lo: dt.datetime, hi: dt.datetime) -> str:
    """The SQL Grafana sends for time range [lo, hi] and ``$run``: the PostgreSQL
    datasource's macros, and a single-value variable quoted-escaped (``'`` doubled)."""
    iso = "%Y-%m-%dT%H:%M:%SZ"
    a, b = lo.astimezone(dt.UTC), hi.astimezone(dt.UTC)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 lambda m: f"{m.group(1)} BETWEEN '{a.strftime(iso)}' AND '{b.strftime(iso)}'",
                 sql)  # fmt: skip
    sql = sql.replace("$__unixEpochFrom()", str(int(a.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(b.timestamp())))
    sql = sql.replace("$run", run_id.replace("'", "''"))
    assert "$" not in sql, f"a macro or variable left: {sql}"
    return sql


@pytest.fixture(scope="module")
def filled() -> Iterator[dict[str, Any]]:
    """A schema of its own holding 14 h of the 5G scenario, its run with the answer key."""
    scenario = load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
    layout = Layout.from_scenario(scenario)
    records = simulate(scenario, 0, duration=HOURS * 3600.0)
    samples = [r for r in records if isinstance(r, Sample)]
    key = compute_kpis(records, layout, start=0.0, end=HOURS * 3600.0)
    # the paired verdict `iiotbed run` stores beside the answer key: two real replications
    # of the baseline and the 5G line over the same hours
    from iiotbed.testbed.experiment import run_replication
    from iiotbed.testbed.verdict import paired_verdict

    base = load_scenario(ROOT / "scenarios" / "tcl-huizhou-baseline.yaml")
    pairs = [
        (run_replication(base.with_run(duration=HOURS * 3600.0), i),
         run_replication(scenario.with_run(duration=HOURS * 3600.0), i))
        for i in range(2)
    ]  # fmt: skip
    verdict = paired_verdict([b for b, _ in pairs], [u for _, u in pairs],
                             metric="labour_productivity", goal=0.20, basis="2 paired replications")  # fmt: skip
    answer_key = {**key.to_dict(), "comparison": verdict.comparison("labour_productivity", 0.20)}
    schema = f"test_grafana_{uuid.uuid4().hex[:10]}"
    run_id = f"grafana-{uuid.uuid4().hex[:8]}"
    url = f"{PG}?schema={schema}"

    async def fill() -> dict[str, Any]:
        async with open_store(url) as store:
            info = run_info(scenario, run_id, answer_key=answer_key, status="ended")
            await store.upsert_run(info)
            await store.upsert_assets(scenario_assets(scenario))
            for i in range(0, len(samples), 2000):  # batches as the ingest sends them
                await store.write_samples(samples[i : i + 2000], run_id)
        with psycopg.connect(PG) as conn:
            (closed,) = conn.execute(
                f"SELECT closed FROM {schema}.run_keys WHERE run_id = %s",  # type: ignore[arg-type]
                (run_id,),
            ).fetchone() or (None,)
        assert closed is not None and closed >= HOURS - 1
        windows: dict[tuple[float, float], Any] = {}
        async with open_store(url) as store:
            for lo, hi in RANGES:
                k0, k1 = math.ceil(lo), min(math.floor(hi), closed)
                windows[(lo, hi)] = (k0, k1), await store.kpis(
                    run_id, layout, k0 * 3600.0, k1 * 3600.0
                )
        return {"kpis": windows}

    try:
        got = asyncio.run(fill())
        yield {"scenario": scenario, "layout": layout, "run_id": run_id, "schema": schema,
               "key": key, "samples": samples, "verdict": verdict, **got}  # fmt: skip
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]


def query(filled: dict[str, Any], sql: str, lo_h: float, hi_h: float) -> list[dict[str, Any]]:
    epoch = filled["scenario"].plant.epoch
    lo, hi = epoch + dt.timedelta(hours=lo_h), epoch + dt.timedelta(hours=hi_h)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {filled['schema']}")  # type: ignore[arg-type]
        cur = conn.execute(grafana(sql, filled["run_id"], lo, hi))  # type: ignore[arg-type]
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def same(got: Any, want: float, what: str) -> None:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        assert got is None, f"{what}: {got} where the store has none"
    else:
        assert got is not None and math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9), (
            f"{what}: the panel shows {got}, the store {want}"
        )


@pytest.mark.parametrize("hours", RANGES)
def test_station_oee_panels_show_the_stores_kpis(
    filled: dict[str, Any], hours: tuple[float, float]
) -> None:
    sql = panel_sql()
    _, report = filled["kpis"][hours]
    assert sql["OEE by station (whole hours of the time range)"] == sql[
        "Availability, performance, quality by station"
    ]
    rows = {r["station"]: r for r in query(filled, sql["Availability, performance, quality by "
                                                       "station"], *hours)}  # fmt: skip
    assert set(rows) == {s.path for s in filled["layout"].stations}
    running = 0
    for station, k in report.stations.items():
        for name in ("oee", "availability", "performance", "quality"):
            same(rows[station][name], k[name], f"{station} {name}")
        running += k["oee"] > 0
    assert running >= len(rows) // 2  # the check means something: most stations made units


@pytest.mark.parametrize("hours", RANGES)
def test_throughput_and_hourly_good_units_are_the_stores(
    filled: dict[str, Any], hours: tuple[float, float]
) -> None:
    sql = panel_sql()
    whole, report = filled["kpis"][hours]
    line = report.line
    (row,) = query(filled, sql["Throughput (good units per hour, whole hours)"], *hours)
    same(row["throughput"], line["throughput"], "throughput")
    same(row["good_count"], line["good_count"], "good")
    same(row["scrap_count"], line["scrap_count"], "scrap")
    assert line["good_count"] > 0
    hourly = query(filled, sql["Good units per hour"], *hours)
    # Grafana's time series: a point per whole hour of the range with counts (at its
    # start), in time order; those of the closed hours add up to the window's good units
    epoch = filled["scenario"].plant.epoch
    closed = [r for r in hourly if r["time"] < epoch + dt.timedelta(hours=whole[1])]
    assert 0 < len(closed) <= whole[1] - whole[0]
    assert all(r["time"] >= epoch + dt.timedelta(hours=whole[0]) for r in hourly)
    assert sum(r["good units in the hour"] for r in closed) == line["good_count"]
    assert [r["time"] for r in hourly] == sorted(r["time"] for r in hourly)


def test_state_and_battery_panels_show_the_stored_samples(filled: dict[str, Any]) -> None:
    sql = panel_sql()
    samples: list[Sample] = filled["samples"]
    lo, hi = 8.0, 10.0
    stations = {s.path for s in filled["layout"].stations}
    for title, tag, assets in (
        ("Machine states (MachineryItemState)", Tag.ITEM_STATE, stations),
        ("AMR batteries", Tag.BATTERY, None),
    ):
        want = sorted(
            (s.asset.rsplit("/", 1)[-1], s.t, float(s.value))  # type: ignore[arg-type]
            for s in samples
            if s.tag == tag and (assets is None or s.asset in assets)
            and lo * 3600 <= s.t <= hi * 3600 and s.value is not None
        )  # fmt: skip
        assert want, f"{title}: no samples in the window"
        rows = query(filled, sql[title], lo, hi)
        epoch = filled["scenario"].plant.epoch
        got = sorted(
            (r["metric"], round((r["time"] - epoch).total_seconds(), 3), r["value"]) for r in rows
        )
        assert [(m, v) for m, _, v in got] == [(m, v) for m, _, v in want], title
        assert all(abs(a[1] - b[1]) < 0.002 for a, b in zip(got, want, strict=True)), title


def test_answer_key_panel_shows_the_answer_key(filled: dict[str, Any]) -> None:
    rows = query(filled, panel_sql()["Answer key (the simulator's own KPIs) beside the store"],
                 0.0, 20.0)  # fmt: skip
    key = filled["key"].line
    by = {r["metric"]: r for r in rows}
    assert list(by) == ["good_count", "scrap_count", "oee", "availability", "performance",
                        "quality", "throughput"]  # fmt: skip
    for metric, r in by.items():
        same(r["answer key"], key[metric], f"answer key {metric}")
    # the store's counters over the range's whole hours
    store = filled["kpis"][RANGES[0]][1].line
    same(by["good_count"]["store (whole hours)"], store["good_count"], "store good")
    same(by["scrap_count"]["store (whole hours)"], store["scrap_count"], "store scrap")


def test_goal_panel_shows_the_runs_paired_verdict(filled: dict[str, Any]) -> None:
    (row,) = query(filled, panel_sql()["+20 % goal: the run's paired verdict"], 0.0, 20.0)
    v = filled["verdict"]
    assert row["metric"] == "labour_productivity" and row["verdict"] == v.verdict
    same(row["improvement"], v.improvement["mean"], "improvement")
    same(row["95 % CI low"], v.improvement["ci95"][0], "CI low")
    same(row["95 % CI high"], v.improvement["ci95"][1], "CI high")
    same(row["goal"], 0.20, "goal")
    assert row["replications"] == 2
    # the verdict the panel shows is the one the interval gives (met: all of it above the goal)
    lo, hi = row["95 % CI low"], row["95 % CI high"]
    expected = "met" if lo > 0.20 else "not met" if hi < 0.20 else "inconclusive"
    assert row["verdict"] == expected, (lo, hi, row["verdict"])


def test_every_panel_query_runs_and_the_run_variable_lists_the_run(filled: dict[str, Any]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and not dash["editable"]
    for title, sql in panel_sql().items():
        assert query(filled, sql, 0.0, 20.0) is not None, title
    (var,) = dash["templating"]["list"]
    assert var["name"] == "run" and var["datasource"]["uid"] == DS_UID
    runs = query(filled, var["query"], 0.0, 1.0)
    assert filled["run_id"] in [r["run_id"] for r in runs]
    # the default time range covers the scenarios' epoch (2026-01-05)
    t0 = dt.datetime.fromisoformat(dash["time"]["from"].replace("Z", "+00:00"))
    assert t0 <= filled["scenario"].plant.epoch


def test_provisioning_yaml_keys() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "iiotbed.yaml").read_text())
    assert ds["apiVersion"] == 1
    (d,) = ds["datasources"]
    assert set(d) <= {"name", "uid", "type", "access", "url", "user", "secureJsonData",
                      "jsonData", "isDefault", "editable"}  # fmt: skip
    assert d["uid"] == DS_UID and d["type"] == "grafana-postgresql-datasource"
    assert d["access"] == "proxy" and set(d["secureJsonData"]) == {"password"}
    assert set(d["jsonData"]) == {"database", "sslmode", "postgresVersion", "timescaledb"}
    env = {m for v in (d["url"], d["user"], d["secureJsonData"]["password"],
                       d["jsonData"]["database"]) for m in re.findall(r"\$(\w+)", v)}  # fmt: skip
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "iiotbed.yaml").read_text())
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file" and set(p["options"]) == {"path", "foldersFromFilesStructure"}
    # docker-compose.yml: the grafana service mounts both, sets the variables, port 127.0.0.1
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    g = compose["services"]["grafana"]
    assert g["profiles"] == ["grafana"] and g["networks"] == ["it"]
    assert env <= set(g["environment"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
    assert mounts[p["options"]["path"]] == "./docker/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./docker/grafana/provisioning"
    assert g["ports"] == ["127.0.0.1:${GRAFANA_PORT:-3000}:3000"]
    assert g["image"] == "${GRAFANA_IMAGE:-grafana/grafana-oss:11.3.0}"
