"""What the platform knows about a run's scenario: assets, KPI layout and shift windows.

A run names its scenario file in the store (``RunInfo.scenario_file``); the platform may
also be started with a default scenario for runs it first meets on the wire. Scenarios are
loaded once and cached per file. :meth:`RunCatalog.accepts` says which runs ingest may
store: made-up run ids on the wire are refused, not stored as new runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

from iiotbed.errors import IiotbedError
from iiotbed.platform.layout import Layout
from iiotbed.platform.store.base import AssetInfo, RunInfo, Store

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = ["RunCatalog", "ShiftWindow", "run_info", "scenario_assets", "shift_windows"]

log = logging.getLogger(__name__)

_EPOCH_TOLERANCE_S = 0.002
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def scenario_assets(scenario: Scenario) -> list[AssetInfo]:
    """Every asset of a scenario's line with its identification (identifier, maker, model)."""
    plant = scenario.plant
    line = scenario.line_path
    prefix = plant.id_prefix
    assets = [
        AssetInfo(
            line,
            "line",
            None,
            {
                "identifier": f"{prefix}/{plant.line}",
                "enterprise": plant.enterprise,
                "site": plant.site,
                "area": plant.area,
                "line": plant.line,
                "scenario": scenario.name,
            },
        )
    ]
    for stage in scenario.line.stages:
        assets.append(
            AssetInfo(
                f"{line}/{stage.name}/buffer",
                "buffer",
                stage.name,
                {"identifier": f"{prefix}/{stage.name}-buffer", "capacity": stage.buffer_capacity},
            )
        )
    for stage, name, path in scenario.station_paths():
        assets.append(
            AssetInfo(
                path,
                "station",
                stage.name,
                {
                    # the same identification the OPC UA servers show (OPC 40001-1)
                    "identifier": f"{prefix}/{name}",
                    "Manufacturer": stage.manufacturer or plant.manufacturer,
                    "Model": stage.model,
                    "SerialNumber": f"{plant.line}-{name}",
                    "ProductInstanceUri": f"{prefix}/{name}",
                    "stage_kind": stage.kind,
                    "position": list(stage.position),
                    # ISO 22400 performance's ideal cycle time per product, in s (the
                    # Grafana dashboard's SQL reads it: docker/grafana/)
                    "ideal_cycle_time": {
                        p.name: p.ideal_cycle_time[stage.name] for p in scenario.products
                    },
                },
            )
        )
    assets.append(
        AssetInfo(
            f"{line}/technicians",
            "technicians",
            None,
            {"identifier": f"{prefix}/technicians", "count": scenario.technicians.count},
        )
    )
    supply = scenario.supply
    if supply is not None and supply.mode == "amr" and supply.amr is not None:
        fleet = supply.amr
        for i in range(fleet.count):
            name = f"amr-{i + 1:02d}"
            assets.append(
                AssetInfo(
                    f"{line}/{name}",
                    "amr",
                    None,
                    {
                        "identifier": f"{prefix}/{name}",
                        "Manufacturer": fleet.manufacturer,
                        "Model": fleet.model,
                        "SerialNumber": f"{plant.line}-{name}",
                    },
                )
            )
    return sorted(assets, key=lambda a: a.path)


def run_info(
    scenario: Scenario,
    run_id: str,
    *,
    replication: int = 0,
    speed: float | None = None,
    answer_key: dict[str, Any] | None = None,
    baseline_run_id: str | None = None,
    goal: float | None = None,
    status: str = "running",
) -> RunInfo:
    """A RunInfo describing one run of ``scenario`` (started now)."""
    src = scenario.source_path
    return RunInfo(
        run_id=run_id,
        scenario=scenario.name,
        scenario_file=str(src.resolve()) if src is not None else None,
        epoch=scenario.plant.epoch.isoformat(),
        seed=scenario.run.seed,
        replication=replication,
        speed=speed,
        started=dt.datetime.now(dt.UTC),
        status=status,
        baseline_run_id=baseline_run_id,
        goal=goal,
        answer_key=answer_key,
    )


class ShiftWindow(NamedTuple):
    """One shift occurrence: a label like ``2026-01-05 day`` and its span (s since epoch)."""

    label: str
    start: float
    end: float


