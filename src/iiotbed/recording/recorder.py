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
import queue
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iiotbed import __version__
from iiotbed._aio import AsyncClosing
from iiotbed.recording.answer_key import AnswerKey
from iiotbed.recording.format import (
    META_ANSWER_KEY,
    META_IIOTBED,
    SCHEMA_VERSION,
    RecordingError,
    retained_by_protocol,
)

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveFactory
    from iiotbed.mqtt import Message, MqttConnection
    from iiotbed.recording.writer import RecordingWriter
    from iiotbed.scenario import Scenario
    from iiotbed.telemetry import Record

__all__ = ["LiveRecorder", "RecordOptions", "RecordSummary", "record"]

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


class LiveRecorder(AsyncClosing):
    """A live run's MQTT traffic written to ``out`` as it arrives (``async with``).

    A tap subscribes to every topic the devices publish (``spBv1.0/<group>/#``,
    ``+/+/<manufacturer>/#``) and stamps each message with ``clock()`` (sim s); a writer
    thread puts it into the MCAP file at once, so memory holds one chunk (1 MB), not the
    run. :meth:`finish` adds the event log, the OPC UA values, the scenario and the answer
    key and gives the file its name; until then it is ``<out>.part``, removed on failure.
    """

    def __init__(self, scenario: Scenario, out: Path, broker: str, *, group: str,
                 manufacturer: str = "", clock: Callable[[], float] = lambda: 0.0) -> None:  # fmt: skip
        self.scenario = scenario
        self.out = out
        self.broker = broker
        self.group = group
        self.manufacturer = manufacturer
        self.clock = clock  # sim s now: set by the caller once the simulation runs
        self.messages = 0
        self.last_wall = time.monotonic()
        self._epoch_ns = round(scenario.plant.epoch.timestamp() * 1e9)
        self._last_ns = 0
        self._part = out.with_name(out.name + ".part")
        self._writer: RecordingWriter | None = None
        self._queue: queue.SimpleQueue[tuple[int, str, bytes, int, bool] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._conn: MqttConnection | None = None

    async def open(self) -> None:
        from iiotbed.mqtt import MqttConnection
        from iiotbed.protocols.sparkplug.codec import NAMESPACE
        from iiotbed.recording.writer import RecordingWriter

        epoch = self.scenario.plant.epoch.timestamp()
        # creating the file: blocking I/O, in a worker thread
        self._writer = await asyncio.to_thread(RecordingWriter, self._part, epoch_s=epoch)
        # one thread owns the file while the run goes: compressing and writing a chunk
        # must not stall the event loop that paces the simulation
        self._thread = threading.Thread(target=self._drain, name="iiotbed-recorder", daemon=True)
        self._thread.start()
        subs = [(f"{NAMESPACE}/{self.group}/#", 1)]
        if self.manufacturer:
            subs.append((f"+/+/{self.manufacturer}/#", 1))
        self._conn = MqttConnection(self.broker, client_id=f"iiotbed-recorder-{secrets.token_hex(4)}",
                                    on_message=self._on_message, subscriptions=subs)  # fmt: skip
        try:
            await self._conn.open()
        except BaseException:
            await self.close()
            raise

    def _on_message(self, msg: Message) -> None:
        # strictly increasing log times: any MCAP reader keeps the arrival order
        ns = max(self._epoch_ns + round(self.clock() * 1e9), self._last_ns + 1)
        self._last_ns = ns
        retain = msg.retain or retained_by_protocol(msg.topic)
        self._queue.put((ns, msg.topic, msg.payload, msg.qos, retain))
        self.messages += 1
        self.last_wall = time.monotonic()

    def _drain(self) -> None:
        assert self._writer is not None
        while (item := self._queue.get()) is not None:
            if self._failed is None:
                try:
                    self._writer.mqtt(*item)
                except Exception as exc:  # kept: finish() raises it
                    self._failed = exc

    async def quiet(self, quiet_s: float, limit_s: float) -> None:
        """Return once no message arrived for ``quiet_s`` (or after ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            idle = time.monotonic() - self.last_wall
            if idle >= quiet_s:
                return
            await asyncio.sleep(quiet_s - idle)

    async def _stop_tap(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)  # the last chunk may still be compressing

    async def close(self) -> None:
        """Stop the tap; a file :meth:`finish` did not complete is removed."""
        await self._stop_tap()
        writer, self._writer = self._writer, None
        if writer is not None:  # not finished: no half-written file stays behind
            await asyncio.to_thread(_discard, writer, self._part)

    async def finish(self, scenario_file: Path, events: Path, *, start: float, end: float,
                     speed: float, replication: int, paced_from: float,
                     sparkplug_group: str | None, wall0: float) -> RecordSummary:  # fmt: skip
        """Stop the tap, add the event log (``events``), the OPC UA values, the scenario and
        the answer key over ``start .. end`` (sim s), and name the file ``out``."""
        await self._stop_tap()
        if self._failed is not None:
            raise RecordingError(
                f"cannot be written: {self._failed}", path=self.out
            ) from self._failed
        writer, self._writer = self._writer, None
        assert writer is not None, "use inside 'async with'"
        # the event log, the KPI engine and the file: I/O and CPU work, in a worker thread
        try:
            return await asyncio.to_thread(
                _write, writer, self.scenario, scenario_file, self.out, events, start=start,
                end=end, speed=speed, replication=replication, paced_from=paced_from,
                sparkplug_group=sparkplug_group, mqtt_messages=self.messages, wall0=wall0,
            )  # fmt: skip
        except BaseException:
            await asyncio.to_thread(_discard, writer, self._part)
            raise


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
    from iiotbed.platform.broker import EmbeddedBroker

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
            rec = await stack.enter_async_context(LiveRecorder(
                scenario, out, broker, group=live.group_id, manufacturer=live.manufacturer,
                clock=lambda: live.now,
            ))  # fmt: skip
            async with live:
                for line in live.endpoints:
                    tell(f"  {line}")
                paced_from = _first_production(scenario)
                watching = watch(live) if watch is not None else nullcontext()
                async with watching:
                    await live.wait()
                await rec.quiet(opts.quiet_s, opts.drain_timeout)
                reached = live.now
            # closed: NDEATH and VDA 5050 OFFLINE are on their way to the tap
            await rec.quiet(opts.quiet_s, opts.drain_timeout)
            # the event log is complete once the factory closed
            return await rec.finish(
                scenario_file, events, start=min(scenario.run.warmup, reached), end=reached,
                speed=opts.speed, replication=opts.replication,
                paced_from=min(paced_from, reached), sparkplug_group=opts.sparkplug_group,
                wall0=wall0,
            )  # fmt: skip


def _discard(writer: RecordingWriter, part: Path) -> None:
    with contextlib.suppress(Exception):
        writer.close()
    part.unlink(missing_ok=True)


def _write(
    w: RecordingWriter,
    scenario: Scenario,
    scenario_file: Path,
    out: Path,
    events: Path,
    *,
    start: float,
    end: float,
    speed: float,
    replication: int,
    paced_from: float,
    sparkplug_group: str | None,
    mqtt_messages: int,
    wall0: float,
) -> RecordSummary:
    from iiotbed.eventlog import load_records
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout
    from iiotbed.recording.opcua_values import opcua_values
    from iiotbed.testbed.agreement import line_view

    records: list[Record] = load_records(events)
    report = compute_kpis(records, Layout.from_scenario(scenario), start=start, end=end)
    key = AnswerKey(
        (start, end),
        _clean(line_view(report)),
        {a: _clean(v) for a, v in report.stations.items()},
    )
    plant = scenario.plant
    w.records(records)
    values = w.opcua(opcua_values(scenario, records))  # a generator: one value at a time
    files = _scenario_files(scenario_file, scenario)
    for name, text in files.items():
        w.attach(name, text)
    w.metadata(META_IIOTBED, {
        "schema_version": str(SCHEMA_VERSION), "software_version": __version__,
        "scenario_name": scenario.name, "scenario_file": scenario_file.name,
        "seed": str(scenario.run.seed), "replication": str(replication),
        "speed": f"{speed:g}", "epoch": plant.epoch.isoformat(),
        "epoch_s": repr(plant.epoch.timestamp()), "paced_from": repr(paced_from),
        "end": repr(end), "line_path": scenario.line_path,
        "sparkplug_group": sparkplug_group or f"{plant.enterprise}-{plant.site}",
        "edge_node": f"{plant.area}-{plant.line}",
    })  # fmt: skip
    w.metadata(META_ANSWER_KEY, key.to_json())
    w.close()
    w.path.replace(out)  # never a half-written file under the name asked for
    return RecordSummary(out, mqtt_messages, len(records), values, out.stat().st_size,
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
