"""Shared pieces of the fault cases: the testbed as separate processes, an own broker, waits.

Each case starts ``iiotbed devices``, ``iiotbed gateway`` and ``iiotbed platform`` as child
processes (:class:`Proc`, output in a log file under the test's tmp dir) against an own
Mosquitto on a free port (:class:`Mosquitto`: never the shared one on 1883, so a case may
kill or restart it), injects its fault, and at the end compares the platform's KPIs
(``/api/kpis``) with the answer key replayed from the devices' event log: counters exact.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from iiotbed.testbed.agreement import COUNTERS

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
#: the CLI in this interpreter (the venv's ``iiotbed`` script may not be on PATH)
CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port the OS reports free on 127.0.0.1 (taken soon after: a small race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    cond: Callable[[], T | None], timeout: float = 30.0, what: str = "", interval: float = 0.1
) -> T:
    """Poll ``cond`` until it returns something truthy (returned); fail after ``timeout`` s.

    An exception from ``cond`` counts as "not yet" (a process still starting); the last one
    is shown if the wait fails.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = cond()
            if got:
                return got
        except Exception as exc:  # not up yet: try again
            last = exc
        if time.monotonic() > deadline:
            hint = f" (last error: {last!r})" if last is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or cond}{hint}")
        time.sleep(interval)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- processes


class Proc:
    """One child process with its output (stdout and stderr) in ``log``."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name, self.argv, self.log = name, list(argv), log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Proc:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.log.parent
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_output(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of ``pattern`` in the output of the current start; fails if the
        process ends first."""

        def found() -> re.Match[str] | None:
            text = self.output().rsplit("===== start #", 1)[-1]
            m = re.search(pattern, text)
            if m is None and not self.alive:
                pytest.fail(f"{self.name} ended before printing {pattern!r}:\n{self.tail()}")
            return m

        return wait_for(found, timeout, f"{self.name} to print {pattern!r}")

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself; its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not end within {timeout:g} s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ctrl-C (SIGINT), as a user stops it; SIGKILL if it hangs. Its exit code."""
        p = self.proc
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(signal.SIGINT)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
            pytest.fail(f"{self.name} ignored Ctrl-C for {timeout:g} s:\n{self.tail()}")

    def kill(self) -> None:
        """``kill -9``: no clean-up, no DISCONNECT (the broker publishes the Will)."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


# --------------------------------------------------------------------------- broker


class Mosquitto:
    """An own Mosquitto on a free port (config and log in ``workdir``) that a case may
    stop, ``kill -9`` and start again on the same port.

    ``persistence`` keeps sessions and queued QoS 1 messages across restarts (in
    ``workdir``, saved on a clean stop); ``max_queued`` is mosquitto's
    ``max_queued_messages`` per offline persistent client (its default: 1000).
    """

    def __init__(
        self, workdir: Path, *, persistence: bool = False, max_queued: int | None = None
    ) -> None:
        self.exe = shutil.which("mosquitto") or shutil.which(
            "mosquitto", path="/usr/sbin:/usr/local/sbin"
        )
        if self.exe is None:
            pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        if max_queued is not None:
            lines.append(f"max_queued_messages {max_queued}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        assert self.exe is not None
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: _listening(self.port) or self.proc is None or self.proc.poll() is not None,
                 10, f"mosquitto to listen on {self.port}")  # fmt: skip
        if self.proc.poll() is not None:
            pytest.fail(f"mosquitto exited at start:\n{self.log()}")
        return self

    def stop(self) -> None:
        """A clean stop (SIGTERM: persistence is saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """``kill -9``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        f = self.workdir / "mosquitto.log"
        return f.read_text(errors="replace") if f.exists() else ""


# --------------------------------------------------------------------------- the testbed


