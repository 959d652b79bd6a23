"""Lab 6 reference solution: availability, performance and quality of one station from
the platform's raw samples (ISO 22400-2, the rules of docs/kpis.md), set beside /api/kpis.

Waits until the line is back from its first meal break, takes the window from the start of
production to 30 sim minutes after the break, reads the station's and the line's samples
(/api/series), integrates the states over the window and takes the counters' deltas.
"""

import json
import os
import time
import urllib.parse
import urllib.request
from bisect import bisect_right
from itertools import pairwise

from iiotbed.scenario import load_scenario

API = os.environ.get("IIOTBED_API", "http://127.0.0.1:8000")
RUN_ID = os.environ.get("IIOTBED_RUN_ID")  # None: the newest run
STATION = os.environ.get("IIOTBED_LAB_STATION", "bonder-01")
SCENARIO = os.environ.get("IIOTBED_SCENARIO", "scenarios/tcl-huizhou-5g.yaml")
SPEED = float(os.environ.get("IIOTBED_SPEED", "300"))
AFTER_BREAK = 1800.0  # sim s of production after the break in the window
PATIENCE = 60.0  # wall seconds to wait for anything before giving up

# the numbers the tags carry (OPC 40001-1, the line's calendar state)
PRODUCTION, BREAK = 1, 2  # PlannedState
EXECUTING = 3  # MachineryItemState
MAINTENANCE, SETUP = 1, 2  # MachineryOperationMode


def get(path, **params):
    """GET the platform's API as JSON."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    with urllib.request.urlopen(f"{API}{path}?{query}", timeout=10) as resp:
        return json.loads(resp.read())


def series(run_id, asset, tag, limit=1_000_000, **params):
    """Every stored point [t, value] of one tag (value None: a Bad sample)."""
    return get("/api/series", asset=asset, tag=tag, run_id=run_id, limit=limit, **params)["points"]


def poll(find, what, limit_s):
    """Call ``find()`` until it returns something; give up after ``limit_s`` wall s."""
    deadline = time.monotonic() + limit_s
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"waited {limit_s:g} s for {what} in vain")
        time.sleep(0.1)


def first_break(planned):
    """(start of production, end of its first break) from the line's PlannedState points."""
    start = None
    for (t, value), (t_next, value_next) in pairwise(planned):
        if value == PRODUCTION and start is None:
            start = t
        if start is not None and value == BREAK and value_next == PRODUCTION:
            return start, t_next
    return None


def value_at(points, t):
    """The state at time t: the last sample at or before t (None: unknown or Bad)."""
    i = bisect_right([p[0] for p in points], t)
    return points[i - 1][1] if i else None


def planned_busy(planned, item):
    """PBT: the line in Production and the station's state known. Breaks and planned
    maintenance are planned downtime: outside PBT."""
    return planned == PRODUCTION and item is not None


def integrate(t0, t1, planned, item, mode):
    """PBT and APT (s) over [t0, t1]: the states are step functions between samples."""
    cuts = {t0, t1} | {t for points in (planned, item, mode) for t, _ in points if t0 < t < t1}
    pbt = apt = 0.0
    for a, b in pairwise(sorted(cuts)):
        p, i, m = value_at(planned, a), value_at(item, a), value_at(mode, a)
        if planned_busy(p, i):
            pbt += b - a
            if i == EXECUTING and m not in (SETUP, MAINTENANCE):  # an unknown mode is no block
                apt += b - a
    return pbt, apt


def delta(points, t0, t1):
    """A counter's delta: its value at t1 minus its value at t0 (0 before its first value);
    a counter never goes back, so the highest value so far is its value."""

    def at(t):
        values = [v for s, v in points if s <= t and v is not None]
        return max(values, default=0.0)

    return at(t1) - at(t0)


def main(window=None):
    scenario = load_scenario(SCENARIO)  # extends resolved: the ideal cycle times in force
    stage, asset = next((st.name, path) for st, name, path in scenario.station_paths() if name == STATION)
    line = asset.rsplit("/", 2)[0]
    runs = get("/api/runs")
    run_id = next((r["run_id"] for r in runs if r["run_id"] == RUN_ID), runs[-1]["run_id"])

    if window is None:
        # the window: from the start of production to AFTER_BREAK past the first meal break
        t0, back = poll(lambda: first_break(series(run_id, line, "PlannedState")),
                        "the line's first break", PATIENCE + 6 * 3600 / SPEED)
        t1 = back + AFTER_BREAK
        # everything up to t1 is stored once a sample after it is (one OPC UA session,
        # in order): wait for the station's counter or state to move past t1
        poll(lambda: any(series(run_id, asset, tag, start=t1 + 60.0, limit=1)
                         for tag in ("ProcessedCount", "MachineryItemState")) or None,
             f"the station's samples past sim {t1:g} s", PATIENCE + 2 * AFTER_BREAK / SPEED)
    else:
        t0, t1 = window
    end = t1 + 1e-6  # /api/series answers [start, end)
    planned = series(run_id, line, "PlannedState", end=end)
    item = series(run_id, asset, "MachineryItemState", end=end)
    mode = series(run_id, asset, "MachineryOperationMode", end=end)
    pbt, apt = integrate(t0, t1, planned, item, mode)

    # performance: the ideal time of what was made (per product) over APT
    ideal = {p.name: p.ideal_cycle_time[stage] for p in scenario.products}
    made = {p: delta(series(run_id, asset, f"ProcessedCount/{p}", end=end), t0, t1) for p in ideal}
    processed = max(delta(series(run_id, asset, "ProcessedCount", end=end), t0, t1), sum(made.values()))
    mix = {p.name: p.mix for p in scenario.products}
    rest = processed - sum(made.values())  # units without a per-product count
    ideal_s = sum(ideal[p] * n for p, n in made.items())
    ideal_s += rest * sum(ideal[p] * mix[p] for p in ideal) / sum(mix.values())
    defective = delta(series(run_id, asset, "DefectiveCount", end=end), t0, t1)

    availability = apt / pbt
    performance = ideal_s / apt
    quality = max(0.0, (processed - defective) / processed)
    oee = availability * performance * quality

    platform = get("/api/kpis", by="station", start=t0, end=t1, run_id=run_id)["stations"][asset]
    print(f"{STATION} [{t0:g}, {t1:g}] sim s: PBT {pbt / 3600:.3f} h, APT {apt / 3600:.3f} h, "
          f"{processed:g} made, {defective:g} defective")
    for key, mine in (("availability", availability), ("performance", performance),
                      ("quality", quality), ("oee", oee)):
        print(f"  {key:<12} mine {mine:.4f}   /api/kpis {platform[key]:.4f}")
    print(json.dumps({"station": STATION, "t0": t0, "t1": t1, "pbt_h": pbt / 3600,
                      "apt_h": apt / 3600, "processed": processed, "defective": defective,
                      "availability": availability, "performance": performance,
                      "quality": quality, "oee": oee}))


if __name__ == "__main__":
    main()
