"""The labs: number, title, what each needs, where its page and reference solution live.

The pages and solutions are files in the repository's ``labs/`` folder (one folder per lab:
``README.md`` and a picture; ``labs/solutions/``). :func:`labs_dir` finds it: the
``IIOTBED_LABS_DIR`` environment variable, else the checkout this package was installed
from (``pip install -e``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iiotbed.errors import IiotbedError

__all__ = ["LABS", "Lab", "LabNotFound", "find_lab", "labs_dir"]

#: the scenario every lab uses, relative to the repository root
SCENARIO = "scenarios/tcl-huizhou-5g.yaml"


class LabNotFound(IiotbedError):
    """No lab with that number, or no lab pages on this machine (a usage error: exit 2)."""


@dataclass(frozen=True, slots=True)
class Lab:
    """One lab. ``kind``: ``live`` starts the factory; ``batch`` simulates without protocols."""

    number: int
    slug: str
    title: str
    kind: Literal["live", "batch"]
    hands_in: str  # what FILE is
    timeout: float = 120.0  # wall s the student's script may take
    #: sim s per wall s of a live lab's factory (``check --speed`` overrides): 300 lets a
    #: student watch; lab 6 waits for the line's first meal break, 4.5 sim h after 08:00
    speed: float = 300.0

    @property
    def folder(self) -> str:
        return f"{self.number:02d}-{self.slug}"

    @property
    def solution(self) -> str:
        """The reference solution's file name under ``labs/solutions/``."""
        ext = "yaml" if self.kind == "batch" else "py"
        return f"lab{self.number:02d}_{self.slug.replace('-', '_')}.{ext}"

    def page(self, root: Path | None = None) -> Path:
        return (root or labs_dir()) / self.folder / "README.md"

    def reference(self, root: Path | None = None) -> Path:
        return (root or labs_dir()) / "solutions" / self.solution


LABS: tuple[Lab, ...] = (
    Lab(1, "browse", "Browse a machine with an OPC UA client: identification and state",
        "live", "a Python script (asyncua) that prints its answer as JSON"),
    Lab(2, "throughput", "Subscribe to counters, compute throughput, compare with the platform",
        "live", "a Python script that prints its answer as JSON"),
    Lab(3, "starve", "Stop a cleaner and watch the bonders downstream starve",
        "live", "a Python script that prints its answer as JSON"),
    Lab(4, "sparkplug", "Decode Sparkplug B by hand and by library; bdSeq, seq and a rebirth",
        "live", "a Python script that prints its answer as JSON"),
    Lab(5, "vda5050", "Pause an AMR with a VDA 5050 instant action and watch the kits",
        "live", "a Python script that prints its answer as JSON"),
    Lab(6, "oee", "Read OEE: compute A, P and Q for one station from raw samples",
        "live", "a Python script that prints its answer as JSON", speed=1200.0),
    Lab(7, "network", "Break the network: loss and outages on the vision inspection's 5G link",
        "batch", "a scenario file that extends the 5G scenario"),
    Lab(8, "verdict", "The verdict: change one assumption and see whether +20 % still holds",
        "batch", "a scenario file that extends the 5G scenario"),
)  # fmt: skip


def find_lab(number: int) -> Lab:
    for lab in LABS:
        if lab.number == number:
            return lab
    known = ", ".join(f"{lab.number} {lab.slug}" for lab in LABS)
    raise LabNotFound(f"no lab {number}; the labs are: {known} (iiotbed lab list)")


def labs_dir() -> Path:
    """The folder holding the lab pages and ``solutions/``; see the module docstring."""
    env = os.environ.get("IIOTBED_LABS_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "labs")
    for path in candidates:
        if (path / "solutions").is_dir():
            return path
    where = " or ".join(str(p) for p in candidates)
    raise LabNotFound(
        f"no lab pages at {where}: they live in the repository's labs/ folder; work in a "
        f"clone (pip install -e .) or set IIOTBED_LABS_DIR to that folder"
    )


def repo_file(relative: str) -> Path:
    """A file of the repository (a shipped scenario), beside the labs folder."""
    return labs_dir().parent / relative
