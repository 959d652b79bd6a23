"""The fault kit's ``Testbed.close``: every process is stopped even when one fails to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
from kit import Proc, Testbed

pytestmark = pytest.mark.timeout(60)

_STUBBORN = (
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(600)"
)
_OBEDIENT = "import time; print('ready', flush=True); time.sleep(600)"


def test_close_stops_every_process_and_names_each_that_failed(tmp_path: Path) -> None:
    tb = Testbed(tmp_path, broker=None, duration=1.0, speed=1.0)  # type: ignore[arg-type]
    for name, code in [("first", _STUBBORN), ("middle", _OBEDIENT), ("last", _STUBBORN)]:
        p = tb.procs[name] = Proc(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")
        p.start().wait_output("(?m)^ready$", 30)  # not the echoed command line
    with pytest.raises(pytest.fail.Exception) as info:
        tb.close(timeout=1.0)
    message = str(info.value)
    assert "first ignored Ctrl-C" in message  # the first failure's own message
    assert "did not stop cleanly: first, last" in message
    assert not any(p.alive for p in tb.procs.values())  # the ones after it stopped too
    assert tb.procs["middle"].proc is not None and tb.procs["middle"].proc.returncode != 0
