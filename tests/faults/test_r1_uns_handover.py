"""R1 on ONE broker without persistence: the UNS hand-over survives a ``kill -9``.

Devices, gateway and platform share one Mosquitto that keeps nothing across a restart (no
sessions, no retained messages, no queues). The broker is killed while the UNS stream is
busy and started again 3 s later; the platform comes back 1 s after the gateway (the
worse order of their reconnect backoffs, made certain by freezing it). Two ways to lose data, both closed by the hand-over
(docs/gateway.md, "Hand-over to the platform"):

* the gateway's publisher is back before the platform's ingest has subscribed again: the
  broker PUBACKs the stream to nobody. The ingest announces itself (retained ``online``
  on ``uns/_ingest/<client id>/status`` once subscribed) and the publisher holds the
  stream back in its durable buffer until then (counted: ``holds``, ``held_back``);
* the broker PUBACKed batches just before it died that it had not delivered yet: the
  publisher sends the batches confirmed in the last 2 s before the loss again (``resent``)
  and the store drops what it already holds by id.

Must hold: the counters equal the answer key exactly and every record the gateway
forwarded is stored exactly once. Before the hand-over (``IIOTBED_GATEWAY_INGEST=off``
for the gateway, and no resend) this case lost samples: see the lead's report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kit import SCENARIOS, Mosquitto, wait_for
from kit import testbed as running  # not "test*": pytest would collect it

pytestmark = [pytest.mark.network, pytest.mark.timeout(240)]

SCENARIO = SCENARIOS / "single-machine.yaml"
SPEED = 600.0
# the day shift from 08:00 (fast-forwarded to): ~24 s wall of paced run at 600x
START, END = 8 * 3600.0, 12 * 3600.0
UNTIL = END - 600.0  # the devices' last publishing interval may go down with them
OUTAGE_S = 3.0
BUSY_S = 1.5
LATE_S = 1.0  # wall seconds of stream rates watched before picking the busy moment


def _gateway_output_metrics(broker: Mosquitto) -> dict[str, Any]:
    """The gateway's retained metrics' ``output`` part (published when it stopped)."""
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        pytest.skip("mosquitto_sub is not installed")
    out = subprocess.run(
        [exe, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "uns/_gateway/+/metrics",
         "-C", "1", "-W", "3"], capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert out.stdout.strip(), "no retained gateway metrics"
    got: dict[str, Any] = json.loads(out.stdout)["output"]
    return got


def _busy_moment(received: Any) -> tuple[int, int]:
    """Wait for a moment of heavy UNS traffic: watch the ingest's received-sample count
    every 0.1 s for ``BUSY_S`` s, then return at the next 0.1 s step that receives at
    least 3/4 of the busiest step seen; (that step's samples, the busiest)."""
    steps: list[int] = []
    last = received()
    deadline = time.monotonic() + BUSY_S
    while True:
        time.sleep(0.1)
        now = received()
        step, last = now - last, now
        steps.append(step)
        peak = max(steps)
        if time.monotonic() > deadline and peak > 0 and step * 4 >= peak * 3:
            return step, peak
        if time.monotonic() > deadline + 30:
            pytest.fail(f"no busy moment in 30 s; steps of 0.1 s: {steps[-50:]}")


def test_broker_restart_without_persistence_hands_over_everything(
    tmp_path: Path, broker: Mosquitto
) -> None:
    assert "persistence" not in broker.conf.read_text()  # the case is about a forgetful broker
    with running(tmp_path, broker, scenario=SCENARIO, duration=END, speed=SPEED) as tb:
        tb.start_platform()
        tb.start_devices()
        gw = tb.start_gateway()
        wait_for(lambda: tb.ingest()["stored"] > 100, 60, "the stream to flow")
        step, peak = _busy_moment(lambda: int(tb.ingest()["received"]))
        connects = len(re.findall(r"UNS publisher connected", gw.output()))
        platform = tb.procs["platform"]
        broker.kill()
        # the worst order of the reconnect backoffs, made certain: the platform comes back
        # LATE_S after the gateway's publisher (it is frozen meanwhile)
        os.kill(platform.pid, signal.SIGSTOP)
        try:
            time.sleep(OUTAGE_S)
            broker.start()
            wait_for(lambda: len(re.findall(r"UNS publisher connected", gw.output())) > connects,
                     10.0, "the gateway's publisher to reconnect", interval=0.05)  # fmt: skip
            time.sleep(LATE_S)  # the gateway publishes on; nobody has subscribed yet
        finally:
            os.kill(platform.pid, signal.SIGCONT)
        wait_for(lambda: tb.ingest()["connected"], 10.0, "the platform to reconnect", interval=0.05)
        assert tb.procs["devices"].wait(120) == 0
        tb.wait_agreement(START, UNTIL)
        gw.stop()
        m = re.findall(r"received (\d+), forwarded (\d+)", gw.output())
        assert m, gw.tail()
        forwarded = int(m[-1][1])
        # every record forwarded is stored once: nothing lost, nothing doubled
        wait_for(lambda: tb.stored_records() == forwarded, 30,
                 f"{forwarded} forwarded records stored (have {tb.stored_records()})")  # fmt: skip
        out = _gateway_output_metrics(broker)
        text = gw.output()
        assert re.search(r"ingest \S+ is online", text), "the platform never announced itself"
        # back before the platform: it held the stream until the ingest's announcement,
        # then resent the window before the loss
        assert "holding the stream back" in text and "resending" in text
        assert out["holds"] == 1 and out["held_back"] > 0 and out["resent"] > 0, out
        ing = tb.ingest()
        assert ing["unknown_run"] == 0 and ing["out_of_window"] == 0, ing
        print(f"R1 hand-over: killed at {step} samples/0.1 s (peak {peak}); gateway "
              f"{out}; ingest duplicates {ing['duplicates']}, stored {ing['stored']}")  # fmt: skip
