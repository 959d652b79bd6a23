"""A plant of N lines live on this machine: does every line keep pace?

``run: {lines: N}`` over a scenario (default scenarios/single-machine.yaml); per line one
``iiotbed devices --line`` process (its OPC UA server, Sparkplug edge node) and one
``iiotbed gateway --line`` process (its own Sparkplug host, which the line's devices wait
for: ``--wait-for-host``); one ``iiotbed platform`` on one store; an own Mosquitto on a free
port (the fault kit, ``tests/faults/kit.py``). A baseline, one line alone on the same
machinery, runs first in the same invocation.

Prints per line the devices' pacing (achieved speed, max pacer lag from their summary) and
endpoint figures (OPC UA writes, Sparkplug messages), the gateway's figures (received,
forwarded, max UNS publish lag from its retained metrics), the samples/s the platform
stored while the lines were paced, and CPU seconds per kind of process. Pass: every
line's max lag < ``--max-lag`` (1 s). Exit code 0 pass, 1 fail, 2 bad option.

Run: ``python bench/plant.py [--lines 10] [--speed 60] [--minutes 2]``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: a sibling bench/platform.py would shadow the
# standard library module, so the script's own directory leaves the path first.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import math
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(_HERE).parent
sys.path.insert(0, str(ROOT / "tests" / "faults"))  # the fault kit: processes, broker, waits

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class LineFigures:
    line: str
    speed: float | None = None  # achieved, last progress line (sim s per wall s)
    max_lag_s: float | None = None  # the devices' summary: max pacer lag
    opcua_writes: int = 0
    sparkplug: int = 0
    records: int = 0
    gw_received: int = 0
    gw_forwarded: int = 0
    gw_max_lag_s: float = 0.0  # the gateway's UNS publish lag, max over its metrics


@dataclass
class PlantFigures:
    lines: list[LineFigures] = field(default_factory=list)
    paced_s: float = 0.0  # wall seconds from the last line paced to the last line ended
    stored: int = 0  # samples the platform stored in that window
    cpu_s: dict[str, float] = field(default_factory=dict)  # kind -> CPU seconds
    start_s: float = 0.0  # wall seconds to start every process

    @property
    def rate(self) -> float:
        return self.stored / self.paced_s if self.paced_s > 0 else math.nan

    @property
    def worst_lag(self) -> float:
        return max((f.max_lag_s if f.max_lag_s is not None else math.inf) for f in self.lines)


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (/proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


class GatewayMetrics:
    """The gateways' retained metrics (``<root>/_gateway/<id>/metrics``), latest and max lag."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.latest: dict[str, dict[str, Any]] = {}
        self.max_lag: dict[str, float] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plant")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("uns/_gateway/+/metrics", 0)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            m = json.loads(msg.payload)
        except ValueError:
            return
        gid = str(m.get("id"))
        with self._lock:
            self.latest[gid] = m
            self.max_lag[gid] = max(self.max_lag.get(gid, 0.0), float(m.get("lag_s") or 0.0))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _summary(out: str) -> dict[str, float]:
    text = out.rsplit("===== start #", 1)[-1]
    got: dict[str, float] = {}
    for key, pattern in {
        "max_lag": r"max lag: ([0-9.]+) s",
        "records": r"records: (\d+)",
        "opcua": r"messages: (\d+) OPC UA writes",
        "spb": r"OPC UA writes, (\d+) Sparkplug",
    }.items():
        m = re.search(pattern, text)
        if m:
            got[key] = float(m.group(1))
    speeds = re.findall(r"speed ([0-9,]+)x of", text)
    if speeds:
        got["speed"] = float(speeds[-1].replace(",", ""))
    return got


