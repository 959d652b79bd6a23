"""A plant of several lines: ``run.lines: N`` copies of a scenario's line.

Copy ``i`` (1..N) of line ``L`` is the line ``L-i``: its asset paths
(``<enterprise>/<site>/<area>/L-i/...``), its Sparkplug edge node (``<area>-L-i``), its
scenario name (``<name> - L-i``) and its seed (``seed + i - 1``: the random streams of
:mod:`iiotbed.devices.sim.rng` are keyed by that seed, so the copies draw independent
streams). Everything else (stages, calendar, people, links) is the template's. A scenario
with ``lines: 1`` (the default) is a single line, named as written.

Each copy runs as its own process (``iiotbed devices FILE --line L-i``) and is its own run;
:func:`select_line` picks it, :func:`opcua_port` places its OPC UA servers.
"""

from __future__ import annotations

from pathlib import Path

from iiotbed.errors import ScenarioError, ScenarioIssue
from iiotbed.scenario.models import RunSettings, Scenario

__all__ = [
    "is_plant",
    "line_copy",
    "line_for_asset",
    "line_names",
    "opcua_port",
    "plant_lines",
    "select_line",
    "vda_manufacturer",
]


def is_plant(scenario: Scenario) -> bool:
    """Whether the scenario describes several copies of its line."""
    return scenario.run.lines > 1


def line_names(scenario: Scenario) -> list[str]:
    """The names of the plant's lines, in order (the line's own name when ``lines: 1``)."""
    line = scenario.plant.line
    if not is_plant(scenario):
        return [line]
    return [f"{line}-{i}" for i in range(1, scenario.run.lines + 1)]


def line_copy(scenario: Scenario, index: int) -> Scenario:
    """Copy ``index`` (1-based) of the plant's line as a single-line scenario."""
    n = scenario.run.lines
    if not 1 <= index <= n:
        raise ValueError(f"line index {index} out of 1..{n}")
    if n == 1:
        return scenario
    name = line_names(scenario)[index - 1]
    run = RunSettings.model_validate(
        {**scenario.run.model_dump(), "seed": scenario.run.seed + index - 1, "lines": 1}
    )
    plant = scenario.plant.model_copy(update={"line": name})
    return scenario.model_copy(
        update={
            "name": f"{scenario.name} - {name}",
            "plant": plant,
            "run": run,
            "line_index": index,
        }
    )


def plant_lines(scenario: Scenario) -> list[Scenario]:
    """Every line of the plant as its own scenario (one element for a single line)."""
    return [line_copy(scenario, i) for i in range(1, scenario.run.lines + 1)]


def select_line(scenario: Scenario, name: str | None, path: Path | None = None) -> Scenario:
    """The line ``name`` of the scenario (``None``: the scenario's only line).

    Raises :class:`ScenarioError` (exit status 2 on the command line) for a name that is not
    one of the plant's lines, or for no name when the scenario has several lines.
    """
    names = line_names(scenario)
    shown = ", ".join(names) if len(names) <= 12 else f"{', '.join(names[:12])}, ..."
    if name is None:
        if not is_plant(scenario):
            return scenario
        raise ScenarioError([ScenarioIssue(
            path, None, "run.lines",
            f"this scenario is a plant of {len(names)} lines ({shown}); choose one with "
            "--line NAME (one process per line)",
        )])  # fmt: skip
    if name not in names:
        raise ScenarioError([ScenarioIssue(
            path, None, "--line", f"no line {name!r} in this scenario; its lines are {shown}"
        )])  # fmt: skip
    return line_copy(scenario, names.index(name) + 1)


def line_for_asset(scenario: Scenario, asset: str) -> Scenario | None:
    """The line of the plant whose asset paths hold ``asset`` (None: none of them)."""
    base = scenario.line_path.rsplit("/", 1)[0]
    for i, name in enumerate(line_names(scenario), start=1):
        line = f"{base}/{name}"
        if asset == line or asset.startswith(line + "/"):
            return line_copy(scenario, i)
    return None


def opcua_port(scenario: Scenario, base: int, *, per_machine: bool = False) -> int:
    """The first OPC UA port of a plant's line: ``base`` for line 1, then one port per line
    (one per station of a line with ``per_machine``), so the lines' servers never share one."""
    index = scenario.line_index or 1
    width = sum(len(s.station_names) for s in scenario.line.stages) if per_machine else 1
    return base + (index - 1) * width


def vda_manufacturer(scenario: Scenario) -> str | None:
    """The VDA 5050 manufacturer of a plant's line: ``<fleet manufacturer>-<line>``, so the
    AMRs of two lines (serials ``amr-01``...) have distinct topics; None for a single line
    (the fleet's manufacturer, as today)."""
    supply = scenario.supply
    fleet = supply.amr if supply is not None and supply.mode == "amr" else None
    if scenario.line_index is None or fleet is None:
        return None
    return f"{fleet.manufacturer}-{scenario.plant.line}"
