"""Routing records to the live endpoints: a pure function, tested without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from iiotbed.devices.live import RoutePlan, route
from iiotbed.devices.live.derived import Derived
from iiotbed.devices.live.routing import HEADSETS
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import (
    Event,
    EventName,
    ItemState,
    OperationMode,
    PackMLState,
    PlannedState,
    Record,
    Sample,
    Tag,
)

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "tcl-huizhou-5g.yaml"
SC = load_scenario(SCENARIO)
LINE = SC.line_path
_, BONDER, BONDER_PATH = SC.station_paths()[1]  # cof-bonding: 9.0 kW executing, 3.5 idle
AMR = f"{LINE}/amr-01"
EPOCH_MS = SC.plant.epoch.timestamp() * 1000


def _state(t: float, item: ItemState, packml: PackMLState) -> list[Record]:
    return [Sample(t, BONDER_PATH, Tag.ITEM_STATE, int(item)),
            Sample(t, BONDER_PATH, Tag.OPERATION_MODE, int(OperationMode.Processing)),
            Sample(t, BONDER_PATH, Tag.PACKML_STATE, int(packml))]  # fmt: skip


def test_each_record_goes_to_its_endpoint_with_derived_values() -> None:
    plan = RoutePlan.of(SC, [AMR])
    derived = Derived(SC)
    stage = SC.station_paths()[1][0]
    assert (stage.power.executing, stage.power.idle) == (9.0, 3.5)
    # 08:00 production starts; the bonder executes 10 s, pauses 5 s, executes 20 s, finishes
    batch: list[Record] = [
        Sample(100.0, LINE, Tag.PLANNED_STATE, int(PlannedState.Production)),
        *_state(100.0, ItemState.Executing, PackMLState.Execute),
        *_state(110.0, ItemState.NotExecuting, PackMLState.Suspended),
        *_state(115.0, ItemState.Executing, PackMLState.Execute),
        Sample(135.0, BONDER_PATH, Tag.PROCESSED, 1, "C62"),
        Sample(135.0, BONDER_PATH, Tag.ENERGY, 0.5, "KWH"),
        Sample(135.0, LINE, Tag.GOOD, 1, "C62"),
        Sample(135.0, LINE, f"{Tag.HEADCOUNT_PREFIX}operators", 12, "C62"),
        Sample(136.0, f"{LINE}/technicians", Tag.BUSY, 1, "C62"),
        Event(136.0, f"{LINE}/technicians", EventName.TECHNICIAN_DISPATCHED,
              {"technician": "tech-01", "station": BONDER_PATH, "job": "repair"}),
        Sample(137.0, AMR, Tag.BATTERY, 88.0, "P1"),
        Event(137.0, AMR, EventName.AMR_TRIP_START, {"trip": 1, "station": BONDER_PATH}),
        Event(140.0, BONDER_PATH, EventName.REPAIR_END, {"technician": "tech-01"}),
        Event(141.0, LINE, EventName.UNIT_PRODUCED, {"unit": "u-1"}),  # nobody shows it
    ]  # fmt: skip
    out = route(batch, plan, derived)

    # OPC UA: every station sample, CycleTime after ProcessedCount, Power once at the end
    bonder = [s for s in out.opcua if s.asset == BONDER_PATH]
    tags = [(s.t, s.tag) for s in bonder]
    assert tags[:9] == [(t, tag) for t in (100.0, 110.0, 115.0)
                        for tag in (Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.PACKML_STATE)]  # fmt: skip
    cycle = bonder[10]
    assert (cycle.tag, cycle.unit) == (Tag.CYCLE_TIME, "SEC")
    assert cycle.value == pytest.approx(10.0 + 20.0)  # executing time only: the pause excluded
    assert [s.tag for s in bonder[9:]] == [Tag.PROCESSED, Tag.CYCLE_TIME, Tag.ENERGY, Tag.POWER]
    power = bonder[-1]
    assert (power.t, power.value, power.unit) == (115.0, 9.0, "KWT")  # last state: executing
    # the planned-state change touches every station: the others show their power only
    others = [s for s in out.opcua if s.asset != BONDER_PATH]
    assert {s.tag for s in others} == {Tag.POWER} and {s.t for s in others} == {100.0}
    assert len(others) == len(plan.station_names) - 1
    assert out.opcua[:len(bonder) - 1] == bonder[:-1]  # station samples first, powers last

    # Sparkplug: ms timestamps from the scenario epoch; headsets follow the technician
    spb = out.sparkplug
    ms = round(EPOCH_MS + 135_000)
    assert ("line", Tag.PLANNED_STATE, int(PlannedState.Production), round(EPOCH_MS + 100_000)) in spb
    assert (BONDER, Tag.ENERGY, 0.5, ms) in spb
    assert ("line", Tag.GOOD, 1, ms) in spb
    assert ("line", f"{Tag.HEADCOUNT_PREFIX}operators", 12, ms) in spb
    assert (HEADSETS, Tag.BUSY, 1, round(EPOCH_MS + 136_000)) in spb
    assert (HEADSETS, "tech-01/Station", BONDER, round(EPOCH_MS + 136_000)) in spb
    assert (HEADSETS, "tech-01/Busy", False, round(EPOCH_MS + 140_000)) in spb
    # the planned-state change touches every station: each gets its power once
    powers = [c for c in spb if c[1] == Tag.POWER]
    assert len(powers) == len(plan.station_names)
    assert (BONDER, Tag.POWER, 9.0, round(EPOCH_MS + 115_000)) in powers

    # VDA 5050: the AMR's sample and event, in order
    assert out.vda == batch[16:18]
    # every routed record went somewhere or was deliberately left out
    assert len(spb) == 1 + 1 + 1 + 1 + 1 + 3 + 3 + len(powers)


def test_derived_power_tells_break_from_off_shift_by_the_calendar() -> None:
    plan = RoutePlan.of(SC)
    derived = Derived(SC)
    stage = SC.station_paths()[1][0]
    # break and off shift show the same machine state (NotExecuting, NONE, Idle)
    idle = [Sample(10.0, BONDER_PATH, Tag.ITEM_STATE, int(ItemState.NotExecuting)),
            Sample(10.0, BONDER_PATH, Tag.OPERATION_MODE, int(OperationMode.NONE)),
            Sample(10.0, BONDER_PATH, Tag.PACKML_STATE, int(PackMLState.Idle))]  # fmt: skip
    off = route(idle, plan, derived)
    assert [s.value for s in off.opcua if s.tag == Tag.POWER] == [stage.power.off]
    brk = route([Sample(20.0, LINE, Tag.PLANNED_STATE, int(PlannedState.Break))], plan, derived)
    assert [s.value for s in brk.opcua if s.asset == BONDER_PATH] == [stage.power.idle]
    # unchanged power is not sent again
    again = route([Sample(30.0, LINE, Tag.PLANNED_STATE, int(PlannedState.Break))], plan, derived)
    assert not [s for s in again.opcua if s.asset == BONDER_PATH]
