"""The labs check themselves: each checker passes the reference solution and fails a wrong
attempt with a hint, against real components (one live factory shared by the module: its
OPC UA server, an embedded Mosquitto, the platform's API; the student's script is a child
process with a real asyncua or paho client). The CLI: list, show, check, exit codes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import Result
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.labs import LABS, CheckReport, LabRig, check_batch, check_live, find_lab, labs_dir
from iiotbed.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
WRONG = Path(__file__).parent / "wrong"
CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]
T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)


class Loop:
    """An event loop in a thread, so sync tests can share one running rig."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[Loop, LabRig]]:
    loop = Loop()
    scenario = load_scenario(ROOT / "scenarios/tcl-huizhou-5g.yaml")
    lab_rig = LabRig(scenario, speed=600.0)
    loop.run(lab_rig.__aenter__())
    try:
        yield loop, lab_rig
    finally:
        loop.run(lab_rig.__aexit__(None, None, None))
        loop.close()


def _live(rig: tuple[Loop, LabRig], number: int, script: Path) -> CheckReport:
    loop, lab_rig = rig
    return loop.run(check_live(find_lab(number), script, lab_rig, limit_s=90.0))


def _failed(report: CheckReport) -> list[str]:
    return [s.name for s in report.failed()]


def _why(report: CheckReport) -> str:
    """The whole check report and the script's output: what a failed assertion shows."""
    output = "\n".join(f"  | {line}" for line in report.output.splitlines()[-60:])
    return "\n".join(report.lines()) + ("\nthe script's output:\n" + output if output else "")


#: each wrong attempt and exactly the steps it fails
WRONG_LIVE = {
    1: ("lab01_fixed_names.py", {"Identification/Manufacturer", "Identification/SerialNumber",
                                 "MachineryItemState/CurrentState"}),
    2: ("lab02_off_by_10pct.py", {"your throughput"}),
    3: ("lab03_wrong_buffer.py", {"cleaner-01 stopped", "the buffer that ran empty"}),
    4: ("lab04_no_rebirth.py", {"a rebirth while your script ran"}),
    5: ("lab05_no_pause.py", {"amr-02 paused in the simulation", "amr-02 resumed at the end",
                              "an order the master control sent it"}),
    6: ("lab06_breaks_as_pbt.py", {"availability", "oee"}),
}  # fmt: skip


@pytest.mark.parametrize("number", sorted(WRONG_LIVE))
def test_live_lab_reference_passes_and_wrong_attempt_fails(
    rig: tuple[Loop, LabRig], number: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = find_lab(number)
    if lab.speed > rig[1].speed:  # lab 6 waits for a break: the shared rig catches up faster
        rig[0].loop.call_soon_threadsafe(rig[1].set_speed, lab.speed)
    good = _live(rig, number, lab.reference())
    assert good.passed, _why(good)
    assert len(good.steps) >= 4, _why(good)  # the answer and what the checker saw, step by step
    name, must_fail = WRONG_LIVE[number]
    # a wrong attempt that changes the reference's answer gets it here (wrong/_tamper.py)
    monkeypatch.setenv("IIOTBED_LAB_REFERENCE_ANSWER", json.dumps(good.answer))
    bad = _live(rig, number, WRONG / name)
    assert not bad.passed, _why(bad)
    assert set(_failed(bad)) == must_fail, _why(bad)
    assert all(s.hint for s in bad.failed()), "every failure says how to fix it:\n" + _why(bad)


def test_a_script_that_crashes_or_prints_no_json_fails_with_its_output(
    rig: tuple[Loop, LabRig], tmp_path: Path
) -> None:
    crash = tmp_path / "crash.py"
    crash.write_text("print('hello')\nraise SystemExit(3)\n")
    report = _live(rig, 1, crash)
    assert _failed(report) == ["your script ran and printed its answer"], _why(report)
    assert "status 3" in report.steps[0].detail and "hello" in report.output, _why(report)
    prose = tmp_path / "prose.py"
    prose.write_text("print('the state is Executing')\n")
    report = _live(rig, 1, prose)
    assert "not JSON" in report.steps[0].detail, _why(report)


def test_batch_lab_reference_passes_and_wrong_attempt_fails() -> None:
    lab = find_lab(8)  # lab 7 goes through the CLI (test_cli_check_exit_codes)
    good = check_batch(lab, lab.reference())
    assert good.passed, _why(good)
    bad = check_batch(lab, WRONG / "lab08_two_changes.yaml")
    assert _failed(bad) == ["one assumption changed"], _why(bad)
    assert all(s.hint for s in bad.failed()), _why(bad)


def test_every_lab_has_its_page_picture_and_reference() -> None:
    root = labs_dir()
    assert 6 <= len(LABS) <= 8
    for lab in LABS:
        page = lab.page(root).read_text(encoding="utf-8")
        for heading in ("## Goal", "## Background", "## Steps", "## What to observe", "## Questions"):
            assert heading in page, f"{lab.folder}: no {heading!r}"
        background = page.split("## Background", 1)[1].split("\n## ", 1)[0]
        paragraphs = [p for p in background.strip().split("\n\n") if not p.lstrip().startswith("![")]
        assert len(paragraphs) == 3, f"{lab.folder}: background has {len(paragraphs)} paragraphs"
        pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
        assert pictures and (root / lab.folder / pictures[0]).is_file(), lab.folder
        assert f"iiotbed lab check {lab.number}" in page
        assert lab.reference(root).is_file()


def _cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _invoke(*args: str) -> Result:
    """The command line in this process (quick: no interpreter to start)."""
    return CliRunner().invoke(app, list(args))


def test_cli_list_show_and_usage_errors() -> None:
    out = _invoke("lab", "list")
    assert out.exit_code == 0 and all(lab.title in out.stdout for lab in LABS), out.output
    out = _invoke("lab", "show", "3")
    assert out.exit_code == 0 and "## Questions" in out.stdout, out.output
    out = _invoke("lab", "check", "99")
    assert out.exit_code == 2 and "no lab 99" in out.stderr and "1 browse" in out.stderr, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    out = _invoke("lab", "check", "1")
    assert out.exit_code == 2 and "give its path" in out.stderr, out.output
    out = _invoke("lab", "check", "1", "no-such-script.py")
    assert out.exit_code == 2 and "no-such-script.py: no such file" in out.stderr, out.output
    out = _invoke("lab", "check", "1", "--reference", "no-such-script.py")
    assert out.exit_code == 2 and "not both" in out.stderr, out.output


def test_cli_check_exit_codes() -> None:
    """Lab 7 by the real command: its reference passes (exit 0), a wrong attempt fails (1)."""
    ok = _cli("lab", "check", "7", "--reference")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "lab 7 passed" in ok.stdout and "Traceback" not in ok.stderr, ok.stdout + ok.stderr
    bad = _invoke("lab", "check", "7", str(WRONG / "lab07_wrong_link.yaml"))
    assert bad.exit_code == 1, bad.output
    assert "FAIL  the vision inspection's link (5g-embb) changed" in bad.stdout, bad.output
    assert "hint:" in bad.stdout, bad.output
