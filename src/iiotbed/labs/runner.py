"""Check one lab: start what it needs, run or read the student's work, judge each step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iiotbed.labs.catalogue import SCENARIO, Lab, LabNotFound, repo_file
from iiotbed.labs.report import CheckReport
from iiotbed.labs.rig import LabRig

__all__ = ["LAB_SPEED", "check_batch", "check_live", "check_on_own_rig"]

#: sim seconds per wall second of a lab's factory: fast enough that a throughput window
#: or a starving line takes seconds, slow enough to watch in UaExpert
LAB_SPEED = 300.0


def _need_file(lab: Lab, file: Path | None) -> Path:
    if file is None:
        raise LabNotFound(f"lab {lab.number} checks {lab.hands_in}: give its path "
                          f"(iiotbed lab check {lab.number} FILE) or --reference")  # fmt: skip
    if not file.is_file():
        raise LabNotFound(f"{file}: no such file (lab {lab.number} checks {lab.hands_in})")
    # named relative to where the student stands; a script runs in its own folder
    return file.resolve()


async def check_live(lab: Lab, file: Path | None, rig: LabRig, *, limit_s: float | None = None) -> CheckReport:
    """Run the student's script against a running rig and judge it."""
    from iiotbed.labs.live_checks import LIVE_CHECKS

    script = _need_file(lab, file)
    report = CheckReport(lab.number, lab.title)
    await LIVE_CHECKS[lab.number](rig, script, report, limit_s or lab.timeout)
    return report


def check_batch(lab: Lab, file: Path | None) -> CheckReport:
    """Judge the student's scenario file (simulated here, no protocols)."""
    from iiotbed.labs.batch_checks import BATCH_CHECKS

    path = _need_file(lab, file)
    report = CheckReport(lab.number, lab.title)
    BATCH_CHECKS[lab.number](path, report)
    return report


async def check_on_own_rig(
    lab: Lab,
    file: Path | None,
    *,
    speed: float = LAB_SPEED,
    broker: str | None = None,
    opcua_port: int | None = None,
    limit_s: float | None = None,
    on_ready: Callable[[LabRig], None] | None = None,
) -> CheckReport:
    """A live lab from scratch: its factory started (:class:`LabRig`), checked, stopped."""
    import asyncio

    from iiotbed.scenario import load_scenario

    _need_file(lab, file)
    scenario = await asyncio.to_thread(load_scenario, repo_file(SCENARIO))  # file I/O
    async with LabRig(scenario, speed=speed, broker=broker, opcua_port=opcua_port) as rig:
        if on_ready is not None:
            on_ready(rig)
        return await check_live(lab, file, rig, limit_s=limit_s)
