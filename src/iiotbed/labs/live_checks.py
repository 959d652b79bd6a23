"""Checkers of the live labs (1-6): run the student's script against a :class:`LabRig`.

Each checker runs the script with the rig's endpoints in its environment, then sets what
the script answered beside what happened: the simulation (the answer key, watched by the
rig), the scenario, the platform's API and what the checker itself saw on the broker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from iiotbed._aio import ExcInfo
from iiotbed.errors import ConnectorError
from iiotbed.labs.report import CheckReport
from iiotbed.labs.rig import LabRig, merged_env
from iiotbed.labs.script import ScriptRun, answer_step, run_script

if TYPE_CHECKING:
    from iiotbed.mqtt import Message

__all__ = ["LIVE_CHECKS"]

#: the station lab 1 asks about and lab 2 counts (the line's last stage: its output)
BROWSE_STATION = "bonder-02"
COUNT_STATION = "packer-01"
STOP_STATION = "cleaner-01"
PAUSE_AMR = "amr-02"
#: lab 6's station, and how far its A, P and Q may be from the platform's (absolute: the
#: same samples and rules give the same figures up to rounding)
OEE_STATION = "bonder-01"
OEE_TOLERANCE = 0.001


async def _run(rig: LabRig, script: Path, limit_s: float, **extra: str) -> tuple[ScriptRun, float, float]:
    """Run the script; return its run and the sim times it started and ended at."""
    env = merged_env({**rig.script_env(), **extra})
    rig.look()
    t0 = rig.now
    run = await run_script(script, env, limit_s=limit_s)
    rig.look()  # what the script saw happen is in the watcher now, not 10 ms later
    return run, t0, rig.now


async def _get(rig: LabRig, path: str, **params: object) -> Any:
    """GET the platform's API (urllib in a thread: it blocks)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    url = f"{rig.api_url}{path}" + (f"?{query}" if query else "")

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    return await asyncio.to_thread(fetch)


class _Tap:
    """The checker's own MQTT subscriber, and a marker to know it has heard everything.

    :meth:`flush` publishes a marker to a topic only the tap subscribes to and waits for it
    to come back: the broker delivers in the order it received, so whatever it had before
    (the NBIRTH or order the script just saw) has reached ``on_message`` by then. Once
    before the script (the subscriptions are in place) and once after it.
    """

    def __init__(self, rig: LabRig, name: str, topics: list[tuple[str, int]],
                 on_message: Callable[[Message], None]) -> None:  # fmt: skip
        from iiotbed.mqtt import MqttConnection

        run_id = rig.services.plan.run_id
        self._marker = f"iiotbed/labs/{run_id}/{name}/marker"
        self._on_message = on_message
        self._sent = 0
        self._back = 0
        self._heard = asyncio.Event()
        self.connection = MqttConnection(rig.services.broker_url, client_id=f"iiotbed-{name}-{run_id}",
                                         on_message=self._deliver,
                                         subscriptions=[*topics, (self._marker, 1)])  # fmt: skip

    def _deliver(self, msg: Message) -> None:
        if msg.topic != self._marker:
            self._on_message(msg)
            return
        self._back = max(self._back, int(msg.payload or b"0"))
        self._heard.set()

    async def flush(self, limit_s: float = 30.0) -> None:
        self._sent += 1
        self.connection.publish(self._marker, str(self._sent).encode(), qos=1)
        try:
            async with asyncio.timeout(limit_s):  # not met in the normal case (milliseconds)
                while self._back < self._sent:
                    self._heard.clear()
                    await self._heard.wait()
        except TimeoutError:
            raise ConnectorError(f"the lab's broker did not send {self._marker} back within "
                                 f"{limit_s:g} s", endpoint=self._marker) from None

    async def __aenter__(self) -> Self:
        await self.connection.__aenter__()
        try:
            await self.flush()  # subscribed: the broker took SUBSCRIBE before this PUBLISH
        except BaseException:
            await self.connection.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        await self.connection.__aexit__(*exc_info)


