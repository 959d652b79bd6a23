"""The secrets directory ``iiotbed certs`` writes (default ``.iiotbed/secrets``), and reading it.

=====================  =====================================================================
file                   what
=====================  =====================================================================
``ca.pem``, ``ca.key``  the project's CA (clients trust ``ca.pem``; ``ca.key`` signs)
``broker.pem``/``.key`` Mosquitto's server certificate (SANs: 127.0.0.1, localhost, --host)
``passwd``              Mosquitto ``password_file`` (PBKDF2-SHA512 hashes)
``acl``                 Mosquitto ``acl_file``: each role's topics (:mod:`.mosquitto`)
``mosquitto.conf``      a TLS listener with the three above (include it, or run it as is)
``credentials.json``    every user's role and password, the client-id rules, the API token
``secrets.env``         ``KEY=value`` lines: broker URLs per role, the CA, the API token
=====================  =====================================================================

The directory is 0700 and every file 0600: the secrets never enter the repository
(``.iiotbed/`` is ignored) or an image. A broker URL ``mqtts://host:8883?secrets=DIR``
logs each client in by its client id (``credentials.json``'s ``clients`` rules, first match),
so one URL serves a process of many clients (the devices: edge node, master, each AMR).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iiotbed.security.ca import CertificateAuthority
from iiotbed.security.mosquitto import acl_text, listener_conf, testbed_users, write_password_file

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_HOSTS",
    "SecretsDir",
    "client_rules",
    "generate",
    "read_api_token",
]

DEFAULT_DIR = Path(".iiotbed/secrets")
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
TLS_PORT = 8883
#: the AMRs of the shipped 5G scenario (``supply.amr.count: 6``)
DEFAULT_AMRS = tuple(f"amr-{n:02d}" for n in range(1, 7))


def client_rules(amrs: Sequence[str]) -> list[tuple[str, str]]:
    """``(client id pattern, user)`` in order, after the client ids iiotbed's clients use."""
    return [
        ("iiotbed-master-*", "vda-master"),
        *((f"iiotbed-*-{amr}", amr) for amr in amrs),
        ("iiotbed-platform-*", "ingest"),
        *(
            (f"iiotbed-*-{suffix}", "gateway")
            for suffix in ("spb-host", "vda", "json", "uns", "health")
        ),
        ("iiotbed-gw-*", "gateway"),
        ("iiotbed-host-*", "gateway"),
        ("iiotbed-*", "edge"),  # the edge node: iiotbed-<group>-<edge node id>, last
    ]


@dataclass(frozen=True)
class SecretsDir:
    """Paths inside one secrets directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def password_file(self) -> Path:
        return self.root / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.root / "acl"

    @property
    def mosquitto_conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    @property
    def env_file(self) -> Path:
        return self.root / "secrets.env"

    def exists(self) -> bool:
        return self.credentials.is_file()

    def read(self) -> dict[str, Any]:
        """``credentials.json`` (ValueError when it is not what ``iiotbed certs`` wrote)."""
        try:
            doc = json.loads(self.credentials.read_text())
            doc["mqtt"]["users"], doc["api"]["token"]
        except OSError as exc:
            raise ValueError(
                f"cannot read {self.credentials}: {exc.strerror}; run `iiotbed certs --dir {self.root}`"
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self.credentials} is not an `iiotbed certs` file ({exc}); "
                f"run `iiotbed certs --dir {self.root} --force`"
            ) from exc
        return dict(doc)

    def password(self, user: str) -> str:
        return str(self.read()["mqtt"]["users"][user]["password"])

    def broker_url(self, user: str | None = None, host: str | None = None) -> str:
        """An ``mqtts://`` URL for ``user`` (its password in it), or, without a user, the
        ``?secrets=`` form that logs each client in by its client id."""
        doc = self.read()["mqtt"]
        where = f"{host or doc['hosts'][0]}:{doc['port']}"
        root = self.root.resolve()
        if user is None:
            return f"mqtts://{where}?secrets={root}"
        return f"mqtts://{user}:{self.password(user)}@{where}?ca={root / 'ca.pem'}"


def _write(path: Path, data: bytes | str) -> None:
    """Write a secret: created 0600 (never briefly readable by others), replaced whole."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    tmp.chmod(0o600)
    tmp.replace(path)


def generate(
    root: Path = DEFAULT_DIR,
    *,
    hosts: Sequence[str] = (),
    amrs: Sequence[str] = DEFAULT_AMRS,
    port: int = TLS_PORT,
    uns_root: str = "uns",
    conf_dir: str | None = None,
    passwd_tool: str | None = None,
) -> SecretsDir:
    """Write a fresh CA, broker certificate, passwords, ACL and configuration into ``root``.

    ``conf_dir`` is the directory as the broker will see it (e.g. a container's mount
    point; default: ``root`` itself) for the paths in ``mosquitto.conf``. Raises OSError
    when ``root`` cannot be created or written.
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    s = SecretsDir(root)
    all_hosts = [*DEFAULT_HOSTS, *hosts]
    ca = CertificateAuthority.create()
    server = ca.issue_server("iiotbed MQTT broker", all_hosts)
    users = testbed_users(amrs, uns_root=uns_root)
    passwords = {u.name: secrets.token_urlsafe(24) for u in users}
    token = secrets.token_urlsafe(32)
    _write(s.ca_cert, ca.cert_pem)
    _write(s.ca_key, ca.key_pem)
    _write(s.broker_cert, server.cert_pem)
    _write(s.broker_key, server.key_pem)
    _write(s.acl_file, acl_text(users))
    write_password_file(s.password_file, passwords, tool=passwd_tool)
    seen = Path(conf_dir) if conf_dir else root.resolve()
    _write(
        s.mosquitto_conf,
        listener_conf(
            port=port,
            cafile=seen / s.ca_cert.name,
            certfile=seen / s.broker_cert.name,
            keyfile=seen / s.broker_key.name,
            password_file=seen / s.password_file.name,
            acl_file=seen / s.acl_file.name,
        ),
    )
    doc = {
        "version": 1,
        "mqtt": {
            "port": port,
            "hosts": all_hosts,
            "users": {u.name: {"role": u.role, "password": passwords[u.name]} for u in users},
            "clients": [list(rule) for rule in client_rules(amrs)],
        },
        "api": {"token": token},
        # OPC UA users of the secure machine servers: operator (read, browse, subscribe),
        # engineer (also the methods and SpeedSetpoint); devices/opcua/_security.py
        "opcua": {
            "users": {
                name: {"role": name, "password": secrets.token_urlsafe(24)}
                for name in ("operator", "engineer")
            }
        },
    }
    _write(s.credentials, json.dumps(doc, indent=2) + "\n")
    env = [
        "# generated by `iiotbed certs`: secrets, keep out of version control and images",
        f"IIOTBED_MQTT_CA={root.resolve() / 'ca.pem'}",
        f"IIOTBED_API_TOKEN={token}",
        f"IIOTBED_BROKER_DEVICES={s.broker_url()}",
        f"IIOTBED_BROKER_GATEWAY={s.broker_url('gateway')}",
        f"IIOTBED_BROKER_PLATFORM={s.broker_url('ingest')}",
        f"IIOTBED_BROKER_OBSERVER={s.broker_url('observer')}",
    ]
    _write(s.env_file, "\n".join(env) + "\n")
    return s


def read_api_token(root: Path = DEFAULT_DIR) -> str:
    """The platform API's bearer token from a secrets directory (ValueError if unreadable)."""
    return str(SecretsDir(root).read()["api"]["token"])
