"""Resuming a live factory after its process died: a small state file, written ahead.

A restarted ``iiotbed devices`` must not rewind to t = 0: its values would carry source
times older than those already published (and than the gateway's Bad and death marks).
With a resume file the factory keeps there the sim time up to which it *may* have published,
written before anything past it is handed to an endpoint (so after a ``kill -9`` the file
is never behind the wire), and a restart runs the simulation unpaced up to that time
without publishing, then publishes the state it reached, dated at that time, and goes on
paced. The same seed and replication give the same history, so the counters continue.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from iiotbed.errors import StorageError

__all__ = ["ResumePoint", "read_resume", "write_resume"]


@dataclass(frozen=True)
class ResumePoint:
    """Which run a resume file belongs to, and the sim time (s) it may have published to."""

    scenario: str
    seed: int
    replication: int
    t: float

    def check(self, scenario: str, seed: int, replication: int, path: Path) -> None:
        """Refuse a file of another run (resuming it would publish another history)."""
        mine = (scenario, seed, replication)
        if (self.scenario, self.seed, self.replication) != mine:
            raise StorageError(
                f"{path}: resume file of scenario {self.scenario!r} seed {self.seed} replication "
                f"{self.replication}, not of {scenario!r} seed {seed} replication {replication}; "
                f"delete it (or give another --resume file) to start this run from t = 0",
                url=str(path),
            )


def read_resume(path: Path) -> ResumePoint | None:
    """The point in ``path``; None when the file does not exist (a first start). Blocking."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read resume file {path}: {exc.strerror}", url=str(path)) from exc
    try:
        d = orjson.loads(raw)
        return ResumePoint(str(d["scenario"]), int(d["seed"]), int(d["replication"]), float(d["t"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StorageError(
            f"{path}: not a resume file ({exc}); delete it to start the run from t = 0",
            url=str(path),
        ) from exc


def write_resume(path: Path, point: ResumePoint) -> None:
    """Replace ``path`` atomically (a kill mid-write leaves the old file). Blocking."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(asdict(point)))
    os.replace(tmp, path)
