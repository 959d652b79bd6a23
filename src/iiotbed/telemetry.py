"""The normalised records every part of iiotbed speaks.

The simulator emits them into its event log, the gateway (later) derives them from
protocol traffic, and the KPI engine reads them. Times are seconds since the scenario
epoch (``t``); absolute UTC timestamps are ``epoch + t``.

Tag names below are the contract between producers and the KPI engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

__all__ = [
    "Event",
    "EventName",
    "ItemState",
    "OperationMode",
    "PackMLState",
    "PlannedState",
    "Quality",
    "Record",
    "Sample",
    "Tag",
    "asset_path",
]


class ItemState(IntEnum):
    """OPC 40001-1 MachineryItemState (StateNumber values)."""

    NotAvailable = 0
    OutOfService = 1
    NotExecuting = 2
    Executing = 3


class OperationMode(IntEnum):
    """OPC 40001-1 MachineryOperationMode (StateNumber values)."""

    NONE = 0
    Maintenance = 1
    Setup = 2
    Processing = 3


class PackMLState(IntEnum):
    """PackML execute state, PackTags v3 numbering (not OPC 30060 TMC numbering)."""

    Clearing = 1
    Stopped = 2
    Starting = 3
    Idle = 4
    Suspended = 5
    Execute = 6
    Stopping = 7
    Aborting = 8
    Aborted = 9
    Holding = 10
    Held = 11
    Unholding = 12
    Suspending = 13
    Unsuspending = 14
    Resetting = 15
    Completing = 16
    Complete = 17


class PlannedState(IntEnum):
    """Line-level calendar state (the "higher-level system" of OPC 40001-1 Annex C).

    Only ``Production`` time counts toward planned busy time (PBT); ``Break`` and
    ``PlannedMaintenance`` are planned downtime inside planned operation time (POT);
    ``OffShift`` is outside POT.
    """

    OffShift = 0
    Production = 1
    Break = 2
    PlannedMaintenance = 3


class Quality(IntEnum):
    """OPC UA StatusCode severity; a Bad sample carries no value."""

    Good = 0
    Uncertain = 1
    Bad = 2


class Tag:
    """Tag names the KPI engine understands.

    Counters are monotonic, never-reset totals (PackML ``AccCount`` style): KPIs use deltas.
    Per-product counters append ``/<product>`` (e.g. ``ProcessedCount/lcm-55``).
    """

    ITEM_STATE: Final = "MachineryItemState"
    OPERATION_MODE: Final = "MachineryOperationMode"
    PACKML_STATE: Final = "PackMLState"
    FAULT: Final = "Fault"  # 1 while a breakdown is active (alarm), else 0
    PROCESSED: Final = "ProcessedCount"  # units finished by the station (PQ)
    DEFECTIVE: Final = "DefectiveCount"  # units scrapped that the station made defective
    REWORK: Final = "ReworkCount"  # units reworked that the station made defective
    CONSUMED: Final = "ConsumedCount"  # component kits consumed
    FAILURES: Final = "FailureCount"  # breakdowns started
    ENERGY: Final = "EnergyTotal"  # kWh, monotonic
    # inspection stations
    INSPECTED: Final = "InspectedCount"
    PASSED_FIRST: Final = "FirstPassCount"  # passed inspection without a defect found
    # line level
    PLANNED_STATE: Final = "PlannedState"
    GOOD: Final = "GoodCount"  # good units leaving the line (GQ)
    SCRAP: Final = "ScrapCount"  # units scrapped on the line (SQ)
    LINE_OUTPUT: Final = "OutputCount"  # all units leaving the line
    HEADCOUNT_PREFIX: Final = "Headcount/"  # Headcount/<role>: people present now
    # buffers, AMRs, technicians (informational)
    BUFFER_LEVEL: Final = "Level"
    BATTERY: Final = "BatteryLevel"  # percent
    POSITION_X: Final = "PositionX"  # metres
    POSITION_Y: Final = "PositionY"
    BUSY: Final = "Busy"  # technicians busy now
    # derived by the live layer (the simulator emits none of these per cycle)
    CYCLE_TIME: Final = "CycleTime"  # s, executing time of the last completed unit
    POWER: Final = "Power"  # kW, present draw, from the station's state
    SPEED_SETPOINT: Final = "SpeedSetpoint"  # writable speed factor (OPC UA, Sparkplug DCMD)
    STARVED: Final = "EquipmentStarved"  # 1 while suspended with its input buffer empty
    BLOCKED: Final = "EquipmentBlocked"  # 1 while suspended with its output buffer full


class EventName:
    """Event names the simulator emits and the live layer and platform read."""

    UNIT_PRODUCED: Final = "UnitProduced"
    UNIT_SCRAPPED: Final = "UnitScrapped"
    UNIT_REWORKED: Final = "UnitReworked"
    DEFECT_INTRODUCED: Final = "DefectIntroduced"
    FAILURE_START: Final = "FailureStart"
    REPAIR_END: Final = "RepairEnd"
    PDM_START: Final = "PredictiveMaintenanceStart"
    PDM_END: Final = "PredictiveMaintenanceEnd"
    TECHNICIAN_DISPATCHED: Final = "TechnicianDispatched"
    KIT_DELIVERY: Final = "KitDelivery"
    AMR_TRIP_START: Final = "AmrTripStart"
    AMR_TRIP_END: Final = "AmrTripEnd"
    AMR_TRIP_CANCELLED: Final = "AmrTripCancelled"
    AMR_PAUSED: Final = "AmrPaused"
    AMR_RESUMED: Final = "AmrResumed"
    CHARGE_START: Final = "ChargeStart"
    CHARGE_END: Final = "ChargeEnd"
    ALARM: Final = "Alarm"  # an OPC UA alarm event, seen by the gateway


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one tag of one asset.

    ``t`` is the source time (seconds since the scenario epoch) and never changes on the
    way; ``gateway_ts`` is the receiving gateway's own time, ``seq`` the source's sequence
    number where the protocol has one.
    """

    t: float
    asset: str
    tag: str
    value: float | int | str | None
    unit: str | None = None
    quality: Quality = Quality.Good
    gateway_ts: float | None = None
    seq: int | None = None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at one asset (unit produced, AMR trip, repair...)."""

    t: float
    asset: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


Record = Sample | Event


def asset_path(*parts: str) -> str:
    """Join ISA-95 levels into one asset path (``enterprise/site/area/line/cell/asset``)."""
    for p in parts:
        if not p or "/" in p or p != p.strip():
            raise ValueError(f"asset path level must be a non-empty name without '/', got {p!r}")
    return "/".join(parts)
