"""Recordings: `iiotbed record` writes one MCAP file, `recording info` reads it, bad files exit 2."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from mcap.reader import make_reader
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.devices.sim.factory import simulate
from iiotbed.eventlog import record_to_json
from iiotbed.platform.broker import free_port
from iiotbed.protocols.sparkplug.codec import decode_payload
from iiotbed.recording import SCHEMA_VERSION, Recording, RecordingError, open_recording
from iiotbed.recording.format import META_ANSWER_KEY, META_IIOTBED
from iiotbed.recording.writer import RecordingWriter

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "tests/data/single-machine-8h.mcap"
runner = CliRunner()


def test_record_writes_every_layer_and_the_answer_key_is_the_simulators(tmp_path: Path) -> None:
    out = tmp_path / "half-hour.mcap"
    res = runner.invoke(app, [
        "record", str(ROOT / "scenarios/single-machine.yaml"), "--duration", "30min",
        "--speed", "4000", "-o", str(out), "--opcua-port", str(free_port()), "--json",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    rec = open_recording(out)
    end = 8 * 3600 + 1800  # the first shift starts at 08:00; --duration counts from it
    assert rec.answer_key.window == (0.0, end) and summary["answer_key"]["window"] == [0.0, end]
    # the event log is the pure simulation's, record for record (an independent path)
    truth = simulate(rec.scenario(), 0, duration=end)
    assert [record_to_json(r) for r in rec.records()] == [record_to_json(r) for r in truth]
    counts = rec.counts()
    assert counts["sparkplug"] == summary["mqtt_messages"] > 5
    assert counts["opcua"] == summary["opcua_values"] > 0
    assert counts["samples"] + counts["events"] == summary["records"] == len(truth)
    # the answer key's good count is the last GoodCount the line device sent
    assert rec.answer_key.line["good_count"] == _last_metric(rec, "line", "GoodCount") > 0
    key = rec.answer_key.counters
    assert key["good_count"] + key["scrap_count"] <= key["processed"]  # type: ignore[operator]
    # the first message is the NBIRTH, the last one the NDEATH of the same bdSeq
    msgs = list(rec.mqtt_messages())
    assert "/NBIRTH/" in msgs[0].topic and "/NDEATH/" in msgs[-1].topic
    assert all(a.log_ns < b.log_ns for a, b in itertools.pairwise(msgs))


def _last_metric(rec: Recording, device: str, name: str) -> int:
    """The last value of a Sparkplug metric of a device (names from DBIRTH, then aliases)."""
    alias, value = None, None
    for m in rec.mqtt_messages(["sparkplug"]):
        if not m.topic.endswith(f"/{device}"):
            continue
        for metric in decode_payload(m.payload).metrics:
            if "/DBIRTH/" in m.topic and metric.name == name:
                alias = metric.alias
            if metric.name == name or (alias is not None and metric.alias == alias and not metric.name):
                value = int(metric.long_value)
    assert value is not None, f"no {name} of {device}"
    return value


def test_info_shows_the_shipped_recording(tmp_path: Path) -> None:
    assert SHIPPED.stat().st_size < 1_000_000
    res = runner.invoke(app, ["recording", "info", str(SHIPPED), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    # written at schema version 1: every later version still reads it (a version field, this test)
    assert d["schema_version"] == 1 <= SCHEMA_VERSION
    assert d["scenario"] == "Single machine (teaching)" and d["seed"] == 7
    assert d["window"] == [0.0, 57600.0] and d["paced_from"] == 28800.0
    assert {c["protocol"] for c in d["channels"]} >= {"sparkplug", "samples", "events", "opcua"}
    assert d["answer_key"]["line"]["good_count"] == 753
    text = runner.invoke(app, ["recording", "info", str(SHIPPED)])
    assert text.exit_code == 0
    assert "schema version 1" in text.stdout and "good_count" in text.stdout
    assert "spBv1.0/iiotbed-lab/NBIRTH/teaching-line-1" in text.stdout


def _newer(path: Path) -> None:
    w = RecordingWriter(path, epoch_s=0.0)
    w.metadata(META_IIOTBED, {"schema_version": str(SCHEMA_VERSION + 1), "software_version": "9.9"})
    w.metadata(META_ANSWER_KEY, {"window": "[0, 1]", "line": "{}"})
    w.close()


@pytest.mark.parametrize("case", ["text", "truncated", "newer", "foreign-mcap", "missing"])
def test_bad_recordings_exit_2_with_a_message(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.mcap"
    if case == "text":
        path.write_text("not a recording\n")
        expected = "is not an MCAP recording"
    elif case == "truncated":
        data = SHIPPED.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expected = "truncated"
    elif case == "newer":
        _newer(path)
        expected = f"schema version {SCHEMA_VERSION + 1}"
    elif case == "foreign-mcap":
        from mcap.writer import Writer

        with path.open("wb") as fp:
            w = Writer(fp)
            w.start(profile="ros2", library="x")
            w.finish()  # type: ignore[no-untyped-call]
        expected = "not an iiotbed recording"
    else:
        expected = "no such file"
    for args in (["recording", "info", str(path)], ["replay", str(path), "--broker", "mqtt://127.0.0.1:1", "--max"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert expected in res.stderr and str(path) in res.stderr and "Traceback" not in res.output
    with pytest.raises(RecordingError) as info:
        open_recording(path)
    assert info.value.path == path


def test_recording_is_plain_mcap_for_other_tools(tmp_path: Path) -> None:
    copy = tmp_path / "r.mcap"
    shutil.copy(SHIPPED, copy)
    with copy.open("rb") as fp:
        reader = make_reader(fp)
        summary = reader.get_summary()
        assert summary is not None and summary.chunk_indexes
        assert all(c.compression == "zstd" for c in summary.chunk_indexes)
        schemas = {s.name: s.encoding for s in summary.schemas.values()}
        assert schemas["org.eclipse.tahu.protobuf.Payload"] == "protobuf"
        assert reader.get_header().profile == "iiotbed"
