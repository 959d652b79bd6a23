"""What the KPI engine needs to know about a line, taken from its scenario.

Asset paths, ideal cycle times (ISO 22400 PRU) per station and product, the bottleneck
stage and the labour roles that count toward labour hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # scenario pulls in pydantic; the KPI engine itself does not need it
    from iiotbed.scenario import Scenario

__all__ = ["Layout", "StationLayout"]

# two stage loads closer than this (relative) are a tie, broken by the expected actual time
_TIE = 1e-9


@dataclass(frozen=True)
class StationLayout:
    """One station: its asset path, stage, name and ideal cycle time per product (s)."""

    path: str
    stage: str
    name: str
    ideal_cycle_time: Mapping[str, float] = field(hash=False)


@dataclass(frozen=True)
class Layout:
    """A line as the KPI engine sees it.

    ``bottleneck_stage`` is the stage with the largest mix-weighted ideal cycle time per
    station; ``mix`` holds each product's share of starts (summing to 1).
    """

    line: str
    stations: tuple[StationLayout, ...]
    stage_order: tuple[str, ...]
    bottleneck_stage: str
    counted_roles: frozenset[str]
    inspection_stages: frozenset[str]
    mix: Mapping[str, float] = field(default_factory=dict, hash=False)

    @classmethod
    def from_scenario(cls, scenario: Scenario) -> Layout:
        """The layout of a scenario's line (station paths as ``scenario.station_paths()``)."""
        total_mix = sum(p.mix for p in scenario.products)
        mix = {p.name: p.mix / total_mix for p in scenario.products}
        stations = tuple(
            StationLayout(
                path=path,
                stage=stage.name,
                name=name,
                ideal_cycle_time=MappingProxyType(
                    {p.name: p.ideal_cycle_time[stage.name] for p in scenario.products}
                ),
            )
            for stage, name, path in scenario.station_paths()
        )
        best: tuple[float, float] | None = None
        bottleneck = scenario.line.stages[0].name
        for stage in scenario.line.stages:
            ideal = sum(mix[p.name] * p.ideal_cycle_time[stage.name] for p in scenario.products)
            n = len(stage.station_names)
            if stage.inspection is not None:
                factor = stage.inspection.time.expected / ideal if ideal > 0 else 1.0
            else:
                factor = stage.cycle_time_factor.expected
            # (ideal load, expected actual load): the ISO PRU ranks stages; a tie between
            # stages with equal ideal load goes to the one slower in practice
            load = (ideal / n, ideal * factor / n)
            if best is None or _beats(load, best):
                best, bottleneck = load, stage.name
        return cls(
            line=scenario.line_path,
            stations=stations,
            stage_order=tuple(s.name for s in scenario.line.stages),
            bottleneck_stage=bottleneck,
            counted_roles=frozenset([*scenario.labour.counted, *scenario.labour.other]),
            inspection_stages=frozenset(
                s.name for s in scenario.line.stages if s.kind == "inspection"
            ),
            mix=MappingProxyType(mix),
        )

    def stations_of(self, stage: str) -> tuple[StationLayout, ...]:
        """The stations of one stage, in line order."""
        return tuple(s for s in self.stations if s.stage == stage)


def _beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
    if a[0] > b[0] * (1 + _TIE):
        return True
    if a[0] < b[0] * (1 - _TIE):
        return False
    return a[1] > b[1] * (1 + _TIE)
