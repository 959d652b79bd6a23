"""Resuming a live factory after its process died: a small state file, written ahead.

A restarted ``iiotbed devices`` must not rewind to t = 0: its values would carry source
times older than those already published (and than the gateway's Bad and death marks).
With a resume file the factory keeps there the sim time up to which it *may* have published,
written before anything past it is handed to an endpoint (so after a ``kill -9`` the file
is never behind the wire), and a restart runs the simulation unpaced up to that time
without publishing, then publishes the state it reached, dated at that time, and goes on
paced. The same seed and replication give the same history, so the counters continue.

Beside it lives the Sparkplug edge node's store file (:func:`edge_store_path`): values held
unpublished when the process stopped, sent after the restarted node's births. Its rows are
scoped by the run token kept in the resume file, minted when a run starts from t = 0, so a
later run (even of the same scenario and seed) never replays them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from iiotbed.errors import StorageError

__all__ = ["ResumePoint", "edge_store_path", "new_run_token", "read_resume", "write_resume"]


@dataclass(frozen=True)
class ResumePoint:
    """Which run a resume file belongs to, and the sim time (s) it may have published to;
    ``run`` tells this run apart from another of the same scenario, seed and replication."""

    scenario: str
    seed: int
    replication: int
    t: float
    run: str = ""

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
        raise StorageError(
            f"cannot read resume file {path}: {exc.strerror}", url=str(path)
        ) from exc
    try:
        d = orjson.loads(raw)
        return ResumePoint(str(d["scenario"]), int(d["seed"]), int(d["replication"]), float(d["t"]),
                           str(d.get("run", "")))  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StorageError(
            f"{path}: not a resume file ({exc}); delete it to start the run from t = 0",
            url=str(path),
        ) from exc


def new_run_token() -> str:
    """A token naming one run from its start at t = 0 (not part of the model)."""
    return uuid.uuid4().hex


def edge_store_path(resume: Path) -> Path:
    """The Sparkplug store file kept beside the resume file ``resume``."""
    return resume.with_name(f"{resume.stem}.sparkplug.db")


def write_resume(path: Path, point: ResumePoint) -> None:
    """Replace ``path`` atomically (a kill mid-write leaves the old file). Blocking."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(asdict(point)))
    os.replace(tmp, path)
