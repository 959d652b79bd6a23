"""Benchmark: ``iiotbed compare -n 30 -d 7d`` (60 replications of a week) against the ideal.

In the same run:

1. one replication of each scenario (replication 0 of the baseline and of the 5G upgrade),
   one after the other in this process: ``t1``, their mean;
2. the command itself, as a user runs it (a new process: start-up, scenario loading, the
   process pool or the Dask cluster, the statistics, the JSON), timed from outside;
3. the ideal: ``t1 x 60 / cores`` (cores: the local pool's workers, or ``--cores`` for a
   cluster), and the overhead of the command over it in %; with the local pool also the
   CPU time of the command and its workers / cores, which other jobs on the machine do
   not inflate.

The workers' own time per replication (``wall_s`` of every result, from an in-process run
of the same jobs) tells load imbalance and start-up apart from slower replications: the
in-process wall time = sum(wall_s) / cores + what the pool itself costs. On a machine
busy with other jobs, t1 (measured alone, at one moment) and the command's time (at
another) see different loads; the pool's own overhead, from one interval, does not.

Run: ``python bench/replications.py [-n 30] [-d 7d] [--executor dask://HOST:PORT --cores N]
[--skip-inprocess]``; the last line is ``wall <s> ideal <s> overhead <%>``.
"""

from __future__ import annotations

import os
import sys

# Run as a script, bench/ is sys.path[0]: bench/platform.py would shadow the standard
# library's `platform` module for every import below. Drop this folder from the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import resource
import statistics
import subprocess
import time
from pathlib import Path

from iiotbed.scenario import load_scenario, parse_duration
from iiotbed.testbed.experiment import default_workers, run_replication, run_replications

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scenarios" / "tcl-huizhou-baseline.yaml"
UPGRADE = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="replications per scenario")
    ap.add_argument("-d", default="7d", help="simulated time per replication")
    ap.add_argument("--executor", default=None, help="dask://HOST:PORT (default: local pool)")
    ap.add_argument("--cores", type=int, default=None, help="cores of the cluster's workers")
    ap.add_argument("--skip-inprocess", action="store_true", help="skip step 4 (wall_s)")
    args = ap.parse_args()
    duration = float(parse_duration(args.d))
    cores = args.cores or default_workers()

    base = load_scenario(BASELINE).with_run(duration=duration, replications=args.n)
    upg = load_scenario(UPGRADE).with_run(duration=duration, replications=args.n)

    # 1. one replication of each, serially, in this process
    singles = []
    for sc in (base, upg):
        t0 = time.perf_counter()
        run_replication(sc, 0)
        singles.append(time.perf_counter() - t0)
    t1 = statistics.fmean(singles)
    print(
        f"one replication of {args.d}: baseline {singles[0]:.2f} s, upgrade {singles[1]:.2f} s "
        f"(mean t1 {t1:.2f} s)"
    )

    # 2. the command, as a user runs it
    cmd = [
        sys.executable, "-c", "from iiotbed.cli import main; main()", "compare",
        str(BASELINE), str(UPGRADE), "-n", str(args.n), "-d", args.d, "--json",
    ]  # fmt: skip
    if args.executor:
        cmd += ["--executor", args.executor]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the command and of its pool's workers (reaped by it): what a machine with the
    # cores to itself would spend, whatever else runs here meanwhile
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        sys.exit(f"compare failed ({res.returncode}):\n{res.stderr}")
    verdict = json.loads(res.stdout)["verdict"]
    jobs = 2 * args.n
    ideal = t1 * jobs / cores
    print(
        f"compare -n {args.n} -d {args.d} ({jobs} replications, "
        f"{args.executor or f'local pool of {cores}'}): {wall:.1f} s, verdict {verdict}"
    )
    if not args.executor:
        print(
            f"  CPU time of the command and its workers: {cpu:.1f} s, / {cores} cores = "
            f"{cpu / cores:.1f} s (its wall time on idle cores, at best)"
        )

    # 3. where the time goes: the workers' own time per replication, same jobs
    own = ""
    if not args.skip_inprocess:
        t0 = time.perf_counter()
        results = run_replications(
            [(base, i) for i in range(args.n)] + [(upg, i) for i in range(args.n)],
            executor=args.executor,
        )
        inproc = time.perf_counter() - t0
        busy = sum(r.wall_s for r in results)
        print(
            f"in-process run of the same jobs: {inproc:.1f} s; replications' own time "
            f"{busy:.1f} s in all (mean {busy / jobs:.2f} s, vs t1 {t1:.2f} s serially), "
            f"/ {cores} cores = {busy / cores:.1f} s"
        )
        print(
            f"  command - in-process run = {wall - inproc:.1f} s (start-up, loading, stats, "
            f"and any change of load between the two); in-process run - busy/cores = "
            f"{inproc - busy / cores:.1f} s (pool, tail)"
        )
        # measured over one interval, so a machine busy with other jobs slows both alike
        own = f" (the pool's own, in-process: {100 * (inproc / (busy / cores) - 1):.1f} %)"
    print(f"wall {wall:.1f} ideal {ideal:.1f} overhead {100 * (wall / ideal - 1):.1f} %{own}")


if __name__ == "__main__":
    main()
