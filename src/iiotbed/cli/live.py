"""Live commands: devices, gateway, platform (endpoints on 127.0.0.1); ``run`` is in
:mod:`iiotbed.cli.run`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    pass

from iiotbed.cli._common import (
    FileArg,
    LogLevel,
    OpcuaLayout,
    OpcuaPort,
    Seed,
    SparkplugGroup,
    _check_broker,
    _check_opcua_layout,
    _duration,
    _load,
    _logging,
    _serve,
    _user_errors,
    app,
)
from iiotbed.cli.security import SecretsOption, SecurityOption, check_security

__all__ = ["devices", "gateway", "platform"]

LineOption = Annotated[
    str | None,
    typer.Option(
        "--line", envvar="IIOTBED_LINE",
        help="Which line of a plant scenario (run.lines > 1), e.g. line-1-2: its own OPC UA "
        "port (base + index - 1 unless --opcua-port), edge node, AMR ids and seed.",
    ),
]


def _plant_line(ctx: typer.Context, file: Path, scenario: Any, line: str | None, port: int,
                layout: str) -> tuple[Any, int]:  # fmt: skip
    """The ``--line`` of a plant scenario, and its first OPC UA port (``port`` itself when
    --opcua-port was given, else the base port shifted by the line's index)."""
    from iiotbed.scenario.plant import opcua_port, select_line

    scenario = select_line(scenario, line, file)
    source = ctx.get_parameter_source("opcua_port")  # DEFAULT: not on the command line
    if source is None or source.name == "DEFAULT":
        port = opcua_port(scenario, port, per_machine=layout == "machine")
        if port > 65535:
            raise typer.BadParameter(f"line {line}'s port {port} is above 65535: give "
                                     "--opcua-port", param_hint="--line")  # fmt: skip
    return scenario, port


@app.command()
def devices(
    ctx: typer.Context,
    file: FileArg,
    speed: Annotated[
        float,
        typer.Option(
            "--speed", min=0.001, envvar="IIOTBED_SPEED",
            help="Sim seconds per wall second (1 = real time).",
        ),
    ] = 60.0,
    duration: Annotated[
        str | None,
        typer.Option(
            "--duration", "-d", envvar="IIOTBED_DURATION",
            help="Sim time the run ends at, e.g. 11h, 7d (default: the scenario's).",
        ),
    ] = None,
    seed: Seed = None,
    replication: Annotated[
        int, typer.Option("--replication", min=0, help="Which replication's random streams.")
    ] = 0,
    opcua_port: OpcuaPort = 4840,
    opcua_layout: OpcuaLayout = "line",
    host: Annotated[
        str,
        typer.Option(
            "--host", envvar="IIOTBED_DEVICES_HOST",
            help="Address the OPC UA servers listen on and advertise (a container: its name).",
        ),
    ] = "127.0.0.1",
    security: SecurityOption = "open",
    secrets_dir: SecretsOption = Path(".iiotbed/secrets"),
    opcua_user: Annotated[
        str | None,
        typer.Option(
            "--opcua-user", envvar="IIOTBED_OPCUA_USER",
            help="Secure profile: this one user instead of --secrets' operator and engineer.",
        ),
    ] = None,
    opcua_password: Annotated[
        str | None,
        typer.Option(
            "--opcua-password", envvar="IIOTBED_OPCUA_PASSWORD", help="Password (secure profile)."
        ),
    ] = None,
    cert_dir: Annotated[
        Path, typer.Option("--cert-dir", file_okay=False, help="Where server certificates live.")
    ] = Path(".iiotbed/pki"),
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker, e.g. mqtt://127.0.0.1:1883 (Sparkplug B and VDA 5050 need one).",
        ),
    ] = None,
    sparkplug_group: SparkplugGroup = None,
    primary_host: Annotated[
        str | None,
        typer.Option(
            "--primary-host", envvar="IIOTBED_PRIMARY_HOST",
            help="Sparkplug Primary Host id to wait for before births.",
        ),
    ] = None,
    wait_for_host: Annotated[
        bool,
        typer.Option(
            "--wait-for-host/--no-wait-for-host", envvar="IIOTBED_WAIT_FOR_HOST",
            help="Hold sim time until the Primary Host is online and every OPC UA server has "
            "a subscription (a gateway started after the devices then sees the run from its "
            "start; needs --primary-host).",
        ),
    ] = False,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events", envvar="IIOTBED_EVENTS", dir_okay=False,
            help="Write the live run's event log here.",
        ),
    ] = None,
    fast_forward: Annotated[
        bool,
        typer.Option(
            "--fast-forward/--no-fast-forward",
            help="Run unpaced up to the first shift, then pace (default: on).",
        ),
    ] = True,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            envvar="IIOTBED_RESUME",
            dir_okay=False,
            help="Resume file: kept ahead of what is published; when it exists, a restarted "
            "process continues from its sim time instead of t = 0 (removed at the run's end).",
        ),
    ] = None,
    line: LineOption = None,
    log_level: LogLevel = None,
) -> None:
    """Run the factory live: OPC UA machines, Sparkplug B meters, VDA 5050 AMRs."""
    import asyncio

    from iiotbed.cli.progress import ProgressLine, progress_mode
    from iiotbed.devices.live import LiveFactory, LiveOptions
    from iiotbed.testbed.progress import live_progress

    with _user_errors():
        _logging(log_level, "warning")
        _check_opcua_layout(opcua_layout)
        _check_broker(broker)
        if wait_for_host and (primary_host is None or broker is None):
            raise typer.BadParameter(
                "needs --primary-host and --broker (the host's STATE comes over MQTT)",
                param_hint="--wait-for-host",
            )
        # secure: OPC UA users from --secrets (or the one --opcua-user), MQTT over mqtts://
        explicit = opcua_user is not None or opcua_password is not None
        profile = check_security(security, broker, None if explicit else secrets_dir)
        sec: Any = None
        if profile == "secure":
            from iiotbed.devices.opcua import Security

            if explicit and not (opcua_user and opcua_password):
                raise typer.BadParameter(
                    "give --opcua-user and --opcua-password together (or neither: the users "
                    "of --secrets)", param_hint="--opcua-user",
                )  # fmt: skip
            try:
                sec = (
                    Security("secure", {opcua_user: opcua_password}, cert_dir)
                    if opcua_user and opcua_password
                    else Security.from_secrets(secrets_dir, cert_dir=cert_dir)
                )
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--secrets") from None
        from iiotbed.scenario.plant import vda_manufacturer

        scenario, opcua_port = _plant_line(ctx, file, _load(file, duration=_duration(duration),
                                           seed=seed), line, opcua_port, opcua_layout)  # fmt: skip
        options = LiveOptions(
            speed=speed,
            replication=replication,
            host=host,
            opcua_port=opcua_port,
            vda_manufacturer=vda_manufacturer(scenario),
            opcua_layout="machine" if opcua_layout == "machine" else "line",
            security=sec,
            broker=broker,
            sparkplug_group=sparkplug_group,
            primary_host=primary_host,
            events=events,
            fast_forward=fast_forward,
            resume=resume,
        )
        started: list[LiveFactory] = []

        def ready(live: LiveFactory) -> None:
            started.append(live)
            typer.echo(
                f"{scenario.name}: live at {speed:g}x for {scenario.run.duration:g} s of sim time"
            )
            for line in live.endpoints:
                typer.echo(f"  {line}")
            if broker is None:
                typer.echo("  no --broker given: only OPC UA runs (Sparkplug B and VDA 5050 need one)")
            typer.echo("Ctrl-C stops.", nl=True)
            sys.stdout.flush()

        async def main() -> None:
            live = LiveFactory(scenario, options)
            if wait_for_host:
                live.pacer.pause()  # sim time holds until the host listens
            async with live:
                ready(live)
                if wait_for_host:
                    typer.echo(
                        f"holding sim time at {live.now:g} s until {primary_host} is online "
                        "and the OPC UA servers have a subscriber"
                    )
                    sys.stdout.flush()
                    while True:  # the edge births once the host's STATE says online
                        servers = live.servers
                        if (live.edge is None or live.edge.born) and (
                            servers is None or servers.subscribed
                        ):
                            break
                        await asyncio.sleep(0.05)
                    live.pacer.resume()
                async with ProgressLine(lambda: live_progress(live), progress_mode(as_json=False)):
                    await live.wait()
                # the endpoints stay up a moment: an OPC UA subscription publishes the last
                # values only at its next publishing interval (else the last unit goes missing)
                await asyncio.sleep(1.0)

        try:
            _serve(main)  # Ctrl-C or SIGTERM: the death certificates go out, then the summary
        except OSError as exc:
            if events is None or exc.filename != str(events):
                raise
            raise typer.BadParameter(
                f"cannot write {events}: {exc.strerror}", param_hint="--events"
            ) from None
        if started:
            for line in started[0].summary.lines():
                typer.echo(line)