def _sim_t(rig: LabRig, value: object) -> float | None:
    """An ISO 8601 source timestamp as sim seconds since the scenario epoch (None: not one)."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        return None
    return (stamp - rig.scenario.plant.epoch).total_seconds()


def _close(a: object, b: float, rel: float) -> bool:
    return isinstance(a, int | float) and not isinstance(a, bool) and math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# ---------------------------------------------------------------------- lab 1


async def check_browse(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    from iiotbed.devices.opcua import machine_specs
    from iiotbed.devices.sim import STATES
    from iiotbed.telemetry import ItemState

    run, t0, t1 = await _run(rig, script, limit_s, IIOTBED_LAB_STATION=BROWSE_STATION)
    fields = ("station", "Manufacturer", "SerialNumber", "ProductInstanceUri", "ItemState")
    answer = answer_step(report, run, fields)
    if answer is None:
        return
    spec = next(s for s in machine_specs(rig.scenario) if s.name == BROWSE_STATION)
    report.add("the machine asked for", answer["station"] == BROWSE_STATION,
               f"{answer['station']!r}", f"read the station named in IIOTBED_LAB_STATION "
               f"({BROWSE_STATION}), not a fixed one")  # fmt: skip
    truth = {"Manufacturer": spec.manufacturer, "SerialNumber": spec.serial_number,
             "ProductInstanceUri": spec.product_instance_uri}  # fmt: skip
    for key, want in truth.items():
        got = answer[key]
        report.add(f"Identification/{key}", got == want, f"{got!r}" + ("" if got == want else f", the machine says {want!r}"),
                   f"browse Objects/Machines/{BROWSE_STATION}/Identification/{key} and print its "
                   f"value" + (" (a LocalizedText: its .Text)" if key == "Manufacturer" else ""))  # fmt: skip
    item = {s.name: ItemState(s.item).name for s in STATES}
    seen = [item[s] for s in rig.watcher.states_between(BROWSE_STATION, t0, t1)]
    got = answer["ItemState"]
    report.add("MachineryItemState/CurrentState", got in seen,
               f"{got!r}; while your script ran the machine was {', '.join(dict.fromkeys(seen))}",
               "read MachineryItemState/CurrentState (a LocalizedText: print .Text), not the "
               "PackML State")  # fmt: skip


# ---------------------------------------------------------------------- lab 2


async def _count_at(rig: LabRig, asset: str, t: float) -> float | None:
    """The platform's stored ProcessedCount of ``asset`` at sim time ``t`` (last at or before)."""
    body = await _get(rig, "/api/series", asset=asset, tag="ProcessedCount", end=t + 1e-6,
                      start=max(0.0, t - 86400.0), run_id=rig.services.plan.run_id)  # fmt: skip
    points = [p for p in body["points"] if p[0] <= t + 1e-6]
    return float(points[-1][1]) if points else None