def run_plant(
    plant: Path, lines: list[str], *, work: Path, minutes: float, speed: float, store: str | None
) -> PlantFigures:
    """Run ``lines`` of ``plant`` live (devices and gateway per line, one platform)."""
    from kit import Mosquitto, Proc, Testbed, free_port, wait_for

    from iiotbed.scenario import load_scenario

    sc = load_scenario(plant)
    first_shift = min(s.start_s for s in sc.calendar.shifts)
    duration = first_shift + minutes * 60.0 * speed
    broker = Mosquitto(work / "broker").start()
    store = store or f"sqlite:///{work / 'store.db'}"
    hub = Testbed(work, broker, plant, duration=duration, speed=speed, store=store)
    metrics = GatewayMetrics(broker.port)
    devices: dict[str, Proc] = {}
    gateways: dict[str, Proc] = {}
    cpu: dict[tuple[str, str], float] = {}
    figures = PlantFigures()
    t0 = time.monotonic()
    try:
        platform = hub.start_platform()
        for line in lines:
            port = free_port()  # the line's OPC UA server
            d = work / line
            d.mkdir()
            host = f"iiotbed-gateway-{line}"
            devices[line] = Proc(f"devices-{line}", [*_cli(), "devices", str(plant), "--line",
                                 line, "--speed", f"{speed:g}", "--duration", f"{duration:g}s",
                                 "--broker", broker.url, "--opcua-port", str(port),
                                 "--primary-host", host, "--wait-for-host"],
                                 d / "devices.log").start()  # fmt: skip
            gateways[line] = Proc(f"gateway-{line}", [*_cli(), "gateway", "--scenario", str(plant),
                                  "--line", line, "--broker", broker.url, "--opcua-port",
                                  str(port), "--buffer", str(d / "gateway.db")],
                                  d / "gateway.log")  # fmt: skip
        for line in lines:
            devices[line].wait_output(r"live at", 180)
        for line in lines:
            gateways[line].start()
        for line in lines:
            gateways[line].wait_output(r"\(run \S+\)", 180)
        for line in lines:  # paced from here on
            devices[line].wait_output(r"speed (measuring|\d)", 180)
        paced = time.monotonic()
        figures.start_s = paced - t0
        stored0 = int(hub.ingest()["stored"])
        procs = {("platform", "platform"): platform}
        procs.update({("devices", n): p for n, p in devices.items()})
        procs.update({("gateway", n): p for n, p in gateways.items()})
        while any(p.alive for p in devices.values()):
            for key, p in procs.items():
                c = cpu_s(p.pid) if p.alive else None
                if c is not None:
                    cpu[key] = c
            time.sleep(0.5)
        ended = time.monotonic()
        for line, p in devices.items():
            if p.wait(30) != 0:
                raise RuntimeError(f"the devices of {line} failed:\n{p.tail()}")
        # what the lines published is stored: the ingest drained
        wait_for(lambda: hub.ingest()["pending"] == 0, 60, "the ingest to drain")
        figures.paced_s = ended - paced
        figures.stored = int(hub.ingest()["stored"]) - stored0
        for key, p in procs.items():
            if p.alive and (c := cpu_s(p.pid)) is not None:
                cpu[key] = c
        for line in lines:
            gateways[line].stop(30)
            s = _summary(devices[line].output())
            g = re.findall(r"received (\d+), forwarded (\d+)", gateways[line].output())
            gid = f"gw-{line}"
            figures.lines.append(LineFigures(
                line, s.get("speed"), s.get("max_lag"), int(s.get("opcua", 0)),
                int(s.get("spb", 0)), int(s.get("records", 0)),
                int(g[-1][0]) if g else 0, int(g[-1][1]) if g else 0,
                metrics.max_lag.get(gid, math.nan),
            ))  # fmt: skip
        for (kind, _), c in cpu.items():
            figures.cpu_s[kind] = figures.cpu_s.get(kind, 0.0) + c
    except BaseException:
        print(hub.logs(), file=sys.stderr)
        for p in [*devices.values(), *gateways.values()]:
            print(f"--- {p.name}\n{p.tail(15)}", file=sys.stderr)
        raise
    finally:
        from _pytest.outcomes import OutcomeException

        metrics.close()
        for p in [*devices.values(), *gateways.values(), *hub.procs.values()]:
            try:
                p.stop(20)  # Ctrl-C; kill -9 after 20 s (the kit then fails: noted here)
            except OutcomeException:
                print(f"plant: {p.name} ignored Ctrl-C for 20 s (killed); log {p.log}",
                      file=sys.stderr)  # fmt: skip
        broker.kill()
    return figures


def _cli() -> list[str]:
    from kit import CLI

    return list(CLI)


