"""The same scenario run twice through ``iiotbed devices`` + ``iiotbed gateway`` on one buffer.

Before the fix the second gateway forwarded 2 of 1,271 samples: the run id was the same
(``<scenario>-r0``), so the sample ids repeated, and the buffer's dedup memory, kept across
restarts, dropped them as resends without a counter saying so. Now each gateway start has
its own run id, the dedup memory is the run's, and duplicates are counted in the summary.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kit import Mosquitto, Testbed
from kit import testbed as running  # not "test*": pytest would collect it

pytestmark = pytest.mark.network

START, END = 8 * 3600.0, 11 * 3600.0  # the first shift's first three hours, at 1200x: 9 s
# compared up to 10 sim min before the end: the OPC UA values of the devices' last
# publishing interval (0.1 s wall = 2 sim min) may go down with the server, as they would
# in any run that ends; that end is not what this case is about
UNTIL = END - 600.0


def _summary(tb: Testbed) -> dict[str, int]:
    """The counters of the gateway's exit summary of its last start."""
    out = tb.procs["gateway"].output().rsplit("===== start #", 1)[-1]
    found = re.findall(r"^received (\d+), forwarded (\d+), buffered (\d+), dropped (\d+), "
                       r"duplicates (\d+), malformed (\d+)$", out, re.M)  # fmt: skip
    assert found, f"no exit summary in the gateway's output:\n{out[-3000:]}"
    keys = ("received", "forwarded", "buffered", "dropped", "duplicates", "malformed")
    return dict(zip(keys, map(int, found[-1]), strict=True))


def _one_run(tb: Testbed) -> dict[str, int]:
    """Devices and gateway once, to the end; the gateway's summary after it drained."""
    tb.start_devices()
    gw = tb.start_gateway()
    assert tb.procs["devices"].wait(120) == 0
    # the gateway has forwarded all it got once the platform stored the run's last counters
    tb.wait_agreement(START, UNTIL)
    gw.stop()
    return _summary(tb)


def test_a_repeated_run_forwards_everything(tmp_path: Path, broker: Mosquitto) -> None:
    with running(tmp_path, broker, duration=END, speed=1200.0) as tb:
        tb.start_platform()
        first = _one_run(tb)
        first_id, first_stored = tb.run_id, tb.stored_samples()
        assert first["dropped"] == first["malformed"] == first["buffered"] == 0
        # a duplicate within a run is a true resend (the same tag, time and value twice)
        assert first["forwarded"] + first["duplicates"] == first["received"] > 1000, first

        second = _one_run(tb)  # same seed, same buffer file: the same samples again
        assert tb.run_id != first_id  # a run of its own
        assert second["dropped"] == second["malformed"] == second["buffered"] == 0
        assert second["forwarded"] + second["duplicates"] == second["received"] > 1000, second
        assert second["duplicates"] <= first["duplicates"] + 5, (second, first)
        # stored in full under the new run id. Not to the sample: OPC UA delivers the changes
        # of each publishing interval (0.1 s wall, 2 sim min at 1200x), so the samples a run
        # sees vary by a few % with timing while its counters agree exactly (checked above);
        # the bug this guards against forwarded 22 of 1,958
        assert tb.stored_samples() >= 0.9 * first_stored, (tb.stored_samples(), first_stored)
        assert second["forwarded"] >= 0.9 * first["forwarded"], (second, first)
        runs = {r["run_id"] for r in tb.get("/api/runs")}
        assert {first_id, tb.run_id} <= runs