GatewayLines = Annotated[
    list[str] | None,
    typer.Option(
        "--line", envvar="IIOTBED_LINE",
        help="Which line(s) of a plant scenario, e.g. line-1-2; repeat it to collect several "
        "lines in this process (one gateway per line: id, buffer and run id get -LINE; "
        "--opcua-port is then line 1's port, the others follow).",
    ),
]
GatewayId = Annotated[
    str | None,
    typer.Option(
        "--id", envvar="IIOTBED_GATEWAY_ID",
        help="This gateway's id: its MQTT client ids (iiotbed-ID-*), status topics, log lines, "
        "Sparkplug host (iiotbed-ID) and default buffer (.iiotbed/gateway-ID.db), so two "
        "gateways on one broker or machine do not collide; {host} is this host's name.",
    ),
]


def _gateway_id(given: str | None) -> str | None:
    """``--id`` with ``{host}`` replaced by this host's name, checked like a gateway.yaml id."""
    import re
    import socket

    if given is None:
        return None
    gw_id = given.replace("{host}", socket.gethostname().split(".")[0])
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", gw_id):
        raise typer.BadParameter(
            f"{gw_id!r} is no gateway id: letters, digits, '_', '.', '-' (first a letter or "
            "digit), at most 100", param_hint="--id",
        )  # fmt: skip
    return gw_id


