"""Benchmark: the 5G scenario for one simulated week against a bare SimPy loop.

Events are counted from SimPy's own event ids: every scheduled event takes the next id
(``_simpy.events_processed``), so ids issued minus events still queued at the end = events processed.
This adds no work to the measured run (wrapping ``env.step`` would slow both sides).
The bare loop runs processes that only ``yield env.timeout(...)`` until the same number of
events has been processed, in the same Python process, right after the model.

The model runs as a batch run does (no sink: raw rows kept, records built when read);
the time to build the records afterwards is shown on its own line, outside the ratio.

Run: ``python bench/sim.py [scenario] [days]``; the last line is ``ratio <model/bare>``.
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


def run_model(path: Path, days: float) -> tuple[int, float, int, float]:
    scenario = load_scenario(path)
    factory = Factory(scenario, 0)
    t0 = time.perf_counter()
    factory.run(days * 86400.0)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    n_records = len(factory.records)
    return processed(factory.env), wall, n_records, time.perf_counter() - t1


def run_bare(events: int, procs: int = 12) -> tuple[int, float]:
    env = simpy.Environment()
    per = events // procs

    def worker(i: int) -> Generator[simpy.Event, Any, None]:
        d = 1.0 + i / procs  # distinct delays keep the heap busy like a real model
        for _ in range(per):
            yield env.timeout(d)

    for i in range(procs):
        env.process(worker(i))
    t0 = time.perf_counter()
    env.run()
    return processed(env), time.perf_counter() - t0


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "scenarios" / "tcl-huizhou-5g.yaml"
    days = float(sys.argv[2]) if len(sys.argv) > 2 else 7.0
    n_model, wall_model, n_records, wall_records = run_model(path, days)
    n_bare, wall_bare = run_bare(n_model)
    model_rate, bare_rate = n_model / wall_model, n_bare / wall_bare
    print(f"scenario       {path.name}, {days:g} simulated days, replication 0")
    print(f"model          {n_model} events in {wall_model:.3f} s = {model_rate:,.0f} events/s")
    print(f"               {n_records} records ({n_records / wall_model:,.0f} records/s)")
    print(f"records built  {wall_records:.3f} s after the run (Factory.records); counting it, "
          f"{n_model / (wall_model + wall_records):,.0f} events/s, ratio "
          f"{n_model / (wall_model + wall_records) / bare_rate:.3f}")
    print(f"bare simpy     {n_bare} events in {wall_bare:.3f} s = {bare_rate:,.0f} events/s")
    print(f"simulated week {wall_model * 7.0 / days:.3f} s wall")
    print(f"ratio {model_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
