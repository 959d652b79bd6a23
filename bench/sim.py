"""Benchmark: the 5G scenario for one simulated week against a bare SimPy loop.

Events are counted from SimPy's own event ids: every scheduled event takes the next id
(``_simpy.events_processed``), so ids issued minus events still queued at the end = events processed.
This adds no work to the measured run (wrapping ``env.step`` would slow both sides).
The bare loop runs processes that only ``yield env.timeout(...)`` until the same number of
events has been processed, in the same Python process, right after the model.

The model runs as a batch run does (no sink: raw rows kept, records built when read);
the time to build the records afterwards is shown on its own line, outside the ratio, and
beside it the time to hand the rows to the KPI engine as columns (``Factory.columns``,
what a batch run's KPIs read without building records).

Both sides are timed in CPU seconds of this process (``time.process_time``) and in wall
seconds: on a machine shared with other jobs the wall ratio measures the scheduler as much
as the model. The last line, ``ratio <model/bare>``, is the CPU-time ratio; the wall ratio
is printed above it.

Run: ``python bench/sim.py [scenario] [days]``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: bench/platform.py would shadow the standard
# library's `platform` module for every import below. Drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import simpy

from iiotbed.devices.sim import Factory
from iiotbed.devices.sim._simpy import events_processed
from iiotbed.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def processed(env: simpy.Environment) -> int:
    return events_processed(env)  # SimPy's event ids; see devices/sim/_simpy.py


class Timed:
    """Wall and CPU seconds of a ``with`` block."""

    def __enter__(self) -> Timed:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_model(path: Path, days: float) -> tuple[int, Timed, int, float, float]:
    scenario = load_scenario(path)
    factory = Factory(scenario, 0)
    with Timed() as run:
        factory.run(days * 86400.0)
    with Timed() as cols:
        factory.columns()
    with Timed() as recs:
        n_records = len(factory.records)
    return processed(factory.env), run, n_records, recs.cpu, cols.cpu


def run_bare(events: int, procs: int = 12) -> tuple[int, Timed]:
    env = simpy.Environment()
    per = events // procs

    def worker(i: int) -> Generator[simpy.Event, Any, None]:
        d = 1.0 + i / procs  # distinct delays keep the heap busy like a real model
        for _ in range(per):
            yield env.timeout(d)

    for i in range(procs):
        env.process(worker(i))
    with Timed() as bare:
        env.run()
    return processed(env), bare


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "scenarios" / "tcl-huizhou-5g.yaml"
    days = float(sys.argv[2]) if len(sys.argv) > 2 else 7.0
    n_model, model, n_records, cpu_records, cpu_columns = run_model(path, days)
    n_bare, bare = run_bare(n_model)
    model_rate, bare_rate = n_model / model.cpu, n_bare / bare.cpu
    print(f"scenario       {path.name}, {days:g} simulated days, replication 0")
    print(f"model          {n_model} events in {model.cpu:.3f} CPU s = {model_rate:,.0f} events/s "
          f"({model.wall:.3f} s wall)")
    print(f"               {n_records} records ({n_records / model.cpu:,.0f} records/s)")
    print(f"records built  {cpu_records:.3f} CPU s after the run (Factory.records); counting it, "
          f"{n_model / (model.cpu + cpu_records):,.0f} events/s, ratio "
          f"{n_model / (model.cpu + cpu_records) / bare_rate:.3f}")
    print(f"columns        {cpu_columns:.3f} CPU s (Factory.columns: the KPI engine's input, "
          f"no records built)")
    print(f"bare simpy     {n_bare} events in {bare.cpu:.3f} CPU s = {bare_rate:,.0f} events/s "
          f"({bare.wall:.3f} s wall)")
    print(f"simulated week {model.cpu * 7.0 / days:.3f} CPU s ({model.wall * 7.0 / days:.3f} s wall)")
    print(f"wall ratio     {n_model / model.wall / (n_bare / bare.wall):.3f}")
    print(f"ratio {model_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
