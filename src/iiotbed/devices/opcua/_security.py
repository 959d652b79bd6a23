"""Security profiles of the machine servers: certificates and user/password checks.

``open``: SecurityPolicy None, anonymous (teaching). ``secure``: Basic256Sha256
SignAndEncrypt only, user name and password only; the server's self-signed certificate
is generated on first start and reused afterwards.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "Security",
    "SecurityProfile",
    "UserPasswordManager",
    "client_validator",
    "ensure_certificate",
]

SecurityProfile = Literal["open", "secure"]


@dataclass(frozen=True, slots=True)
class Security:
    """How a server is secured.

    ``users`` maps user name to password (``secure`` only); ``cert_dir`` holds the
    generated ``<name>.der`` certificate and ``<name>.pem`` key. With ``trusted_clients``
    (a directory of client certificates, DER or PEM) only those clients may connect;
    without it any client certificate is accepted and users and passwords guard access.
    """

    profile: SecurityProfile = "open"
    users: Mapping[str, str] = field(default_factory=dict)
    cert_dir: Path = Path(".iiotbed/pki")
    trusted_clients: Path | None = None

    def __post_init__(self) -> None:
        if self.profile not in ("open", "secure"):
            raise ValueError(f"security profile must be 'open' or 'secure', got {self.profile!r}")
        if self.profile == "secure" and not self.users:
            raise ValueError(
                "the 'secure' profile needs at least one user; give users={'name': 'password'}"
            )


class UserPasswordManager:
    """Accepts only the configured user names and passwords (asyncua UserManager)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or password is None:
            return None
        expected = self._users.get(username)
        # constant-time comparison: do not leak how much of a password matched
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)


def _alt_names(app_uri: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri)]
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _generate(
    cert_path: Path, key_path: Path, app_uri: str, hosts: Sequence[str], client: bool
) -> None:
    key = cert_gen.generate_private_key()
    use = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        app_uri,
        {"organizationName": "iiotbed"},
        _alt_names(app_uri, hosts),
        extended=use,
        days=365,
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _usable(cert_path: Path, key_path: Path, app_uri: str) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return app_uri in san.get_values_for_type(x509.UniformResourceIdentifier)


async def ensure_certificate(
    cert_path: Path,
    key_path: Path,
    app_uri: str,
    hosts: Sequence[str] = ("127.0.0.1",),
    *,
    client: bool = False,
) -> None:
    """Create a self-signed application certificate (DER) and key (PEM) unless usable ones exist.

    The subject alternative names hold ``app_uri``, every host given, ``localhost`` and this
    machine's host name, so clients connecting by any of them accept the certificate.
    """
    all_hosts = [*hosts, "localhost", socket.gethostname()]
    # key generation and file I/O block: keep them off the event loop
    if not await asyncio.to_thread(_usable, cert_path, key_path, app_uri):
        await asyncio.to_thread(_generate, cert_path, key_path, app_uri, all_hosts, client)


async def client_validator(trusted: Path) -> CertificateValidator:
    """Accept only client certificates found in ``trusted`` (and still valid)."""
    if not trusted.is_dir():  # noqa: ASYNC240 - one stat at start-up
        raise ValueError(
            f"trusted_clients must be a directory of client certificates, got {trusted}"
        )
    store = TrustStore([trusted], [])
    await store.load()
    options = (
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
    )
    return CertificateValidator(options, store)
