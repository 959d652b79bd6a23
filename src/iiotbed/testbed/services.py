"""The services of one run, in one ``async with``: broker, platform, devices, gateway.

:class:`Services` starts an embedded MQTT broker (unless the plan names one), the platform
(store, ingest, HTTP API and dashboard), the live factory with its pacer **held at sim
time 0**, and the gateway derived from the scenario; it returns once every collector is
subscribed, so telemetry starts with the first record. The devices start before the
gateway, paused: the Sparkplug edge waits for the gateway host's STATE before its births.

With ``plan.security == "secure"`` every part is secured from one secrets directory
(:mod:`iiotbed.testbed.secure`; generated into the run's directory unless given): the
embedded broker is Mosquitto with TLS, logins and ACLs (each client logs in by its client
id), the OPC UA servers speak Basic256Sha256 SignAndEncrypt to user logins only, the gateway
collects as ``operator`` with its own client certificate, and API writes need the token.
The ACL's refusals are counted (``settle()["denied"]``: 0 in a clean run).

They close in reverse: gateway first (no reconnect attempts to closing servers), then the
devices (closing their event log, the answer key's source), the platform, the broker.
:meth:`Services.close_factory` closes the first two early, once the run's window has been
read; the platform stays up for the report. The body's exception passes through.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal, Self

from iiotbed._aio import ExcInfo
from iiotbed.errors import ConnectorError

if TYPE_CHECKING:
    from iiotbed.devices.live import LiveFactory
    from iiotbed.gateway.service import Gateway
    from iiotbed.gateway.settings import GatewaySettings
    from iiotbed.platform.broker import EmbeddedBroker
    from iiotbed.platform.service import Platform
    from iiotbed.platform.store import Store
    from iiotbed.scenario import Scenario
    from iiotbed.security.layout import SecretsDir
    from iiotbed.testbed.plan import RunOptions, RunPlan
    from iiotbed.testbed.secure import GatewayOpcUa

__all__ = ["Ended", "Services", "preload"]

#: how a run ended: its duration reached, or stopped early (Ctrl-C, SIGTERM)
Ended = Literal["duration", "stopped"]


#: what :class:`Services` starts, imported when used: `iiotbed --help` and batch runs skip them
_MODULES = (
    "iiotbed.devices.live",
    "iiotbed.gateway.service",
    "iiotbed.gateway.settings",
    "iiotbed.platform.broker",
    "iiotbed.platform.service",
)


def preload() -> None:
    """Import the services' modules now (seconds on a cold, busy machine), so that a run's
    wall time measures the run and not Python's imports."""
    for name in _MODULES:
        importlib.import_module(name)


