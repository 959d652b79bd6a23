"""Helpers of the compose tests: the engine check and :class:`Stack` (docker compose CLI)."""

from __future__ import annotations

import json
import os
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


def stack_env(duration: str, speed: float) -> dict[str, str]:
    """The environment of a test stack on the 5G scenario (``duration`` from the first shift
    at ``speed``), the user's overrides of store, broker and image left out. Skips unless
    IIOTBED_COMPOSE=1; with it, fails when no engine answers."""
    if os.environ.get("IIOTBED_COMPOSE") != "1":
        pytest.skip(
            "compose tests run with IIOTBED_COMPOSE=1 (once per CI run, after "
            ".ci/docker.sh started a Docker engine and built the images)"
        )
    problem = engine_problem()
    if problem is not None:
        pytest.fail(f"IIOTBED_COMPOSE=1 but {problem}")
    env = {**os.environ, **offline_env(), "SCENARIO": "tcl-huizhou-5g.yaml",
           "DURATION": duration, "SPEED": f"{speed:g}", "PLATFORM_PORT": str(free_port())}  # fmt: skip
    for k in ("STORE_URL", "UNS_BROKER", "SCENARIO_DIR", "IIOTBED_IMAGE"):
        env.pop(k, None)
    return env


@dataclass
class Stack:
    """One compose project of docker-compose.yml, driven with the docker CLI."""

    project: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    #: compose files after docker-compose.yml (overrides of a test's own)
    overrides: tuple[Path, ...] = ()

    def _files(self) -> list[str]:
        out = ["-f", str(ROOT / "docker-compose.yml")]
        for f in self.overrides:
            out += ["-f", str(f)]
        return out

    def compose(self, *args: str, timeout: float = 300.0, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        cmd = ["docker", "compose", "-p", self.project, *self._files(), *args]
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
            ["docker", "compose", "-p", self.project, *self._files(),
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


# --------------------------------------------------------------------------- faults
# (tests/compose/test_compose_faults.py: the docker CLI, as the rest of this kit)


def docker(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0,
           check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """One ``docker`` CLI command; fails the test with its output when ``check``."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                       env=None if env is None else dict(env))  # fmt: skip
    if check and r.returncode != 0:
        pytest.fail(f"docker {shlex.join(args)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def container(stack: Stack, service: str) -> str:
    """The id of the service's (one) container."""
    cid = stack.compose("ps", "-a", "-q", service, timeout=60).stdout.strip()
    assert cid and "\n" not in cid, f"{service}: containers {cid!r}"
    return cid


def network(stack: Stack, name: str) -> str:
    """The engine's name of the compose file's network ``name`` in this project."""
    return f"{stack.project}_{name}"


def disconnect(stack: Stack, service: str, net: str) -> None:
    """Take ``service`` off the network ``net`` (docker network disconnect): a partition."""
    docker("network", "disconnect", network(stack, net), container(stack, service),
           env=stack.env)  # fmt: skip


def connect(stack: Stack, service: str, net: str) -> None:
    """Put ``service`` back on ``net`` under its service name (the alias compose gave it:
    without it the others could no longer resolve the name)."""
    docker("network", "connect", "--alias", service, network(stack, net),
           container(stack, service), env=stack.env)  # fmt: skip


def exec_out(stack: Stack, service: str, *cmd: str, timeout: float = 30.0) -> str:
    """stdout of ``cmd`` run in the service's running container ('' when it failed)."""
    r = stack.compose("exec", "-T", service, *cmd, check=False, timeout=timeout)
    return r.stdout if r.returncode == 0 else ""


def devices_t(stack: Stack) -> float:
    """The devices' resume mark (sim s; ahead of their sim time by up to a wall second's
    worth); 0 before the first mark or once the run finished (the file is removed)."""
    text = exec_out(stack, "devices", "cat", "/data/resume.json")
    return float(json.loads(text)["t"]) if text.strip() else 0.0


def gateway_metrics(stack: Stack, wait: float = 3.0) -> dict[str, Any]:
    """The gateway's retained metrics from the UNS broker (``uns/_gateway/+/metrics``,
    republished every 5 s), read in the broker's container; {} when none came in ``wait``."""
    text = exec_out(stack, "broker-it", "mosquitto_sub", "-h", "127.0.0.1", "-t",
                    "uns/_gateway/+/metrics", "-C", "1", "-W", str(max(1, round(wait))))  # fmt: skip
    if not text.strip():
        return {}
    got: dict[str, Any] = json.loads(text.strip().splitlines()[0])
    return got


def api(stack: Stack, path: str, **params: Any) -> Any:
    """GET the platform's API where compose published it (``PLATFORM_PORT`` on 127.0.0.1)."""
    import httpx

    r = httpx.get(f"http://127.0.0.1:{stack.env['PLATFORM_PORT']}{path}", params=params,
                  timeout=30)  # fmt: skip
    r.raise_for_status()
    return r.json()


def poll(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
         stack: Stack | None = None) -> Any:  # fmt: skip
    """Call ``cond`` until it returns something truthy (returned); fail after ``timeout`` s
    (with the stack's logs when given). An exception counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = cond()
            if got:
                return got
        except Exception as exc:  # not there yet
            last = exc
        if time.monotonic() > deadline:
            hint = f" (last error: {last!r})" if last is not None else ""
            pytest.fail(f"{what}: not within {timeout:g} s{hint}\n"
                        f"{stack.logs() if stack is not None else ''}")  # fmt: skip
        time.sleep(interval)


def log_lines(stack: Stack, service: str, since: float | None = None) -> list[tuple[float, str]]:
    """The service container's log lines with the engine's timestamps (epoch s), those
    after ``since`` only when given."""
    from datetime import datetime

    args = ["logs", "--timestamps"]
    if since is not None:
        args += ["--since", f"{since:.3f}"]
    r = docker(*args, container(stack, service), env=stack.env, timeout=60)
    out: list[tuple[float, str]] = []
    for line in (r.stdout + r.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        try:  # RFC 3339 with nanoseconds: keep microseconds for fromisoformat
            head, _, frac = stamp.rstrip("Z").partition(".")
            t = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()
        except ValueError:
            continue
        out.append((t, text))
    return sorted(out)
