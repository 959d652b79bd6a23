"""SIGTERM ends the service commands as Ctrl-C does: drain, close, exit 0.

Docker (``docker compose stop``/``down``), systemd and Kubernetes stop a process with
SIGTERM. The three services run as real processes against an own Mosquitto (the fault
cases' kit): the devices pace the single-machine scenario, the gateway forwards to the
platform, which stores in SQLite. Once samples are stored, each gets SIGTERM in the order
compose stops them (devices, gateway, platform) and must exit 0 after its clean-shutdown
lines; the store then holds what the gateway says it forwarded. Also: the log level
(``--log-level`` / ``IIOTBED_LOG_LEVEL``) of the service commands.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fault_kit() -> ModuleType:
    """tests/faults/kit.py (processes, an own broker, waits) under a name of its own."""
    name = "iiotbed_tests_fault_kit"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "faults" / "kit.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


kit = _fault_kit()


def _terminate(proc: kit.Proc, timeout: float = 30.0) -> int:  # type: ignore[name-defined]
    """SIGTERM, as Docker stops a container; the exit code (fails if it hangs)."""
    proc.proc.send_signal(signal.SIGTERM)
    try:
        return int(proc.proc.wait(timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{proc.name} ignored SIGTERM for {timeout:g} s:\n{proc.tail()}")


@pytest.mark.network
@pytest.mark.timeout(120)
def test_sigterm_stops_devices_gateway_and_platform_cleanly(tmp_path: Path) -> None:
    broker = kit.Mosquitto(tmp_path / "broker").start()
    try:
        with kit.testbed(tmp_path, broker, duration=7 * 24 * 3600.0, speed=600.0) as tb:
            tb.start_all()
            # the run goes on (a week at 600x): stop it midway, once telemetry is stored
            kit.wait_for(lambda: tb.stored_samples() > 50, 60, "samples in the store")
            devices, gateway, platform = (tb.procs[n] for n in ("devices", "gateway", "platform"))

            assert _terminate(devices) == 0, devices.tail()
            out = devices.output()
            assert re.search(r"^stopped$", out, re.M), out[-3000:]
            # the summary of an orderly end follows (the edge node's death certificate sent)
            assert out.rstrip().splitlines()[-1] != "stopped", out[-3000:]

            assert _terminate(gateway) == 0, gateway.tail()
            out = gateway.output()
            m = re.search(r"received (\d+), forwarded (\d+), buffered (\d+), dropped (\d+)", out)
            assert m is not None and re.search(r"^stopped$", out, re.M), out[-3000:]
            forwarded, dropped = int(m.group(2)), int(m.group(4))
            assert forwarded > 0 and dropped == 0, m.group(0)

            assert _terminate(platform) == 0, platform.tail()
            out = platform.output()
            assert re.search(r"^stopped$", out, re.M), out[-3000:]
            assert "Traceback" not in out, out[-3000:]
            # the platform stored what it was sent before it closed its store
            with closing(sqlite3.connect(tmp_path / "store.db")) as db:
                (stored,) = db.execute("SELECT count(*) FROM samples").fetchone()
            assert stored > 50
    finally:
        broker.kill()


@pytest.mark.network
def test_log_level_from_the_environment_and_a_wrong_one(tmp_path: Path) -> None:
    env = {"IIOTBED_LOG_LEVEL": "debug"}
    p = kit.Proc("platform", [*kit.CLI, "platform", "--store", f"sqlite:///{tmp_path / 's.db'}",
                              "--port", "0"], tmp_path / "platform.log", env).start()  # fmt: skip
    try:
        p.wait_output(r"dashboard and API at", 60)
        kit.wait_for(lambda: " DEBUG " in p.output(), 20, "a DEBUG log line")
        assert _terminate(p) == 0
    finally:
        p.kill()
    bad = subprocess.run([*kit.CLI, "gateway", "--log-level", "loud", "--config", "x.yaml"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "'loud' is no log level" in bad.stderr and "Traceback" not in bad.stderr