def report(name: str, f: PlantFigures, n_lines: int) -> None:
    print(f"\n{name}: {n_lines} line(s), paced for {f.paced_s:.1f} s of wall time "
          f"(all processes up and paced after {f.start_s:.1f} s)")  # fmt: skip
    print(f"{'line':<12} {'speed':>7} {'max lag':>8} {'OPC UA':>8} {'Sparkplug':>9} "
          f"{'gw recv':>8} {'gw fwd':>8} {'gw lag':>7}")  # fmt: skip
    for x in f.lines:
        sp = "n/a" if x.speed is None else f"{x.speed:.1f}x"
        lag = "n/a" if x.max_lag_s is None else f"{x.max_lag_s:.3f}"
        print(f"{x.line:<12} {sp:>7} {lag:>8} {x.opcua_writes:>8} {x.sparkplug:>9} "
              f"{x.gw_received:>8} {x.gw_forwarded:>8} {x.gw_max_lag_s:>7.3f}")  # fmt: skip
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(f.cpu_s.items()))
    print(f"stored {f.stored} samples: {f.rate:.1f} samples/s; CPU: {cpu}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=10, help="lines of the plant (default 10)")
    ap.add_argument("--speed", type=float, default=60.0, help="sim speed (default 60x)")
    ap.add_argument("--minutes", type=float, default=2.0, help="wall minutes paced (default 2)")
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "single-machine.yaml")
    ap.add_argument("--store", default=None, help="the platform's store (default: SQLite)")
    ap.add_argument("--max-lag", type=float, default=1.0, help="pass bound of the pacer lag (s)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-line baseline")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, store)")
    args = ap.parse_args(argv)
    # the processes are stopped by Ctrl-C: started in the background (nohup ... &), this
    # script and its children would ignore it; a handler of our own resets theirs at exec
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not (1 <= args.lines <= 200 and args.speed > 0 and 0 < args.minutes < 1e4):
        print(f"plant: --lines ({args.lines}) must be 1..200, --speed ({args.speed}) and "
              f"--minutes ({args.minutes}) positive", file=sys.stderr)  # fmt: skip
        return 2
    if not args.scenario.is_file():
        print(f"plant: scenario {args.scenario} not found (expected a YAML file)", file=sys.stderr)
        return 2
    from _pytest.outcomes import OutcomeException

    work = Path(tempfile.mkdtemp(prefix="iiotbed-plant-"))
    plant = work / "plant.yaml"
    # (at least 2: one line alone is the first line of a plant, as in the baseline)
    plant.write_text(f"extends: {args.scenario.resolve()}\nrun: {{lines: {max(2, args.lines)}}}\n")
    from iiotbed.scenario import load_scenario
    from iiotbed.scenario.plant import line_names

    lines = line_names(load_scenario(plant))[: args.lines]
    print(f"plant: {args.lines} x {args.scenario.name} at {args.speed:g}x for "
          f"{args.minutes:g} min; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"work dir {work}", flush=True)  # fmt: skip
    try:
        base = None
        if not args.no_baseline:
            (work / "baseline").mkdir()
            base = run_plant(plant, lines[:1], work=work / "baseline", minutes=args.minutes,
                             speed=args.speed, store=args.store)  # fmt: skip
            report("baseline (one line alone)", base, 1)
        (work / "plant").mkdir()
        f = run_plant(plant, lines, work=work / "plant", minutes=args.minutes, speed=args.speed,
                      store=args.store)  # fmt: skip
        report(f"plant of {len(lines)} lines", f, len(lines))
    except (OutcomeException, RuntimeError) as exc:
        print(f"plant: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    if base is not None:
        per_line = f.rate / len(lines)
        print(f"samples/s stored: plant {f.rate:.1f} ({per_line:.1f} per line), one line alone "
              f"{base.rate:.1f}: {per_line / base.rate:.2f} of the baseline per line")  # fmt: skip
        print(f"worst max lag: plant {f.worst_lag:.3f} s, one line alone {base.worst_lag:.3f} s; "
              f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    ok = f.worst_lag < args.max_lag
    print("PASS: every line kept pace" if ok else
          f"FAIL: a line's lag reached {f.worst_lag:.3f} s (>= {args.max_lag:g} s)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
