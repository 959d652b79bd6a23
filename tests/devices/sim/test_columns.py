"""A batch run's records as columns: the KPIs read from them equal the KPIs of the records."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from iiotbed.devices.sim import Factory, record_names, sample_names
from iiotbed.eventlog import load_records, write_event_log, write_event_log_columns
from iiotbed.platform.kpi import compute_kpis, compute_kpis_columns
from iiotbed.platform.layout import Layout
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Event, Sample

ROOT = Path(__file__).resolve().parents[3]
DAY = 86400.0


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.mark.parametrize("name", ["single-machine", "tcl-huizhou-baseline", "tcl-huizhou-5g"])
def test_kpis_from_columns_equal_kpis_from_records(name: str) -> None:
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    factory = Factory(sc, 0)
    factory.run(1.25 * DAY)
    layout = Layout.from_scenario(sc)
    times, keys, values = factory.columns()
    assert factory.record_count == len(times) == len(keys) == len(values)
    records = factory.records
    assert len(records) == factory.record_count
    # the windows: whole run, a window inside it (records before start and after end)
    for start, end in ((0.0, 1.25 * DAY), (0.3 * DAY, 1.1 * DAY)):
        expected = compute_kpis(records, layout, start=start, end=end).to_dict()
        got = compute_kpis_columns(times, keys, values, sample_names, layout,
                                   start=start, end=end).to_dict()
        assert _same(got, expected), (start, end)
    assert expected["line"]["good_count"] > 0  # the window saw production


def test_columns_stand_for_the_records() -> None:
    sc = load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
    factory = Factory(sc, 0)
    factory.run(0.5 * DAY)
    times, keys, values = factory.columns()
    records = factory.records
    for r, t, k, v in zip(records, times, keys, values, strict=True):
        names = sample_names(k)
        assert r.t == t
        if isinstance(r, Sample):
            assert names == (r.asset, r.tag) and v == r.value
        else:
            assert isinstance(r, Event) and names is None and v == r.fields


def test_columns_are_empty_with_a_sink() -> None:
    sc = load_scenario(ROOT / "scenarios" / "single-machine.yaml")
    seen: list[object] = []
    factory = Factory(sc, 0, sink=seen.append)
    factory.run(3600.0)
    assert seen and factory.columns() == ([], [], []) and factory.record_count == 0


def test_feed_columns_is_feed_many_of_the_samples() -> None:
    """Unknown assets and tags, events, values that are no number, records after the end."""
    from iiotbed.platform.kpi import KpiAccumulator

    sc = load_scenario(ROOT / "scenarios" / "single-machine.yaml")
    layout = Layout.from_scenario(sc)
    st = layout.stations[0].path
    rows: list[tuple[float, tuple[str, str], Any]] = [
            (0.0, (layout.line, "PlannedState"), 1), (0.0, (st, "MachineryItemState"), 3),
            (5.0, ("nowhere", "GoodCount"), 4), (6.0, (st, "NoSuchTag"), 1),
            (7.0, (layout.line, "UnitProduced"), {"unit": "u"}),
            (8.0, (layout.line, "GoodCount"), 2), (9.0, (layout.line, "GoodCount"), "many"),
            (10.0, (layout.line, "GoodCount"), 3), (50.0, (st, "MachineryItemState"), 2),
            (200.0, (layout.line, "GoodCount"), 9)]

    def names(key: tuple[str, str]) -> tuple[str, str] | None:
        return None if key[1] == "UnitProduced" else key
    records = [Event(t, k[0], k[1], v) if names(k) is None else Sample(t, k[0], k[1], v)
               for t, k, v in rows]
    a = KpiAccumulator(layout, start=1.0, end=100.0)
    a.feed_many(records)
    b = KpiAccumulator(layout, start=1.0, end=100.0)
    b.feed_columns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], names)
    assert _same(a.report(100.0).to_dict(), b.report(100.0).to_dict())
    assert b.report(100.0).line["good_count"] == a.report(100.0).line["good_count"]


@pytest.mark.parametrize("name", ["single-machine", "tcl-huizhou-5g"])
def test_event_log_from_columns_is_byte_identical(name: str, tmp_path: Path) -> None:
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml")
    factory = Factory(sc, 0)
    factory.run(DAY)
    a, b = tmp_path / "records.jsonl", tmp_path / "columns.jsonl"
    n = write_event_log_columns(*factory.columns(), record_names, b)
    assert write_event_log(factory.records, a) == n == factory.record_count
    assert a.read_bytes() == b.read_bytes()


def test_event_log_from_columns_of_any_value(tmp_path: Path) -> None:
    """Floats, ints, strings, None, non-ASCII names, a unit, an event: as dump_records."""
    keys: list[tuple[bool, str, str, str | None]] = [
        (False, "a/é", "T", None), (False, "a", "E", "KWH"), (True, "line", "X", None)]
    rows: list[tuple[float, int, Any]] = [(0.0, 0, 1.5), (1.0, 0, 3), (2.0, 1, "s\u00e9\n"), (3.0, 1, None),
            (4.0, 2, {"b": [1, 2.5], "a": "x"}), (5.5, 0, -0.0), (1e300, 1, 1e-300)]
    times = [r[0] for r in rows]
    ks = [r[1] for r in rows]
    values = [r[2] for r in rows]
    records = [Event(t, keys[k][1], keys[k][2], v) if keys[k][0]
               else Sample(t, keys[k][1], keys[k][2], v, keys[k][3]) for t, k, v in rows]
    n = write_event_log_columns(times, ks, values, lambda k: keys[k], tmp_path / "c.jsonl")
    assert n == write_event_log(records, tmp_path / "r.jsonl") == len(rows)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "r.jsonl").read_bytes()
    assert load_records(tmp_path / "c.jsonl") == records
