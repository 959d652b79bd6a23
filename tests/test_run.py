"""`iiotbed run` end to end, as a subprocess: devices, broker, gateway, platform, report.

Each run proves the answer-key rule of docs/answer-key.md: the KPIs the platform derives
from telemetry equal the simulator's own (counters exactly, the rest within
``REL_TOLERANCE``), computed here again from the report's two columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.platform.broker import free_port
from iiotbed.testbed import COUNTERS, REL_TOLERANCE

ROOT = Path(__file__).resolve().parents[1]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"
TCL_5G = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"
PG = "postgresql://127.0.0.1:5432/test"
runner = CliRunner()


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from iiotbed.cli import main; main()", "run", *args]


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        _cmd(*args, "--opcua-port", str(free_port()), "--json"),
        cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def _check_agreement(report: dict[str, Any]) -> None:
    kpis, key = report["kpis"], report["answer_key"]
    assert key["good_count"] > 0, "nothing produced: the check would be empty"
    for k in COUNTERS:
        assert kpis[k] == key[k], (k, kpis[k], key[k])
    for k, truth in key.items():
        got = kpis[k]
        if k in COUNTERS:
            continue
        if truth is None:
            assert got is None, (k, got)
            continue
        assert got is not None, k
        assert math.isclose(got, truth, rel_tol=REL_TOLERANCE, abs_tol=1e-9), (k, got, truth)
        assert report["agreement"][k]["ok"], k
    assert report["agrees"] is True
    assert report["settle"]["timed_out"] is False
    assert report["settle"]["stored"] == report["settle"]["gateway_forwarded"]


def _printed_endpoints(stderr: str) -> None:
    assert "dashboard  http://127.0.0.1:" in stderr
    assert "OPC UA  opc.tcp://127.0.0.1:" in stderr
    assert "Sparkplug B  mqtt://127.0.0.1:" in stderr


def test_single_machine_embedded_broker_and_store(tmp_path: Path) -> None:
    report, err = _run(tmp_path, str(SINGLE), "--speed", "20000")
    _printed_endpoints(err)
    assert "progress:" not in err  # --json, not a terminal: the report and the endpoints only
    _check_agreement(report)
    assert report["ended"] == "duration" and report["window"]["end"] == 86400
    assert report["improvement"] is None and report["verdict"] is None  # no `extends:`
    broker = report["endpoints"]["broker"]
    assert broker.startswith("mqtt://127.0.0.1:") and not broker.endswith(":1883")
    run_dir = tmp_path / ".iiotbed" / "runs" / report["run_id"]
    assert (run_dir / "store.db").is_file() and (run_dir / "events.jsonl").is_file()
    assert report["store"].endswith(f"{report['run_id']}/store.db")
    assert report["dashboard"].startswith("http://127.0.0.1:")


_PROGRESS = re.compile(
    r"^progress: sim time (?P<sim>(?:\d+d )?\d\d:\d\d:\d\d) of (?P<end>(?:\d+d )?\d\d:\d\d:\d\d) "
    r"\((?P<pct>\d+\.\d) %\), "
)


def _clock(text: str) -> int:
    days, _, hms = text.rpartition("d ")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def test_progress_lines_when_not_a_terminal_and_the_html_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        _cmd(str(SINGLE), "--duration", "2h", "--speed", "3000", "--no-verdict",
             "--opcua-port", str(free_port()), "--report", "run.html"),
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "progress" not in proc.stdout  # stdout is the report
    assert "telemetry: gateway received" in proc.stdout
    assert "report: run.html" in proc.stdout
    run_id = re.search(r"^run (\S+)$", proc.stdout, re.MULTILINE)
    html = (tmp_path / "run.html").read_text(encoding="utf-8")
    assert run_id is not None and run_id[1] in html and "<script src" not in html
    lines = [line for line in proc.stderr.splitlines() if line.startswith("progress: ")]
    found = [_PROGRESS.match(line) for line in lines]
    assert len(found) >= 3 and all(found), proc.stderr
    sims = [_clock(m["sim"]) for m in found if m]
    pcts = [float(m["pct"]) for m in found if m]
    # the window: 0 .. the first shift (08:00) + 2 h, on the simulation's clock
    assert {_clock(m["end"]) for m in found if m} == {10 * 3600}
    assert sims == sorted(sims) and pcts == sorted(pcts) and len(set(pcts)) == len(pcts)
    assert max(sims) == 10 * 3600 and pcts[-1] == 100.0
    for sim, pct in zip(sims, pcts, strict=True):
        assert abs(pct - 100 * sim / 36000) <= 0.051, (sim, pct)
    assert any("x of 3,000x asked" in line for line in lines), lines  # a speed achieved
    assert "(100.0 %), ETA 0:00, " in lines[-1]
    assert "simulation reached its duration at 36000 s" in proc.stdout


@pytest.mark.network
def test_single_machine_on_mosquitto_and_postgresql(tmp_path: Path) -> None:
    schema = f"run_{uuid.uuid4().hex[:12]}"
    try:
        report, err = _run(
            tmp_path, str(SINGLE), "--speed", "20000", "--duration", "12h",  # to 20:00
            "--broker", "mqtt://127.0.0.1:1883", "--store", f"{PG}?schema={schema}",
            "--sparkplug-group", f"g-{schema}",  # a shared broker: our own topics
        )  # fmt: skip
        _printed_endpoints(err)
        _check_agreement(report)
        assert report["endpoints"]["broker"] == "mqtt://127.0.0.1:1883"
        assert report["window"]["end"] == 20 * 3600.0  # 08:00 + 12 h
        assert "(embedded)" not in err
        assert f"spBv1.0/g-{schema}/+/" in err
        with psycopg.connect(PG, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT status, answer_key IS NOT NULL FROM {schema}.runs WHERE run_id = %s",  # type: ignore[arg-type]
                (report["run_id"],),
            ).fetchone()
        assert row == ("finished", True)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")  # type: ignore[arg-type]


def test_5g_short_run_gives_improvement_and_verdict(tmp_path: Path) -> None:
    # --duration counts from the first shift: unpaced to 08:00, then two paced hours
    report, err = _run(
        tmp_path, str(TCL_5G), "--duration", "2h", "--speed", "2000", "--replications", "2",
    )  # fmt: skip
    assert report["window"] == {"start": 0.0, "end": 10 * 3600.0}
    _check_agreement(report)
    assert "VDA 5050  mqtt://127.0.0.1:" in err
    assert "paired batch replications" in err
    imp = report["improvement"]
    assert imp["n"] == 2 and len(imp["per_replication"]) == 2
    lo, hi = imp["ci95"]
    assert lo <= imp["mean"] <= hi
    # the rule of docs/answer-key.md, from the report's own interval and goal
    goal = report["goal"]
    expected = "met" if lo >= goal else "not met" if hi < goal else "inconclusive"
    assert report["verdict"] == expected
    assert report["metric"] == "labour_productivity" and report["goal"] == 0.20
    assert "2 paired batch replications" in report["verdict_basis"]
    assert "common random numbers" in report["verdict_basis"]
    # the live run is replication 0: its own improvement equals the batch pair 0's
    assert math.isclose(report["live_improvement"], imp["per_replication"][0], rel_tol=1e-9)
    assert report["baseline_run_id"] == f"{report['run_id']}-baseline"
    # the store keeps the run, its answer key and the comparison for the API
    run, base, cmp = asyncio.run(_stored(tmp_path, report["run_id"]))
    assert run is not None and run.status == "finished" and run.ended is not None
    assert run.answer_key is not None
    assert run.answer_key["line"]["good_count"] == report["answer_key"]["good_count"]
    assert run.baseline_run_id == report["baseline_run_id"]
    assert base is not None and base.answer_key is not None
    assert cmp["source"] == "stored comparison" and cmp["verdict"] == report["verdict"]


async def _stored(tmp_path: Path, run_id: str) -> tuple[Any, Any, dict[str, Any]]:
    from iiotbed.platform.catalog import RunCatalog
    from iiotbed.platform.queries import PlatformView
    from iiotbed.platform.store import open_store

    url = f"sqlite:///{tmp_path / '.iiotbed' / 'runs' / run_id / 'store.db'}"
    async with open_store(url) as store:
        view = PlatformView(store, RunCatalog(store))
        cmp = await view.compare(run_id, "labour_productivity", None)
        return await store.get_run(run_id), await store.get_run(f"{run_id}-baseline"), cmp


def _port_closed(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, int(port))) != 0


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_sigint_mid_run_prints_the_report_and_cleans_up(tmp_path: Path) -> None:
    opcua = free_port()
    with subprocess.Popen(
        _cmd(str(SINGLE), "--speed", "300", "--opcua-port", str(opcua), "--json"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stderr is not None
            lines: queue.Queue[str] = queue.Queue()
            # a thread reads stderr: a pipe read blocks, and the rest must go on
            reader = threading.Thread(
                target=lambda: [lines.put(line) for line in proc.stderr],
                daemon=True,  # type: ignore[union-attr]
            )
            reader.start()
            seen = ""
            deadline = time.monotonic() + 60
            while "gateway " not in seen and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    seen += lines.get(timeout=1.0)
            assert "gateway " in seen, seen
            children = _children(proc.pid)
            assert children, "the embedded broker runs as a child process"
            time.sleep(3.0)  # some production: 08:00 + ~900 sim s
            proc.send_signal(signal.SIGINT)
            out = proc.stdout.read() if proc.stdout is not None else ""
            proc.wait(timeout=90)
            reader.join(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = "".join(lines.queue)
    assert proc.returncode == 0, err[-3000:]
    assert "stopping" in err
    report = json.loads(out)
    assert report["ended"] == "stopped"
    assert 28800 < report["window"]["end"] < 86400
    _check_agreement(report)
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert _port_closed(report["endpoints"]["broker"])
    assert _port_closed(report["dashboard"])
    assert _port_closed(f"opc.tcp://127.0.0.1:{opcua}")


def test_cli_default_speed_is_the_run_default() -> None:
    from iiotbed.cli import RUN_SPEED
    from iiotbed.testbed import DEFAULT_SPEED, RunOptions

    assert RUN_SPEED == DEFAULT_SPEED == RunOptions().speed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "missing.yaml"),
        ([str(SINGLE), "--store", "mysql://127.0.0.1/x"], "unknown store URL scheme"),
        ([str(SINGLE), "--duration", "soon"], "is not a duration"),
        ([str(SINGLE), "--broker", "http://127.0.0.1:1883"], "mqtt://host:port"),
        ([str(SINGLE), "--metric", "happiness"], "unknown KPI"),
        ([str(SINGLE), "--report", "no/such/dir/run.html"], "is not a directory"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / ".iiotbed").exists()  # nothing started
