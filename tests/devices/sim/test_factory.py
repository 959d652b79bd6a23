"""Whole-line behaviour: determinism, counter consistency, calendar, station control."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from simkit import LINE, events, make, series

from iiotbed.devices.sim import Factory, simulate
from iiotbed.errors import CommandRefused, SimulationError
from iiotbed.eventlog import dump_records
from iiotbed.scenario import Scenario, load_scenario
from iiotbed.telemetry import (
    Event,
    ItemState,
    OperationMode,
    PackMLState,
    PlannedState,
    Record,
    Sample,
    Tag,
)

ROOT = Path(__file__).resolve().parents[3]
DAY = 86400.0


@pytest.fixture(scope="module")
def five_g() -> Scenario:
    return load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")


@pytest.fixture(scope="module")
def baseline_week() -> Factory:
    f = Factory(load_scenario(ROOT / "scenarios" / "tcl-huizhou-baseline.yaml"))
    f.run(6 * DAY)
    return f


def _digest(records: list[Record]) -> str:
    buf = io.StringIO()
    dump_records(records, buf)
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


def test_event_log_is_deterministic_per_seed_and_replication(five_g: Scenario) -> None:
    a = _digest(simulate(five_g, 0, duration=DAY))
    b = _digest(simulate(five_g, 0, duration=DAY))
    other_seed = _digest(simulate(five_g.with_run(seed=five_g.run.seed + 1), 0, duration=DAY))
    other_rep = _digest(simulate(five_g, 1, duration=DAY))
    assert a == b
    assert len({a, other_seed, other_rep}) == 3


def test_counters_are_consistent(baseline_week: Factory) -> None:
    f = baseline_week
    recs = f.records
    line = f.scenario.line_path
    good = series(recs, line, Tag.GOOD)[-1][1]
    scrap = series(recs, line, Tag.SCRAP)[-1][1]
    released = series(recs, line, "ReleasedCount")[-1][1]
    assert good > 1000 and scrap > 0
    assert good + scrap + f.wip == released
    assert series(recs, line, Tag.LINE_OUTPUT)[-1][1] == good
    produced = events(recs, "UnitProduced")
    scrapped = events(recs, "UnitScrapped")
    assert len(produced) == good and len(scrapped) == scrap
    # every station's ProcessedCount = finished units that visited it + units still inside
    visits: dict[str, int] = {}
    for e in produced + scrapped:
        for name in e.fields["stations"]:
            visits[name] = visits.get(name, 0) + 1
    defective_total = 0
    for path, control in f.stations.items():
        name = path.rsplit("/", 1)[1]
        processed = series(recs, path, Tag.PROCESSED)
        assert [v for _, v in processed] == list(range(len(processed)))  # +1 steps from 0
        by_product = sum(series(recs, path, f"{Tag.PROCESSED}/{p}")[-1][1] for p in ("lcm-55", "lcm-65"))
        assert by_product == processed[-1][1]
        assert 0 <= processed[-1][1] - visits.get(name, 0) <= f.wip, control.path
        energy = [v for _, v in series(recs, path, Tag.ENERGY)]
        assert energy == sorted(energy) and energy[-1] > 0
        defective_total += series(recs, path, Tag.DEFECTIVE)[-1][1]
    assert defective_total == scrap
    # states only take enum values
    valid = {
        Tag.ITEM_STATE: {int(s) for s in ItemState},
        Tag.OPERATION_MODE: {int(s) for s in OperationMode},
        Tag.PACKML_STATE: {int(s) for s in PackMLState},
        Tag.PLANNED_STATE: {int(s) for s in PlannedState},
    }
    for r in recs:
        if isinstance(r, Sample) and r.tag in valid:
            assert r.value in valid[r.tag], r
    times = [r.t for r in recs]
    assert times == sorted(times)


def test_no_production_outside_production_windows(baseline_week: Factory) -> None:
    recs = baseline_week.records
    line = baseline_week.scenario.line_path
    planned = series(recs, line, Tag.PLANNED_STATE)
    windows = [(t, nxt[0] if nxt else 6 * DAY) for (t, v), nxt in
               zip(planned, [*planned[1:], None], strict=True) if v == PlannedState.Production]
    # Monday 08:00 local (epoch is Monday 00:00 +08:00): day shift starts, meal break 11:30
    assert windows[0] == (8 * 3600.0, 11.5 * 3600.0)
    states = {v for _, v in planned}
    assert states == {int(s) for s in PlannedState}
    pm = [t for t, v in planned if v == PlannedState.PlannedMaintenance]
    assert pm == [5 * DAY + 8 * 3600.0]  # Saturday 08:00
    for path in baseline_week.stations:
        for t, v in series(recs, path, Tag.PROCESSED)[1:]:
            assert any(a <= t <= b + 1e-6 for a, b in windows), (path, t, v)
    heads = series(recs, line, "Headcount/operators")
    assert heads[0] == (0.0, 0) and max(v for _, v in heads) == 8  # 1+2+2+2+0+1 per station


def test_stop_starves_downstream_and_blocks_upstream() -> None:
    stages = [
        {"name": "a", "station_prefix": "a", "buffer_capacity": 3, "_ict": 10},
        {"name": "b", "station_prefix": "b", "buffer_capacity": 3, "_ict": 10},
        {"name": "c", "station_prefix": "c", "buffer_capacity": 3, "_ict": 10},
    ]
    f = Factory(make(stages))
    a, b, c = (f"{LINE}/{s}/{s}-01" for s in "abc")
    f.run(1000.0)
    f.station(b).stop()
    assert f.station("b-01").state == "stopped"
    f.run(2000.0)
    recs = f.records
    assert series(recs, b, Tag.PACKML_STATE)[-1] == (1000.0, PackMLState.Stopped)
    assert series(recs, b, Tag.ITEM_STATE)[-1][1] == ItemState.NotExecuting
    assert series(recs, c, Tag.PACKML_STATE)[-1][1] == PackMLState.Suspended  # starved
    assert series(recs, a, Tag.PACKML_STATE)[-1][1] == PackMLState.Suspended  # blocked
    assert series(recs, f"{LINE}/b/buffer", Tag.BUFFER_LEVEL)[-1][1] == 3
    stopped_count = series(recs, b, Tag.PROCESSED)[-1]
    assert stopped_count[0] <= 1000.0
    f.station(b).start()
    f.run(3000.0)
    recs = f.records
    assert series(recs, b, Tag.PROCESSED)[-1][1] > stopped_count[1] + 50
    assert series(recs, c, Tag.ITEM_STATE)[-1][1] == ItemState.Executing
    with pytest.raises(CommandRefused, match="speed factor") as refused:
        f.station(a).set_speed(0)
    assert (refused.value.target, refused.value.command) == (a, "SetSpeed")
    assert refused.value.out_of_range
    assert f.station(a).speed == 1.0  # unchanged
    with pytest.raises(SimulationError, match="no station"):
        f.station("nope")


def test_hold_is_held_and_speed_shortens_cycles() -> None:
    f = Factory(make())
    m = f.station(f"{LINE}/work/m-01")
    f.run(300.0)
    n0 = series(f.records, m.path, Tag.PROCESSED)[-1][1]
    m.set_speed(2.0)
    f.run(600.0)
    n1 = series(f.records, m.path, Tag.PROCESSED)[-1][1]
    assert n1 - n0 == pytest.approx(20, abs=1)  # 300 s / (30 s / 2)
    m.hold()
    f.run(900.0)
    assert series(f.records, m.path, Tag.PACKML_STATE)[-1] == (600.0, PackMLState.Held)
    assert series(f.records, m.path, Tag.PROCESSED)[-1][1] <= n1 + 1
    m.unhold()
    f.run(1200.0)
    assert series(f.records, m.path, Tag.PACKML_STATE)[-1][1] == PackMLState.Execute


def test_initial_values_at_time_zero(five_g: Scenario) -> None:
    f = Factory(five_g)
    f.run(1.0)
    at0 = {(r.asset, r.tag) for r in f.records if isinstance(r, Sample) and r.t == 0.0}
    line = five_g.line_path
    for path in f.stations:
        for tag in (Tag.ITEM_STATE, Tag.PACKML_STATE, Tag.ENERGY, Tag.PROCESSED, Tag.FAULT):
            assert (path, tag) in at0
    assert (f"{line}/amr-01", Tag.BATTERY) in at0
    assert (f"{line}/technicians", Tag.BUSY) in at0
    assert (line, "Headcount/amr_supervisors") in at0
    assert not [r for r in f.records if isinstance(r, Event) and r.t < 0]


def test_lazy_records_equal_records_built_by_their_constructors(five_g: Scenario) -> None:
    """Factory.records fills Sample slots directly; the result must be a plain Sample."""
    sunk: list[Record] = []
    Factory(five_g, 0, sink=sunk.append).run(0.5 * DAY)
    lazy = Factory(five_g, 0)
    lazy.run(0.5 * DAY)
    built = lazy.records
    assert len(built) == len(sunk) > 1000
    assert built == sunk
    samples = [(a, b) for a, b in zip(built, sunk, strict=True) if isinstance(a, Sample)]
    assert len(samples) > 1000
    for a, b in samples[:2000]:
        assert type(a) is Sample
        assert hash(a) == hash(b) and repr(a) == repr(b)
        assert (a.quality, a.gateway_ts, a.seq, a.run_id) == (b.quality, None, None, None)
    with pytest.raises(AttributeError):
        samples[0][0].value = 1  # type: ignore[misc]  # frozen like any Sample