def _per_line(path: Path, line: str) -> Path:
    """``path`` with ``-LINE`` before its suffix: one buffer file per line's gateway."""
    return path.with_name(f"{path.stem}-{line}{path.suffix}")


def _with_id(settings: Any, gw_id: str, *, buffer: Path | None, derived: bool) -> Any:
    """``settings`` under the id ``gw_id``: its Sparkplug host ``iiotbed-<id>`` and its
    buffer ``buffer``, else ``.iiotbed/gateway-<id>.db`` (a gateway.yaml's own host id and
    buffer stay: ``derived`` False)."""
    update: dict[str, Any] = {"id": gw_id}
    spb = settings.sparkplug
    if spb is not None and (derived or "host_id" not in spb.model_fields_set):
        update["sparkplug"] = spb.model_copy(update={"host_id": f"iiotbed-{gw_id}"})
    out = settings.output
    if buffer is None and (derived or "buffer" not in out.model_fields_set):
        buffer = Path(f".iiotbed/gateway-{gw_id}.db")
    if buffer is not None:
        update["output"] = out.model_copy(update={"buffer": buffer})
    return settings.model_copy(update=update)


@app.command()
def gateway(
    ctx: typer.Context,
    scenario_file: Annotated[
        Path | None,
        typer.Option("--scenario", dir_okay=False, help="Derive the settings from this scenario."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", dir_okay=False, help="A gateway.yaml (see docs/gateway.md)."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", envvar="IIOTBED_BROKER", help="MQTT broker for devices and UNS."),
    ] = None,
    uns_broker: Annotated[
        str | None,
        typer.Option(
            "--uns-broker", envvar="IIOTBED_UNS_BROKER",
            help="Publish the UNS to this broker instead (devices stay on --broker): the IT side.",
        ),
    ] = None,
    opcua_host: Annotated[
        str,
        typer.Option(
            "--opcua-host", envvar="IIOTBED_OPCUA_HOST", help="Host of the devices' OPC UA servers."
        ),
    ] = "127.0.0.1",
    opcua_port: OpcuaPort = 4840,
    opcua_layout: OpcuaLayout = "line",
    replication: Annotated[
        int, typer.Option("--replication", min=0, help="Replication the devices run (run id).")
    ] = 0,
    root: Annotated[str, typer.Option("--root", help="UNS topic root.")] = "uns",
    buffer: Annotated[
        Path | None,
        typer.Option(
            "--buffer", envvar="IIOTBED_GATEWAY_BUFFER", dir_okay=False,
            help="Durable buffer file (SQLite; default .iiotbed/gateway.db, with --id "
            ".iiotbed/gateway-ID.db); {id} is the gateway's id.",
        ),
    ] = None,
    sparkplug_group: SparkplugGroup = None,
    stop_after: Annotated[
        float | None,
        typer.Option("--stop-after", min=0.0, help="Stop after this many wall seconds."),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            envvar="IIOTBED_RUN_ID",
            help="The UNS run id (default: a fresh one per start; give the printed one to "
            "continue a run after a restart; with several --line, each line's is RUN_ID-LINE).",
        ),
    ] = None,
    gateway_id: GatewayId = None,
    security: SecurityOption = "open",
    secrets_dir: SecretsOption = Path(".iiotbed/secrets"),
    line: GatewayLines = None,
    log_level: LogLevel = None,
) -> None:
    """Collect OPC UA, Sparkplug B, VDA 5050 and JSON devices into the UNS over MQTT."""
    import asyncio
    import logging

    from iiotbed.gateway.service import Gateway
    from iiotbed.gateway.settings import load_settings, settings_from_scenario

    with _user_errors():
        _logging(log_level, "info")
        gw_id = _gateway_id(gateway_id)
        lines = list(dict.fromkeys(line or []))  # each line once, in the order given
        if (scenario_file is None) == (config is None):
            raise typer.BadParameter("give either --scenario FILE --broker URL or --config FILE")
        if lines and scenario_file is None:
            raise typer.BadParameter("goes with --scenario (a gateway.yaml names its endpoints)",
                                     param_hint="--line")  # fmt: skip
        _check_opcua_layout(opcua_layout)
        profile = check_security(security, broker, secrets_dir)
        if profile == "secure" and broker is None and config is None:
            from iiotbed.security.layout import SecretsDir

            broker = SecretsDir(secrets_dir).broker_url()  # logins by client id, the CA
        if run_id is not None and not 0 < len(run_id) <= 200:
            raise typer.BadParameter("a run id has 1 to 200 characters", param_hint="--run-id")
        several = len(lines) > 1

        def buffer_for(this_id: str, name: str | None) -> Path | None:
            if buffer is None:
                return None
            path = Path(str(buffer).replace("{id}", this_id))
            return _per_line(path, name) if several and name and "{id}" not in str(buffer) else path

        all_settings: list[Any] = []
        if config is not None:
            settings = load_settings(config)
            if run_id is not None:
                settings = settings.model_copy(update={"run_id": run_id})
            if gw_id is not None:
                settings = _with_id(settings, gw_id, buffer=buffer_for(gw_id, None),
                                    derived=False)  # fmt: skip
            all_settings.append(settings)
        else:
            assert scenario_file is not None
            if broker is None:
                raise typer.BadParameter("--scenario needs --broker mqtt://host:port")
            _check_broker(broker)
            _check_broker(uns_broker)
            from iiotbed.scenario.plant import vda_manufacturer

            loaded = _load(scenario_file)
            names: list[str | None] = [*lines] if lines else [None]
            for name in names:
                if several:  # --opcua-port is the plant's base: each line's from its index
                    from iiotbed.scenario.plant import opcua_port as line_port
                    from iiotbed.scenario.plant import select_line

                    scenario = select_line(loaded, name, scenario_file)
                    port = line_port(scenario, opcua_port, per_machine=opcua_layout == "machine")
                else:
                    scenario, port = _plant_line(ctx, scenario_file, loaded, name, opcua_port,
                                                 opcua_layout)  # fmt: skip
                given: dict[str, Any] = {}
                if run_id is not None:
                    given["run_id"] = f"{run_id}-{name}" if several else run_id
                try:
                    settings = settings_from_scenario(
                        scenario, uns_broker or broker, opcua_port=port,
                        host=opcua_host,
                        opcua_layout="machine" if opcua_layout == "machine" else "line",
                        replication=replication, root=root,
                        buffer=Path(".iiotbed/gateway.db"),
                        sparkplug_group=sparkplug_group,
                        vda_manufacturer=vda_manufacturer(scenario), **given,
                    )  # fmt: skip
                except ValueError as exc:  # pydantic's ValidationError is a ValueError
                    raise typer.BadParameter(str(exc)) from None
                spb = settings.sparkplug
                if scenario.line_index is not None and spb is not None:  # a plant's line: its
                    # own host (STATE, Will) per gateway; only this line's edge node: another
                    # line's devices have the same names and would map to this line
                    edge = f"{scenario.plant.area}-{scenario.plant.line}"
                    update: dict[str, Any] = {"edge_nodes": [edge]}
                    if gw_id is None:
                        update["host_id"] = f"{spb.host_id}-{scenario.plant.line}"
                    settings = settings.model_copy(
                        update={"sparkplug": spb.model_copy(update=update)}
                    )
                if gw_id is not None:
                    this_id = f"{gw_id}-{name}" if several else gw_id
                    settings = _with_id(settings, this_id, buffer=buffer_for(this_id, name),
                                        derived=True)  # fmt: skip
                else:
                    path = buffer_for(settings.id, name) or Path(".iiotbed/gateway.db")
                    if several and buffer is None:
                        path = _per_line(path, str(name))
                    settings = settings.model_copy(
                        update={"output": settings.output.model_copy(update={"buffer": path})}
                    )
                if scenario.line_index is not None and settings.sparkplug is not None:
                    typer.echo(f"Sparkplug host id {settings.sparkplug.host_id} (give it to this "
                               "line's devices as --primary-host)")  # fmt: skip
                if uns_broker is not None:  # the devices' protocols stay on the OT broker
                    on_ot = {"broker": broker}
                    settings = settings.model_copy(update={
                        "sparkplug": settings.sparkplug
                        and settings.sparkplug.model_copy(update=on_ot),
                        "vda5050": settings.vda5050 and settings.vda5050.model_copy(update=on_ot),
                    })  # fmt: skip
                all_settings.append(settings)
        if profile == "secure":
            from iiotbed.cli.security import secure_gateway

            all_settings = [secure_gateway(s, secrets_dir) for s in all_settings]
        for s in all_settings:
            s.output.buffer.parent.mkdir(parents=True, exist_ok=True)
        if len({s.id for s in all_settings}) < len(all_settings):
            raise typer.BadParameter("two of these gateways would share one id", param_hint="--id")
        if gw_id is not None:  # the logs say which gateway wrote them
            fmt = f"%(asctime)s %(levelname)s [gateway {gw_id}] %(name)s: %(message)s"
            for handler in logging.getLogger().handlers:
                handler.setFormatter(logging.Formatter(fmt))

        async def main() -> None:
            from contextlib import AsyncExitStack

            from iiotbed.mqtt import redact_url

            async with AsyncExitStack() as stack:
                gws = [await stack.enter_async_context(Gateway(s)) for s in all_settings]
                for s in all_settings:
                    typer.echo(
                        f"gateway {s.id}: {', '.join(s.collector_names())} -> "
                        f"{redact_url(s.output.broker)} {s.output.root}/ (run {s.run_id})"
                    )
                sys.stdout.flush()
                try:
                    waits = [asyncio.ensure_future(gw.wait()) for gw in gws]
                    try:
                        if stop_after is not None:
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(stop_after):
                                    await asyncio.gather(*waits)
                        else:
                            await asyncio.gather(*waits)
                    finally:
                        for w in waits:
                            w.cancel()
                finally:
                    for gw in gws:
                        m = gw.publish_metrics()
                        who = f"{gw.settings.id}: " if len(gws) > 1 else ""
                        typer.echo(
                            f"{who}received {m['received']}, forwarded {m['forwarded']}, "
                            f"buffered {m['buffered']}, dropped {m['dropped']}, "
                            f"duplicates {m['duplicates']}, malformed {m['malformed']}"
                        )

        _serve(main)  # Ctrl-C or SIGTERM: the buffer drains, the counts are printed


