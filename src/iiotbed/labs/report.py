"""A checker's verdict: one line per step, pass or fail, and a hint for each failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckReport", "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """One checked step: what was checked, whether it held, what was seen, how to fix it."""

    name: str
    ok: bool
    detail: str = ""
    hint: str = ""

    def lines(self) -> list[str]:
        mark = "PASS" if self.ok else "FAIL"
        out = [f"  {mark}  {self.name}" + (f": {self.detail}" if self.detail else "")]
        if not self.ok and self.hint:
            out.append(f"        hint: {self.hint}")
        return out


@dataclass
class CheckReport:
    """All steps of one lab's check; passed when every step passed (and there is one)."""

    lab: int
    title: str
    steps: list[Step] = field(default_factory=list)
    output: str = ""  # the student's script's output, shown on failure
    answer: dict[str, Any] | None = None  # what the script answered (its JSON), when it did

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def add(self, name: str, ok: bool, detail: str = "", hint: str = "") -> bool:
        self.steps.append(Step(name, ok, detail, hint))
        return ok

    def failed(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]

    def lines(self) -> list[str]:
        out = [f"lab {self.lab}: {self.title}"]
        for s in self.steps:
            out += s.lines()
        verdict = "passed" if self.passed else f"failed ({len(self.failed())} of {len(self.steps)} steps)"
        out.append(f"lab {self.lab} {verdict}")
        return out
