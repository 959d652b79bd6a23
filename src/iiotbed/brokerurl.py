"""Broker URLs: ``mqtt://`` and ``mqtts://`` with logins, the TLS context, refused logins.

``mqtts://user:password@host:8883?ca=ca.pem`` names a TLS broker, the CA that signed its
certificate, and the login; ``?secrets=DIR`` instead picks the login by client id from a
directory ``iiotbed certs`` wrote (one URL for a process of many clients). No paho here:
:mod:`iiotbed.mqtt` (the transport) uses these and re-exports the public names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from iiotbed.errors import ConnectorError

__all__ = ["BrokerRefused", "BrokerUrl", "parse_broker_url", "redact_url", "refusal", "tls_context",
           "tls_failure"]  # fmt: skip


@dataclass(frozen=True)
class BrokerUrl:
    """Where the broker listens, and how to log in: ``mqtt://`` plain TCP, ``mqtts://`` TLS.

    ``str()`` never shows the password: use it in messages and logs.
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: CA certificate (PEM) that signed the broker's certificate; None: the system's CAs
    ca: Path | None = None
    #: a directory written by ``iiotbed certs``: its CA, and a login chosen by client id
    secrets: Path | None = None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def login(self, client_id: str) -> tuple[str, str | None] | None:
        """User name and password for ``client_id``: the URL's own, else the secrets
        directory's rule for that client id, else None (anonymous)."""
        if self.username is not None:
            return self.username, self.password
        if self.secrets is not None:
            return _login_from_secrets(self.secrets, client_id)
        return None


#: URL query parameters: ``ca`` (a CA file), ``secrets`` (an ``iiotbed certs`` directory)
_QUERY = ("ca", "secrets")


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse ``mqtt[s]://[user[:password]@]host[:port][?ca=FILE|secrets=DIR]``.

    Ports default to 1883 (``mqtt``) and 8883 (``mqtts``). For ``mqtts`` the broker's
    certificate is checked against ``?ca=FILE``, else ``$IIOTBED_MQTT_CA``, else the CA of
    ``?secrets=DIR``, else the system's CAs. User name and password are percent-decoded.
    """
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConnectorError(
            f"broker URL {shown!r} is not supported: write it as mqtt://host:port or "
            "mqtts://user:password@host:8883?ca=ca.pem, e.g. mqtt://127.0.0.1:1883",
            endpoint=shown,
        )
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConnectorError(
            f"broker URL {shown!r} has an invalid port: use a number in 1-65535", endpoint=shown
        ) from exc
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY))
    if unknown or any(len(v) != 1 or not v[0] for v in query.values()):
        raise ConnectorError(
            f"broker URL {shown!r}: the query may hold ca=FILE and secrets=DIR once each"
            + (f", not {', '.join(unknown)}" if unknown else ""),
            endpoint=shown,
        )
    ca = Path(query["ca"][0]) if "ca" in query else None
    secrets = Path(query["secrets"][0]) if "secrets" in query else None
    if (ca is not None or secrets is not None) and not tls:
        raise ConnectorError(
            f"broker URL {shown!r}: ca= and secrets= need TLS: write mqtts://", endpoint=shown
        )
    if tls and ca is None:
        env = os.environ.get("IIOTBED_MQTT_CA")
        ca = Path(env) if env else (secrets / "ca.pem" if secrets is not None else None)
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerUrl(parts.hostname, port, tls, username or None, password, ca, secrets)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages, logs and the API)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _login_from_secrets(secrets: Path, client_id: str) -> tuple[str, str | None] | None:
    # the first rule whose client id pattern matches names the user (iiotbed.security.layout)
    path = secrets / "credentials.json"
    try:
        doc = json.loads(path.read_text())
        users: dict[str, Any] = doc["mqtt"]["users"]
        rules: list[list[str]] = doc["mqtt"]["clients"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrokerRefused(
            f"cannot read MQTT logins from {path}: {exc}; run `iiotbed certs --dir {secrets}`",
            endpoint=str(path),
        ) from exc
    for pattern, user in rules:
        if fnmatch.fnmatchcase(client_id, pattern) and user in users:
            return user, str(users[user]["password"])
    return None


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho drops such a socket unclosed."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(url: BrokerUrl) -> ssl.SSLContext:
    """A client context that checks the broker's certificate and host name."""
    try:
        ctx = ssl.create_default_context(cafile=str(url.ca) if url.ca is not None else None)
        ctx.sslsocket_class = _ClosingSSLSocket
        return ctx
    except (OSError, ssl.SSLError) as exc:
        raise BrokerRefused(
            f"cannot use CA file {url.ca} for {url}: {exc}; give the CA certificate "
            "`iiotbed certs` wrote (ca.pem) with ?ca=FILE or IIOTBED_MQTT_CA",
            endpoint=str(url),
        ) from exc


class BrokerRefused(ConnectorError):
    """The broker refused us for good (bad login, not authorised, untrusted TLS): no retry."""


#: CONNACK reasons a retry cannot fix (paho reports MQTT 3.1.1 codes as MQTT 5 reasons)
_FATAL_CONNACK: Final = {
    1: "unacceptable protocol version", 2: "client identifier rejected",
    4: "bad user name or password", 5: "not authorised",
    132: "unsupported protocol version", 133: "client identifier not valid",
    134: "bad user name or password", 135: "not authorised", 138: "banned",
    140: "bad authentication method",
}  # fmt: skip


def refusal(
    url: BrokerUrl, client_id: str, login: tuple[str, str | None] | None, rc: int
) -> ConnectorError:
    """The error for a CONNACK ``rc`` (-1: closed before one): :class:`BrokerRefused` when a
    retry cannot help."""
    who = f"{client_id!r} as user {login[0]!r}" if login else (
        f"{client_id!r} (anonymous: no user in the URL)")  # fmt: skip
    if rc in _FATAL_CONNACK:
        return BrokerRefused(
            f"MQTT broker {url} refused {who}: {_FATAL_CONNACK[rc]} (CONNACK {rc}); "
            "check the user and password (iiotbed certs writes them)",
            endpoint=str(url),
        )
    if rc < 0:
        return ConnectorError(
            f"MQTT broker {url} closed the connection of {who} before its CONNACK; "
            "a TLS listener needs mqtts://",
            endpoint=str(url),
        )
    return ConnectorError(f"MQTT broker {url} refused {who} (CONNACK reason {rc})", endpoint=str(url))


def tls_failure(url: BrokerUrl, exc: ssl.SSLError) -> BrokerRefused:
    """The error for a failed TLS handshake (an untrusted certificate, a plain listener)."""
    why = (
        "the broker's certificate is not signed by the CA given (?ca=, IIOTBED_MQTT_CA) "
        "or does not name this host"
        if isinstance(exc, ssl.SSLCertVerificationError)
        else "is it a TLS listener (mqtts://) and the port right?"
    )
    return BrokerRefused(f"TLS with MQTT broker {url} failed: {exc}; {why}", endpoint=str(url))
