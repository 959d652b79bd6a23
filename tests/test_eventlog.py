"""Event log: JSON Lines round trip, deterministic text, errors that name file:line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iiotbed.devices.sim import simulate
from iiotbed.errors import StorageError
from iiotbed.eventlog import (
    EventLogError,
    dump_records,
    load_records,
    record_to_json,
    write_event_log,
)
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Event, PackMLState, Quality, Record, Sample

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_of_a_simulated_log(tmp_path: Path) -> None:
    records = simulate(load_scenario(ROOT / "scenarios" / "single-machine.yaml"), duration=86400)
    extra: list[Record] = [
        Sample(1.5, "a/b", "X", None, None, Quality.Bad, gateway_ts=2.0, seq=3, run_id="r"),
        Sample(2.0, "a/b", "Name", "héllo", "C62"),
        Event(3.0, "a/b", "Thing", {"z": 1, "a": [1.25, "x"], "n": None}),
    ]
    path = tmp_path / "log.jsonl"
    n = write_event_log([*records, *extra], path)
    assert n == len(records) + 3
    loaded = load_records(path)
    assert loaded == [*records, *extra]
    assert [type(r) for r in loaded] == [type(r) for r in [*records, *extra]]
    buf = io.StringIO()
    assert dump_records(loaded, buf) == n
    assert buf.getvalue() == path.read_text(encoding="utf-8")


def test_json_is_compact_with_fixed_key_order() -> None:
    s = Sample(0.0, "l/s", "EnergyTotal", 1.5, "KWH")
    assert record_to_json(s) == '{"t":0.0,"asset":"l/s","tag":"EnergyTotal","value":1.5,"unit":"KWH"}'
    e = Event(1.0, "l", "UnitProduced", {"unit": "u", "b": 2, "a": 1})
    assert record_to_json(e) == '{"t":1.0,"asset":"l","event":"UnitProduced","fields":{"a":1,"b":2,"unit":"u"}}'


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not an event-log record"),
        ('{"t": 1, "asset": "a"}', "needs 'tag'"),
        ('{"asset": "a", "tag": "X", "value": 1}', "missing key 't'"),
        ('{"t": "soon", "asset": "a", "tag": "X", "value": 1}', "'t' must be a number"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = record_to_json(Sample(0.0, "a", "X", 1))
    path.write_text(f"{good}\n\n{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(EventLogError, match=why) as info:
        load_records(path)
    assert info.value.line == 4 and info.value.path == path
    assert str(info.value).startswith(f"{path}:4: ")
    assert isinstance(info.value, StorageError)


def test_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read event log"):
        load_records(tmp_path / "absent.jsonl")


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
_value = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    _text, st.sampled_from(list(PackMLState)),
)
_sample = st.builds(
    Sample,
    t=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()),
    asset=st.sampled_from(["l/s", 'a"b', "é/\\n"]),
    tag=st.sampled_from(["Level", "X\ty"]),
    value=_value,
    unit=st.sampled_from([None, "C62", "KWH"]),
    quality=st.sampled_from(list(Quality)),
    gateway_ts=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    seq=st.none() | st.integers(),
    run_id=st.none() | _text,
)


@settings(max_examples=300)
@given(st.lists(_sample, max_size=20))
def test_dump_writes_each_record_as_record_to_json(records: list[Sample]) -> None:
    # dump_records caches text per (asset, tag, unit); it must match the one-record form
    buf = io.StringIO()
    dump_records(records, buf)
    assert buf.getvalue() == "".join(record_to_json(r) + "\n" for r in records)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    for r in (Sample(0.0, "a", "X", bad), Sample(bad, "a", "X", 1)):
        with pytest.raises(ValueError, match="JSON compliant"):
            dump_records([r], io.StringIO())