async def check_throughput(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    run, _, _ = await _run(rig, script, limit_s, IIOTBED_LAB_STATION=COUNT_STATION)
    fields = ("station", "t0", "t1", "count0", "count1", "throughput_per_h", "platform_processed")
    answer = answer_step(report, run, fields)
    if answer is None:
        return
    asset = next(p for _, n, p in rig.scenario.station_paths() if n == COUNT_STATION)
    t0, t1 = _sim_t(rig, answer["t0"]), _sim_t(rig, answer["t1"])
    if not report.add("t0 and t1 are source timestamps", t0 is not None and t1 is not None
                      and t1 - t0 >= 600, f"{answer['t0']!r} .. {answer['t1']!r}",
                      "print the SourceTimestamps of the two values (ISO 8601 with the offset, "
                      "datetime.isoformat()), at least 600 sim s apart"):  # fmt: skip
        return
    assert t0 is not None and t1 is not None
    await _settled(rig, asset, t1)
    c0, c1 = await _count_at(rig, asset, t0), await _count_at(rig, asset, t1)
    for key, want in (("count0", c0), ("count1", c1)):
        report.add(f"{key} is the counter at that time", want is not None and answer[key] == want,
                   f"{answer[key]!r}, the platform stored {want!r}",
                   f"subscribe to {COUNT_STATION}'s OperationCounters/ProcessedCount and keep each "
                   f"value with its SourceTimestamp")  # fmt: skip
    if c0 is None or c1 is None:
        return
    want = (c1 - c0) / (t1 - t0) * 3600.0
    report.add("your throughput", _close(answer["throughput_per_h"], want, 0.01),
               f"{answer['throughput_per_h']!r} units/h; the counters say {want:.3f}",
               "units between the two values divided by the SIM time between their "
               "SourceTimestamps (not wall time: the factory runs faster than real time), per hour")  # fmt: skip
    kpis = await _get(rig, "/api/kpis", by="station", start=t0, end=t1, run_id=rig.services.plan.run_id)
    platform = _station_kpi(kpis, asset, "processed")
    report.add("the platform's count for your window", platform is not None
               and answer["platform_processed"] == platform,
               f"{answer['platform_processed']!r}; /api/kpis?by=station&start={t0:g}&end={t1:g} "
               f"says processed = {platform!r} (your counters: {c1 - c0:g})",
               "ask /api/kpis with by=station and start/end = your t0/t1 in sim seconds "
               "(source time minus the scenario epoch); read stations[<asset path>].processed")  # fmt: skip


async def _settled(rig: LabRig, asset: str, t: float, *, limit_s: float = 60.0) -> None:
    """Wait until the platform has stored a ProcessedCount of ``asset`` dated ``t`` or later.

    The value the script saw at ``t`` reaches the store a moment later (gateway, platform);
    the line keeps counting, so a later one comes even when ``t`` is no sample's time. The
    deadline is not met in the normal case: past it the counts are compared as they are.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        body = await _get(rig, "/api/series", asset=asset, tag="ProcessedCount", start=t,
                          limit=1, run_id=rig.services.plan.run_id)  # fmt: skip
        if body["points"]:
            return
        await asyncio.sleep(0.05)


def _station_kpi(kpis: Any, asset: str, key: str) -> float | None:
    """``key`` of one station in an /api/kpis?by=station answer, wherever it is nested."""
    groups = kpis.get("stations")
    if isinstance(groups, dict):
        entry = groups.get(asset) or groups.get(asset.rsplit("/", 1)[-1])
        if isinstance(entry, dict):
            value = entry.get(key)
            return float(value) if isinstance(value, int | float) else None
    return None


# ---------------------------------------------------------------------- lab 3


async def check_starve(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    stage = next(s for s in rig.scenario.line.stages if s.name == "cof-bonding")
    bonders = list(stage.station_names)
    run, t0, t1 = await _run(rig, script, limit_s, IIOTBED_LAB_STATION=STOP_STATION)
    answer = answer_step(report, run, ("stopped", "starved", "buffer_capacity"))
    w = rig.watcher
    stopped = w.first(STOP_STATION, "stopped", t0 - 1e-6)
    report.add(f"{STOP_STATION} stopped", stopped is not None and stopped <= t1,
               f"at sim {stopped:.0f} s" if stopped is not None else "never stopped while your script ran",
               f"call the Stop method of Objects/Machines/{STOP_STATION} (uacall or Node.call_method)")  # fmt: skip
    if stopped is not None:
        late = [b for b in bonders if "suspended" not in w.states_between(b, stopped, t1)]
        report.add("the bonders starved", not late,
                   f"not seen Suspended: {', '.join(late)}" if late else ", ".join(bonders),
                   "wait (subscribe to State/CurrentState) until every bonder shows Suspended "
                   "before you restart the cleaner")  # fmt: skip
    state = rig.state(STOP_STATION)
    report.add(f"{STOP_STATION} running again at the end", state != "stopped", f"it is {state}",
               f"call Start on {STOP_STATION} once you have seen the bonders starve")  # fmt: skip
    if answer is None:
        return
    got = answer["starved"]
    report.add("you saw the bonders starve", isinstance(got, list) and set(got) == set(bonders),
               f"{got!r}", f"list the stations that went Suspended: {', '.join(bonders)}")  # fmt: skip
    report.add("the buffer that ran empty", answer["buffer_capacity"] == stage.buffer_capacity,
               f"{answer['buffer_capacity']!r}",
               "the bonders' input buffer: buffer_capacity of the cof-bonding stage in the "
               "scenario file (the units the bonders could still take after the cleaner stopped)")  # fmt: skip


# ---------------------------------------------------------------------- lab 4


async def check_sparkplug(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    from iiotbed.protocols.sparkplug.codec import BDSEQ_METRIC, decode_payload

    group, node = rig.sparkplug_group, rig.edge_node
    births: list[tuple[int, int, int]] = []  # (seq, bdSeq, metrics)
    seqs: list[int] = []

    def on_message(msg: Message) -> None:
        try:
            payload = decode_payload(msg.payload)
        except Exception:
            return
        seqs.append(payload.seq)
        if msg.topic.split("/")[2] == "NBIRTH":
            bd = next((int(m.long_value) for m in payload.metrics if m.name == BDSEQ_METRIC), -1)
            births.append((payload.seq, bd, len(payload.metrics)))

    topic = f"spBv1.0/{group}/+/{node}"
    async with _Tap(rig, "lab4", [(topic, 0), (f"{topic}/#", 0)], on_message) as tap:
        run, _, _ = await _run(rig, script, limit_s)
        await tap.flush()  # the last NBIRTH the script saw has reached on_message too
    answer = answer_step(report, run, ("bdSeq", "birth_metrics", "seqs", "rebirth"))
    report.add("a rebirth while your script ran", bool(births),
               f"{len(births)} NBIRTH seen",
               f"publish an NCMD to spBv1.0/{group}/NCMD/{node} with the Boolean metric "
               "'Node Control/Rebirth' = true (a Sparkplug protobuf payload)")  # fmt: skip
    if answer is None or not births:
        return
    bd = {b for _, b, _ in births}
    report.add("bdSeq", answer["bdSeq"] in bd, f"{answer['bdSeq']!r}, the NBIRTH carried {sorted(bd)}",
               "bdSeq is a metric of the NBIRTH (UInt64 'bdSeq'), not the payload's seq")  # fmt: skip
    counts = {m for _, _, m in births}
    report.add("metrics in the NBIRTH", answer["birth_metrics"] in counts,
               f"{answer['birth_metrics']!r}, the NBIRTH had {sorted(counts)}",
               "count every metric of the NBIRTH payload, bdSeq and Node Control/Rebirth included")  # fmt: skip
    got = answer["seqs"]
    ok = (isinstance(got, list) and len(got) >= 3 and all(isinstance(s, int) for s in got)
          and _contiguous(got, seqs))  # fmt: skip
    report.add("seq of the messages you decoded by hand", ok,
               f"{got!r}" if ok else f"{got!r} is not a run of what the edge sent ({seqs[:12]}...)",
               "read field 3 (seq, a varint) of at least 3 consecutive NDATA/DDATA payloads; "
               "it counts 0..255 and wraps, the NBIRTH being 0")  # fmt: skip
    report.add("your script saw its rebirth", answer["rebirth"] is True, f"{answer['rebirth']!r}",
               "after the NCMD, wait for the new NBIRTH (seq 0) and print rebirth: true")  # fmt: skip


def _contiguous(part: list[int], whole: list[int]) -> bool:
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


# ---------------------------------------------------------------------- lab 5


async def check_vda5050(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    live = rig.services.live
    orders: set[str] = set()

    def on_message(msg: Message) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(body, dict) and isinstance(body.get("orderId"), str) and body["orderId"]:
            orders.add(body["orderId"])

    root = f"uagv/v2/{live.manufacturer}/{PAUSE_AMR}"
    async with _Tap(rig, "lab5", [(f"{root}/order", 1), (f"{root}/state", 1)], on_message) as tap:
        run, t0, t1 = await _run(rig, script, limit_s, IIOTBED_LAB_AMR=PAUSE_AMR)
        await tap.flush()  # every order the script saw has reached on_message too
    answer = answer_step(report, run, ("amr", "paused_seen", "order_id"))
    changes = [(t, p) for t, p in rig.watcher.pauses(PAUSE_AMR) if t0 <= t <= t1]
    paused_at = next((t for t, p in changes if p), None)
    resumed_at = next((t for t, p in changes if not p and paused_at is not None and t >= paused_at), None)
    report.add(f"{PAUSE_AMR} paused in the simulation", paused_at is not None,
               f"at sim {paused_at:.0f} s" if paused_at is not None else "never paused",
               f"publish a startPause instant action to uagv/v2/{live.manufacturer}/{PAUSE_AMR}/"
               "instantActions (headerId, timestamp, version, manufacturer, serialNumber, actions)")  # fmt: skip
    still = live.factory.amr(PAUSE_AMR).paused
    report.add(f"{PAUSE_AMR} resumed at the end", not still and resumed_at is not None,
               "still paused" if still else (f"after {resumed_at - paused_at:.0f} sim s"
                                             if resumed_at is not None and paused_at is not None else "never paused"),
               "send stopPause once you have seen paused: true in its state")  # fmt: skip
    if answer is None:
        return
    report.add("the AMR asked for", answer["amr"] == PAUSE_AMR, f"{answer['amr']!r}",
               "use the AMR named in IIOTBED_LAB_AMR")  # fmt: skip
    report.add("you saw paused: true in its state", answer["paused_seen"] is True,
               f"{answer['paused_seen']!r}", f"subscribe to .../{PAUSE_AMR}/state and wait for "
               "\"paused\": true")  # fmt: skip
    report.add("an order the master control sent it", answer["order_id"] in orders,
               f"{answer['order_id']!r}; orders sent while you watched: {len(orders)}",
               f"keep the orderId of its state (or of an order on .../{PAUSE_AMR}/order) while "
               "you watch")  # fmt: skip


# ---------------------------------------------------------------------- lab 6

_OEE_HINTS = {
    "availability": "APT / PBT. PBT is the time the line's PlannedState is Production (1) "
    "and the station's MachineryItemState is known: breaks (2) and planned maintenance (3) "
    "are planned downtime, outside PBT. APT is the PBT time with MachineryItemState = "
    "Executing (3) and MachineryOperationMode not Maintenance (1) or Setup (2)",
    "performance": "ideal time / APT: the sum over products of the stage's ideal cycle time "
    "(products[].ideal_cycle_time in the scenario, extends resolved) times the delta of "
    "ProcessedCount/<product>; APT in seconds",
    "quality": "(PQ - defective) / PQ with PQ the delta of ProcessedCount and defective "
    "the delta of DefectiveCount; a delta is the value at or before t1 minus the value at or "
    "before t0",
    "oee": "availability x performance x quality",
}


def _number(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None  # type: ignore[arg-type]


def _planned_downtime(points: list[list[Any]], t0: float, t1: float) -> float:
    """Sim seconds of [t0, t1] the line spent in Break or PlannedMaintenance."""
    from iiotbed.telemetry import PlannedState

    down = {int(PlannedState.Break), int(PlannedState.PlannedMaintenance)}
    total = 0.0
    for (t, value), (t_next, _) in zip(points, [*points[1:], [math.inf, None]], strict=True):
        lo, hi = max(t, t0), min(t_next, t1)
        if hi > lo and value in down:
            total += hi - lo
    return total


async def check_oee(rig: LabRig, script: Path, report: CheckReport, limit_s: float) -> None:
    run, _, _ = await _run(rig, script, limit_s, IIOTBED_LAB_STATION=OEE_STATION)
    fields = ("station", "t0", "t1", "availability", "performance", "quality", "oee")
    answer = answer_step(report, run, fields)
    if answer is None:
        return
    report.add("the station asked for", answer["station"] == OEE_STATION, f"{answer['station']!r}",
               f"compute for the station named in IIOTBED_LAB_STATION ({OEE_STATION})")  # fmt: skip
    asset = next(p for _, n, p in rig.scenario.station_paths() if n == OEE_STATION)
    line = asset.rsplit("/", 2)[0]
    run_id = rig.services.plan.run_id
    t0, t1 = _number(answer["t0"]), _number(answer["t1"])
    down = 0.0
    if t0 is not None and t1 is not None and t1 > t0:
        body = await _get(rig, "/api/series", asset=line, tag="PlannedState", end=t1,
                          limit=1_000_000, run_id=run_id)  # fmt: skip
        down = _planned_downtime(body["points"], t0, t1)
    if not report.add("your window holds a break", t0 is not None and t1 is not None
                      and t1 - t0 >= 3600.0 and down > 0,
                      f"[{answer['t0']!r}, {answer['t1']!r}] sim s, {down / 60:.0f} min of planned downtime",
                      "t0 and t1 in sim seconds since the scenario epoch, at least an hour "
                      "apart, around the line's first meal break (PlannedState 2)"):  # fmt: skip
        return
    assert t0 is not None and t1 is not None
    await _settled(rig, asset, t1)
    kpis = await _get(rig, "/api/kpis", by="station", start=t0, end=t1, run_id=run_id)
    for key, hint in _OEE_HINTS.items():
        want, got = _station_kpi(kpis, asset, key), _number(answer[key])
        ok = want is not None and got is not None and abs(got - want) <= OEE_TOLERANCE
        platform = f"{want:.6f}" if want is not None else "nothing"
        report.add(key, ok, f"{answer[key]!r}; /api/kpis?by=station&start={t0:g}&end={t1:g} "
                   f"says {platform} (tolerance {OEE_TOLERANCE:g})", hint)  # fmt: skip


LiveCheck = Callable[[LabRig, Path, CheckReport, float], Awaitable[None]]

LIVE_CHECKS: dict[int, LiveCheck] = {
    1: check_browse,
    2: check_throughput,
    3: check_starve,
    4: check_sparkplug,
    5: check_vda5050,
    6: check_oee,
}
