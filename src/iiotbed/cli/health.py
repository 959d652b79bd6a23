"""Commands for a deployed stack (docker-compose.yml): health, report.

``iiotbed health URL...`` is what the containers' healthchecks run: exit 0 when every
endpoint answers its protocol's handshake, 1 when one does not. ``iiotbed report`` is
``iiotbed run``'s report for a run the separate services made: the platform's KPIs in the
store beside the answer key replayed from the devices' event log, and the verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from iiotbed.cli._common import (
    AsJson,
    FileArg,
    Goal,
    NoVerdict,
    Replications,
    VerdictMetric,
    Workers,
    _check_metric,
    _duration,
    _err,
    _load,
    _user_errors,
    app,
)
from iiotbed.errors import IiotbedError

if TYPE_CHECKING:
    from iiotbed.platform.store import Store
    from iiotbed.scenario import Scenario

__all__ = ["check", "health", "report"]

_SCHEMES = ("tcp", "mqtt", "opc.tcp", "http", "https", "postgresql", "postgres")


@app.command()
def health(
    urls: Annotated[
        list[str],
        typer.Argument(
            help="Endpoints: tcp://, mqtt://, opc.tcp://, http(s):// (2xx), postgresql://.",
            show_default=False,
        ),
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds per endpoint.")
    ] = 3.0,
) -> None:
    """Exit 0 when every endpoint answers (a container healthcheck), else 1."""
    for url in urls:
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES or not urlsplit(url).hostname:
            raise typer.BadParameter(
                f"{url!r}: expected {', '.join(s + '://host[:port]' for s in _SCHEMES)}",
                param_hint="URLS",
            )
    failed = 0
    for url in urls:
        problem = check(url, timeout)
        typer.echo(f"{_redact(url)}: {problem or 'ok'}")
        failed += problem is not None
    if failed:
        raise typer.Exit(1)


def check(url: str, timeout: float = 3.0) -> str | None:
    """None when ``url`` answers its protocol's handshake; else what went wrong."""
    parts = urlsplit(url)
    host, scheme = parts.hostname or "", parts.scheme
    default = {"mqtt": 1883, "opc.tcp": 4840, "http": 80, "https": 443}.get(scheme, 5432)
    try:
        port = parts.port or default
        if scheme in ("http", "https"):
            return _check_http(url, timeout)
        if scheme in ("postgresql", "postgres"):
            return _check_postgres(url, timeout)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if scheme == "mqtt":
                return _check_mqtt(sock)
            if scheme == "opc.tcp":
                return _check_opcua(sock, url)
            return None
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the peer")
        data += chunk
    return data


def _check_mqtt(sock: socket.socket) -> str | None:
    """An MQTT 3.1.1 CONNECT (clean session) answered by CONNACK 0, then DISCONNECT."""
    client_id = f"iiotbed-health-{os.getpid()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + struct.pack("!H", len(client_id)) + client_id
    sock.sendall(bytes([0x10, len(body)]) + body)
    ack = _recv(sock, 4)
    sock.sendall(b"\xe0\x00")
    if ack[0] != 0x20 or ack[3] != 0:
        return f"broker refused the connection (CONNACK {ack.hex()})"
    return None


def _check_opcua(sock: socket.socket, url: str) -> str | None:
    """An OPC UA Hello answered by Acknowledge (the transport handshake, no session)."""
    endpoint = url.encode()
    body = struct.pack("<IIIII", 0, 65536, 65536, 0, 0) + struct.pack("<i", len(endpoint))
    body += endpoint
    sock.sendall(b"HELF" + struct.pack("<I", 8 + len(body)) + body)
    head = _recv(sock, 8)
    if head[:3] != b"ACK":
        return f"no OPC UA Acknowledge (got {head[:4]!r})"
    return None


