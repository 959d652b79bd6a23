"""Helpers of the compose tests: the engine check and :class:`Stack` (docker compose CLI)."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENV = ROOT / "docker" / "offline.env"  # written by .ci/docker.sh
SERVICES = ("broker-ot", "broker-it", "postgres", "platform", "devices", "gateway")


def offline_env() -> dict[str, str]:
    """The image variables .ci/docker.sh wrote (``export NAME=value`` lines), if any."""
    if not OFFLINE_ENV.exists():
        return {}
    out: dict[str, str] = {}
    for line in OFFLINE_ENV.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            k, v = words[1].split("=", 1)
            out[k] = v
    return out


def engine_problem() -> str | None:
    """None when `docker compose` can reach an engine; else why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[:200]}); run .ci/docker.sh as root"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    if version.returncode != 0:
        return "no Compose v2 plugin (docker compose); run .ci/docker.sh"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    """One compose project of docker-compose.yml, driven with the docker CLI."""

    project: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300.0, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        cmd = ["docker", "compose", "-p", self.project, "-f", str(ROOT / "docker-compose.yml"),
               *args]  # fmt: skip
        r = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=input)  # fmt: skip
        if check and r.returncode != 0:
            pytest.fail(f"{shlex.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n"
                        f"{r.stderr[-3000:]}\n{self.logs()}")  # fmt: skip
        return r

    def ps(self) -> dict[str, dict[str, Any]]:
        """Every container of the project (stopped ones too), by service."""
        r = self.compose("ps", "-a", "--format", "json", check=False, timeout=60)
        text = r.stdout.strip()
        if not text:
            return {}
        rows = (
            json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
        )
        return {row["Service"]: row for row in rows}

    def logs(self, tail: int = 40) -> str:
        r = subprocess.run(
            ["docker", "compose", "-p", self.project, "-f", str(ROOT / "docker-compose.yml"),
             "logs", "--no-color", "--tail", str(tail)],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return f"--- compose logs (last {tail} lines per service)\n{r.stdout[-12000:]}"

    def wait(self, what: str, ok: Callable[[dict[str, dict[str, Any]]], bool],
             timeout: float) -> float:  # fmt: skip
        """Poll ``ps`` until ``ok``; the seconds it took."""
        t0 = time.monotonic()
        states: dict[str, dict[str, Any]] = {}
        while time.monotonic() - t0 < timeout:
            states = self.ps()
            if ok(states):
                return time.monotonic() - t0
            time.sleep(1.0)
        brief = {s: (c.get("State"), c.get("Health"), c.get("ExitCode")) for s, c in states.items()}
        pytest.fail(f"{what}: not within {timeout:g} s; {brief}\n{self.logs()}")

    def python(
        self, service: str, code: str, *, running: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``python -c code`` where ``service`` sits on the networks: in its container
        (``exec``) or, for a service that may have exited, a fresh one (``run --no-deps``)."""
        if running:
            return self.compose(
                "exec", "-T", service, "python", "-c", code, check=False, timeout=60
            )
        return self.compose("run", "--rm", "--no-deps", "-T", "--entrypoint", "python", service,
                            "-c", code, check=False, timeout=120)  # fmt: skip

    def ip(self, service: str) -> dict[str, str]:
        """The service's address on each of its networks."""
        cid = self.compose("ps", "-a", "-q", service).stdout.strip()
        r = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, timeout=30,
                           env=self.env)  # fmt: skip
        nets: Mapping[str, Any] = json.loads(r.stdout)[0]["NetworkSettings"]["Networks"]
        return {name.removeprefix(f"{self.project}_"): n["IPAddress"] for name, n in nets.items()}

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of the project still there."""
        label = f"label=com.docker.compose.project={self.project}"
        out: dict[str, list[str]] = {}
        for kind, cmd in (("containers", ["docker", "ps", "-a", "-q", "--filter", label]),
                          ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
                          ("networks", ["docker", "network", "ls", "-q", "--filter", label])):  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=self.env)
            out[kind] = r.stdout.split()
        return out
