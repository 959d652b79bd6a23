"""Live commands: devices, platform (endpoints on 127.0.0.1); ``gateway`` is in
:mod:`iiotbed.cli.gateway`, ``run`` in :mod:`iiotbed.cli.run`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

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

__all__ = ["devices", "platform"]

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