def _check_http(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status = int(r.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    return None if 200 <= status < 300 else f"HTTP {status}"


def _check_postgres(url: str, timeout: float) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


# ---------------------------------------------------------------------------- report


@app.command()
def report(
    file: FileArg,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="IIOTBED_STORE",
            help="The platform's store (postgresql://, sqlite:///).",
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            envvar="IIOTBED_EVENTS",
            dir_okay=False,
            help="The devices' event log (iiotbed devices --events): the answer key's source.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            envvar="IIOTBED_RESUME",
            dir_okay=False,
            help="The devices' resume file: while it exists the run has not finished.",
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration",
            "-d",
            envvar="IIOTBED_DURATION",
            help="Sim time the devices ran to (as given to iiotbed devices).",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The run (default: the store's newest of this scenario)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0.0,
            envvar="IIOTBED_REPORT_WAIT",
            help="Wall seconds to wait for the devices to finish and the store to settle.",
        ),
    ] = 0.0,
    replications: Replications = None,
    goal: Goal = 0.20,
    metric: VerdictMetric = "labour_productivity",
    workers: Workers = None,
    no_verdict: NoVerdict = False,
    as_json: AsJson = False,
) -> None:
    """The report of a run made by separate services (docker compose run --rm report)."""
    from iiotbed.cli.run import _print_run_report

    with _user_errors():
        info = _check_metric(metric)
        if store is None:
            raise typer.BadParameter(
                "give the platform's store (or IIOTBED_STORE)", param_hint="--store"
            )
        if events is None:
            raise typer.BadParameter(
                "give the devices' event log (or IIOTBED_EVENTS)", param_hint="--events"
            )
        from iiotbed.platform.store import open_store

        try:
            open_store(store)  # checks the URL; nothing is opened
        except IiotbedError as exc:
            raise typer.BadParameter(str(exc), param_hint="--store") from None
        scenario = _load(file, duration=_duration(duration))
        out = asyncio.run(
            _report(scenario, store, events, resume, run_id, wait, replications, goal, metric,
                    workers, not no_verdict)
        )  # fmt: skip
        if as_json:
            typer.echo(json.dumps(out.to_dict(), indent=2, allow_nan=False))
        else:
            _print_run_report(out, info, live=False)
        if not out.agrees:
            bad = [k for k, a in out.agreement.items() if not a.ok]
            _err(f"error: telemetry KPIs disagree with the answer key: {', '.join(bad)}")
            raise typer.Exit(1)


def _finished(events: Path, resume: Path | None, quiet: float) -> bool:
    """The devices are done: their event log exists, untouched for ``quiet`` s, and their
    resume file (kept while a run is under way) is gone."""
    if resume is not None and resume.exists():
        return False
    try:
        return time.time() - events.stat().st_mtime >= quiet
    except FileNotFoundError:
        return False


async def _poll(ok: Any, deadline: float, every: float = 0.5) -> bool:
    while True:
        if await ok():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)


async def _report(
    scenario: Scenario, url: str, events: Path, resume: Path | None, run_id: str | None,
    wait: float, replications: int | None, goal: float, metric: str, workers: int | None,
    verdict: bool,
) -> Any:  # fmt: skip
    from iiotbed.platform.layout import Layout
    from iiotbed.platform.store import open_store
    from iiotbed.testbed.agreement import agreement, line_view
    from iiotbed.testbed.plan import RunOptions, base_scenario
    from iiotbed.testbed.report import RunReport, replay_answer_key
    from iiotbed.testbed.verdict import RunVerdict, batch_verdict

    deadline = time.monotonic() + wait

    async def done() -> bool:
        return await asyncio.to_thread(_finished, events, resume, 2.0)

    if not await _poll(done, deadline):
        started = await asyncio.to_thread(events.exists)
        state = "is still running" if started else "has not started"
        raise IiotbedError(
            f"the devices' run {state} ({events}); wait for it (--wait SECONDS) or run later"
        )
    end = scenario.run.duration
    start = min(scenario.run.warmup, end)
    layout = Layout.from_scenario(scenario)
    store = open_store(url)
    await store.open()
    try:
        rid = run_id or await _newest_run(store, scenario)
        # the gateway may still be draining: read once the stored counts stop moving
        last: list[Any] = [None]

        async def settled() -> bool:
            now = await store.counts(rid)
            same = bool(now == last[0])
            last[0] = now
            return same

        await _poll(settled, max(deadline, time.monotonic() + 4.0), every=2.0)
        telemetry = line_view(await store.kpis(rid, layout, start, end))
        counts = last[0]
    finally:
        await store.close()
    truth = await asyncio.to_thread(replay_answer_key, events, layout, start, end)
    key = line_view(truth)
    opts = RunOptions(speed=None, replications=replications, goal=goal, metric=metric,
                      workers=workers, verdict=verdict)  # fmt: skip
    base = base_scenario(scenario, opts)
    v = RunVerdict()
    if base is not None:
        v = await batch_verdict(scenario, base, opts, end, key, _err)
    stored = None if counts is None else counts.samples + counts.events
    return RunReport(
        run_id=rid, scenario=scenario.name, dashboard="", endpoints={}, start=start, end=end,
        ended="duration", wall_s=0.0, kpis=telemetry, answer_key=key,
        agreement=agreement(telemetry, key), metric=metric, goal=goal,
        settle={"stored": stored}, improvement=v.improvement, verdict=v.verdict,
        verdict_basis=v.basis, live_improvement=v.live_improvement, store=store.url,
        warnings=list(v.warnings),
    )  # fmt: skip


async def _newest_run(store: Store, scenario: Scenario) -> str:
    runs = [r for r in await store.list_runs() if r.scenario == scenario.name]
    if not runs:
        raise IiotbedError(f"no run of {scenario.name!r} in the store {store.url}")
    newest = max(runs, key=lambda r: (r.started.timestamp() if r.started else 0.0, r.run_id))
    return newest.run_id
