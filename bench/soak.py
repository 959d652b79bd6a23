"""Soak: the TCL scenario live at 60x for N minutes; memory and lag of every process over time.

Runs ``iiotbed devices``, ``gateway`` and ``platform`` as separate processes against an own
Mosquitto on a free port (the fault suite's kit, ``tests/faults/kit.py``), samples the RSS of
each process (``/proc/<pid>/status``) every ``--every`` seconds, and the lag: the devices'
pacer lag (their progress lines) and the platform's ingest lag (``/api/health``).

Pass: after the warm-up (the first 10 minutes, or the first third of a shorter run), no
process grows by 10 % or more over its RSS at that point, and the lag stays bounded (devices' pacer lag <= ``--max-lag`` s, ingest
lag <= ``--max-ingest-lag`` s, at every sample). At the end the counters are compared with
the answer key (reported, exact when delivery kept up).

Writes an SVG (RSS and lag over wall time) next to ``--out`` and prints a table; exit code 0
on pass, 1 on fail, 2 for a bad option. Run: ``python bench/soak.py --minutes 5``
(issue 10 asks for ``--minutes 60``; CI runs ``--minutes 5`` after the test suites). The
chart is SVG, as every picture of the project (no raster library is a dependency).
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: a sibling bench/<stdlib name>.py (platform.py) would
# shadow the standard library module, so the script's own directory leaves the path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(_HERE).parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault kit: processes, broker, waits

from iiotbed.testbed._svg import Series, line_chart

WARMUP_S = 600.0  # the warm-up: growth counts after the first 10 minutes ...
WARMUP_SHARE = 1 / 3  # ... or after the first third of a shorter run (CI's 5 minutes)


def warmup_s(minutes: float) -> float:
    """Wall seconds before the RSS baseline: the caches and the gateway's dedup memory fill
    in the first minutes (a 60-minute run: 10 minutes; 5 minutes: 100 s)."""
    return min(WARMUP_S, WARMUP_SHARE * minutes * 60.0)


MAX_GROWTH = 0.10  # RSS growth allowed after the warm-up
COLORS = {"devices": "#5b7aa6", "gateway": "#e08a1e", "platform": "#3a8f5c", "mosquitto": "#888"}


@dataclass
class Reading:
    wall_s: float  # since the start of pacing
    rss_mb: dict[str, float]
    devices_lag_s: float | None
    ingest_lag_s: float | None


@dataclass
class Verdict:
    growth: dict[str, float] = field(default_factory=dict)  # after the warm-up, relative
    max_devices_lag: float = 0.0
    max_ingest_lag: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024.0 if m else None


def devices_lag(log: str) -> float | None:
    """The devices' pacer lag from their latest progress line."""
    found = re.findall(r"progress: .*?lag ([0-9.]+) s", log)
    return float(found[-1]) if found else None


def judge(readings: list[Reading], minutes: float, max_lag: float, max_ingest: float) -> Verdict:
    v = Verdict()
    warm = [r for r in readings if r.wall_s >= warmup_s(minutes)]
    if len(warm) < 2:
        v.problems.append(f"only {len(warm)} readings after the warm-up: use a smaller --every")
        return v
    base = warm[0]
    for name, mb in base.rss_mb.items():
        later = [r.rss_mb[name] for r in warm[1:] if name in r.rss_mb]
        if not later:
            v.problems.append(f"{name} ended before the run did")
            continue
        growth = (max(later) - mb) / mb
        v.growth[name] = growth
        if growth >= MAX_GROWTH:
            v.problems.append(f"{name} RSS grew {growth:.1%} after the warm-up ({mb:.1f} -> "
                              f"{max(later):.1f} MB)")  # fmt: skip
    v.max_devices_lag = max((r.devices_lag_s or 0.0) for r in readings)
    v.max_ingest_lag = max((r.ingest_lag_s or 0.0) for r in readings)
    if v.max_devices_lag > max_lag:
        v.problems.append(f"devices' lag reached {v.max_devices_lag:.2f} s (> {max_lag:g} s)")
    if v.max_ingest_lag > max_ingest:
        v.problems.append(f"ingest lag reached {v.max_ingest_lag:.2f} s (> {max_ingest:g} s)")
    return v


