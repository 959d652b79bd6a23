"""``iiotbed lab check N`` as a student types it: a process of its own that starts the
lab's own factory, with the file named relative to where the student stands.

Two live labs run this way, each with its reference (exit 0) and a wrong attempt (exit 1,
FAIL lines with hints): lab 1 (OPC UA) and lab 4 (Sparkplug B on MQTT), ~10 s each on an
idle machine. All six at their own speeds cost ~85 s for the references alone (lab 6
waits 27 s for the line's first break) and twice that with the wrong attempts, so the
checkers of labs 2, 3, 5 and 6 are covered in-process on the shared factory
(test_labs.py): what a process adds - the command line, logging, the rig's start and
stop, the script's path - is the same code for every live lab.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRONG = Path(__file__).parent / "wrong"
_SCRIPT = Path(sys.executable).with_name("iiotbed")
#: the console script a student runs (its entry point when the venv has no script)
IIOTBED = (
    [str(_SCRIPT)]
    if _SCRIPT.is_file()
    else [sys.executable, "-c", "from iiotbed.cli import main; main()"]
)
#: lines a student sees on stderr: the command's own progress and the endpoint list
OWN_STDERR = re.compile(r"^(lab \d+: .+|  IIOTBED_[A-Z_]+=.*)$")

pytestmark = pytest.mark.timeout(180)


def _student(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``iiotbed ARGS`` in ``cwd``, as from a shell (no test-only environment); wall s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IIOTBED_", "PYTEST"))}
    start = time.monotonic()
    done = subprocess.run(
        [*IIOTBED, *args], capture_output=True, text=True, timeout=150, cwd=cwd, env=env
    )
    return done, time.monotonic() - start


def _shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def _check_stderr(number: int, done: subprocess.CompletedProcess[str]) -> None:
    """Progress in order, nothing else: no traceback, no library log lines."""
    lines = done.stderr.splitlines()
    noise = [ln for ln in lines if not OWN_STDERR.match(ln)]
    assert not noise, "stderr holds more than the command's own lines:\n" + _shown(done)
    order = [f"lab {number}: starting the factory", f"lab {number}: factory up",
             "  IIOTBED_OPCUA=opc.tcp://", f"lab {number}: running python "]  # fmt: skip
    at = [next((i for i, ln in enumerate(lines) if ln.startswith(o)), -1) for o in order]
    assert -1 not in at and at == sorted(at), _shown(done)


#: per lab: a wrong attempt and the steps it fails
CASES = {
    1: ("lab01_fixed_names.py", ["Identification/Manufacturer", "Identification/SerialNumber",
                                 "MachineryItemState/CurrentState"]),
    4: ("lab04_no_rebirth.py", ["a rebirth while your script ran"]),
}  # fmt: skip


@pytest.mark.parametrize("number", sorted(CASES))
def test_a_student_checks_a_live_lab_in_a_process(number: int) -> None:
    ok, t_ok = _student("lab", "check", str(number), "--reference", cwd=ROOT)
    assert ok.returncode == 0, _shown(ok)
    steps = [ln for ln in ok.stdout.splitlines() if ln.startswith("  ")]
    assert len(steps) >= 4 and all(ln.startswith("  PASS  ") for ln in steps), _shown(ok)
    assert ok.stdout.splitlines()[-1] == f"lab {number} passed", _shown(ok)
    _check_stderr(number, ok)

    # the student's attempt, named relative to the folder they work in
    name, failing = CASES[number]
    rel = os.path.relpath(WRONG / name, ROOT / "labs")
    bad, t_bad = _student("lab", "check", str(number), rel, cwd=ROOT / "labs")
    assert bad.returncode == 1, _shown(bad)
    out = bad.stdout.splitlines()
    failed = [ln.removeprefix("  FAIL  ").split(":")[0] for ln in out if ln.startswith("  FAIL  ")]
    assert failed == failing, _shown(bad)
    for i, ln in enumerate(out):  # a hint under every failure
        if ln.startswith("  FAIL  "):
            assert out[i + 1].startswith("        hint: ") and len(out[i + 1]) > 20, _shown(bad)
    assert "your script's output:" in bad.stdout and "can't open file" not in bad.stdout, _shown(
        bad
    )
    assert re.search(rf"^lab {number} failed \({len(failing)} of \d+ steps\)$", bad.stdout, re.M)
    _check_stderr(number, bad)
    print(f"lab {number}: reference {t_ok:.1f} s, wrong attempt {t_bad:.1f} s")


def test_a_student_mistypes_a_lab_or_a_file() -> None:
    done, _ = _student("lab", "check", "99", cwd=ROOT)
    assert done.returncode == 2 and "no lab 99" in done.stderr, _shown(done)
    done, _ = _student("lab", "check", "3", "my_starve.py", cwd=ROOT)
    assert done.returncode == 2 and "my_starve.py: no such file" in done.stderr, _shown(done)
    assert "Traceback" not in done.stderr + done.stdout, _shown(done)