class Services:
    """Broker, platform, devices and gateway of one run; see the module docstring.

    ``on_platform`` runs once the platform is up, before any device starts (the run's
    registration in the store).
    """

    def __init__(
        self,
        scenario: Scenario,
        plan: RunPlan,
        options: RunOptions,
        *,
        on_platform: Callable[[Store], Awaitable[object]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.options = options
        self._on_platform = on_platform
        self._stack: AsyncExitStack | None = None
        self._factory = AsyncExitStack()  # devices, then gateway: closed before the platform
        self._broker_url: str | None = options.broker
        self._platform: Platform | None = None
        self._live: LiveFactory | None = None
        self._gateway: Gateway | None = None
        self._broker: EmbeddedBroker | None = None
        self._secrets: SecretsDir | None = None
        self._frozen = False  # the startup objects are out of the GC's reach (run)

    # ------------------------------------------------------------------ the parts

    @property
    def broker_url(self) -> str:
        assert self._broker_url is not None, "use inside 'async with'"
        return self._broker_url

    @property
    def platform(self) -> Platform:
        assert self._platform is not None, "use inside 'async with'"
        return self._platform

    @property
    def store(self) -> Store:
        assert self.platform.store is not None
        return self.platform.store

    @property
    def live(self) -> LiveFactory:
        assert self._live is not None, "use inside 'async with'"
        return self._live

    @property
    def gateway(self) -> Gateway:
        assert self._gateway is not None, "use inside 'async with'"
        return self._gateway

    @property
    def secrets(self) -> SecretsDir | None:
        """The secure profile's secrets directory (None when open)."""
        return self._secrets

    def denied(self) -> int | None:
        """PUBLISH packets the embedded secure broker's ACL refused so far (blocking read of
        its log); None when nothing counts them (the open profile, or a broker of --broker)."""
        if self._broker is None or self._broker.secrets is None:
            return None
        return self._broker.denied()

    @property
    def uns(self) -> str:
        """The run's UNS stream topic root."""
        return f"{self.gateway.settings.output.root}/_stream/{self.scenario.line_path}"

    @property
    def endpoints(self) -> dict[str, Any]:
        """The report's ``endpoints``: dashboard, API, broker, store, devices, UNS."""
        url = self.platform.url
        return {
            "dashboard": f"{url}/",
            "api": f"{url}/api",
            "broker": self.broker_url,
            "store": self.store.url,
            "devices": self.live.endpoints,
            "uns": self.uns,
            "security": self.plan.security,
            **({"secrets": str(self._secrets.root)} if self._secrets is not None else {}),
        }

    def describe(self) -> list[str]:
        """The endpoint lines ``iiotbed run`` prints as soon as they are up."""
        url, gw = self.platform.url, self.gateway
        embedded = "  (embedded)" if self.plan.embedded_broker else ""
        secure = (
            [f"  security   secure: MQTT TLS with logins and ACLs, OPC UA SignAndEncrypt with "
             f"user logins, API writes need the token (secrets {self._secrets.root})"]
            if self._secrets is not None else ["  security   open"]
        )  # fmt: skip
        return [
            f"run {self.plan.run_id}",
            f"  dashboard  {url}/   (API {url}/docs)",
            f"  broker     {self.broker_url}{embedded}",
            f"  store      {self.store.url}",
            *(f"  {line}" for line in self.live.endpoints),
            f"  gateway    {gw.settings.id}: {', '.join(gw.settings.collector_names())} -> "
            f"{self.uns}",
            *secure,
        ]

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        from iiotbed.gateway.service import Gateway
        from iiotbed.platform.broker import EmbeddedBroker
        from iiotbed.platform.service import Platform

        opts, plan = self.options, self.plan
        token: str | None = None
        opcua: GatewayOpcUa | None = None
        if plan.security == "secure":
            token, opcua = await self._secure()
        async with AsyncExitStack() as stack:
            if self._broker_url is None:
                broker = await stack.enter_async_context(EmbeddedBroker(secrets=self._secrets))
                self._broker, self._broker_url = broker, broker.url
            self._platform = await stack.enter_async_context(
                Platform(
                    broker=self._broker_url,
                    store=plan.store_url,
                    host=opts.host,
                    port=opts.port,
                    scenario=self.scenario,
                    api_token=token,
                )
            )
            if self._on_platform is not None:
                await self._on_platform(self.store)
            settings = self._gateway_settings(opcua)
            live = self._live = self._live_factory(settings)
            # left by the outer stack with the body's exception, or early by close_factory
            await stack.enter_async_context(self._factory)
            # held at sim time 0 until the gateway listens: telemetry starts with the first record
            live.pacer.pause()
            await self._factory.enter_async_context(live)
            self._gateway = await self._factory.enter_async_context(Gateway(settings))
            await self._wait_ready()
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # returns None whatever the parts say: the body's exception passes through
            await stack.__aexit__(*exc_info)

    async def close_factory(self) -> None:
        """Stop collecting, then close the devices (and their event log); idempotent."""
        await self._factory.aclose()

    # ------------------------------------------------------------------ the run

    async def run(self, stop: asyncio.Event) -> Ended:
        """Let sim time move until the duration is reached or ``stop`` is set.

        Stopped, the simulation freezes where it is and the endpoints stay up to drain.
        """
        live = self.live
        self._freeze_startup()
        live.pacer.resume()
        finished = asyncio.ensure_future(live.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not finished.done():
                live.pacer.pause()  # sim time freezes; the endpoints stay up until drained
            for task in (stopping, finished):
                task.cancel()
            # both owned here: cancelled (if still running) and awaited, whatever ended the wait
            await asyncio.wait({finished, stopping})
        if not finished.cancelled():
            finished.result()  # raises what stopped the simulation
            return "duration"
        await asyncio.sleep(0)
        return "stopped"

    def _freeze_startup(self) -> None:
        """Keep the objects alive at the start (OPC UA address spaces with their companion
        nodesets, modules, the model: 700,000 in the 5G scenario) out of the cyclic GC's
        full collections until the services close. They live as long as the services, and
        scanning them blocked the event loop for up to 0.7 s at a time while sim time ran.
        Garbage is collected first (at sim time 0, the pacer still held), so only live
        objects are frozen."""
        if self._stack is None or self._frozen:
            return
        gc.collect()
        gc.freeze()
        self._frozen = True
        self._stack.callback(gc.unfreeze)

    async def settle(self) -> dict[str, Any]:
        """Wait until the gateway has received everything and the platform stored it all."""
        gw, opts = self.gateway, self.options
        ingest = self.platform.ingest
        assert ingest is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + opts.settle_timeout
        last: tuple[int, ...] | None = None
        quiet_since = loop.time()
        timed_out = False
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                timed_out = True
                break
            try:
                async with asyncio.timeout(remaining):
                    await gw.flush()
                    await ingest.drain()
            except TimeoutError:
                timed_out = True
                break
            m = gw.metrics()
            im = ingest.metrics
            snap = (m["received"], m["forwarded"], im.messages, im.received + im.events)
            caught_up = (
                m["buffered"] == 0 and im.pending == 0 and im.received + im.events >= m["forwarded"]
            )
            if snap != last:
                last, quiet_since = snap, loop.time()
            elif caught_up and loop.time() - quiet_since >= opts.quiet_s:
                break
            await asyncio.sleep(0.05)
        m = gw.metrics()
        im = ingest.metrics
        denied = await asyncio.to_thread(self.denied)
        return {
            "seconds": round(loop.time() - started, 3),
            "timed_out": timed_out,
            "gateway_received": m["received"],
            "gateway_forwarded": m["forwarded"],
            "gateway_buffered": m["buffered"],
            "gateway_dropped": m["dropped"],
            "ingest_received": im.received + im.events,
            "stored": im.stored + im.events_stored,
            "duplicates": im.duplicates,
            "malformed": im.malformed + m["malformed"],
            "denied": denied,  # the ACL's refusals (secure, embedded broker); else None
        }

    # ------------------------------------------------------------------ internals

    async def _secure(self) -> tuple[str, GatewayOpcUa]:
        """The secrets (generated when absent), the API token and the gateway's OPC UA
        credentials; a plain ``mqtt://`` broker is refused (ValueError)."""
        from iiotbed.testbed.secure import amrs_of, ensure_secrets, gateway_opcua

        plan = self.plan
        if self._broker_url is not None and not self._broker_url.startswith("mqtts://"):
            raise ValueError(
                "the secure profile talks TLS: give an mqtts:// broker URL "
                "(e.g. mqtts://host:8883?secrets=DIR), or none for the embedded broker"
            )
        assert plan.secrets_dir is not None
        secrets = await asyncio.to_thread(ensure_secrets, plan.secrets_dir, amrs_of(self.scenario))
        self._secrets = secrets
        doc = await asyncio.to_thread(secrets.read)
        return str(doc["api"]["token"]), await gateway_opcua(secrets)

    def _gateway_settings(self, opcua: GatewayOpcUa | None = None) -> GatewaySettings:
        from iiotbed.gateway.settings import settings_from_scenario

        opts, plan = self.options, self.plan
        settings = settings_from_scenario(
            self.scenario, self.broker_url, opcua_port=opts.opcua_port, host=opts.host,
            replication=opts.replication, buffer=plan.gateway_buffer, run_id=plan.run_id,
            sparkplug_group=opts.sparkplug_group,
        )  # fmt: skip
        if settings.sparkplug is not None:
            # this run's own host id: the edge node births for this gateway, not for
            # another one that happens to share the broker
            host = settings.sparkplug.model_copy(update={"host_id": plan.host_id})
            settings = settings.model_copy(update={"sparkplug": host})
        if opcua is not None and settings.opcua is not None:
            # validated again: the certificate files must exist
            secured = settings.opcua.model_validate(
                {**settings.opcua.model_dump(), **opcua.settings()}
            )
            settings = settings.model_copy(update={"opcua": secured})
        return settings

    def _live_factory(self, settings: GatewaySettings) -> LiveFactory:
        from iiotbed.devices.live import LiveFactory, LiveOptions

        opts, plan = self.options, self.plan
        security = None
        if self._secrets is not None:
            from iiotbed.testbed.secure import server_security

            assert plan.pki_dir is not None
            security = server_security(self._secrets, plan.pki_dir)
        return LiveFactory(
            self.scenario,
            LiveOptions(
                speed=opts.speed, duration=plan.duration, replication=opts.replication,
                host=opts.host, opcua_port=opts.opcua_port, broker=self.broker_url,
                sparkplug_group=opts.sparkplug_group,
                primary_host=settings.sparkplug.host_id if settings.sparkplug else None,
                events=plan.events, fast_forward=opts.fast_forward, security=security,
            ),
        )  # fmt: skip

    async def _wait_ready(self) -> None:
        """Every collector subscribed (and the Sparkplug host has seen the births)."""
        gw, live, limit = self.gateway, self.live, self.options.ready_timeout
        missing: list[str] = []
        try:
            async with asyncio.timeout(limit):
                while True:
                    missing = [c.name for c in gw.collectors if not c.connected]
                    if live.edge is not None:
                        # the host's births counter (only the Sparkplug host has one)
                        missing += [f"{c.name} (births)" for c in gw.collectors
                                    if getattr(c.stats, "births", None) == 0]  # fmt: skip
                    if not missing:
                        return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise ConnectorError(
                f"gateway collectors not ready after {limit:g} s: {', '.join(missing)}; "
                f"is the broker reachable and the OPC UA port free?"
            ) from None
