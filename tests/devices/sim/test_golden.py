"""Golden event logs: each scenario's log must stay byte-identical run after run.

The SHA-256 of ``dump_records(simulate(scenario, 0, duration=...))`` is committed here.
These hashes change only with a deliberate change of the model (or of the event-log
format); performance work must leave them alone. After a deliberate change, regenerate
them by printing ``_digest(...)`` for each case below and say why in the commit message.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from iiotbed.devices.sim import Factory, simulate
from iiotbed.eventlog import dump_records
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Record

ROOT = Path(__file__).resolve().parents[3]
DAY = 86400.0

GOLDEN = {
    ("single-machine", 1 * DAY): "cff43098f890456d3d4b57a6a245314dbf6c164a278f4daaf2cb54c042f2a5fe",
    ("tcl-huizhou-baseline", 2 * DAY): "c4445cd6e1a3d7b0a8b02e37c0c220bcb84eba2eb8441de3d96b0ff8dabd3970",
    ("tcl-huizhou-5g", 2 * DAY): "9d94b809d2705b6d05dcaa650e70897895e4a123890f4727f10c0284d2858b15",
}


def _digest(name: str, duration: float) -> str:
    records = simulate(load_scenario(ROOT / "scenarios" / f"{name}.yaml"), 0, duration=duration)
    buf = io.StringIO()
    dump_records(records, buf)
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


@pytest.mark.parametrize(("name", "duration"), list(GOLDEN))
def test_event_log_matches_golden_hash(name: str, duration: float) -> None:
    assert _digest(name, duration) == GOLDEN[name, duration]


def test_sink_and_lazy_records_agree() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "single-machine.yaml")
    sunk: list[Record] = []
    live = Factory(scenario, 0, sink=sunk.append)
    live.run(DAY / 2)
    batch = Factory(scenario, 0)
    batch.run(DAY / 2)
    assert sunk and batch.records == sunk
    assert not live.records  # everything went to the sink


def test_records_list_is_extended_in_place() -> None:
    f = Factory(load_scenario(ROOT / "scenarios" / "single-machine.yaml"), 0)
    f.run(DAY / 4)
    first = f.records
    before = list(first)
    f.run(DAY / 2)
    assert f.records is first
    assert len(first) > len(before) and first[: len(before)] == before
