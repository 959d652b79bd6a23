"""An embedded MQTT broker for default runs: a local Mosquitto, else amqtt, on a free port.

``async with EmbeddedBroker() as broker: broker.url`` starts a broker in its own process on
127.0.0.1 and a port the OS reports free (never a fixed 1883, so a broker already running
there is left alone), and stops it on close. Mosquitto is used when its binary is on the
PATH (or in /usr/sbin); otherwise amqtt, a pure-Python broker from PyPI, runs in a child
Python process so the broker never competes with the platform's event loop.

``EmbeddedBroker(secrets=SecretsDir(...))`` is the secure profile: Mosquitto only, a TLS
listener with the secrets' certificate, passwords and ACL, and ``url`` in the
``mqtts://...?secrets=DIR`` form that logs each client in by its client id. Mosquitto drops a
PUBLISH its ACL denies without telling the sender (on MQTT 3.1.1 it even PUBACKs QoS 1) and
logs it only at its debug level, so this mode logs at debug level and
:meth:`EmbeddedBroker.denied` counts those lines (read incrementally from the log file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Literal

from iiotbed._aio import AsyncClosing
from iiotbed.errors import ConnectorError
from iiotbed.security.layout import SecretsDir
from iiotbed.security.mosquitto import DENIED_PUBLISH

__all__ = ["BrokerKind", "EmbeddedBroker", "find_mosquitto", "free_port"]

log = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]

_MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
max_queued_messages 100000
"""

# the secure listener: TLS with the secrets' certificate, logins and ACL; debug logging is
# the only place Mosquitto 2 reports a PUBLISH its ACL denied
_MOSQUITTO_SECURE_CONF = """\
listener {port} 127.0.0.1
allow_anonymous false
password_file {secrets}/passwd
acl_file {secrets}/acl
cafile {secrets}/ca.pem
certfile {secrets}/broker.pem
keyfile {secrets}/broker.key
persistence false
log_dest stderr
log_type debug
max_queued_messages 100000
"""

_AMQTT_CONF = """\
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free now (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """The mosquitto binary: on the PATH or in /usr/sbin (Debian installs it there)."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class EmbeddedBroker(AsyncClosing):
    """A broker child process on 127.0.0.1; ``kind`` None picks Mosquitto when installed."""

    def __init__(
        self,
        kind: BrokerKind | None = None,
        *,
        start_timeout: float = 10.0,
        secrets: SecretsDir | None = None,
    ) -> None:
        if kind is None:
            kind = "mosquitto" if find_mosquitto() is not None else "amqtt"
        if secrets is not None and kind != "mosquitto":
            raise ConnectorError(
                "the secure profile's broker is Mosquitto (TLS, passwords, ACL); install it "
                "(apt-get install mosquitto)"
            )
        self.kind: BrokerKind = kind
        self.host = "127.0.0.1"
        self.port = 0
        self.start_timeout = start_timeout
        self.secrets = secrets
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: Path | None = None
        self._log_offset = 0
        self._log_tail = b""
        self._denied = 0

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` once started; secure: ``mqtts://127.0.0.1:<port>?secrets=DIR``."""
        if not self.port:
            raise ConnectorError("the embedded broker is not started; use `async with`")
        if self.secrets is not None:
            return f"mqtts://{self.host}:{self.port}?secrets={self.secrets.root.resolve()}"
        return f"mqtt://{self.host}:{self.port}"

    def url_for(self, user: str) -> str:
        """Secure profile: the URL that logs in as ``user`` (its password and the CA in it)."""
        if self.secrets is None:
            return self.url
        password = self.secrets.password(user)
        ca = self.secrets.ca_cert.resolve()
        return f"mqtts://{user}:{password}@{self.host}:{self.port}?ca={ca}"

    def log_text(self) -> str:
        """What the broker logged so far (blocking read of its log file; '' when closed)."""
        try:
            return self._log.read_text(errors="replace") if self._log is not None else ""
        except OSError:
            return ""

    def denied(self) -> int:
        """PUBLISH packets the ACL refused so far (secure profile; 0 otherwise).

        Reads the log from where the last call stopped (blocking file I/O, small chunks).
        """
        if self.secrets is None or self._log is None:
            return self._denied
        try:
            with self._log.open("rb") as f:
                f.seek(self._log_offset)
                while chunk := f.read(1 << 20):
                    self._log_offset += len(chunk)
                    data = self._log_tail + chunk
                    cut = data.rfind(b"\n") + 1  # count whole lines; keep the partial one
                    self._denied += data[:cut].count(DENIED_PUBLISH.encode())
                    self._log_tail = data[cut:]
        except OSError:
            pass  # closed: the count so far stands
        return self._denied

    async def open(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self._dir = tempfile.TemporaryDirectory(prefix="iiotbed-broker-")
        last: str = ""
        # a free port can be taken between our probe and the broker's bind: try a few
        for _ in range(3):
            port = free_port(self.host)
            try:
                await self._spawn(port)
            except ConnectorError as exc:
                last = str(exc)
                continue
            self.port = port
            log.info("embedded %s broker at %s", self.kind, self.url)
            return
        await self.close()
        raise ConnectorError(f"cannot start an embedded {self.kind} broker: {last}")

    async def _spawn(self, port: int) -> None:
        assert self._dir is not None
        conf_dir = Path(self._dir.name)
        if self.kind == "mosquitto":
            binary = find_mosquitto()
            if binary is None:
                raise ConnectorError(
                    "mosquitto is not installed; install it (apt-get install mosquitto) "
                    "or use the amqtt broker"
                )
            conf = conf_dir / "mosquitto.conf"
            if self.secrets is not None:
                text = _MOSQUITTO_SECURE_CONF.format(port=port, secrets=self.secrets.root.resolve())
                if os.geteuid() == 0:
                    # as root Mosquitto switches to user mosquitto before it reads the
                    # password file, which is 0600 and ours: stay who we are
                    text += "user root\n"
            else:
                text = _MOSQUITTO_CONF.format(port=port)
            conf.write_text(text)
            args = [binary, "-c", str(conf)]
        else:
            conf = conf_dir / "amqtt.yaml"
            conf.write_text(_AMQTT_CONF.format(port=port))
            args = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        # the broker logs to a file, not a pipe: an unread pipe would fill and stall it
        log_path = conf_dir / f"{self.kind}-{port}.log"
        self._log, self._log_offset, self._log_tail = log_path, 0, b""
        with log_path.open("wb") as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                err = log_path.read_bytes()
                self._proc = None
                raise ConnectorError(
                    f"{self.kind} exited at start on port {port}: "
                    f"{err.decode(errors='replace').strip()[-300:]}",
                    endpoint=f"mqtt://{self.host}:{port}",
                )
            if await _accepts(self.host, port):
                return
            await asyncio.sleep(0.05)
        await self._stop()
        raise ConnectorError(
            f"{self.kind} did not listen on {self.host}:{port} within {self.start_timeout} s",
            endpoint=f"mqtt://{self.host}:{port}",
        )

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def close(self) -> None:
        """Stop the broker process and remove its configuration; safe to call twice."""
        await self._stop()
        if self._dir is not None:
            await asyncio.to_thread(self.denied)  # the last lines, before the log goes
        self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self.port = 0
