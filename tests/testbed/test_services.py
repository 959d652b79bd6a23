"""The testbed's services in one ``async with``: started in order, closed in reverse, the
body's exception passed through, every task and port gone. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from iiotbed.platform.broker import free_port
from iiotbed.scenario import load_scenario
from iiotbed.testbed import RunOptions, Services, plan_run

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"


class Boom(Exception):
    pass


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_body_exception_passes_through_and_everything_closes(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE)
    opts = RunOptions(speed=20000.0, opcua_port=free_port(), runs_dir=tmp_path)
    plan = plan_run(scenario, opts, has_base=False)
    plan.run_dir.mkdir(parents=True)
    seen: dict[str, object] = {}

    async def register(store: object) -> None:
        seen["registered_before_devices"] = not _port_open(opts.opcua_port)

    async def main() -> None:
        async with Services(scenario, plan, opts, on_platform=register) as tb:
            seen["ports"] = [opts.opcua_port, int(tb.broker_url.rsplit(":", 1)[1]),
                             int(tb.platform.url.rsplit(":", 1)[1])]  # fmt: skip
            seen["open"] = [_port_open(p) for p in seen["ports"]]  # type: ignore[attr-defined]
            lines = tb.describe()
            assert lines[0] == f"run {plan.run_id}" and "(embedded)" in lines[2]
            assert tb.endpoints["uns"] == "uns/_stream/" + scenario.line_path
            assert tb.live.now == 0.0  # held at sim time 0 until the body lets it run
            raise Boom("from the body")
        raise AssertionError("the exception was swallowed")

    async def checked() -> None:
        with pytest.raises(Boom, match="from the body"):
            await main()
        seen["tasks"] = asyncio.all_tasks() - {asyncio.current_task()}

    asyncio.run(checked())
    assert seen["registered_before_devices"] is True
    assert seen["open"] == [True, True, True]
    assert seen["tasks"] == set()  # every task owned: cancelled and awaited on the way out
    assert not any(_port_open(p) for p in seen["ports"])  # type: ignore[attr-defined]
    assert plan.events.is_file()  # the devices closed their event log


def test_run_stops_when_asked_and_the_report_covers_what_ran(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE)
    opts = RunOptions(speed=20000.0, opcua_port=free_port(), runs_dir=tmp_path)
    plan = plan_run(scenario, opts, has_base=False)
    plan.run_dir.mkdir(parents=True)

    async def main() -> tuple[str, float, float, dict[str, object]]:
        async with Services(scenario, plan, opts) as tb:
            stop = asyncio.Event()
            stop.set()  # already asked: the run stops at once
            ended = await tb.run(stop)
            now = tb.live.now
            await asyncio.sleep(0.2)
            settle = await tb.settle()
            await tb.close_factory()
            await tb.close_factory()  # idempotent
            return ended, now, tb.live.now, settle

    ended, at_stop, later, settle = asyncio.run(main())
    assert ended == "stopped"
    assert at_stop == later < plan.duration  # sim time froze where it stopped
    assert settle["timed_out"] is False
    assert settle["stored"] == settle["gateway_forwarded"]


def test_run_command_keeps_its_run_in_the_runs_dir(tmp_path: Path) -> None:
    runs = tmp_path / "elsewhere"
    cmd = [sys.executable, "-c", "from iiotbed.cli import main; main()"]
    proc = subprocess.run(
        [*cmd, "run", str(SINGLE), "--speed", "20000", "--duration", "2h",
         "--opcua-port", str(free_port()), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**_env(), "IIOTBED_RUNS_DIR": str(runs)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["run_dir"] == str(runs / report["run_id"])
    assert (runs / report["run_id"] / "events.jsonl").is_file()
    assert not (tmp_path / ".iiotbed").exists()
    listed = subprocess.run(
        [*cmd, "runs", "list", "--runs-dir", str(runs), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (only,) = json.loads(listed.stdout)
    assert only["run_id"] == report["run_id"] and only["size_bytes"] > 0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
