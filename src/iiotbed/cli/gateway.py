"""The ``gateway`` command: collects the devices and publishes the UNS."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from iiotbed.cli._common import (
    LogLevel,
    OpcuaLayout,
    OpcuaPort,
    SparkplugGroup,
    _check_broker,
    _check_opcua_layout,
    _load,
    _logging,
    _serve,
    _user_errors,
    app,
)
from iiotbed.cli.live import _plant_line
from iiotbed.cli.security import SecretsOption, SecurityOption, check_security
from iiotbed.devices.live.announce import RUN_FROM_DEVICES, run_topic

__all__ = ["gateway"]

_RUN_WAIT = 300.0  # s a gateway waits for the devices' run id (--run-id @devices)

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
SparkplugHost = Annotated[
    str | None,
    typer.Option(
        "--sparkplug-host", envvar="IIOTBED_SPARKPLUG_HOST",
        help="The Sparkplug host id (STATE topic) whatever --id says: redundant gateways share "
        "one, which their devices follow as Primary Host (with several --line: HOST-LINE); "
        "empty: the default (iiotbed-ID with --id).",
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


def _announced_run(broker: str, topic: str, client_id: str, timeout: float) -> str:
    """The run id the devices keep retained on ``topic`` (:mod:`iiotbed.devices.live.announce`),
    waiting up to ``timeout`` s for it; exit 1 with what to do when none comes."""
    import asyncio

    from iiotbed.devices.live.announce import parse_announcement
    from iiotbed.mqtt import Message, MqttConnection

    async def read() -> str:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_message(msg: Message) -> None:
            if msg.topic != topic or not msg.payload or got.done():
                return
            try:
                got.set_result(parse_announcement(msg.payload))
            except ValueError as exc:
                typer.echo(f"gateway: {topic}: {exc}; waiting for the next", err=True)

        async with MqttConnection(broker, client_id=client_id, on_message=on_message,
                                  subscriptions=[(topic, 1)]):  # fmt: skip
            async with asyncio.timeout(timeout):
                return await got

    typer.echo(f"waiting for the devices' run id on {topic}")
    try:
        return asyncio.run(read())
    except TimeoutError:
        typer.echo(
            f"gateway: no run announced on {topic} within {timeout:g} s: are this scenario's "
            "devices running on this broker (iiotbed devices announce their run when they "
            "connect)? Or give the run id with --run-id", err=True,
        )  # fmt: skip
        raise typer.Exit(1) from None


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
            "continue a run after a restart; with several --line, each line's is RUN_ID-LINE). "
            "@devices: the one the devices announce (retained on iiotbed/run/GROUP/EDGE), so "
            "every gateway of a run, and one restarted, writes that run.",
        ),
    ] = None,
    gateway_id: GatewayId = None,
    security: SecurityOption = "open",
    secrets_dir: SecretsOption = Path(".iiotbed/secrets"),
    line: GatewayLines = None,
    sparkplug_host: SparkplugHost = None,
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
        spb_host = sparkplug_host or None  # an empty value (compose: unset) is no value
        if spb_host is not None and any(c in spb_host for c in "/+#"):
            raise typer.BadParameter(f"{spb_host!r} is no Sparkplug host id: no '/', '+', '#'",
                                     param_hint="--sparkplug-host")  # fmt: skip
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
            if spb_host is not None and settings.sparkplug is not None:
                settings = settings.model_copy(update={
                    "sparkplug": settings.sparkplug.model_copy(update={"host_id": spb_host})
                })  # fmt: skip
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
                if run_id is not None and run_id != RUN_FROM_DEVICES:
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
                if run_id == RUN_FROM_DEVICES:
                    plant = scenario.plant
                    group = sparkplug_group or f"{plant.enterprise}-{plant.site}"
                    topic = run_topic(group, f"{plant.area}-{plant.line}")
                    announced = _announced_run(broker, topic, f"iiotbed-{gw_id or settings.id}"
                                               f"-run", _RUN_WAIT)  # fmt: skip
                    settings = settings.model_copy(update={"run_id": announced})
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
                if spb_host is not None and settings.sparkplug is not None:
                    host = f"{spb_host}-{name}" if several else spb_host
                    settings = settings.model_copy(update={
                        "sparkplug": settings.sparkplug.model_copy(update={"host_id": host})
                    })  # fmt: skip
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
