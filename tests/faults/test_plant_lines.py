"""A plant of two lines, each in its own processes, into one platform and one store.

``run: {lines: 2}`` over scenarios/single-machine.yaml: lines ``line-1-1`` and ``line-1-2``
(seeds 7 and 8). Per line one ``iiotbed devices --line`` process and one ``iiotbed gateway
--line`` process (its own OPC UA port, Sparkplug edge node and host id, its own run id);
one Mosquitto, one ``iiotbed platform --scenario <plant>`` on one SQLite store. Each run's
stored counters must equal that line's answer key (replayed from its own event log):
nothing lost, nothing doubled, no line's samples in the other's run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kit import Mosquitto, Testbed
from plant_kit import LineBed, plant_file

pytestmark = pytest.mark.network

START, END = 8 * 3600.0, 11 * 3600.0  # the first shift's first three hours, at 1200x: 9 s
UNTIL = END - 600.0  # the last OPC UA publishing interval may go down with the server
LINES = ("line-1-1", "line-1-2")


def test_two_lines_in_their_own_processes_agree_line_by_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    plant = plant_file(tmp_path / "plant.yaml", 2)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    hub = Testbed(tmp_path / "platform", broker, plant, duration=END, speed=1200.0, store=store)
    (tmp_path / "platform").mkdir()
    beds = [LineBed(tmp_path / line, broker, plant, line, duration=END, speed=1200.0, store=store,
                    api_port=hub.api_port, primary_host=f"iiotbed-gateway-{line}")
            for line in LINES]  # fmt: skip
    try:
        hub.start_platform()
        for bed in beds:
            bed.start_devices()
            out = bed.start_gateway().output()
            assert f"Sparkplug host id iiotbed-gateway-{bed.line}" in out
        assert len({bed.run_id for bed in beds}) == len(beds)  # a run per line
        for bed in beds:
            assert bed.procs["devices"].wait(120) == 0, bed.logs()
        found = []
        for bed in beds:
            got = bed.wait_agreement(START, UNTIL)  # counters exact, line by line
            found.append(got)
            assert got["good_count"] > 0
            # the run holds its own line's stations only
            st = bed.get("/api/kpis", run_id=bed.run_id, start=START, end=UNTIL, by="station")
            assert st["stations"], st
            for path in st["stations"]:
                assert f"/{bed.line}/" in path, (bed.line, path)
        # the two lines draw their own streams (seeds 7 and 8): their runs differ
        assert found[0] != found[1]
        runs = {r["run_id"]: r for r in hub.get("/api/runs")}
        for bed in beds:
            assert runs[bed.run_id]["scenario"].endswith(f" - {bed.line}"), runs[bed.run_id]
    except BaseException:
        print("\n".join([hub.logs(), *(bed.logs() for bed in beds)]))
        raise
    finally:
        for bed in [*beds, hub]:
            bed.close()
