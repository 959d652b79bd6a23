"""Run a student's script as a child process and read its answer (a JSON object).

The script runs with this interpreter, the lab's endpoints in its environment, and must
print its answer as a JSON object on the last non-empty line of stdout. Whatever else it
prints is shown when the check fails.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iiotbed.labs.report import CheckReport

__all__ = ["ScriptRun", "answer_step", "run_script"]


@dataclass(frozen=True)
class ScriptRun:
    """What the script did: exit code (None: killed at the timeout), output, its answer."""

    returncode: int | None
    stdout: str
    stderr: str
    answer: dict[str, Any] | None
    problem: str = ""  # why there is no answer

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()


async def run_script(
    path: Path, env: Mapping[str, str], *, limit_s: float, args: Sequence[str] = ()
) -> ScriptRun:
    """Run ``python path args...``; kill it after ``limit_s`` wall seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(env),
        cwd=str(path.parent),
    )  # fmt: skip
    try:
        async with asyncio.timeout(limit_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return ScriptRun(None, _text(out), _text(err), None,
                         f"still running after {limit_s:g} s (killed)")  # fmt: skip
    stdout, stderr = _text(out), _text(err)
    if proc.returncode != 0:
        return ScriptRun(proc.returncode, stdout, stderr, None,
                         f"exited with status {proc.returncode}")  # fmt: skip
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return ScriptRun(0, stdout, stderr, None, "printed nothing")
    try:
        answer = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return ScriptRun(0, stdout, stderr, None,
                         f"its last line is not JSON ({exc.msg}): {lines[-1][:120]!r}")  # fmt: skip
    if not isinstance(answer, dict):
        return ScriptRun(0, stdout, stderr, None,
                         f"its last line is JSON but not an object: {lines[-1][:120]!r}")  # fmt: skip
    return ScriptRun(0, stdout, stderr, answer)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def answer_step(report: CheckReport, run: ScriptRun, fields: Sequence[str]) -> dict[str, Any] | None:
    """The 'your script answered' step: it ran, printed JSON with every field asked."""
    report.output = run.output
    report.answer = run.answer
    if run.answer is None:
        report.add("your script ran and printed its answer", False, run.problem,
                   "run it yourself first (the environment variables are in the lab page); "
                   "the last line it prints must be one JSON object")  # fmt: skip
        return None
    missing = [f for f in fields if f not in run.answer]
    report.add("your script ran and printed its answer", not missing,
               f"missing {', '.join(missing)}" if missing else f"{len(run.answer)} fields",
               f"the answer needs the fields {', '.join(fields)}")  # fmt: skip
    return None if missing else run.answer
