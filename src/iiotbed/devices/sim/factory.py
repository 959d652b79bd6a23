"""The factory: builds the line from a scenario, runs it, and exposes station controls."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import simpy

from iiotbed.devices.sim._signals import (
    Context,
    Row,
    record_names,
    records_from,
    sample_names,
    to_record,
)
from iiotbed.devices.sim.calendar import ProductionCalendar
from iiotbed.devices.sim.line import LineModel
from iiotbed.devices.sim.network import LinkModel, LinkUser
from iiotbed.devices.sim.station import Station, StationControl
from iiotbed.devices.sim.supply import AmrControl, AmrSupply, KitStock, ManualCarts, Supplier
from iiotbed.devices.sim.units import Buffer, Crew
from iiotbed.errors import SimulationError
from iiotbed.scenario import Scenario
from iiotbed.telemetry import Record

__all__ = ["Factory", "record_names", "sample_names", "simulate"]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: it rescans the growing lists of acyclic rows and records over
    and over (about a quarter of a batch run's time). Restored afterwards."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class Factory:
    """One replication of a scenario's line as a SimPy model.

    Records go to ``sink`` if given, else to ``records``. ``env`` may be supplied to share
    a clock; its ``now`` must be 0 (the scenario epoch).

    Without a sink the model keeps raw rows and ``records`` builds the records from them
    when read (the rows are the cheap part of a batch run; records are built once).
    """

    def __init__(
        self,
        scenario: Scenario,
        replication: int = 0,
        *,
        sink: Callable[[Record], None] | None = None,
        env: simpy.Environment | None = None,
    ) -> None:
        self.scenario = scenario
        self.replication = replication
        self.env = env if env is not None else simpy.Environment(0.0)
        if self.env.now != 0:
            raise SimulationError(f"the environment must start at 0 (the epoch), it is at {self.env.now}")
        self._rows: list[Any] = []  # rows laid end to end, see _signals
        self._records: list[Record] = []
        self.calendar = ProductionCalendar(scenario)
        emit: Callable[[Row], None]
        if sink is None:
            emit = self._rows.extend
        else:
            def emit(row: Row) -> None:
                sink(to_record(row))
        ctx = Context(self.env, emit, scenario, replication, self.calendar)
        self._ctx = ctx
        line_path = scenario.line_path
        stages = scenario.line.stages
        self.buffers = [Buffer(ctx, f"{line_path}/{s.name}/buffer", s.buffer_capacity) for s in stages]
        self.line = LineModel(ctx, self.buffers[0])
        self.crew = Crew(ctx, f"{line_path}/technicians", scenario.technicians.count)
        links = {n: LinkModel(ctx, n, link) for n, link in scenario.network.links.items()}
        supplier: Supplier | None = None
        supply = scenario.supply
        if supply is not None and supply.mode == "manual" and supply.manual is not None:
            supplier = ManualCarts(ctx, supply.manual, supply.warehouse_position)
        elif supply is not None and supply.amr is not None:
            amr_link = (LinkUser(ctx, links[supply.amr.link], f"{line_path}/amr-dispatch")
                        if supply.amr.link else None)
            supplier = AmrSupply(ctx, supply.amr, supply.warehouse_position, line_path, amr_link)
        self.supplier = supplier
        self._stations: list[Station] = []
        stocks: list[KitStock] = []
        for i, stage in enumerate(stages):
            outbuf = self.buffers[i + 1] if i + 1 < len(stages) else None
            for name in stage.station_names:
                path = f"{line_path}/{stage.name}/{name}"
                kits = None
                if stage.kits is not None:
                    if supplier is None:
                        raise SimulationError(f"stage {stage.name!r} has kits but no supply")
                    kits = KitStock(ctx, path, stage.kits, stage.position, supplier)
                    stocks.append(kits)
                insp = stage.inspection
                link = (LinkUser(ctx, links[insp.link], path)
                        if insp is not None and insp.method == "vision" and insp.link else None)
                st = Station(ctx, self.line, stage, i, name, path, self.buffers[i], outbuf,
                             self.crew, kits, link)
                self._stations.append(st)
        self.line.stations = self._stations
        for k in stocks:
            k.start()
        self.stations: dict[str, StationControl] = {
            s.path: StationControl(s) for s in self._stations
        }
        self.amrs: dict[str, AmrControl] = (
            {a.name: AmrControl(supplier, a) for a in supplier.amrs}
            if isinstance(supplier, AmrSupply) else {}
        )

    @property
    def records(self) -> list[Record]:
        """Records emitted so far, in order (empty when a sink was given).

        The same list object every time, extended with the records emitted since the last read.
        """
        rows, out = self._rows, self._records
        if 3 * len(out) < len(rows):
            with _gc_paused():
                out.extend(records_from(rows, 3 * len(out)))
        return out

    @property
    def record_count(self) -> int:
        """Records emitted so far (0 when a sink was given), without building them."""
        return len(self._rows) // 3

    def columns(self) -> tuple[list[float], list[Any], list[Any]]:
        """The records emitted so far as columns ``(times, keys, values)``, without building
        them (empty when a sink was given).

        ``sample_names(key)`` is a sample's ``(asset, tag)``, None for an event (whose value
        is its fields): what ``platform.kpi.compute_kpis_columns`` reads, about four times
        faster than building the records and feeding them. ``record_names(key)`` is what
        ``eventlog.write_event_log_columns`` reads to write the event log from them.
        """
        rows = self._rows
        return rows[0::3], rows[1::3], rows[2::3]

    def station(self, path: str) -> StationControl:
        """The control of the station at asset ``path`` (or its bare name)."""
        if path in self.stations:
            return self.stations[path]
        for s in self._stations:
            if s.name == path:
                return self.stations[s.path]
        known = ", ".join(self.stations)
        raise SimulationError(f"no station {path!r} in scenario {self.scenario.name!r}; known: {known}")

    def amr(self, name: str) -> AmrControl:
        """The control of the AMR ``name`` (``amr-01``) or at asset path ``name``."""
        for a in self.amrs.values():
            if name in (a.name, a.path):
                return a
        known = ", ".join(self.amrs) or "none: the scenario has no AMR fleet"
        raise SimulationError(f"no AMR {name!r} in scenario {self.scenario.name!r}; known: {known}")

    @property
    def wip(self) -> int:
        """Units inside the line now (in buffers or at stations)."""
        return sum(len(b.items) for b in self.buffers) + sum(
            1 for s in self._stations if s.unit is not None)

    def run(self, until: float | None = None) -> None:
        """Advance to sim time ``until`` (default ``scenario.run.duration``)."""
        end = self.scenario.run.duration if until is None else until
        if end > self.env.now:
            with _gc_paused():
                self.env.run(until=end)
        for s in self._stations:
            s.flush_energy()


def simulate(scenario: Scenario, replication: int = 0, *, duration: float | None = None) -> list[Record]:
    """Run one replication for ``duration`` s (default ``scenario.run.duration``); its records."""
    factory = Factory(scenario, replication)
    factory.run(duration)
    return factory.records
