"""Kits and their supply, predictive maintenance, vision inspection, common random numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from simkit import LINE, events, make, series

from iiotbed.devices.sim import Factory
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import PackMLState, Tag

ROOT = Path(__file__).resolve().parents[3]
M1 = f"{LINE}/work/m-01"


def test_manual_kits_are_consumed_one_per_unit_and_refilled() -> None:
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 30, "position": [300, 400],
          "kits": {"capacity": 10, "reorder_point": 3}}],
        supply={"mode": "manual", "warehouse_position": [0, 0],
                "manual": {"handlers": 1, "speed": 1.0, "capacity": 6, "load_time": 60}},
    )
    f = Factory(sc)
    f.run(86400.0)
    processed = series(f.records, M1, Tag.PROCESSED)[-1][1]
    consumed = series(f.records, M1, Tag.CONSUMED)[-1][1]
    delivered = sum(e.fields["kits"] for e in events(f.records, "KitDelivery"))
    stock = f._stations[0].kits
    assert stock is not None
    assert consumed in (processed, processed + 1)  # a kit is drawn when a unit starts
    assert delivered == consumed + stock.stock - 10
    # the one handler is the bottleneck: 60 s loading + 500 m there + 500 m back at 1 m/s
    # = 1060 s per trip of 6 kits (180 s of work); the station starves the rest
    d = {v for _, v in series(f.records, M1, Tag.PACKML_STATE)}
    assert PackMLState.Suspended in d
    assert processed == pytest.approx(86400 / 1060 * 6, rel=0.05)


def test_amr_fleet_batteries_trips_and_charging() -> None:
    sc = load_scenario(ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
    f = Factory(sc)
    f.run(3 * 86400.0)
    line = sc.line_path
    assert sc.supply is not None and sc.supply.amr is not None
    allowed_x = {0.0, 5.0} | {s.position[0] for s in sc.line.stages}
    for i in range(sc.supply.amr.count):
        amr = f"{line}/amr-{i + 1:02d}"
        battery = [v for _, v in series(f.records, amr, Tag.BATTERY)]
        assert all(0.0 <= b <= 100.0 for b in battery)
        assert {v for _, v in series(f.records, amr, Tag.POSITION_X)} <= allowed_x
    starts, ends = events(f.records, "AmrTripStart"), events(f.records, "AmrTripEnd")
    assert len(starts) > 50 and 0 <= len(starts) - len(ends) <= sc.supply.amr.count
    charges = events(f.records, "ChargeStart")
    assert charges and all(e.fields["battery"] < 25.0 for e in charges)
    assert all(e.fields["battery"] >= 90.0 for e in events(f.records, "ChargeEnd"))


def _pdm_scenario(rate: float) -> Factory:
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 60,
          "failures": {"ttf": {"dist": "weibull", "shape": 3.0, "scale": 20000},
                       "repair": {"dist": "fixed", "value": 1800}},
          "degradation": {"signal": "Vibration", "baseline": 1.0, "at_failure": 7.0}}],
        maintenance={"predictive": {"enabled": True, "detection_rate": rate,
                                    "lead_time": 3600, "duration": 600}},
        run={"duration": 30 * 86400.0, "seed": 5},
    )
    f = Factory(sc)
    f.run()
    return f


def test_predictive_maintenance_prevents_failures() -> None:
    never, always = _pdm_scenario(0.0), _pdm_scenario(1.0)
    fails_never = series(never.records, M1, Tag.FAILURES)[-1][1]
    fails_always = series(always.records, M1, Tag.FAILURES)[-1][1]
    assert not events(never.records, "PredictiveMaintenanceStart")
    pm = events(always.records, "PredictiveMaintenanceStart")
    assert fails_never > 60 and fails_always == 0 and len(pm) > 60
    assert all(e.fields["remaining_ttf"] < 3600 for e in pm)
    held = [t for t, v in series(always.records, M1, Tag.PACKML_STATE) if v == PackMLState.Held]
    assert len(held) == len(pm)
    vib = [v for _, v in series(never.records, M1, "Vibration")]
    # noise sd is 2 % of the 6.0 range (0.12): 5 sigma bounds around the 1.0 -> 7.0 ramp
    assert min(vib) > 0.4 and max(vib) < 7.6 and max(vib) > 6.5


def test_vision_cycle_includes_link_round_trip_and_inference() -> None:
    sc = make(
        [{"name": "look", "kind": "inspection", "station_prefix": "v", "_ict": 10,
          "inspection": {"method": "vision", "time": 10, "inference_time": 1.0,
                         "detection_rate": 1.0, "link": "edge"}}],
        network={"links": {"edge": {"kind": "5g-embb", "latency": 0.5}}},
    )
    f = Factory(sc)
    f.run(1201.0)
    # 10 s capture + 2 x 0.5 s latency + 1 s inference = 12 s per unit
    assert series(f.records, f"{LINE}/look/v-01", Tag.INSPECTED)[-1][1] == 100


def test_a_station_keeps_its_random_stream_when_other_sources_change() -> None:
    first = {"name": "work", "station_prefix": "m", "_ict": 30,
             "failures": {"ttf": {"dist": "exponential", "mean": 3600},
                          "repair": {"dist": "exponential", "mean": 300}}}
    alone = Factory(make([dict(first)]))
    alone.run(86400.0)
    more = Factory(make([dict(first), {"name": "pack", "station_prefix": "p", "_ict": 5,
                                       "buffer_capacity": 1000,
                                       "failures": {"ttf": 7200, "repair": 60}}]))
    more.run(86400.0)
    times_alone = [e.t for e in events(alone.records, "FailureStart") if e.asset == M1]
    times_more = [e.t for e in events(more.records, "FailureStart") if e.asset == M1]
    assert len(times_alone) > 10 and times_alone == times_more