class Testbed:
    """``iiotbed devices``, ``gateway`` and ``platform`` for one scenario, as processes.

    Every process logs to ``<workdir>/<name>.log``; the devices write their event log to
    ``events`` (the answer key's source); the gateway buffers in ``buffer``; the platform
    stores in ``store`` (default a SQLite file in ``workdir``) and serves on a free port.
    The devices' Sparkplug edge node takes the gateway's host as its Primary Host, as
    ``iiotbed run`` does (``primary_host``; None: none): its births wait for the host's STATE
    online, and what it publishes while the host is away is stored and forwarded. With a
    ``uns_broker`` the gateway publishes the UNS there and the platform ingests from it (the
    two zones of compose: ``broker`` is then the devices' own).
    Nothing starts until :meth:`start_platform` / :meth:`start_gateway` /
    :meth:`start_devices`; :meth:`close` stops whatever still runs.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(
        self,
        workdir: Path,
        broker: Mosquitto,
        scenario: Path = SCENARIOS / "single-machine.yaml",
        *,
        duration: float,
        speed: float,
        store: str | None = None,
        opcua_port: int | None = None,
        run_id: str | None = None,
        primary_host: str | None = "iiotbed-gateway",
        uns_broker: Mosquitto | None = None,
    ) -> None:
        self.uns_broker = uns_broker
        self.workdir, self.broker, self.scenario = workdir, broker, scenario
        self.primary_host = primary_host
        self.duration, self.speed = duration, speed
        self.store = store or f"sqlite:///{workdir / 'store.db'}"
        self.opcua_port = opcua_port or free_port()
        self.events = workdir / "events.jsonl"
        self.buffer = workdir / "gateway.db"
        self.given_run_id = run_id  # passed as --run-id; else the gateway's (read at start)
        self.run_id = run_id
        self.api_port = free_port()
        self.procs: dict[str, Proc] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _proc(self, name: str, args: Sequence[str]) -> Proc:
        p = self.procs.get(name)
        if p is None:
            p = self.procs[name] = Proc(name, [*CLI, *args], self.workdir / f"{name}.log")
        return p

    # the three services -------------------------------------------------------------

    def platform_args(self) -> list[str]:
        uns = self.uns_broker or self.broker
        return ["platform", "--broker", uns.url, "--store", self.store,
                "--port", str(self.api_port), "--scenario", str(self.scenario)]  # fmt: skip

    def gateway_args(self) -> list[str]:
        args = ["gateway", "--scenario", str(self.scenario), "--broker", self.broker.url,
                "--opcua-port", str(self.opcua_port), "--buffer", str(self.buffer)]  # fmt: skip
        if self.uns_broker is not None:
            args += ["--uns-broker", self.uns_broker.url]
        if self.given_run_id is not None:
            args += ["--run-id", self.given_run_id]
        return args

    def devices_args(self) -> list[str]:
        args = ["devices", str(self.scenario), "--speed", f"{self.speed:g}",
                "--duration", f"{self.duration:g}s", "--broker", self.broker.url,
                "--opcua-port", str(self.opcua_port), "--events", str(self.events)]  # fmt: skip
        if self.given_run_id is not None:
            args += ["--run-id", self.given_run_id]
        if self.primary_host is not None:
            args += ["--primary-host", self.primary_host]
        return args

    def start_platform(self, timeout: float = 60.0) -> Proc:
        """Start (or restart) the platform; returns once ``/api/health`` says it is subscribed."""
        p = self._proc("platform", self.platform_args()).start()
        p.wait_output(r"dashboard and API at", timeout)
        wait_for(lambda: self.health()["ingest"]["connected"], timeout, "the platform's ingest")
        return p

    def start_gateway(self, timeout: float = 60.0) -> Proc:
        """Start (or restart) the gateway; returns once it printed its run id (:attr:`run_id`)."""
        p = self._proc("gateway", self.gateway_args()).start()
        m = p.wait_output(r"\(run (\S+)\)", timeout)
        self.run_id = m.group(1)
        return p

    def start_devices(self, timeout: float = 60.0) -> Proc:
        """Start the live factory; returns once its endpoints are up."""
        p = self._proc("devices", self.devices_args()).start()
        p.wait_output(r"live at", timeout)
        return p

    def start_all(self) -> None:
        """Platform, then devices, then gateway (it collects from the devices' endpoints)."""
        self.start_platform()
        self.start_devices()
        self.start_gateway()

    def close(self, timeout: float = 20.0) -> None:
        """Stop every process (each its ``timeout`` to obey Ctrl-C), even when one fails to
        stop; then raise the first failure, naming every process that failed."""
        failed: list[tuple[str, BaseException]] = []
        for name, p in self.procs.items():
            if p.alive:
                try:
                    p.stop(timeout)
                except BaseException as exc:  # pytest.fail raises a BaseException
                    failed.append((name, exc))
        if not failed:
            return
        names = ", ".join(n for n, _ in failed)
        first = failed[0][1]
        if isinstance(first, pytest.fail.Exception):
            pytest.fail(f"{first.msg}\n(processes that did not stop cleanly: {names})")
        first.add_note(f"processes that did not stop cleanly: {names}")
        raise first

    def logs(self) -> str:
        """Every process's log tail, for a failure message."""
        return "\n".join(f"--- {n}.log\n{p.tail()}" for n, p in self.procs.items())

    # the platform's API -------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.api}{path}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def health(self) -> dict[str, Any]:
        h: dict[str, Any] = self.get("/api/health")
        return h

    def ingest(self) -> dict[str, Any]:
        """The ingest's counters (``/api/health``)."""
        m: dict[str, Any] = self.health()["ingest"]
        return m

    def kpis(self, start: float, end: float) -> dict[str, float]:
        """Line KPIs from the store over ``[start, end]`` plus station totals of processed and
        failures (the testbed's ``line_view``); NaN where the API says null."""
        assert self.run_id is not None
        line = self.get("/api/kpis", run_id=self.run_id, start=start, end=end, by="line")["line"]
        st = self.get("/api/kpis", run_id=self.run_id, start=start, end=end, by="station")
        out = {k: math.nan if v is None else float(v) for k, v in line.items()}
        for k in ("processed", "failures"):
            out[k] = math.fsum(float(s.get(k) or 0.0) for s in st["stations"].values())
        return out

    def stored_samples(self) -> int:
        assert self.run_id is not None
        return int(self.get(f"/api/runs/{self.run_id}")["samples"])

    def stored_records(self) -> int:
        """Samples and events the store holds for the run (one row per id)."""
        assert self.run_id is not None
        run = self.get(f"/api/runs/{self.run_id}")
        return int(run["samples"]) + int(run["events"])

    # the answer key --------------------------------------------------------------------

    def answer_key(self, start: float, end: float) -> dict[str, float]:
        """The simulator's line view over ``[start, end]``, replayed from the event log."""
        from iiotbed.platform.layout import Layout
        from iiotbed.scenario import load_scenario
        from iiotbed.testbed.agreement import line_view
        from iiotbed.testbed.report import replay_answer_key

        layout = Layout.from_scenario(load_scenario(self.scenario))
        return line_view(replay_answer_key(self.events, layout, start, end))

    def wait_agreement(self, start: float, end: float, timeout: float = 60.0) -> dict[str, float]:
        """Poll the platform until its counters over ``[start, end]`` equal the answer key's
        (delivery may still be draining); fails with the differences and the logs."""
        key = self.answer_key(start, end)
        last: dict[str, tuple[float, float]] = {}

        def agreed() -> dict[str, float] | None:
            nonlocal last
            got = self.kpis(start, end)
            last = counter_differences(got, key)
            return got if not last else None

        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                got = agreed()
                if got is not None:
                    return got
            if time.monotonic() > deadline:
                pytest.fail(
                    f"counters never agreed with the answer key over [{start:g}, {end:g}] "
                    f"(telemetry, answer key): {last}\ningest: {self.ingest()}\n{self.logs()}"
                )
            time.sleep(0.5)


def counter_differences(
    telemetry: Mapping[str, float], key: Mapping[str, float]
) -> dict[str, tuple[float, float]]:
    """The counters (good, scrap, processed, failures) that differ: ``{name: (got, want)}``."""
    return {
        k: (telemetry.get(k, math.nan), key[k])
        for k in COUNTERS
        if k in key and telemetry.get(k, math.nan) != key[k]
    }


@contextlib.contextmanager
def testbed(workdir: Path, broker: Mosquitto, **kwargs: Any) -> Iterator[Testbed]:
    """A :class:`Testbed` whose processes are stopped when the block ends."""
    tb = Testbed(workdir, broker, **kwargs)
    try:
        yield tb
    finally:
        tb.close()


testbed.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test, despite its name


# --------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A private PostgreSQL cluster (``initdb`` in a temp dir, a free port, trust auth) that a
    case may stop and start again; never the shared server on 5432.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` user
    (``runuser``). Skips the case when the binaries or that user are missing.
    """

    def __init__(self) -> None:
        # Debian/Ubuntu keep the server binaries off PATH, per major version
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        bins = ":".join(["/usr/local/bin", *map(str, versions)])
        self.initdb = shutil.which("initdb") or shutil.which("initdb", path=bins)
        self.pg_ctl = shutil.which("pg_ctl") or shutil.which("pg_ctl", path=bins)
        if self.initdb is None or self.pg_ctl is None:
            pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                import pwd

                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = None
            if runuser is None or owner is None:
                pytest.skip("running as root without a 'postgres' user for runuser: "
                            "PostgreSQL refuses to run as root")  # fmt: skip
            self.as_user = [runuser, "-u", "postgres", "--"]
        # not the test's tmp dir: pytest makes it 0700 for root, closed to the postgres user
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="iiotbed-pg-"))
        if self.as_user:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self._run([self.initdb, "-D", str(self.data), "-A", "trust", "-U", "test", "--no-sync",
                   "-E", "UTF8"], 60)  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://test@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: Sequence[str], timeout: float) -> None:
        out = subprocess.run([*self.as_user, *argv], capture_output=True, text=True,
                             timeout=timeout, cwd=self.root)  # fmt: skip
        if out.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def start(self) -> Postgres:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "pg.log"), "-o", opts,
                   "-w", "-t", "30", "start"], 40)  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: sessions are ended, the server goes down."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"], 40)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log(self) -> str:
        f = self.root / "pg.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], 40)
        shutil.rmtree(self.root, ignore_errors=True)