@app.command()
def platform(
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="IIOTBED_BROKER",
            help="MQTT broker to ingest from, e.g. mqtt://127.0.0.1:1883 (default: start an "
            "embedded broker on a free port).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="IIOTBED_STORE",
            help="sqlite:///file.db or postgresql://user@host:5432/db (default ./iiotbed.db).",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, envvar="IIOTBED_HTTP_PORT", help="HTTP port (0: a free one)."
        ),
    ] = 8000,
    host: Annotated[
        str, typer.Option("--host", envvar="IIOTBED_HTTP_HOST", help="HTTP address to listen on.")
    ] = "127.0.0.1",
    scenario_file: Annotated[
        Path | None,
        typer.Option(
            "--scenario", dir_okay=False, help="Scenario of runs the store does not describe yet."
        ),
    ] = None,
    current_values: Annotated[
        bool,
        typer.Option("--current-values", help="Also ingest the retained current-value topics."),
    ] = False,
    security: Annotated[
        str,
        typer.Option(
            "--security",
            envvar="IIOTBED_SECURITY",
            help="'open', or 'secure': API writes need the bearer token, the embedded broker "
            "runs TLS with logins and ACLs (docs/security.md).",
        ),
    ] = "open",
    api_token: Annotated[
        str | None,
        typer.Option(
            "--api-token", envvar="IIOTBED_API_TOKEN", help="Bearer token of API writes (secure; "
            "default: the one in --secrets).",
        ),
    ] = None,
    secrets_dir: Annotated[
        Path,
        typer.Option(
            "--secrets", envvar="IIOTBED_SECRETS", file_okay=False,
            help="Secrets `iiotbed certs` wrote (secure profile).",
        ),
    ] = Path(".iiotbed/secrets"),
    share: Annotated[
        str | None,
        typer.Option(
            "--share", envvar="IIOTBED_INGEST_SHARE",
            help="Ingest on the MQTT shared subscription $share/GROUP/...: platforms of one "
            "group on one store each store part of the stream (docs/scaling.md). A member's "
            "session is named by host and --port: restart it on the same port.",
        ),
    ] = None,
    log_level: LogLevel = None,
) -> None:
    """Ingest the UNS into a store and serve the HTTP API and the live dashboard."""
    from iiotbed.mqtt import redact_url
    from iiotbed.platform.ingest import check_share
    from iiotbed.platform.service import Platform

    with _user_errors():
        _logging(log_level, "warning")
        _check_broker(broker)
        from iiotbed.cli.security import secure_platform

        if share is not None:
            try:
                check_share(share)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--share") from None
            if broker is None:
                raise typer.BadParameter("a shared subscription needs --broker (the broker the "
                                         "group's members share)", param_hint="--share")  # fmt: skip
        api_token, secrets = secure_platform(security, broker, api_token, secrets_dir)
        scenario = _load(scenario_file) if scenario_file is not None else None

        async def serve() -> None:
            async with Platform(
                broker=broker,
                store=store,
                host=host,
                port=port,
                scenario=scenario,
                current_values=current_values,
                api_token=api_token,
                secrets=secrets if broker is None else None,
                share=share,
            ) as p:
                typer.echo(f"platform: dashboard and API at {p.url}/ (docs {p.url}/docs)")
                shown = redact_url(p.broker_url) if p.broker_url is not None else None
                group = f"$share/{share}/" if share is not None else ""
                typer.echo(f"  ingesting {group}{p.root}/_stream/# from {shown}"
                           + (f" as {p.ingest.client_id}" if share and p.ingest else ""))  # fmt: skip
                typer.echo(f"  store {p.store.url if p.store is not None else store}")
                typer.echo("Ctrl-C stops.")
                sys.stdout.flush()
                await p.serve_forever()

        _serve(serve)  # Ctrl-C or SIGTERM: ingest stores what it holds, the store closes