def chart(readings: list[Reading], out: Path) -> None:
    """Two line charts, RSS (MB) and lag (s) over wall time (min), in one SVG file."""
    names = list(readings[0].rss_mb) if readings else []
    rss = [
        Series(n, COLORS.get(n, "#222"),
               tuple((r.wall_s / 60.0, r.rss_mb[n]) for r in readings if n in r.rss_mb))
        for n in names
    ]  # fmt: skip
    lag = [
        Series("devices (pacer)", COLORS["devices"],
               tuple((r.wall_s / 60.0, r.devices_lag_s) for r in readings
                     if r.devices_lag_s is not None)),
        Series("platform (ingest)", COLORS["platform"],
               tuple((r.wall_s / 60.0, r.ingest_lag_s) for r in readings
                     if r.ingest_lag_s is not None)),
    ]  # fmt: skip
    top = line_chart(rss, y_label="RSS (MB)").replace("sim time (h)", "wall time (min)")
    bottom = line_chart([s for s in lag if s.points], y_label="lag (s)").replace(
        "sim time (h)", "wall time (min)"
    )
    top = top.replace('<svg class="chart"', '<svg x="0" y="0" class="chart"', 1)
    bottom = bottom.replace('<svg class="chart"', '<svg x="0" y="270" class="chart"', 1)
    out.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="540" '
        'font-family="sans-serif">' + top + bottom + "</svg>\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="paced wall minutes (default 60)")
    ap.add_argument("--speed", type=float, default=60.0, help="sim speed (default 60x)")
    ap.add_argument("--every", type=float, default=None,
                    help="seconds between readings (default: 60, or 10 under 10 minutes)")  # fmt: skip
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "tcl-huizhou-5g.yaml")
    ap.add_argument("--out", type=Path, default=Path("soak.svg"), help="the SVG chart")
    ap.add_argument("--max-lag", type=float, default=1.0, help="devices' pacer lag bound (s)")
    ap.add_argument("--max-ingest-lag", type=float, default=10.0, help="ingest lag bound (s)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, store)")
    args = ap.parse_args(argv)
    every = args.every if args.every is not None else (10.0 if args.minutes < 10 else 60.0)
    if not (args.minutes > 0 and args.speed > 0 and every > 0 and math.isfinite(args.minutes)):
        print(f"soak: --minutes ({args.minutes}), --speed ({args.speed}) and --every ({every}) "
              "must be positive numbers", file=sys.stderr)  # fmt: skip
        return 2
    if not args.scenario.is_file():
        print(f"soak: scenario {args.scenario} not found (expected a YAML file)", file=sys.stderr)
        return 2

    from _pytest.outcomes import OutcomeException
    from kit import Mosquitto, Testbed

    from iiotbed.errors import IiotbedError
    from iiotbed.scenario import load_scenario

    try:
        sc = load_scenario(args.scenario)
    except IiotbedError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    first_shift = min(s.start_s for s in sc.calendar.shifts)
    duration = first_shift + args.minutes * 60.0 * args.speed
    work = Path(tempfile.mkdtemp(prefix="iiotbed-soak-"))
    broker = Mosquitto(work / "broker")
    tb = Testbed(work, broker, args.scenario, duration=duration, speed=args.speed)
    readings: list[Reading] = []
    try:
        broker.start()
        tb.start_all()
        devices = tb.procs["devices"]
        devices.wait_output(r"speed (measuring|\d)", 120)  # paced from here on
        paced = time.monotonic()
        pids = {n: tb.procs[n].pid for n in ("devices", "gateway", "platform")}
        assert broker.proc is not None
        pids["mosquitto"] = broker.proc.pid
        print(f"soak: {sc.name} at {args.speed:g}x for {args.minutes:g} min, a reading every "
              f"{every:g} s; work dir {work}")  # fmt: skip
        next_at = paced
        while devices.alive:
            now = time.monotonic()
            if now >= next_at:
                rss = {n: mb for n, pid in pids.items() if (mb := rss_mb(pid)) is not None}
                try:
                    ingest = float(tb.ingest().get("lag_s") or 0.0)
                except Exception:  # the API busy or restarting: no reading this time
                    ingest = None
                r = Reading(now - paced, rss, devices_lag(devices.output()), ingest)
                readings.append(r)
                cells = "  ".join(f"{n} {mb:6.1f}" for n, mb in rss.items())
                print(f"  {r.wall_s / 60:5.1f} min  RSS MB: {cells}  lag: devices "
                      f"{r.devices_lag_s if r.devices_lag_s is not None else float('nan'):.2f} s, "
                      f"ingest {ingest if ingest is not None else float('nan'):.2f} s", flush=True)
                next_at += every
            time.sleep(min(1.0, max(0.05, next_at - time.monotonic())))
        if devices.wait(30) != 0:
            print(f"soak: the devices failed:\n{devices.tail()}", file=sys.stderr)
            return 1
        try:
            start = first_shift
            got = tb.wait_agreement(start, duration, timeout=120)
            counters = f"counters agree with the answer key (good {got['good_count']:.0f})"
        except OutcomeException as exc:
            counters = f"counters do NOT agree: {str(exc).splitlines()[0][:300]}"
    except OutcomeException as exc:  # the kit's waits fail like a test would
        print(f"soak: {exc}\n{tb.logs()}", file=sys.stderr)
        return 1
    finally:
        stopping: str | None = None
        try:
            tb.close()  # Ctrl-C to each process, in order; one that ignores it fails the soak
        except OutcomeException as exc:
            stopping = str(exc)
            print(f"soak: {stopping}", file=sys.stderr)
        broker.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    v = judge(readings, args.minutes, args.max_lag, args.max_ingest_lag)
    if stopping:
        v.problems.append(stopping.splitlines()[0])
    if readings:
        chart(readings, args.out)
    first = next((r for r in readings if r.wall_s >= warmup_s(args.minutes)), None)
    print()
    print(f"{'process':<10} {'RSS start':>10} {'after warm-up':>14} {'max after':>10} {'growth':>8}")
    for name in readings[0].rss_mb if readings else []:
        series = [r.rss_mb[name] for r in readings if name in r.rss_mb]
        base = first.rss_mb.get(name, math.nan) if first else math.nan
        after = [r.rss_mb[name] for r in readings if first and r.wall_s > first.wall_s
                 and name in r.rss_mb]  # fmt: skip
        print(f"{name:<10} {series[0]:>9.1f}M {base:>13.1f}M {max(after, default=math.nan):>9.1f}M "
              f"{v.growth.get(name, math.nan):>8.1%}")  # fmt: skip
    print(f"max lag: devices {v.max_devices_lag:.2f} s, ingest {v.max_ingest_lag:.2f} s; "
          f"{len(readings)} readings; {counters}")  # fmt: skip
    print(f"chart: {args.out}")
    print("PASS" if v.ok else "FAIL: " + "; ".join(v.problems))
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
