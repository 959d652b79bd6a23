"""``iiotbed certs``: the secure profile's CA, broker certificate, passwords, ACL and token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from iiotbed.cli._common import app

if TYPE_CHECKING:
    from iiotbed.gateway.settings import GatewaySettings
    from iiotbed.security.layout import SecretsDir

__all__ = ["SecretsOption", "SecurityOption", "certs", "check_security", "secure_gateway",
           "secure_platform"]

#: ``--security`` of devices, gateway and run: one switch for every part
SecurityOption = Annotated[
    str,
    typer.Option(
        "--security",
        envvar="IIOTBED_SECURITY",
        help="'open', or 'secure': MQTT over TLS with logins and ACLs, OPC UA SignAndEncrypt "
        "with user logins (docs/security.md).",
    ),
]
#: ``--secrets`` of devices and gateway (``run`` has its own default: the run's directory)
SecretsOption = Annotated[
    Path,
    typer.Option(
        "--secrets", envvar="IIOTBED_SECRETS", file_okay=False,
        help="Secrets `iiotbed certs` wrote (secure profile).",
    ),
]

_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")


@app.command()
def certs(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", envvar="IIOTBED_SECRETS", file_okay=False, help="Where the secrets go (0700)."
        ),
    ] = Path(".iiotbed/secrets"),
    hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Another name or address clients dial the broker by (repeat it; compose: "
            "--host broker-ot --host broker-it). 127.0.0.1 and localhost are always in.",
        ),
    ] = None,
    amrs: Annotated[
        int, typer.Option("--amrs", min=0, max=999, help="AMR users amr-01 .. amr-NN.")
    ] = 6,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The broker's TLS port.")
    ] = 8883,
    conf_dir: Annotated[
        str | None,
        typer.Option(
            "--conf-dir",
            help="The directory as the broker sees it (a container's mount point) for the "
            "paths in mosquitto.conf (default: --dir).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing secrets (clients need the new CA).")
    ] = False,
) -> None:
    """Make the secure profile's secrets: a CA, Mosquitto's TLS certificate, a random
    password per client role, the broker's ACL and configuration, the API token."""
    from iiotbed.security.layout import SecretsDir, generate

    names = hosts or []
    for h in names:
        if not _HOST.match(h):
            raise typer.BadParameter(f"{h!r} is not a host name or IP address", param_hint="--host")
    s = SecretsDir(directory)
    if s.exists() and not force:
        typer.echo(
            f"{directory}: secrets exist, kept as they are (--force makes new ones; every "
            "client then needs the new ca.pem and passwords)"
        )
        return
    try:
        generate(
            directory,
            hosts=names,
            amrs=[f"amr-{i:02d}" for i in range(1, amrs + 1)],
            port=port,
            conf_dir=conf_dir,
        )
    except OSError as exc:
        where = exc.filename or directory
        typer.echo(
            f"error: cannot write the secrets to {where}: {exc.strerror or exc}; "
            "give a writable directory with --dir",
            err=True,
        )
        raise typer.Exit(2) from None
    typer.echo(f"secrets written to {directory} (directory 0700, files 0600):")
    for path, what in (
        (s.ca_cert, "CA certificate: clients trust it (mqtts://...?ca=FILE or IIOTBED_MQTT_CA)"),
        (s.mosquitto_conf, "Mosquitto: TLS listener, password_file, acl_file"),
        (s.credentials, "every user's role and password, the API token"),
        (s.env_file, "broker URLs per role, the CA and API token as KEY=value lines"),
    ):
        typer.echo(f"  {path}  {what}")
    typer.echo(
        f"start a broker with `mosquitto -c {s.mosquitto_conf}`; connect devices with "
        f"--broker 'mqtts://127.0.0.1:{port}?secrets={directory}'"
    )


def secure_platform(
    security: str, broker: str | None, api_token: str | None, secrets_dir: Path
) -> tuple[str | None, SecretsDir | None]:
    """``iiotbed platform``'s profile: (API token, secrets for an embedded broker), or
    (None, None) when open; bad input is a usage error (exit 2)."""
    if security not in ("open", "secure"):
        raise typer.BadParameter(f"{security!r}: use 'open' or 'secure'", param_hint="--security")
    if security == "open":
        return None, None
    from iiotbed.security.layout import SecretsDir, read_api_token

    if broker is not None and not broker.startswith("mqtts://"):
        raise typer.BadParameter(
            "the secure profile talks TLS: give an mqtts:// broker URL", param_hint="--broker"
        )
    try:
        token = api_token or read_api_token(secrets_dir)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--secrets") from None
    if len(token) < 16:
        raise typer.BadParameter("use at least 16 characters", param_hint="--api-token")
    return token, SecretsDir(secrets_dir)


def check_security(
    security: str, broker: str | None, secrets_dir: Path | None
) -> Literal["open", "secure"]:
    """``--security`` of devices, gateway and run, checked: a secure profile needs an
    ``mqtts://`` broker (when one is given) and readable secrets (when a directory is
    given); each mistake is a usage error (exit 2)."""
    if security not in ("open", "secure"):
        raise typer.BadParameter(f"{security!r}: use 'open' or 'secure'", param_hint="--security")
    if security == "open":
        return "open"
    if broker is not None and not broker.startswith("mqtts://"):
        raise typer.BadParameter(
            "the secure profile talks TLS: give an mqtts:// broker URL, e.g. "
            "'mqtts://127.0.0.1:8883?secrets=.iiotbed/secrets'",
            param_hint="--broker",
        )
    if secrets_dir is not None:
        from iiotbed.security.layout import SecretsDir

        try:
            SecretsDir(secrets_dir).read()
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--secrets") from None
    return "secure"


def secure_gateway(settings: GatewaySettings, secrets_dir: Path) -> GatewaySettings:
    """``iiotbed gateway --security secure``: every broker ``mqtts://``, the OPC UA collector
    logged in as operator with its client certificate (made in ``secrets_dir`` when absent);
    what the settings already give (a --config's user, certificate) is kept."""
    import asyncio

    from iiotbed.security.layout import SecretsDir
    from iiotbed.testbed.secure import gateway_opcua

    brokers = [settings.output.broker]
    brokers += [p.broker for p in (settings.sparkplug, settings.vda5050) if p and p.broker]
    if any(not b.startswith("mqtts://") for b in brokers):
        raise typer.BadParameter(
            "the secure profile talks TLS: every broker URL must be mqtts://", param_hint="--broker"
        )
    if settings.opcua is None:
        return settings
    try:
        creds = asyncio.run(gateway_opcua(SecretsDir(secrets_dir)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--secrets") from None
    given = settings.opcua.model_dump()
    if given["certificate"] is not None:  # the config's own certificate and key stay
        given.pop("certificate"), given.pop("private_key")
    if given["user"] is not None:
        given.pop("user"), given.pop("password")
    filled = {k: v for k, v in creds.settings().items() if k in given}
    opcua = settings.opcua.model_validate({**settings.opcua.model_dump(), **filled})
    return settings.model_copy(update={"opcua": opcua})