def _shift_occurrences(scenario: Scenario, lo: float, hi: float) -> Iterator[ShiftWindow]:
    zone = ZoneInfo(scenario.plant.timezone)
    epoch = scenario.plant.epoch.astimezone(dt.UTC)
    cal = scenario.calendar
    first = (epoch + dt.timedelta(seconds=lo)).astimezone(zone).date() - dt.timedelta(days=1)
    last = (epoch + dt.timedelta(seconds=hi)).astimezone(zone).date()
    day = first
    while day <= last:
        if _WEEKDAYS[day.weekday()] in cal.workdays:
            for shift in cal.shifts:
                local = dt.datetime.combine(day, dt.time(), tzinfo=zone) + dt.timedelta(
                    seconds=shift.start_s
                )
                # subtract in UTC: same-zone subtraction of aware datetimes ignores DST changes
                start = (local.astimezone(dt.UTC) - epoch).total_seconds()
                yield ShiftWindow(f"{day.isoformat()} {shift.name}", start, start + shift.length_s)
        day += dt.timedelta(days=1)


def shift_windows(scenario: Scenario, start: float, end: float) -> list[ShiftWindow]:
    """Shift occurrences of the scenario's calendar overlapping ``[start, end]``, clipped."""
    out = []
    for w in sorted(_shift_occurrences(scenario, start, end), key=lambda w: w.start):
        lo, hi = max(w.start, start), min(w.end, end)
        if hi > lo:
            out.append(ShiftWindow(w.label, lo, hi))
    return out


class RunCatalog:
    """Scenario, layout and assets per run, from the store's run records (cached)."""

    def __init__(self, store: Store, default: Scenario | None = None) -> None:
        self.store = store
        self.default = default
        self._by_file: dict[str, Scenario | None] = {}
        self._layouts: dict[int, Layout] = {}
        self._expected: set[str] = set()
        self._lines: dict[tuple[int, str], Scenario] = {}  # a plant's lines, kept (layout cache)

    def expect(self, *run_ids: str) -> None:
        """Accept these runs on the wire although the store does not describe them yet."""
        self._expected.update(run_ids)

    async def accepts(self, run_id: str, epoch: dt.datetime | None = None) -> bool:
        """Whether ingest may store samples of ``run_id``: a run registered in the store
        (``iiotbed run`` registers its run before the devices start), one named by
        :meth:`expect`, or a run of the default scenario, i.e. whose samples carry that
        scenario's ``epoch`` (read off the payload: ``source_ts - t``), as the samples of a
        gateway started with the same ``--scenario`` do."""
        if run_id in self._expected or await self.store.get_run(run_id) is not None:
            return True
        d = self.default
        if d is None or epoch is None:
            return False
        # source_ts is written to the millisecond: the epoch read back is within 0.5 ms
        return abs((epoch - d.plant.epoch).total_seconds()) <= _EPOCH_TOLERANCE_S

    def _load(self, file: str) -> Scenario | None:
        if file not in self._by_file:
            from iiotbed.scenario import load_scenario

            try:
                self._by_file[file] = load_scenario(Path(file))
            except (IiotbedError, OSError) as exc:
                log.warning("cannot load scenario %s of a stored run: %s", file, exc)
                self._by_file[file] = None
        return self._by_file[file]

    async def scenario(self, run_id: str) -> Scenario | None:
        """The run's scenario: its stored file, else the platform's default scenario."""
        run = await self.store.get_run(run_id)
        if run is not None and run.scenario_file:
            # loading parses YAML: small, once per file, cached
            sc = self._load(run.scenario_file)
            if sc is not None:
                return self._line(sc, run.scenario)
        if self.default is not None and (run is None or run.scenario == self.default.name):
            return self.default
        if self.default is not None and self.default.run.lines > 1 and run is not None:
            line = self._line(self.default, run.scenario)
            return line if line is not self.default else None
        return None

    def _line(self, scenario: Scenario, name: str) -> Scenario:
        """The line of a plant scenario (``run.lines`` > 1) whose scenario name is ``name``
        (``scenario`` itself for a single line or no such line)."""
        if scenario.run.lines == 1:
            return scenario
        key = (id(scenario), name)
        if key not in self._lines:
            from iiotbed.scenario.plant import plant_lines

            found = [sc for sc in plant_lines(scenario) if sc.name == name]
            if not found:
                return scenario
            self._lines[key] = found[0]
        return self._lines[key]

    def default_for(self, asset: str | None) -> Scenario | None:
        """The default scenario of a new run whose data names ``asset``: of a plant scenario,
        the line holding that asset (None: no line does)."""
        d = self.default
        if d is None or d.run.lines == 1:
            return d
        from iiotbed.scenario.plant import line_for_asset

        line = None if asset is None else line_for_asset(d, asset)
        return None if line is None else self._line(d, line.name)

    def layout_of(self, scenario: Scenario) -> Layout:
        key = id(scenario)
        if key not in self._layouts:
            self._layouts[key] = Layout.from_scenario(scenario)
        return self._layouts[key]

    async def layout(self, run_id: str) -> Layout | None:
        sc = await self.scenario(run_id)
        return None if sc is None else self.layout_of(sc)
