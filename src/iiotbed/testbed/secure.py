"""The secure profile's parts for one process: secrets, the OPC UA servers' security, the
gateway's OPC UA client certificate and login (``docs/security.md``, "One switch").

``iiotbed run --security secure`` and the ``devices`` / ``gateway`` commands read the same
secrets directory ``iiotbed certs`` writes: the machine servers get
:meth:`Security.from_secrets <iiotbed.devices.opcua.Security.from_secrets>`, the gateway's
collector logs in as ``operator`` and presents its own application certificate
(self-signed RSA, as the servers' are: Basic256Sha256 needs RSA keys, and the project CA's
are ECDSA). The servers accept any client certificate unless given a trust list; the
certificate makes the SignAndEncrypt channel, the password the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iiotbed.security.layout import DEFAULT_AMRS, SecretsDir, generate

if TYPE_CHECKING:
    from iiotbed.devices.opcua import Security
    from iiotbed.scenario import Scenario

__all__ = [
    "GATEWAY_APP_URI",
    "GATEWAY_OPCUA_ROLE",
    "GatewayOpcUa",
    "amrs_of",
    "ensure_secrets",
    "gateway_opcua",
    "server_security",
]

#: the application URI in the gateway collector's certificate (the session must use it)
GATEWAY_APP_URI = "urn:iiotbed:gateway"
#: the OPC UA user the gateway logs in as: reading is all the conduit needs
GATEWAY_OPCUA_ROLE = "operator"


@dataclass(frozen=True, slots=True)
class GatewayOpcUa:
    """The gateway collector's OPC UA credentials: a login and an application certificate."""

    user: str
    password: str
    certificate: Path  # DER
    private_key: Path  # PEM, 0600 (asyncua reads a key as PEM by its .pem suffix)

    def settings(self) -> dict[str, object]:
        """The fields of :class:`~iiotbed.gateway.settings.OpcUaSettings` they fill."""
        return {
            "user": self.user,
            "password": self.password,
            "certificate": self.certificate,
            "private_key": self.private_key,
        }


def amrs_of(scenario: Scenario | None) -> list[str]:
    """The AMR users a scenario needs (at least the default six of ``iiotbed certs``)."""
    supply = scenario.supply if scenario is not None else None
    count = supply.amr.count if supply is not None and supply.amr is not None else 0
    return [f"amr-{i:02d}" for i in range(1, max(count, len(DEFAULT_AMRS)) + 1)]


def ensure_secrets(directory: Path, amrs: Sequence[str] = DEFAULT_AMRS) -> SecretsDir:
    """The secrets in ``directory``, generated (0700/0600) when there are none (blocking).

    Existing secrets are read as they are; ValueError when they are not an ``iiotbed certs``
    directory, OSError when it cannot be written.
    """
    s = SecretsDir(directory)
    if not s.exists():
        generate(directory, amrs=amrs)
    s.read()  # ValueError naming the file and the fix
    return s


def server_security(secrets: SecretsDir, cert_dir: Path) -> Security:
    """The machine servers' secure profile: users and roles from the secrets directory."""
    from iiotbed.devices.opcua import Security

    return Security.from_secrets(secrets.root, cert_dir=cert_dir)


async def gateway_opcua(secrets: SecretsDir, role: str = GATEWAY_OPCUA_ROLE) -> GatewayOpcUa:
    """The gateway's login (the ``role`` user of the secrets' ``opcua`` section) and its
    client certificate ``opcua-gateway.der`` / ``opcua-gateway.pem`` (key, 0600) in the secrets
    directory, generated on first use (RSA key generation: off the event loop)."""
    import asyncio

    from iiotbed.devices.opcua import ensure_certificate
    from iiotbed.devices.opcua._security import users_from_secrets

    users, roles = await asyncio.to_thread(users_from_secrets, secrets.root)
    user = next((u for u, r in roles.items() if r == role), None)
    if user is None:
        raise ValueError(
            f"{secrets.credentials}: no OPC UA user of role {role!r}; "
            f"run `iiotbed certs --dir {secrets.root} --force`"
        )
    cert, key = secrets.root / "opcua-gateway.der", secrets.root / "opcua-gateway.pem"
    await ensure_certificate(cert, key, GATEWAY_APP_URI, client=True)
    await asyncio.to_thread(cert.chmod, 0o600)
    return GatewayOpcUa(user, users[user], cert, key)
