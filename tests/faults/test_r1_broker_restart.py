"""R1: the broker ``kill -9`` mid-run and started again on the same port.

Must hold: every client (devices' Sparkplug edge node, the gateway's collectors and UNS
publisher, the platform's ingest) reconnects within 5 s of the broker's return, the edge
node births again, and the counters agree exactly with the answer key.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kit import Mosquitto, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

pytestmark = pytest.mark.network

SPEED = 600.0
START, END = 8 * 3600.0, 10 * 3600.0
UNTIL = END - 600.0  # the devices' last publishing interval may go down with them
OUTAGE_S = 3.0


def _count(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def _births(broker: Mosquitto) -> int:
    """Sparkplug births the gateway's host has seen, from its retained metrics (published
    every 5 s; the broker restart lost the old retained copy)."""
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        pytest.skip("mosquitto_sub is not installed")
    out = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "uns/_gateway/+/metrics",
         "-C", "1", "-W", "3"], capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return int(json.loads(out.stdout)["collectors"]["sparkplug"]["births"])


@pytest.mark.xfail(
    strict=False,
    reason="open (issue 10, F3's edge node): after the broker's return the Sparkplug edge's "
    "line counters resumed only ~6 s wall later in 2 of 3 runs (GoodCount stored to "
    "t=32207, Bad mark, next value at t=35813 at 600x), so good_count trails the answer key",
)
def test_broker_restart_everyone_reconnects_nothing_lost(tmp_path: Path, broker: Mosquitto) -> None:
    with running(tmp_path, broker, duration=END, speed=SPEED) as tb:
        tb.start_platform()
        tb.start_devices()
        gw = tb.start_gateway()
        wait_for(lambda: tb.ingest()["stored"] > 300, 60, "the first samples stored")
        connects = _count(gw.output(), r"UNS publisher connected")
        births = wait_for(lambda: _births(broker), 15.0, "the host's first births")
        broker.kill()
        time.sleep(OUTAGE_S)
        broker.start()
        back = time.monotonic()
        # the UNS publisher, the platform's ingest: connected again within 5 s
        wait_for(lambda: _count(gw.output(), r"UNS publisher connected") > connects, 5.0,
                 "the gateway's UNS publisher to reconnect", interval=0.05)  # fmt: skip
        wait_for(lambda: tb.ingest()["connected"], 5.0, "the platform to reconnect", interval=0.05)
        took = time.monotonic() - back
        # the edge node births again for the host (STATE online) on the new broker
        wait_for(lambda: _births(broker) > births, 15.0, "a Sparkplug rebirth after the restart")
        assert tb.procs["devices"].wait(120) == 0
        tb.wait_agreement(START, UNTIL)
        print(f"R1: gateway and platform reconnected {took:.2f} s after the broker's return")
