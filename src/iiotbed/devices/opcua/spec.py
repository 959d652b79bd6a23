"""What each machine's OPC UA face shows, derived from the scenario (no asyncua here).

A :class:`MachineSpec` lists a station's identification, counters and process values;
the address-space builder turns it into nodes. :class:`StationControl` is what the
``Start``/``Stop``/... methods and the ``SpeedSetpoint`` variable drive. The browse
names and the unit packing are in :mod:`iiotbed.protocols.opcua`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from iiotbed.telemetry import Tag

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario, Stage

__all__ = [
    "COUNTERS",
    "MachineSpec",
    "ProcessValue",
    "StationControl",
    "machine_specs",
    "namespace_uri",
]

# Never-reset counters (UInt64) every machine shows under OperationCounters.
COUNTERS: tuple[str, ...] = (
    Tag.PROCESSED,
    Tag.DEFECTIVE,
    Tag.REWORK,
    Tag.CONSUMED,
    Tag.FAILURES,
)
INSPECTION_COUNTERS: tuple[str, ...] = (Tag.INSPECTED, Tag.PASSED_FIRST)

@runtime_checkable
class StationControl(Protocol):
    """Commands a station accepts; the simulator implements it.

    A command it cannot carry out raises :class:`~iiotbed.errors.CommandRefused`; the server answers
    ``BadOutOfRange`` if ``out_of_range``, else ``BadInvalidState``.
    """

    path: str

    @property
    def speed(self) -> float: ...

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def hold(self) -> None: ...
    def unhold(self) -> None: ...
    def reset(self) -> None: ...
    def set_speed(self, factor: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ProcessValue:
    """An analog value with engineering units (UNECE code) and its expected range."""

    tag: str
    unit: str
    low: float
    high: float
    description: str


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One machine: identification (OPC 40001-1), counters and process values."""

    name: str
    path: str
    manufacturer: str
    model: str | None
    serial_number: str
    product_instance_uri: str
    counters: tuple[str, ...] = COUNTERS
    process_values: tuple[ProcessValue, ...] = ()
    year_of_construction: int | None = None
    #: s per unit at speed factor 1 (the slowest product's): PackML MachSpeed's nominal rate
    ideal_cycle_time: float | None = None


def namespace_uri(scenario: Scenario) -> str:
    """Namespace of the machines' nodes: ``urn:iiotbed:<enterprise>:<site>``."""
    return f"urn:iiotbed:{scenario.plant.enterprise}:{scenario.plant.site}"


def _process_values(scenario: Scenario, stage: Stage) -> tuple[ProcessValue, ...]:
    ideal = max(p.ideal_cycle_time[stage.name] for p in scenario.products)
    factor = max(stage.cycle_time_factor.expected, 1.0)
    values = [
        ProcessValue(
            Tag.CYCLE_TIME, "SEC", 0.0, math.ceil(4 * ideal * factor), "duration of the last cycle"
        )
    ]
    peak = max(stage.power.executing, stage.power.idle, stage.power.down, stage.power.off)
    if peak > 0:
        values.append(ProcessValue(Tag.POWER, "KWT", 0.0, round(1.5 * peak, 3), "electrical power"))
    if stage.degradation is not None:
        d = stage.degradation
        values.append(
            ProcessValue(d.signal, d.unit, 0.0, round(1.5 * d.at_failure, 3), "condition signal")
        )
    return tuple(values)


def machine_specs(scenario: Scenario) -> list[MachineSpec]:
    """A spec for every station of the scenario's line, in line order."""
    plant = scenario.plant
    specs = []
    for stage, name, path in scenario.station_paths():
        counters = COUNTERS + (INSPECTION_COUNTERS if stage.kind == "inspection" else ())
        # per-product counts: the platform needs them for performance on a mixed line
        counters += tuple(f"{Tag.PROCESSED}/{p.name}" for p in scenario.products)
        specs.append(
            MachineSpec(
                name=name,
                path=path,
                manufacturer=stage.manufacturer or plant.manufacturer,
                model=stage.model,
                serial_number=f"{plant.line}-{name}",
                product_instance_uri=f"{plant.id_prefix}/{name}",
                counters=counters,
                process_values=_process_values(scenario, stage),
                ideal_cycle_time=max(p.ideal_cycle_time[stage.name] for p in scenario.products),
            )
        )
    return specs
