"""KPI engine against hand-computed cases (every expected number is worked out in a comment)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

import pytest

import iiotbed.platform
from iiotbed.platform import KPI_INFO, KpiAccumulator, Layout, StationLayout, compute_kpis
from iiotbed.telemetry import (
    Event,
    ItemState,
    OperationMode,
    PlannedState,
    Quality,
    Record,
    Sample,
    Tag,
)

LINE = "acme/plant/area/line-1"
EXE, IDLE, OOS = ItemState.Executing, ItemState.NotExecuting, ItemState.OutOfService
PROD = PlannedState.Production


def station(stage: str, name: str, **ict: float) -> StationLayout:
    return StationLayout(f"{LINE}/{stage}/{name}", stage, name, ict or {"panel": 20.0})


def layout(
    *stations: StationLayout,
    bottleneck: str | None = None,
    roles: Iterable[str] = ("operators", "technicians"),
    mix: Mapping[str, float] | None = None,
) -> Layout:
    stations = stations or (station("bonding", "bonder-01"),)
    order = tuple(dict.fromkeys(s.stage for s in stations))
    return Layout(
        line=LINE,
        stations=stations,
        stage_order=order,
        bottleneck_stage=bottleneck or order[0],
        counted_roles=frozenset(roles),
        inspection_stages=frozenset(),
        mix=mix or {},
    )


def s(t: float, asset: str, tag: str, value: object, quality: Quality = Quality.Good) -> Sample:
    return Sample(t=t, asset=asset, tag=tag, value=value, quality=quality)  # type: ignore[arg-type]


B1 = f"{LINE}/bonding/bonder-01"


def one_hour_run() -> list[Record]:
    """One hour of Production; two breakdowns (600-900 s, 1800-2400 s); 100 units, 4 bad."""
    return sorted(
        [
            s(0, LINE, Tag.PLANNED_STATE, PROD),
            s(0, B1, Tag.ITEM_STATE, EXE),
            s(0, B1, Tag.OPERATION_MODE, OperationMode.Processing),
            s(0, B1, Tag.FAULT, 0),
            s(0, B1, Tag.PROCESSED, 0),
            s(0, B1, f"{Tag.PROCESSED}/panel", 0),
            s(0, B1, Tag.DEFECTIVE, 0),
            s(0, B1, Tag.FAILURES, 0),
            s(0, B1, Tag.ENERGY, 100.0),
            s(600, B1, Tag.FAULT, 1),
            s(600, B1, Tag.ITEM_STATE, OOS),
            s(600, B1, Tag.FAILURES, 1),
            s(900, B1, Tag.FAULT, 0),
            s(900, B1, Tag.ITEM_STATE, EXE),
            s(1000, B1, Tag.PROCESSED, 40),
            s(1000, B1, f"{Tag.PROCESSED}/panel", 40),
            s(1200, B1, Tag.DEFECTIVE, 1),
            s(1800, B1, Tag.FAULT, 1),
            s(1800, B1, Tag.ITEM_STATE, OOS),
            s(1800, B1, Tag.FAILURES, 2),
            s(2400, B1, Tag.FAULT, 0),
            s(2400, B1, Tag.ITEM_STATE, EXE),
            s(3000, B1, Tag.DEFECTIVE, 4),
            s(3500, B1, Tag.PROCESSED, 100),
            s(3500, B1, f"{Tag.PROCESSED}/panel", 100),
            s(3500, B1, Tag.ENERGY, 112.5),
            s(3500, LINE, Tag.GOOD, 96),
            s(3500, LINE, Tag.SCRAP, 4),
            s(3500, LINE, Tag.LINE_OUTPUT, 96),
        ],
        key=lambda r: r.t,
    )


def check_one_hour(st: Mapping[str, float]) -> None:
    # APT = 3600 - 300 - 600 = 2700 s; PBT = 3600 s -> A = 0.75
    assert st["availability"] == pytest.approx(0.75)
    # P = 100 units x 20 s / 2700 s = 2000/2700 = 0.740740...
    assert st["performance"] == pytest.approx(2000 / 2700)
    # Q = (100 - 4) / 100 = 0.96
    assert st["quality"] == pytest.approx(0.96)
    # OEE = 0.75 x 2000/2700 x 0.96 = 1440/2700 = 0.5333...
    assert st["oee"] == pytest.approx(1440 / 2700)
    # MTBF = 2700 s / 2 = 1350 s; MTTR = (300 + 600) s / 2 = 450 s
    assert st["mtbf"] == pytest.approx(1350.0)
    assert st["mttr"] == pytest.approx(450.0)
    assert st["failures"] == 2
    assert st["processed"] == 100
    assert st["energy_kwh"] == pytest.approx(12.5)
    assert st["apt_h"] == pytest.approx(0.75)
    assert st["pbt_h"] == pytest.approx(1.0)


def test_one_station_one_hour_matches_hand_computation() -> None:
    report = compute_kpis(one_hour_run(), layout(), start=0, end=3600)
    check_one_hour(report.stations[B1])
    check_one_hour(report.stages["bonding"])
    line = report.line
    assert line["availability"] == pytest.approx(0.75)
    assert line["performance"] == pytest.approx(2000 / 2700)
    # line quality = GoodCount / (Good + Scrap) = 96 / 100
    assert line["quality"] == pytest.approx(0.96)
    assert line["oee"] == pytest.approx(1440 / 2700)
    assert line["mtbf"] == pytest.approx(1350.0)
    assert line["mttr"] == pytest.approx(450.0)
    assert line["throughput"] == pytest.approx(96.0)  # 96 good in 1 h
    assert line["energy_per_good_unit"] == pytest.approx(12.5 / 96)
    assert line["scrap_ratio"] == pytest.approx(4 / 100)  # 4 / (96 + 4)
    assert line["pbt_h"] == pytest.approx(1.0)
    assert math.isnan(line["first_pass_yield"])  # no inspection station
    assert math.isnan(line["labour_productivity"])  # nobody reported present
    assert line["labour_hours"] == 0.0


@pytest.mark.parametrize(
    "pause", [PlannedState.Break, PlannedState.PlannedMaintenance, PlannedState.OffShift]
)
def test_planned_downtime_is_outside_pbt(pause: PlannedState) -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(1800, LINE, Tag.PLANNED_STATE, pause),
        s(1800, B1, Tag.ITEM_STATE, IDLE),
        s(3600, LINE, Tag.PLANNED_STATE, PROD),
        s(3600, B1, Tag.ITEM_STATE, EXE),
        s(5400, B1, Tag.ITEM_STATE, IDLE),  # starved for the last 30 min: a real loss
    ]
    report = compute_kpis(records, layout(), start=0, end=7200)
    st = report.stations[B1]
    # PBT = 1800 + 3600 = 5400 s (the 30-min pause excluded); APT = 1800 + 1800 = 3600 s
    # A = 3600 / 5400 = 2/3 (counting the pause would give 3600/7200 = 0.5)
    assert st["pbt_h"] == pytest.approx(1.5)
    assert st["apt_h"] == pytest.approx(1.0)
    assert st["availability"] == pytest.approx(2 / 3)
    assert report.line["pbt_h"] == pytest.approx(1.5)
    assert report.line["availability"] == pytest.approx(2 / 3)


def test_executing_during_a_break_is_not_apt() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(1800, LINE, Tag.PLANNED_STATE, PlannedState.Break),
        s(3600, LINE, Tag.PLANNED_STATE, PROD),
    ]
    st = compute_kpis(records, layout(), start=0, end=5400).stations[B1]
    # PBT = APT = 1800 + 1800 = 3600 s: running through the break adds to neither
    assert st["pbt_h"] == pytest.approx(1.0)
    assert st["availability"] == pytest.approx(1.0)


def test_zero_production() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, IDLE),
        s(0, B1, Tag.PROCESSED, 7),
        s(0, LINE, Tag.GOOD, 7),
        s(0, f"{LINE}/Headcount", "x", 1),
        s(0, LINE, f"{Tag.HEADCOUNT_PREFIX}operators", 2),
    ]
    report = compute_kpis(records, layout(), start=0, end=3600)
    st = report.stations[B1]
    # PBT = 3600 s, APT = 0 -> A = 0, P and Q undefined, OEE = 0 by the no-output rule
    assert st["availability"] == 0.0
    assert math.isnan(st["performance"])
    assert math.isnan(st["quality"])
    assert st["oee"] == 0.0
    assert math.isnan(st["mtbf"]) and math.isnan(st["mttr"])  # no failures
    assert st["processed"] == 0.0  # 7 - 7
    line = report.line
    assert line["oee"] == 0.0 and line["availability"] == 0.0
    assert math.isnan(line["quality"])  # 0 good, 0 scrap
    assert line["throughput"] == 0.0
    assert math.isnan(line["energy_per_good_unit"])
    assert line["labour_productivity"] == 0.0  # 0 good / 2 labour hours
    assert math.isnan(line["scrap_ratio"])


def test_station_that_never_runs_and_silent_station() -> None:
    b2, b3 = f"{LINE}/bonding/bonder-02", f"{LINE}/bonding/bonder-03"
    lay = layout(station("bonding", "bonder-01"), station("bonding", "bonder-02"),
                 station("bonding", "bonder-03"))
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(0, b2, Tag.ITEM_STATE, IDLE),
        # bonder-03 never reports its state
        s(3600, B1, Tag.PROCESSED, 90),
    ]
    report = compute_kpis(records, lay, start=0, end=3600)
    assert report.stations[b2]["availability"] == 0.0
    assert report.stations[b2]["oee"] == 0.0
    # unknown state: no PBT, everything time-based undefined
    assert report.stations[b3]["pbt_h"] == 0.0
    assert math.isnan(report.stations[b3]["availability"])
    assert math.isnan(report.stations[b3]["oee"])
    # stage pooled over the stations: A = 3600 / (3600 + 3600) = 0.5
    # P = 90 x 20 s / 3600 s = 0.5
    assert report.stages["bonding"]["availability"] == pytest.approx(0.5)
    assert report.stages["bonding"]["performance"] == pytest.approx(0.5)


def test_window_starting_mid_run_ignores_counts_before_start() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(0, B1, Tag.PROCESSED, 0),
        s(0, B1, Tag.FAILURES, 0),
        s(1800, B1, Tag.PROCESSED, 50),
        s(1900, B1, Tag.FAILURES, 1),
        s(3600, B1, Tag.PROCESSED, 80),  # at the start: the baseline
        s(5000, B1, Tag.PROCESSED, 130),
        s(6000, B1, Tag.ITEM_STATE, IDLE),
        s(7000, B1, Tag.PROCESSED, 170),
        s(7500, B1, Tag.PROCESSED, 190),  # after the end: ignored
    ]
    st = compute_kpis(records, layout(), start=3600, end=7200).stations[B1]
    # processed = 170 - 80 = 90; APT = 6000 - 3600 = 2400 s of PBT 3600 s
    assert st["processed"] == 90
    assert st["availability"] == pytest.approx(2400 / 3600)
    # P = 90 x 20 / 2400 = 0.75; the failure at 1900 s is before the window
    assert st["performance"] == pytest.approx(0.75)
    assert st["failures"] == 0
    assert math.isnan(st["mtbf"])


def test_duplicates_and_lost_intermediate_counter_samples_change_nothing() -> None:
    records = one_hour_run()
    doubled = [r for rec in records for r in (rec, rec)]
    check_one_hour(compute_kpis(doubled, layout(), start=0, end=3600).stations[B1])
    # a resent older counter value with a tie time arriving after a newer one
    resent = [*records]
    resent.insert(resent.index(s(1000, B1, Tag.PROCESSED, 40)) + 1, s(1000, B1, Tag.PROCESSED, 39))
    for tag, new, old in ((Tag.PROCESSED, 100, 99), (f"{Tag.PROCESSED}/panel", 100, 99)):
        resent.insert(resent.index(s(3500, B1, tag, new)) + 1, s(3500, B1, tag, old))
    check_one_hour(compute_kpis(resent, layout(), start=0, end=3600).stations[B1])
    lost = [r for r in records if not (r.t == 1000 and isinstance(r, Sample))]
    check_one_hour(compute_kpis(lost, layout(), start=0, end=3600).stations[B1])


def test_a_late_state_record_takes_effect_at_the_last_change() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(1800, B1, Tag.ITEM_STATE, IDLE),
        s(1000, B1, Tag.ITEM_STATE, EXE),  # out of order: applied at 1800 s, no time rewound
    ]
    st = compute_kpis(records, layout(), start=0, end=3600).stations[B1]
    # PBT stays 3600 s; APT = 1800 (before the idle sample) + 1800 (after the late one)
    assert st["pbt_h"] == pytest.approx(1.0)
    assert st["availability"] == pytest.approx(1.0)


def test_bad_quality_samples() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(0, B1, Tag.PROCESSED, 0),
        s(1800, B1, Tag.ITEM_STATE, None, Quality.Bad),  # state unknown from here
        s(2000, B1, Tag.PROCESSED, None, Quality.Bad),  # no value: not a reset to zero
        s(2700, B1, Tag.ITEM_STATE, EXE),
        s(3000, B1, Tag.PROCESSED, 60),
        s(3100, LINE, Tag.PLANNED_STATE, None, Quality.Bad),  # calendar unknown from here
    ]
    report = compute_kpis(records, layout(), start=0, end=3600)
    st = report.stations[B1]
    # station PBT = 1800 + (3100 - 2700) = 2200 s, all of it Executing -> A = 1
    assert st["pbt_h"] == pytest.approx(2200 / 3600)
    assert st["availability"] == pytest.approx(1.0)
    assert st["processed"] == 60
    # the 60 units came with the first Good count after the counter's Bad mark (2000 s):
    # made over 0-3000 s, 1000 s of it under the mark -> 20 units in unknown time
    # P = (60 - 20) x 20 / 2200
    assert st["performance"] == pytest.approx(800 / 2200)
    # line PBT = 3100 s (the calendar is known until the Bad sample)
    assert report.line["pbt_h"] == pytest.approx(3100 / 3600)


def test_unknown_records_are_ignored() -> None:
    noise: list[Record] = [
        s(10, f"{LINE}/amr/amr-01", Tag.BATTERY, 80.0),
        s(10, f"{LINE}/bonding/buffer", Tag.BUFFER_LEVEL, 3),
        s(10, B1, "Vibration", 2.5),
        s(10, B1, Tag.PACKML_STATE, 6),
        s(10, B1, f"{Tag.PROCESSED}/no-such-product", 1000),
        s(10, B1, Tag.REWORK, 3),
        s(10, "elsewhere/line-9", Tag.GOOD, 1e6),
        s(10, LINE, f"{Tag.HEADCOUNT_PREFIX}visitors", 40),
        s(10, f"{LINE}/technicians", Tag.BUSY, 1),
        s(20, B1, Tag.ENERGY, "garbage"),  # no number: treated as Bad
        Event(t=10, asset=B1, name="UnitProduced", fields={"unit": "u1"}),
    ]
    records = sorted([*one_hour_run(), *noise], key=lambda r: r.t)
    report = compute_kpis(records, layout(), start=0, end=3600)
    check_one_hour(report.stations[B1])
    assert report.line["good_count"] == 96
    assert report.line["labour_hours"] == 0.0


def test_setup_mode_is_not_apt() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(0, B1, Tag.OPERATION_MODE, OperationMode.Setup),
        s(900, B1, Tag.OPERATION_MODE, OperationMode.Processing),
    ]
    st = compute_kpis(records, layout(), start=0, end=3600).stations[B1]
    # 15 min setup while Executing is ASUT, not APT: A = 2700 / 3600
    assert st["availability"] == pytest.approx(0.75)


def test_per_product_ideal_times_and_unattributed_units() -> None:
    lay = layout(station("bonding", "bonder-01", small=20.0, large=40.0),
                 mix={"small": 0.75, "large": 0.25})
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(3600, B1, f"{Tag.PROCESSED}/small", 30),
        s(3600, B1, f"{Tag.PROCESSED}/large", 20),
        s(3600, B1, Tag.PROCESSED, 60),
    ]
    st = compute_kpis(records, lay, start=0, end=3600).stations[B1]
    # 30 x 20 + 20 x 40 = 1400 s; 10 units without a product at the mix-weighted
    # 0.75 x 20 + 0.25 x 40 = 25 s -> 250 s; P = 1650 / 3600
    assert st["processed"] == 60
    assert st["performance"] == pytest.approx(1650 / 3600)


def test_labour_energy_fpy_scrap() -> None:
    insp = f"{LINE}/inspection/inspect-01"
    lay = layout(station("bonding", "bonder-01"), station("inspection", "inspect-01"),
                 roles=("operators", "technicians"))
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, LINE, f"{Tag.HEADCOUNT_PREFIX}operators", 4),
        s(0, LINE, f"{Tag.HEADCOUNT_PREFIX}technicians", 2),
        s(0, LINE, f"{Tag.HEADCOUNT_PREFIX}visitors", 10),  # not a counted role
        s(0, B1, Tag.ENERGY, 10.0),
        s(0, insp, Tag.ENERGY, 5.0),
        s(0, f"{LINE}/amr/amr-01", Tag.ENERGY, 0.0),
        s(1800, LINE, f"{Tag.HEADCOUNT_PREFIX}operators", 6),
        s(3600, B1, Tag.ENERGY, 25.0),
        s(3600, insp, Tag.ENERGY, 10.0),
        s(3600, f"{LINE}/amr/amr-01", Tag.ENERGY, 99.0),  # not a station
        s(3600, insp, Tag.INSPECTED, 50),
        s(3600, insp, Tag.PASSED_FIRST, 45),
        s(3600, LINE, Tag.GOOD, 140),
        s(3600, LINE, Tag.SCRAP, 5),
        s(3600, LINE, Tag.LINE_OUTPUT, 95),
    ]
    line = compute_kpis(records, lay, start=0, end=3600).line
    # labour = 4 x 0.5 h + 6 x 0.5 h + 2 x 1 h = 7 person-hours; LP = 140 / 7 = 20
    assert line["labour_hours"] == pytest.approx(7.0)
    assert line["labour_productivity"] == pytest.approx(20.0)
    # energy = (25 - 10) + (10 - 5) = 20 kWh over 140 good units
    assert line["energy_kwh"] == pytest.approx(20.0)
    assert line["energy_per_good_unit"] == pytest.approx(20 / 140)
    assert line["first_pass_yield"] == pytest.approx(0.9)  # 45 / 50
    assert line["scrap_ratio"] == pytest.approx(0.05)  # 5 / (95 + 5)
    assert line["quality"] == pytest.approx(140 / 145)
    assert line["good_count"] == 140 and line["scrap_count"] == 5


def bottleneck_records() -> list[Record]:
    a1, b1, b2 = (f"{LINE}/a/a-01", f"{LINE}/b/b-01", f"{LINE}/b/b-02")
    return [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, a1, Tag.ITEM_STATE, EXE),
        s(0, b1, Tag.ITEM_STATE, EXE),
        s(0, b2, Tag.ITEM_STATE, EXE),
        s(0, b1, Tag.FAILURES, 0),
        s(1800, b2, Tag.ITEM_STATE, OOS),
        s(1800, b2, Tag.FAULT, 1),
        s(1800, b2, Tag.FAILURES, 1),
        s(3600, a1, Tag.PROCESSED, 300),
        s(3600, b1, Tag.PROCESSED, 100),
        s(3600, b2, Tag.PROCESSED, 50),
        s(3600, LINE, Tag.GOOD, 145),
        s(3600, LINE, Tag.SCRAP, 5),
    ]


def bottleneck_layout() -> Layout:
    return layout(
        station("a", "a-01", panel=10.0),
        station("b", "b-01", panel=30.0),
        station("b", "b-02", panel=30.0),
        bottleneck="b",
    )


def test_line_availability_and_performance_come_from_the_bottleneck() -> None:
    report = compute_kpis(bottleneck_records(), bottleneck_layout(), start=0, end=3600)
    # stage a: A = 1, P = 300 x 10 / 3600 = 0.8333; stage b pooled:
    # A = (3600 + 1800) / 7200 = 0.75, P = (100 + 50) x 30 / 5400 = 4500 / 5400 = 0.8333
    assert report.stages["a"]["availability"] == pytest.approx(1.0)
    line = report.line
    assert line["availability"] == pytest.approx(0.75)
    assert line["performance"] == pytest.approx(4500 / 5400)
    # Q = 145 / 150; OEE = 0.75 x 5/6 x 29/30 = 0.6041666...
    assert line["quality"] == pytest.approx(145 / 150)
    assert line["oee"] == pytest.approx(0.75 * 5 / 6 * 29 / 30)
    assert line["throughput"] == pytest.approx(145.0)
    # MTBF over all stations: (3600 + 3600 + 1800) s / 1 failure; MTTR = 1800 s / 1
    assert line["mtbf"] == pytest.approx(9000.0)
    assert line["mttr"] == pytest.approx(1800.0)


def test_live_reports_are_consistent() -> None:
    records = one_hour_run()
    acc = KpiAccumulator(layout(), start=0)
    first = [r for r in records if r.t <= 1800]
    acc.feed_many(first)
    live1 = acc.report(1800)
    live2 = acc.report(1800)
    assert live1.to_dict() == live2.to_dict()  # via to_dict: nan != nan, None == None
    # up to 1800 s: APT = 1800 - 300 (first breakdown) = 1500 s of 1800 s
    assert live1.stations[B1]["availability"] == pytest.approx(1500 / 1800)
    assert live1.to_dict() == compute_kpis(first, layout(), start=0, end=1800).to_dict()
    # a later report extends the open segment without changing the state
    assert acc.report(2000).stations[B1]["apt_h"] == pytest.approx(1500 / 3600)
    for r in records[len(first):]:
        acc.feed(r)
    check_one_hour(acc.report(3600).stations[B1])
    with pytest.raises(ValueError, match="precedes the last record"):
        acc.report(3000)


def test_zero_pbt_window_is_undefined_and_json_ready() -> None:
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PlannedState.OffShift),
        s(0, B1, Tag.ITEM_STATE, IDLE),
    ]
    report = compute_kpis(records, layout(), start=0, end=3600)
    for key in ("availability", "performance", "oee", "mtbf", "mttr"):
        assert math.isnan(report.line[key]), key
        assert math.isnan(report.stations[B1][key]), key
    data = report.to_dict()
    assert data["line"]["oee"] is None
    assert data["line"]["pbt_h"] == 0.0
    json.dumps(data, allow_nan=False)


def test_kpi_info_names_every_reported_kpi() -> None:
    report = compute_kpis(one_hour_run(), layout(), start=0, end=3600)
    assert set(report.line) == {
        "oee", "availability", "performance", "quality", "throughput", "mtbf", "mttr",
        "scrap_ratio", "first_pass_yield", "energy_per_good_unit", "labour_productivity",
        "good_count", "scrap_count", "labour_hours", "energy_kwh", "pbt_h", "unknown_h",
    }
    names = set(report.line) | set(report.stations[B1]) | set(report.stages["bonding"])
    assert names <= set(KPI_INFO)


def test_public_api() -> None:
    for name in iiotbed.platform.__all__:
        assert hasattr(iiotbed.platform, name), name
    assert set(iiotbed.platform.__all__) >= {
        "KPI_INFO", "KpiAccumulator", "KpiInfo", "KpiReport", "Layout", "StationLayout",
        "compute_kpis",
    }


def test_engine_and_store_rollup_share_one_set_of_integration_rules() -> None:
    # the same state records through the engine (one window) and the store's rollup
    # integrator (hour buckets): both run the clocks of platform._integrate
    from iiotbed.platform.store._rollup import Integrator, StateRow

    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, LINE, Tag.HEADCOUNT_PREFIX + "operators", 2),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(600, B1, Tag.OPERATION_MODE, OperationMode.Setup),  # 600-900 s: Executing, not APT
        s(900, B1, Tag.OPERATION_MODE, OperationMode.Processing),
        s(1800, B1, Tag.FAULT, 1),
        s(1800, B1, Tag.ITEM_STATE, OOS),  # 1800-2400 s: fault time
        s(2400, B1, Tag.FAULT, 0),
        s(2400, B1, Tag.ITEM_STATE, "running"),  # no number: unknown, no PBT until 3000 s
        s(3000, B1, Tag.ITEM_STATE, EXE),
        s(3600, LINE, Tag.PLANNED_STATE, PlannedState.Break),  # 3600-4200 s: no PBT
        s(3600, LINE, Tag.HEADCOUNT_PREFIX + "operators", None, Quality.Bad),  # nobody
        s(4200, LINE, Tag.PLANNED_STATE, PROD),
        s(4200, B1, Tag.ITEM_STATE, float("inf")),  # no number either: unknown to the end
    ]
    end = 5400.0
    # PBT: 0-2400 and 3000-3600 = 3000 s; APT: 0-600, 900-1800, 3000-3600 = 2100 s;
    # fault 600 s; line planned 0-3600 and 4200-5400 = 4800 s; people 2 x 3600 s;
    # unknown (planned, item state no number): 2400-3000 and 4200-5400 = 1800 s
    expected = {
        "pbt": 3000.0, "apt": 2100.0, "fault": 600.0, "planned": 4800.0, "unknown": 1800.0,
    }  # fmt: skip
    report = compute_kpis(records, layout(), start=0.0, end=end)
    b1 = report.stations[B1]
    assert (b1["pbt_h"] * 3600, b1["apt_h"] * 3600) == (expected["pbt"], expected["apt"])
    assert report.line["pbt_h"] * 3600 == expected["planned"]
    assert report.line["labour_hours"] == 2.0
    assert b1["unknown_h"] * 3600 == expected["unknown"]
    assert report.line["unknown_h"] == 0.0

    integ = Integrator(0.0, end, None)
    integ.feed(
        StateRow(r.asset, r.tag, r.t, None if r.quality == Quality.Bad else r.value)
        for r in records
        if isinstance(r, Sample)
    )
    seconds = {(asset, name): v for (_, asset, name), v in integ.finish().items()}
    assert seconds == {
        (B1, "pbt"): expected["pbt"],
        (B1, "apt"): expected["apt"],
        (B1, "fault"): expected["fault"],
        (B1, "unknown"): expected["unknown"],
        (LINE, "planned"): expected["planned"],
        (LINE, "heads/operators"): 2 * 3600.0,
    }


def test_time_under_bad_quality_is_counted_apart_not_extended() -> None:
    # A station Executing from 0 s; its OPC UA session is lost at 1000 s (the collector marks
    # the state Bad) and comes back at 1600 s, Executing; an hour window. Extending the last
    # value would give PBT = APT = 3600 s. The gap is not observed: it is neither PBT nor a
    # loss, but counted apart as unknown time.
    #   PBT = APT = 0-1000 + 1600-3600 = 3000 s; unknown = 1000-1600 = 600 s
    # Then the line's PlannedState goes Bad at 3000 s (the Sparkplug node died) and comes
    # back at 3300 s: the line's PBT loses 300 s, its unknown time is 300 s, and the station
    # is not planned as far as we know (no PBT, no unknown of its own) in that stretch.
    #   station PBT = APT = 3000 - 300 = 2700 s; line PBT = 3600 - 300 = 3300 s
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(1000, B1, Tag.ITEM_STATE, None, Quality.Bad),
        s(1600, B1, Tag.ITEM_STATE, EXE),
        s(3000, LINE, Tag.PLANNED_STATE, None, Quality.Bad),
        s(3300, LINE, Tag.PLANNED_STATE, PROD),
    ]
    report = compute_kpis(records, layout(), start=0.0, end=3600.0)
    st = report.stations[B1]
    assert st["pbt_h"] * 3600 == pytest.approx(2700.0)
    assert st["apt_h"] * 3600 == pytest.approx(2700.0)
    assert st["unknown_h"] * 3600 == pytest.approx(600.0)
    assert st["availability"] == pytest.approx(1.0)  # the gap is no loss either
    assert report.stages["bonding"]["unknown_h"] * 3600 == pytest.approx(600.0)
    assert report.line["pbt_h"] * 3600 == pytest.approx(3300.0)
    assert report.line["unknown_h"] * 3600 == pytest.approx(300.0)

    # the open stretch counts too: a report at 1300 s, inside the station's gap
    acc = KpiAccumulator(layout(), start=0.0)
    acc.feed_many(records[:3])
    live = acc.report(1300.0)
    assert live.stations[B1]["unknown_h"] * 3600 == pytest.approx(300.0)
    assert live.stations[B1]["pbt_h"] * 3600 == pytest.approx(1000.0)

    # the store's rollups run the same clocks: the same seconds, bucket by bucket
    from iiotbed.platform.store._rollup import Integrator, StateRow

    integ = Integrator(0.0, 3600.0)
    integ.feed(StateRow(r.asset, r.tag, r.t, r.value) for r in records)
    seconds = integ.finish()
    assert seconds[(0, B1, "unknown")] == pytest.approx(600.0)
    assert seconds[(0, LINE, "unknown")] == pytest.approx(300.0)
    assert seconds[(0, B1, "pbt")] == pytest.approx(2700.0)


def test_a_state_never_heard_of_is_not_unknown_time() -> None:
    # no item state sample at all: nothing observed, nothing marked Bad: no PBT, no unknown
    # (unknown time is time under Bad quality, not time before the first sample)
    report = compute_kpis([s(0, LINE, Tag.PLANNED_STATE, PROD)], layout(), start=0.0, end=3600.0)
    assert report.stations[B1]["pbt_h"] == 0.0
    assert report.stations[B1]["unknown_h"] == 0.0
    assert report.line["unknown_h"] == 0.0


def test_units_counted_across_a_bad_gap_are_not_in_performance() -> None:
    # A station at its ideal rate (20 s a unit) from 0 s; its session is lost at 1000 s (the
    # collector marks every value Bad at the newest time it had) and comes back at 1600 s.
    # The 30 units made in the gap arrive with the first Good count after it (80 = 50 + 30).
    #   APT = 1000 + 2000 = 3000 s (the gap is unknown time, not APT)
    #   units made in APT = 50 + (180 - 80) = 150 -> P = 150 x 20 / 3000 = 1.0
    # Crediting the gap's 30 units to APT would give P = 180 x 20 / 3000 = 1.2: OEE > 1.
    records = [
        s(0, LINE, Tag.PLANNED_STATE, PROD),
        s(0, B1, Tag.ITEM_STATE, EXE),
        s(0, B1, Tag.PROCESSED, 0),
        s(1000, B1, Tag.PROCESSED, 50),
        s(1000, B1, Tag.ITEM_STATE, None, Quality.Bad),
        s(1000, B1, Tag.PROCESSED, None, Quality.Bad),
        s(1600, B1, Tag.ITEM_STATE, EXE),
        s(1600, B1, Tag.PROCESSED, 80),
        s(3600, B1, Tag.PROCESSED, 180),
    ]
    st = compute_kpis(records, layout(), start=0.0, end=3600.0).stations[B1]
    assert st["apt_h"] * 3600 == pytest.approx(3000.0)
    assert st["unknown_h"] * 3600 == pytest.approx(600.0)
    assert st["processed"] == 180  # every unit counts in the totals
    assert st["performance"] == pytest.approx(1.0)
    assert st["oee"] == pytest.approx(1.0)
    # a window starting inside the gap: the jump's units are still not in performance
    late = compute_kpis(records, layout(), start=1200.0, end=3600.0).stations[B1]
    assert late["processed"] == 130 and late["apt_h"] * 3600 == pytest.approx(2000.0)
    assert late["performance"] == pytest.approx(1.0)
    # a window starting after the gap counts the jump as before its start
    after = compute_kpis(records, layout(), start=1600.0, end=3600.0).stations[B1]
    assert after["processed"] == 100 and after["performance"] == pytest.approx(1.0)
    # a Good value dated before the mark (in transit when it came) does not end the gap
    transit = [*records[:6], s(900, B1, Tag.PROCESSED, 45), *records[6:]]
    assert compute_kpis(transit, layout(), start=0.0, end=3600.0).stations[B1][
        "performance"
    ] == pytest.approx(1.0)
    # per-product counters across the gap: the same rule per product
    with_product = [
        *records,
        s(0, B1, f"{Tag.PROCESSED}/panel", 0),
        s(1000, B1, f"{Tag.PROCESSED}/panel", 50),
        s(1000, B1, f"{Tag.PROCESSED}/panel", None, Quality.Bad),
        s(1600, B1, f"{Tag.PROCESSED}/panel", 80),
        s(3600, B1, f"{Tag.PROCESSED}/panel", 180),
    ]
    with_product.sort(key=lambda r: r.t)
    st = compute_kpis(with_product, layout(), start=0.0, end=3600.0).stations[B1]
    assert st["processed"] == 180 and st["performance"] == pytest.approx(1.0)
