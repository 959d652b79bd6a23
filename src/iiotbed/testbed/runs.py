"""The runs directory: one ``<run_id>/`` per ``iiotbed run``, listed and pruned.

Each run keeps its store, event log and gateway buffer (the 5G week: ~220 MB, see
``docs/answer-key.md``). Only directories named like a run id count as runs, so pruning a
wrongly given directory deletes nothing else. Blocking file-system calls: use from the CLI.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from iiotbed.testbed.plan import RUN_ID_PATTERN

__all__ = ["Pruned", "RunDir", "format_size", "list_runs", "prune_runs"]


@dataclass(frozen=True, slots=True)
class RunDir:
    """One run's directory: its id, when it started (UTC) and its size in bytes."""

    run_id: str
    path: Path
    started: dt.datetime
    size: int


def list_runs(runs_dir: Path) -> list[RunDir]:
    """The runs in ``runs_dir``, newest first; none when the directory does not exist."""
    if not runs_dir.is_dir():
        return []
    runs = []
    for path in runs_dir.iterdir():
        m = RUN_ID_PATTERN.match(path.name)
        if m is None or not path.is_dir() or path.is_symlink():
            continue
        started = dt.datetime.strptime(m["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        runs.append(RunDir(path.name, path, started, _size(path)))
    # the run id's time first; the id itself breaks ties (runs started the same second)
    runs.sort(key=lambda r: (r.started, r.run_id), reverse=True)
    return runs


@dataclass(frozen=True, slots=True)
class Pruned:
    """What :func:`prune_runs` kept and deleted (or, dry, would delete), newest first."""

    kept: list[RunDir]
    deleted: list[RunDir]


def prune_runs(runs_dir: Path, keep: int, *, dry_run: bool = False) -> Pruned:
    """Delete all but the ``keep`` newest runs of ``runs_dir``."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    runs = list_runs(runs_dir)
    if not dry_run:
        for run in runs[keep:]:
            shutil.rmtree(run.path)
    return Pruned(runs[:keep], runs[keep:])


def format_size(size: int) -> str:
    """Bytes in decimal units, as ``du --si`` shows them: ``218.4 MB``."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # a file a running run just removed (e.g. a WAL)
                continue
    return total
