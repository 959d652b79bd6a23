"""Mosquitto's side of the secure profile: users, their ACL, hashed passwords, the TLS listener.

Every client has a user of one role, and the ACL grants each role only the topics its
job needs (IEC 62443 FR2, use control):

=============  =====================================  =======================================
role           writes                                 reads
=============  =====================================  =======================================
edge           its Sparkplug N/D BIRTH, DATA, DEATH,  NCMD/DCMD to nodes, host STATE
               the run it announces
amr (each)     its own VDA 5050 state, connection,    its own order, instantActions
               visualization, factsheet
vda-master     every AMR's order, instantActions      every AMR's state, connection, ...
gateway        Sparkplug NCMD/DCMD (rebirth), its     spBv1.0/#, uagv/# (the OT topics)
               host STATE, the UNS (``uns/#``)        the ingests' presence
ingest         its readiness probe, its presence      the UNS (``uns/#``)
observer       nothing                                everything but ``$SYS`` (students)
=============  =====================================  =======================================

So an AMR cannot write another AMR's ``order``, and no device can write the UNS. Mosquitto
drops a denied PUBLISH silently (on MQTT 3.1.1 it still PUBACKs QoS 1) and logs
``Denied PUBLISH from <client>`` at its debug level: :func:`count_denied` counts those lines.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DENIED_PUBLISH",
    "Role",
    "User",
    "acl_text",
    "count_denied",
    "find_mosquitto_passwd",
    "hash_password",
    "listener_conf",
    "testbed_users",
    "write_password_file",
]

#: the line Mosquitto 2 logs (log_type debug) for every PUBLISH its ACL refused
DENIED_PUBLISH = "Denied PUBLISH from "

Role = str  # one of ROLES

ROLES = ("edge", "amr", "vda-master", "gateway", "ingest", "observer")

SPARKPLUG = "spBv1.0"
VDA = "uagv/+/+"  # interfaceName/majorVersion/manufacturer


@dataclass(frozen=True)
class User:
    """One broker user: a name, its role, and the topic filters it may write and read."""

    name: str
    role: Role
    write: tuple[str, ...] = ()
    read: tuple[str, ...] = ()


def testbed_users(amrs: Sequence[str], *, uns_root: str = "uns") -> list[User]:
    """The users of one line: its edge node, each AMR, the VDA 5050 master, the gateway,
    the platform's ingest and a read-only observer."""
    sp = SPARKPLUG
    users = [
        User(
            "edge",
            "edge",
            write=tuple(f"{sp}/+/{kind}/+" for kind in ("NBIRTH", "NDATA", "NDEATH"))
            + tuple(f"{sp}/+/{kind}/+/+" for kind in ("DBIRTH", "DDATA", "DDEATH"))
            # the run the devices announce (retained), which gateway replicas adopt
            + ("iiotbed/run/+/+",),
            read=(f"{sp}/+/NCMD/+", f"{sp}/+/DCMD/+/+", f"{sp}/STATE/+"),
        ),
    ]
    for amr in amrs:
        users.append(
            User(
                amr,
                "amr",
                write=tuple(
                    f"{VDA}/{amr}/{t}"
                    for t in ("state", "connection", "visualization", "factsheet")
                ),
                read=tuple(f"{VDA}/{amr}/{t}" for t in ("order", "instantActions")),
            )
        )
    users += [
        User(
            "vda-master",
            "vda-master",
            write=tuple(f"{VDA}/+/{t}" for t in ("order", "instantActions")),
            read=tuple(
                f"{VDA}/+/{t}" for t in ("state", "connection", "visualization", "factsheet")
            ),
        ),
        User(
            "gateway",
            "gateway",
            write=(f"{sp}/+/NCMD/+", f"{sp}/+/DCMD/+/+", f"{sp}/STATE/+", f"{uns_root}/#"),
            # the ingests' presence: the stream waits in the buffer while none is online
            read=(f"{sp}/#", "uagv/#", "iiotbed/run/+/+", f"{uns_root}/_ingest/+/status"),
        ),
        User(
            "ingest",
            "ingest",
            # its readiness probe (under the stream; its own topic on a shared subscription)
            # and its presence, online/offline (Will), which the gateway's hand-over follows
            write=(
                f"{uns_root}/_stream/_ingest/+",
                f"{uns_root}/_ingest/+",
                f"{uns_root}/_ingest/+/status",
            ),
            read=(f"{uns_root}/#",),
        ),
        User("observer", "observer", read=("#",)),
    ]
    names = [u.name for u in users]
    if len(set(names)) != len(names):
        raise ValueError(f"user names must differ, got {names}")
    return users


