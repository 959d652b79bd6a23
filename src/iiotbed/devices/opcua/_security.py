"""Security profiles of the machine servers: certificates, user/password checks and roles.

``open``: SecurityPolicy None, anonymous (teaching). ``secure``: Basic256Sha256
SignAndEncrypt only, user name and password only; the server's self-signed certificate
is generated on first start and reused afterwards. Each user has a role, checked per node
on every Call and Write request by asyncua's permission ruleset:

=========  ==================================================================
operator   read, browse, subscribe (and the standard server methods)
engineer   as operator, plus the machines' Start/Stop/Reset/Hold/Unhold and
           writes to their SpeedSetpoint
=========  ==================================================================

A request the role does not allow is answered ``BadUserAccessDenied``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.ua_binary import struct_from_binary
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "ROLES",
    "Role",
    "RoleRuleset",
    "Security",
    "SecurityProfile",
    "UserPasswordManager",
    "client_validator",
    "ensure_certificate",
    "users_from_secrets",
]

SecurityProfile = Literal["open", "secure"]
Role = Literal["operator", "engineer"]
ROLES: Final[tuple[Role, ...]] = ("operator", "engineer")


@dataclass(frozen=True, slots=True)
class Security:
    """How a server is secured.

    ``users`` maps user name to password (``secure`` only); ``cert_dir`` holds the
    generated ``<name>.der`` certificate and ``<name>.pem`` key. With ``trusted_clients``
    (a directory of client certificates, DER or PEM) only those clients may connect;
    without it any client certificate is accepted and users and passwords guard access.
    ``roles`` maps user name to ``operator`` or ``engineer``; a user it does not name has
    the role spelled like the user name if there is one, else ``operator``.
    """

    profile: SecurityProfile = "open"
    users: Mapping[str, str] = field(default_factory=dict)
    cert_dir: Path = Path(".iiotbed/pki")
    trusted_clients: Path | None = None
    roles: Mapping[str, Role] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in ("open", "secure"):
            raise ValueError(f"security profile must be 'open' or 'secure', got {self.profile!r}")
        if self.profile == "secure" and not self.users:
            raise ValueError(
                "the 'secure' profile needs at least one user; give users={'name': 'password'}"
            )
        for name, role in self.roles.items():
            if name not in self.users:
                raise ValueError(f"roles names user {name!r}, who is not in users")
            if role not in ROLES:
                raise ValueError(
                    f"user {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}"
                )

    @classmethod
    def from_secrets(
        cls,
        directory: Path,
        *,
        cert_dir: Path = Path(".iiotbed/pki"),
        trusted_clients: Path | None = None,
    ) -> Security:
        """The ``secure`` profile with the users and roles kept in ``directory``."""
        users, roles = users_from_secrets(directory)
        return cls("secure", users, cert_dir, trusted_clients, roles)

    def role_of(self, user: str) -> Role:
        """The role of a configured user (see the class docstring for the default)."""
        role = self.roles.get(user)
        if role is not None:
            return role
        return "engineer" if user == "engineer" else "operator"


def users_from_secrets(directory: Path) -> tuple[dict[str, str], dict[str, Role]]:
    """Users (name -> password) and their roles from the secrets directory.

    The one place that knows where they are: the ``opcua`` section of the
    ``credentials.json`` that ``iiotbed certs`` writes (:class:`iiotbed.security.SecretsDir`),
    ``{"opcua": {"users": {"<user>": {"role": "operator" | "engineer", "password": "..."}}}}``.
    Raises ``ValueError`` naming the file and what is wrong.
    """
    from iiotbed.security import SecretsDir  # the secrets layout lives there

    secrets = SecretsDir(directory)
    path = secrets.credentials
    doc = secrets.read()  # ValueError with the fix when missing or not an `iiotbed certs` file
    section = doc.get("opcua")
    entries = section.get("users") if isinstance(section, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ValueError(
            f"{path}: no OPC UA users (an 'opcua': {{'users': {{...}}}} section); "
            f"run 'iiotbed certs --dir {directory} --force'"
        )
    users: dict[str, str] = {}
    roles: dict[str, Role] = {}
    for name, entry in entries.items():
        password = entry.get("password") if isinstance(entry, dict) else None
        role = entry.get("role", "operator") if isinstance(entry, dict) else None
        if not isinstance(password, str) or not password:
            raise ValueError(f"{path}: OPC UA user {name!r} needs a non-empty 'password' string")
        if role not in ROLES:
            raise ValueError(
                f"{path}: OPC UA user {name!r}: role must be one of {', '.join(ROLES)}, "
                f"got {role!r}"
            )
        users[name] = password
        roles[name] = role
    return users, roles


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


_REQUEST: Final = {name: ua.NodeId(getattr(ua.ObjectIds, f"{name}Request_Encoding_DefaultBinary"))
                   for name in ("Write", "Call")}  # fmt: skip
# every request an authenticated user may send (asyncua's list); Write and Call are then
# checked node by node
_USER_REQUESTS: Final = frozenset(ua.NodeId(i) for i in USER_TYPES)


class RoleRuleset(PermissionRuleset):  # type: ignore[misc]
    """asyncua's per-request permission check, by role and node.

    asyncua calls :meth:`check_validity` before each request of a session and answers
    ``BadUserAccessDenied`` when it returns False. Fill :attr:`commands` (method nodes only
    engineers may call) and :attr:`setpoints` (variables only engineers may write) while
    building the address space. Other variables cannot be written by anyone (their access
    level says so); other methods (the standard server methods) are open to every role.
    """

    def __init__(self, roles: Mapping[str, Role]) -> None:
        self._roles = dict(roles)
        self.commands: set[ua.NodeId] = set()
        self.setpoints: set[ua.NodeId] = set()

    def check_validity(self, user: User | None, action_type_id: ua.NodeId, body: Buffer) -> bool:
        if user is None:
            return False
        if user.role == UserRole.Admin:  # the server's own internal session
            return True
        role = self._roles.get(user.name or "") if user.role == UserRole.User else None
        if role is None or action_type_id not in _USER_REQUESTS:
            return False
        try:
            if action_type_id == _REQUEST["Write"]:
                # parse a copy: asyncua parses the body again to serve the request
                writes = struct_from_binary(ua.WriteParameters, body.copy()).NodesToWrite
                return role == "engineer" and all(
                    w.AttributeId == ua.AttributeIds.Value and w.NodeId in self.setpoints
                    for w in writes
                )
            if action_type_id == _REQUEST["Call"]:
                calls = struct_from_binary(ua.CallParameters, body.copy()).MethodsToCall
                return role == "engineer" or not any(c.MethodId in self.commands for c in calls)
        except Exception:  # a body asyncua cannot parse is refused, not served
            return False
        return True


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
