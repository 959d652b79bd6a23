"""OPC UA collector: browse ``Objects/Machines``, subscribe, map changes back to samples.

The only gateway module importing asyncua. Per endpoint one session: discover the machines
(asset path from ``Identification/AssetPath``, else ``assets[browse name]``, else the name),
subscribe to their counters, monitoring values, state numbers and speed setpoint with the
configured sampling and publishing intervals, and to their alarm events. SourceTimestamp
becomes ``t`` (source time − epoch), StatusCode severity the quality. A lost session is
rebuilt with bounded exponential backoff and jitter, then everything is subscribed again.
With ``certificate`` and ``private_key`` the session is Basic256Sha256 SignAndEncrypt (the
servers' ``secure`` profile); ``user``/``password`` log in (an operator may read all).

At the moment a session is lost, every value it delivered is marked Bad (no value) at the
newest source time the session had delivered: the gap is marked, not filled with the last
values. The values the next session delivers are dated no earlier than that mark: a value
the server held all along is known again from the mark, a newer one (a restarted server)
from its own source time, and the time between stays unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iiotbed.errors import ConnectorError, UnsError
from iiotbed.gateway.collectors.base import Backoff, CollectorStats, MalformedLog, Sink
from iiotbed.gateway.normalise import normalise_value, quality_from_status
from iiotbed.protocols import opcua as names
from iiotbed.protocols.opcua import unit_from_opcua
from iiotbed.telemetry import Event, EventName, Quality, Sample

__all__ = ["OpcUaCollector"]

log = logging.getLogger(__name__)

#: State machine object browse name -> tag (its ``CurrentState/Number`` is collected)
STATE_TAGS: Final = names.STATE_MACHINES
_GROUPS: Final = (names.OPERATION_COUNTERS, names.MONITORING)
_SETPOINTS: Final = (names.SPEED_SETPOINT,)
_UNITLESS_COUNTER: Final = "C62"
_ALARM_TYPE: Final = ua.NodeId(ua.ObjectIds.AlarmConditionType)
# asyncua raises these (and its own UaError family) when a server goes away mid-call
_SESSION_ERRORS: Final = (OSError, TimeoutError, ConnectionError, ua.UaError, ConnectorError)


@dataclass(frozen=True, slots=True)
class _Binding:
    asset: str
    tag: str
    unit: str | None


def _application_uri(certificate: Path) -> str:
    """The application URI in a client certificate (DER or PEM), which the session must use."""
    try:
        raw = certificate.read_bytes()
        cert = (x509.load_pem_x509_certificate(raw) if raw.startswith(b"-----")
                else x509.load_der_x509_certificate(raw))  # fmt: skip
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise ValueError(f"{certificate}: not a usable OPC UA client certificate: {exc}") from None
    if not uris:
        raise ValueError(f"{certificate}: the certificate names no application URI (SAN URI)")
    return str(uris[0])


def _check_private_key(path: Path) -> None:
    """Refuse, with the file's name, a key asyncua could not load at connect time (it picks
    the format by the suffix: ``.pem`` is PEM, anything else DER)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".pem":
            serialization.load_pem_private_key(raw, password=None)
        else:
            serialization.load_der_private_key(raw, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{path}: not a usable OPC UA client private key (unencrypted PEM named *.pem, "
            f"or DER): {exc}"
        ) from None


class _Handler:
    """asyncua subscription callbacks; they run in the event loop and never block."""

    def __init__(
        self, collector: OpcUaCollector, url: str, lost: asyncio.Event, floor: float
    ) -> None:
        self.c = collector
        self.url = url
        self.lost = lost
        self.floor = floor  # the previous session's Bad mark: no value dated before it
        self.last_t = -float("inf")  # newest source time delivered by this session
        self.bindings: dict[ua.NodeId, _Binding] = {}
        self.machines: dict[ua.NodeId, str] = {}

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        c = self.c
        now = time.time()
        c.stats.messages += 1
        c.stats.last_message = now
        b = self.bindings.get(node.nodeid)
        dv = data.monitored_item.Value
        if b is None or dv is None:
            c._malformed(f"{self.url} {node.nodeid}", "notification for a node not subscribed")
            return
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        quality = quality_from_status(status)
        raw = dv.Value.Value if dv.Value is not None else None
        if isinstance(raw, ua.LocalizedText | ua.NodeId | bytes | list | dt.datetime):
            c._malformed(f"{self.url} {node.nodeid}", f"value of type {type(raw).__name__}")
            return
        value, quality = normalise_value(raw, quality)
        t = c._t(dv.SourceTimestamp or dv.ServerTimestamp, now)
        if t < self.floor:
            t = self.floor
        if t > self.last_t:
            self.last_t = t
        c._emit([Sample(t, b.asset, b.tag, value, b.unit, quality, now)])

    def event_notification(self, event: Any) -> None:
        c = self.c
        now = time.time()
        c.stats.messages += 1
        c.stats.last_message = now
        source = getattr(event, "SourceNode", None)
        asset = self.machines.get(source) if isinstance(source, ua.NodeId) else None
        if asset is None:
            c._malformed(self.url, f"event from an unknown source {source}")
            return
        active = getattr(event, "ActiveState/Id", None)
        if not isinstance(active, bool):
            state = getattr(event, "ActiveState", None)
            active = getattr(state, "Text", None) == "Active"
        message = getattr(event, "Message", None)
        fields = {
            "condition": str(getattr(event, "ConditionName", None) or "Alarm"),
            "active": active,
            "severity": int(getattr(event, "Severity", 0) or 0),
            "message": str(getattr(message, "Text", message) or ""),
        }
        stamp = getattr(event, "Time", None)
        t = c._t(stamp if isinstance(stamp, dt.datetime) else None, now)
        c.stats.events += 1
        c.sink.events(c.name, [Event(t, asset, EventName.ALARM, fields)])

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", status)
        value = getattr(code, "value", code)
        if isinstance(value, int) and quality_from_status(value) is not Quality.Good:
            log.warning("subscription on %s reports %s", self.url, code)
            self.lost.set()


class OpcUaCollector:
    """Collects the machines of one or more OPC UA servers into a :class:`Sink`.

    ``sampling_interval`` and ``publishing_interval`` are in seconds; ``queue_size`` values
    per monitored item are kept between publishes (older ones dropped first).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        sink: Sink,
        *,
        epoch: dt.datetime,
        assets: Mapping[str, str] | None = None,
        name: str = "opcua",
        sampling_interval: float = 0.0,
        publishing_interval: float = 0.05,
        queue_size: int = 100,
        events: bool = True,
        user: str | None = None,
        password: str | None = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        # a request (the watchdog's read of the server state included) may take this long:
        # 4 s lost a live session now and then when server, gateway and platform share one
        # busy process at 3000x; a closed connection is still noticed at once
        timeout: float = 10.0,
        # asyncua 2.x probes the server every watchdog interval and gives the probe only that
        # long (min(session timeout / 2, interval)), not ``timeout``: at 1 s a busy machine
        # declared live sessions lost and marked every tag Bad (time KPIs then disagreed);
        # at 4 s a stall of a few seconds passes, a silent link loss is seen within 8 s
        watchdog_interval: float = 4.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ValueError("the OPC UA collector needs at least one endpoint")
        if epoch.tzinfo is None:
            raise ValueError(f"epoch must be timezone-aware, got {epoch.isoformat()}")
        self.endpoints = tuple(endpoints)
        self.sink = sink
        self.epoch = epoch.astimezone(dt.UTC)
        self.assets = dict(assets or {})
        self.name = name
        self.sampling_interval = sampling_interval
        self.publishing_interval = publishing_interval
        self.queue_size = queue_size
        self.events = events
        self.user = user
        self.password = password
        if (certificate is None) != (private_key is None):
            raise ValueError("give the OPC UA client certificate and its private key together")
        self.certificate = certificate
        self.private_key = private_key
        self._app_uri = _application_uri(certificate) if certificate is not None else None
        if private_key is not None:
            _check_private_key(private_key)
        self.timeout = timeout
        self.watchdog_interval = watchdog_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = CollectorStats()
        self._malformed = MalformedLog(self.stats, log)
        self._up: set[str] = set()
        self._floor: dict[str, float] = {}  # endpoint -> sim time of its last Bad mark
        self._epoch_s = self.epoch.timestamp()

    @property
    def connected(self) -> bool:
        """True while every endpoint has a live, subscribed session."""
        return len(self._up) == len(self.endpoints)

    def endpoint_up(self, url: str) -> bool:
        return url in self._up

    async def run(self) -> None:
        """Collect from every endpoint until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for url in self.endpoints:
                tg.create_task(self._keep(url), name=f"opcua-collector-{url}")

    def _t(self, stamp: dt.datetime | None, now: float) -> float:
        if stamp is None:
            return round(now - self._epoch_s, 6)
        if stamp.tzinfo is None:  # OPC UA DateTime is UTC; asyncua may hand it over naive
            stamp = stamp.replace(tzinfo=dt.UTC)
        return round((stamp - self.epoch).total_seconds(), 6)

    def _emit(self, samples: list[Sample]) -> None:
        self.stats.samples += len(samples)
        self.sink.samples(self.name, samples)

    async def _keep(self, url: str) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while True:
            try:
                await self._session(url, backoff)
            except _SESSION_ERRORS as exc:
                log.warning("OPC UA session to %s failed: %r", url, exc)
            self._up.discard(url)
            wait = backoff.next()
            log.info("reconnecting to %s in %.2f s", url, wait)
            await asyncio.sleep(wait)

    async def _session(self, url: str, backoff: Backoff) -> None:
        client = Client(url, timeout=self.timeout, watchdog_intervall=self.watchdog_interval)
        if self.user is not None:
            client.set_user(self.user)
            client.set_password(self.password or "")
        if self.certificate is not None and self.private_key is not None:
            assert self._app_uri is not None
            client.application_uri = self._app_uri  # must match the certificate's URI
            try:
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    str(self.certificate),
                    str(self.private_key),
                    mode=ua.MessageSecurityMode.SignAndEncrypt,
                )
            except (ValueError, TypeError) as exc:  # changed on disk since the start
                raise ConnectorError(
                    f"OPC UA client certificate {self.certificate} / key {self.private_key}: "
                    f"{exc}", endpoint=url,
                ) from exc
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            log.warning("lost the OPC UA session to %s: %r", url, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            await client.connect()
        except _SESSION_ERRORS as exc:
            raise ConnectorError(
                f"cannot connect to OPC UA server {url}: {exc!r}; is it running?", endpoint=url
            ) from exc
        handler = _Handler(self, url, lost, self._floor.get(url, -float("inf")))
        try:
            n = await self._subscribe(client, handler)
            self.stats.connects += 1
            self._up.add(url)
            backoff.reset()
            log.info("OPC UA %s: subscribed to %d values of %d machines", url, n, len(handler.machines))
            await lost.wait()
            self.stats.connection_losses += 1
        except _SESSION_ERRORS:
            self._mark_lost(handler)  # lost while subscribing: what came is as stale
            raise
        else:
            self._mark_lost(handler)
        finally:
            self._up.discard(url)
            # disconnect fails in many ways on a dead link; the session is gone either way
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.disconnect()

    def _mark_lost(self, handler: _Handler) -> None:
        """Every value of a lost session Bad, at the newest source time it delivered."""
        t = handler.last_t
        if t == -float("inf"):
            return  # nothing delivered: nothing to mark
        now = time.time()
        out = [
            Sample(t, b.asset, b.tag, None, b.unit, Quality.Bad, now)
            for b in handler.bindings.values()
        ]
        self._floor[handler.url] = t
        log.warning("OPC UA %s lost: %d values marked Bad at t = %.3f s", handler.url, len(out), t)
        self.stats.stale_marks += len(out)
        self._emit(out)

    async def _subscribe(self, client: Client, handler: _Handler) -> int:
        machines = await self._machines(client)
        if not machines:
            raise ConnectorError(f"{handler.url} has no machines under Objects/Machines")
        nodes: list[Node] = []
        for node, asset in machines:
            handler.machines[node.nodeid] = asset
            for var, tag, unit in await self._variables(client, node):
                handler.bindings[var.nodeid] = _Binding(asset, tag, unit)
                nodes.append(var)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_interval * 1000.0,
            RequestedLifetimeCount=600,
            RequestedMaxKeepAliveCount=20,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.create_subscription(params, handler)
        results = await sub.subscribe_data_change(
            nodes, queuesize=self.queue_size, sampling_interval=self.sampling_interval * 1000.0
        )
        assert isinstance(results, list)
        failed = [r for r in results if isinstance(r, ua.StatusCode)]
        if failed:
            log.warning("%s refused %d monitored items: %s", handler.url, len(failed), failed[0])
        if self.events:
            for node, _ in machines:
                await sub.subscribe_events(node, _ALARM_TYPE, queuesize=self.queue_size)
        return len(nodes) - len(failed)

    async def _machines(self, client: Client) -> list[tuple[Node, str]]:
        folder = None
        for ref in await client.nodes.objects.get_references(
            refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
        ):
            if ref.BrowseName.Name == names.MACHINES:
                folder = client.get_node(ref.NodeId)
                break
        if folder is None:
            return []
        out = []
        for ref in await folder.get_references(
            refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward,
            nodeclassmask=ua.NodeClass.Object,
        ):  # fmt: skip
            node = client.get_node(ref.NodeId)
            name = ref.BrowseName.Name
            asset = self.assets.get(name)
            path = await self._child(node, (names.IDENTIFICATION, names.ASSET_PATH))
            if path is not None:
                with contextlib.suppress(*_SESSION_ERRORS):
                    value = await path.read_value()
                    if isinstance(value, str) and value:
                        asset = value
            out.append((node, asset or name))
        return out

    @staticmethod
    async def _children(node: Node) -> dict[str, Node]:
        refs = await node.get_references(
            refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward
        )
        return {r.BrowseName.Name: Node(node.session, r.NodeId) for r in refs}

    async def _child(self, node: Node, path: tuple[str, ...]) -> Node | None:
        cur: Node | None = node
        for name in path:
            assert cur is not None
            cur = (await self._children(cur)).get(name)
            if cur is None:
                return None
        return cur

    async def _variables(self, client: Client, machine: Node) -> list[tuple[Node, str, str | None]]:
        """(node, tag, unit) for every collected variable of one machine, by browse names."""
        found: list[tuple[Node, str, bool]] = []  # node, tag, is a counter
        top = await self._children(machine)
        for sm, tag in STATE_TAGS.items():
            if sm in top:
                number = await self._child(top[sm], (names.CURRENT_STATE, names.STATE_NUMBER))
                if number is not None:
                    found.append((number, tag, False))
        for group in _GROUPS:
            if group in top:
                for name, var in (await self._children(top[group])).items():
                    found.append((var, name, group == names.OPERATION_COUNTERS))
        for name in _SETPOINTS:
            if name in top:
                found.append((top[name], name, False))
        units: list[str | None] = []
        for var, tag, counter in found:
            units.append(await self._unit(var, tag, counter))
        return [(var, tag, unit) for (var, tag, _), unit in zip(found, units, strict=True)]

    async def _unit(self, var: Node, tag: str, counter: bool) -> str | None:
        eu = (await self._children(var)).get(names.ENGINEERING_UNITS)
        if eu is None:
            return _UNITLESS_COUNTER if counter else None
        info = await eu.read_value()
        try:
            return unit_from_opcua(int(getattr(info, "UnitId", -1)))
        except UnsError as exc:
            log.warning("%s/%s: %s; sending it without a unit", var.nodeid, tag, exc.reason)
            return None