def acl_text(users: Iterable[User]) -> str:
    """Mosquitto ``acl_file`` text: one ``user`` block per user; anything not listed is denied."""
    out = ["# generated by `iiotbed certs`: each role may use only the topics its job needs", ""]
    for u in users:
        out.append(f"# {u.role}")
        out.append(f"user {u.name}")
        both = set(u.write) & set(u.read)
        for topic in u.write:
            out.append(f"topic {'readwrite' if topic in both else 'write'} {topic}")
        out += [f"topic read {t}" for t in u.read if t not in both]
        out.append("")
    return "\n".join(out)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """Mosquitto 2's PBKDF2-SHA512 password hash: ``$7$<iterations>$<salt b64>$<hash b64>``."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def find_mosquitto_passwd() -> str | None:
    """The ``mosquitto_passwd`` tool, when installed."""
    return shutil.which("mosquitto_passwd") or shutil.which(
        "mosquitto_passwd", path="/usr/bin:/usr/sbin:/usr/local/bin"
    )


def write_password_file(
    path: Path, passwords: Mapping[str, str], *, tool: str | None = None
) -> str:
    """Write Mosquitto's ``password_file`` (mode 0600) with hashed passwords; returns how.

    With ``mosquitto_passwd`` (``tool``, or found on the PATH) the plain file is written
    first and hashed in place by ``mosquitto_passwd -U`` (no password on a command line);
    without it, the hashes are computed here in the same format (:func:`hash_password`).
    """
    for name in passwords:
        if not name or ":" in name or any(c.isspace() for c in name):
            raise ValueError(f"user name {name!r} must be non-empty, without ':' or spaces")
    tool = tool if tool is not None else find_mosquitto_passwd()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if tool:
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{u}:{p}\n" for u, p in passwords.items())
        done = subprocess.run([tool, "-U", str(path)], capture_output=True, text=True, check=False)
        if done.returncode == 0 and "$7$" in path.read_text():
            path.chmod(0o600)
            return "mosquitto_passwd"
        # an old tool (1.x writes $6$) or a failure: our own hashes below
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{u}:{hash_password(p)}\n" for u, p in passwords.items())
    path.chmod(0o600)
    return "pbkdf2-sha512"


def listener_conf(
    *,
    port: int,
    cafile: Path | str,
    certfile: Path | str,
    keyfile: Path | str,
    password_file: Path | str,
    acl_file: Path | str,
    bind: str | None = None,
) -> str:
    """A Mosquitto 2 configuration fragment: one TLS listener with passwords and the ACL.

    Include it from a full configuration, or use it as one (``per_listener_settings``
    stays off: ``allow_anonymous``, ``password_file`` and ``acl_file`` apply broker-wide).
    """
    where = f"{port} {bind}" if bind else f"{port}"
    return "\n".join(
        [
            "# generated by `iiotbed certs`: TLS only, a password per client, an ACL per role",
            "allow_anonymous false",
            f"password_file {password_file}",
            f"acl_file {acl_file}",
            f"listener {where}",
            "protocol mqtt",
            f"cafile {cafile}",
            f"certfile {certfile}",
            f"keyfile {keyfile}",
            "",
        ]
    )


def count_denied(log_text: str) -> int:
    """How many PUBLISH packets Mosquitto's ACL refused, from its log (``log_type debug``)."""
    return log_text.count(DENIED_PUBLISH)
