"""`iiotbed run --record`: the live run recorded while it runs, with the run's own answer key."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.eventlog import load_records, record_to_json
from iiotbed.platform.broker import free_port
from iiotbed.recording import open_recording

pytestmark = [pytest.mark.network, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios/single-machine.yaml"
runner = CliRunner()


def test_run_record_writes_the_runs_traffic_and_its_answer_key(tmp_path: Path) -> None:
    out = tmp_path / "run.mcap"
    res = runner.invoke(app, [
        "run", str(SINGLE), "--duration", "1h", "--speed", "4000", "--runs-dir", str(tmp_path),
        "--opcua-port", str(free_port()), "--port", "0", "--no-verdict", "--record", str(out),
        "--json",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["recording"]["path"] == str(out) and not out.with_name("run.mcap.part").exists()
    info = runner.invoke(app, ["recording", "info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    d = json.loads(info.stdout)
    assert d["seed"] == 7 and d["scenario"] == "Single machine (teaching)"
    # the run's window and the run's answer key, figure for figure
    assert d["window"] == [report["window"]["start"], report["window"]["end"]]
    assert d["window"] == [0.0, 9 * 3600.0]  # --duration 1h counts from the 08:00 shift
    assert d["answer_key"]["line"] == report["answer_key"]
    assert d["answer_key"]["line"]["good_count"] > 0
    # the event log is the run's own, record for record
    rec = open_recording(out)
    events = Path(report["run_dir"]) / "events.jsonl"
    assert [record_to_json(r) for r in rec.records()] == [
        record_to_json(r) for r in load_records(events)
    ]
    # the device traffic, in arrival order on the run's sim clock: births at 0, death last
    msgs = list(rec.mqtt_messages())
    assert report["recording"]["mqtt_messages"] == len(msgs) == d["counts"]["sparkplug"] > 10
    assert "/NBIRTH/" in msgs[0].topic and "/NDEATH/" in msgs[-1].topic
    assert all(a.log_ns < b.log_ns for a, b in itertools.pairwise(msgs))
    t = [(m.log_ns - round(rec.epoch_s * 1e9)) / 1e9 for m in msgs]
    assert t[0] < 1.0 and 8 * 3600 < t[-2] <= 9 * 3600 + 1  # DDATA within the paced hour


def test_run_record_refuses_a_bad_place_and_the_secure_profile(tmp_path: Path) -> None:
    for args, hint in (
        (["--record", str(tmp_path / "nope" / "x.mcap")], "is not a directory"),
        (["--record", str(tmp_path / "x.mcap"), "--security", "secure"], "open profile only"),
    ):
        res = runner.invoke(app, ["run", str(SINGLE), "--no-verdict", *args])
        assert res.exit_code == 2, (args, res.output)
        flat = " ".join(res.output.replace("│", " ").split())  # rich wraps the message in a box
        assert hint in flat and "--record" in flat and "Traceback" not in res.output
