"""Scenario files: YAML parsed into typed, validated, immutable models.

A scenario describes one plant line: identity (ISA-95 path, epoch, time zone), calendar,
products, stages of stations, material supply (manual carts or an AMR fleet), technicians,
inspection, network links and labour. ``extends:`` names a base file; the extending file
states only what differs. Durations are seconds or strings such as ``"45min"``, ``"8h"``.

``load_scenario(path)`` raises :class:`iiotbed.errors.ScenarioError` whose issues say
``file:line: where: what is wrong, what was expected``.

Modules: ``durations`` (durations and distributions), ``calendar`` (shifts, breaks,
planned maintenance), ``models`` (the rest of the typed models), ``loading`` (files,
``extends:`` and issues with their ``file:line``).
"""

from iiotbed.scenario.calendar import Break, Calendar, MaintenanceWindow, Shift
from iiotbed.scenario.durations import Dist, parse_duration
from iiotbed.scenario.loading import load_scenario, scenario_from_dict, validation_issues
from iiotbed.scenario.models import (
    AmrFleet,
    Battery,
    Degradation,
    Failures,
    Inspection,
    Kits,
    Labour,
    Line,
    Link,
    LiveEndpoint,
    Maintenance,
    ManualSupply,
    Network,
    Outages,
    Plant,
    Power,
    PredictiveMaintenance,
    Product,
    RunSettings,
    Scenario,
    Source,
    Stage,
    Supply,
    Technicians,
)

__all__ = [
    "AmrFleet",
    "Battery",
    "Break",
    "Calendar",
    "Degradation",
    "Dist",
    "Failures",
    "Inspection",
    "Kits",
    "Labour",
    "Line",
    "Link",
    "LiveEndpoint",
    "Maintenance",
    "MaintenanceWindow",
    "ManualSupply",
    "Network",
    "Outages",
    "Plant",
    "Power",
    "PredictiveMaintenance",
    "Product",
    "RunSettings",
    "Scenario",
    "Shift",
    "Source",
    "Stage",
    "Supply",
    "Technicians",
    "load_scenario",
    "parse_duration",
    "scenario_from_dict",
    "validation_issues",
]
