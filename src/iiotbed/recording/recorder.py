"""Recording a live run: the factory as ``iiotbed devices`` runs it, the broker tapped.

:func:`record` starts a broker (an embedded one unless given), subscribes a tap to every
topic the devices publish (``spBv1.0/<group>/#``, ``<interface>/+/<manufacturer>/#``),
runs the :class:`~iiotbed.devices.live.LiveFactory` paced, closes it (NDEATH, VDA 5050
OFFLINE, both recorded) and writes one MCAP file: the MQTT messages as sent, the event
log, the OPC UA values, the scenario and the answer key over the window (the KPI engine
over the event log, as ``iiotbed run`` computes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iiotbed import __version__
from iiotbed.recording.answer_key import AnswerKey
from iiotbed.recording.format import (
    META_ANSWER_KEY,
    META_IIOTBED,
    SCHEMA_VERSION,
    retained_by_protocol,
)

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveFactory
    from iiotbed.mqtt import Message
    from iiotbed.scenario import Scenario
    from iiotbed.telemetry import Record

__all__ = ["RecordOptions", "RecordSummary", "record"]

log = logging.getLogger(__name__)

#: an ``async with`` shown the live factory while it runs (the CLI's progress line)
Watch = Callable[["LiveFactory"], AbstractAsyncContextManager[object]]


@dataclass
class RecordOptions:
    """How to record. ``end`` is the sim time to stop at (default: the scenario's duration)."""

    speed: float = 2000.0
    end: float | None = None
    broker: str | None = None  # None: an embedded broker on a free port
    replication: int = 0
    opcua_port: int = 4840
    sparkplug_group: str | None = None
    quiet_s: float = 0.3  # no message for this long (wall s) = the tap has them all
    drain_timeout: float = 10.0


@dataclass(frozen=True)
class RecordSummary:
    """What was written."""

    path: Path
    mqtt_messages: int
    records: int
    opcua_values: int
    size: int
    wall_s: float
    answer_key: AnswerKey


class _Tap:
    """Every message the devices publish, stamped with the sim clock on arrival."""

    def __init__(self, clock_ns: Callable[[], int]) -> None:
        self._clock_ns = clock_ns
        self.messages: list[tuple[int, str, bytes, int, bool]] = []
        self.last_wall = time.monotonic()
        self._last_ns = 0

    def on_message(self, msg: Message) -> None:
        # strictly increasing log times: any MCAP reader keeps the arrival order
        ns = max(self._clock_ns(), self._last_ns + 1)
        self._last_ns = ns
        retain = msg.retain or retained_by_protocol(msg.topic)
        self.messages.append((ns, msg.topic, msg.payload, msg.qos, retain))
        self.last_wall = time.monotonic()

    async def quiet(self, quiet_s: float, limit_s: float) -> None:
        """Return once no message arrived for ``quiet_s`` (or after ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            idle = time.monotonic() - self.last_wall
            if idle >= quiet_s:
                return
            await asyncio.sleep(quiet_s - idle)


async def record(
    scenario: Scenario,
    scenario_file: Path,
    out: Path,
    options: RecordOptions | None = None,
    *,
    say: Callable[[str], None] | None = None,
    watch: Watch | None = None,
) -> RecordSummary:
    """Run ``scenario`` live and write the recording to ``out``; see the module docstring."""
    from iiotbed.devices.live import LiveFactory, LiveOptions
    from iiotbed.mqtt import MqttConnection
    from iiotbed.platform.broker import EmbeddedBroker
    from iiotbed.protocols.sparkplug.codec import NAMESPACE

    opts = options or RecordOptions()
    tell = say or (lambda _m: None)
    wall0 = time.monotonic()
    end = opts.end if opts.end is not None else scenario.run.duration
    with tempfile.TemporaryDirectory(prefix="iiotbed-record-") as tmp:
        events = Path(tmp) / "events.jsonl"
        async with AsyncExitStack() as stack:
            broker = opts.broker
            if broker is None:
                broker = (await stack.enter_async_context(EmbeddedBroker())).url
            live = LiveFactory(scenario, LiveOptions(
                speed=opts.speed, duration=end, replication=opts.replication,
                opcua_port=opts.opcua_port, broker=broker, sparkplug_group=opts.sparkplug_group,
                events=events,
            ))  # fmt: skip
            epoch_ns = round(scenario.plant.epoch.timestamp() * 1e9)
            tap = _Tap(lambda: epoch_ns + round(live.now * 1e9))
            subs = [(f"{NAMESPACE}/{live.group_id}/#", 1)]
            if live.manufacturer:
                subs.append((f"+/+/{live.manufacturer}/#", 1))
            await stack.enter_async_context(MqttConnection(
                broker, client_id=f"iiotbed-recorder-{secrets.token_hex(4)}",
                on_message=tap.on_message, subscriptions=subs,
            ))  # fmt: skip
            async with live:
                for line in live.endpoints:
                    tell(f"  {line}")
                paced_from = _first_production(scenario)
                watching = watch(live) if watch is not None else nullcontext()
                async with watching:
                    await live.wait()
                await tap.quiet(opts.quiet_s, opts.drain_timeout)
                reached = live.now
            # closed: NDEATH and VDA 5050 OFFLINE are on their way to the tap
            await tap.quiet(opts.quiet_s, opts.drain_timeout)
        # the event log is complete once the factory closed; reading it and the KPI engine
        # are file I/O and CPU work: in a worker thread
        return await asyncio.to_thread(
            _write, scenario, scenario_file, out, opts, tap.messages, events,
            reached=reached, paced_from=min(paced_from, reached), wall0=wall0,
        )  # fmt: skip


def _write(
    scenario: Scenario,
    scenario_file: Path,
    out: Path,
    opts: RecordOptions,
    messages: list[tuple[int, str, bytes, int, bool]],
    events: Path,
    *,
    reached: float,
    paced_from: float,
    wall0: float,
) -> RecordSummary:
    from iiotbed.eventlog import load_records
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout
    from iiotbed.recording.opcua_values import opcua_values
    from iiotbed.recording.writer import RecordingWriter
    from iiotbed.testbed.agreement import line_view

    records: list[Record] = load_records(events)
    start = min(scenario.run.warmup, reached)
    report = compute_kpis(records, Layout.from_scenario(scenario), start=start, end=reached)
    key = AnswerKey(
        (start, reached), _clean(line_view(report)),
        {a: _clean(v) for a, v in report.stations.items()},
    )
    plant = scenario.plant
    tmp = out.with_name(out.name + ".part")
    w = RecordingWriter(tmp, epoch_s=plant.epoch.timestamp())
    try:
        for ns, topic, payload, qos, retain in messages:
            w.mqtt(ns, topic, payload, qos, retain)
        w.records(records)
        values = list(opcua_values(scenario, records))
        w.opcua(values)
        files = _scenario_files(scenario_file, scenario)
        for name, text in files.items():
            w.attach(name, text)
        w.metadata(META_IIOTBED, {
            "schema_version": str(SCHEMA_VERSION), "software_version": __version__,
            "scenario_name": scenario.name, "scenario_file": scenario_file.name,
            "seed": str(scenario.run.seed), "replication": str(opts.replication),
            "speed": f"{opts.speed:g}", "epoch": plant.epoch.isoformat(),
            "epoch_s": repr(plant.epoch.timestamp()), "paced_from": repr(paced_from),
            "end": repr(reached), "line_path": scenario.line_path,
            "sparkplug_group": opts.sparkplug_group or f"{plant.enterprise}-{plant.site}",
            "edge_node": f"{plant.area}-{plant.line}",
        })  # fmt: skip
        w.metadata(META_ANSWER_KEY, key.to_json())
    finally:
        w.close()
    tmp.replace(out)  # never a half-written file under the name asked for
    return RecordSummary(out, len(messages), len(records), len(values), out.stat().st_size,
                         time.monotonic() - wall0, key)  # fmt: skip


def _clean(d: Mapping[str, float]) -> dict[str, float | None]:
    from iiotbed._json import finite_map

    return finite_map(d)


def _scenario_files(path: Path, scenario: Scenario) -> dict[str, str]:
    """The scenario file and every base it extends, by file name."""
    files = {path.name: path.read_text(encoding="utf-8")}
    base = scenario.base_path
    seen = {path.resolve()}
    while base is not None and base.resolve() not in seen:
        seen.add(base.resolve())
        files.setdefault(base.name, base.read_text(encoding="utf-8"))
        from iiotbed.scenario import load_scenario

        base = load_scenario(base).base_path
    return files


def _first_production(scenario: Scenario) -> float:
    from iiotbed.devices.sim.calendar import ProductionCalendar

    with contextlib.suppress(ValueError):
        return float(ProductionCalendar(scenario).next_production(0.0))
    return 0.0
