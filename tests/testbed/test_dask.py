"""``--executor dask://HOST:PORT``: replications as tasks of a real Dask cluster (a
scheduler and two workers, each its own process on 127.0.0.1) give the same numbers, bit
for bit, as the local process pool; a wrong, unreachable, empty or mismatched cluster is a
clear message and exit status 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app

pytest.importorskip("distributed", reason="Dask distributed is not installed (iiotbed[dask])")

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "scenarios" / "tcl-huizhou-baseline.yaml"
UPGRADE = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"
CLI = [sys.executable, "-c", "from iiotbed.cli import main; main()"]
DASK_ARGS = ["--no-dashboard"]
WORKER_ARGS = ["--nthreads", "1", "--no-nanny", "--no-dashboard"]
STARTUP_S = 60.0


def _wait_for(what: str, ok: Callable[[], bool], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not ok():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {STARTUP_S:g} s")
        time.sleep(0.05)


class Cluster:
    """A Dask scheduler and its workers, each a separate process, on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.file = tmp / "scheduler.json"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._spawn(
            "scheduler",
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(self.file), *DASK_ARGS],
        )  # fmt: skip
        _wait_for("scheduler file", lambda: self._address() is not None, self.procs)

    def _address(self) -> str | None:
        try:
            return str(json.loads(self.file.read_text(encoding="utf-8"))["address"])
        except (OSError, ValueError, KeyError):
            return None

    @property
    def url(self) -> str:
        address = self._address()
        assert address is not None
        return "dask://" + address.removeprefix("tcp://")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )  # fmt: skip
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def add_workers(self, *extras: list[str]) -> list[subprocess.Popen[bytes]]:
        """Start a worker per list of extra arguments, and wait until each has registered
        with the scheduler."""
        start = len(self.procs)
        args = ["distributed.cli.dask_worker", "--scheduler-file", str(self.file)]
        new = [self._spawn("worker", [*args, *WORKER_ARGS, *extra]) for extra in extras]
        logs = self.logs[start:]
        _wait_for(
            f"{len(extras)} workers registered",
            lambda: all("Registered to" in p.read_text(errors="replace") for p in logs),
            self.procs,
        )
        return new

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        # nothing to keep: no graceful hand-over (a worker without nanny has no children)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)

    def close(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.add_workers([], [])
        yield c
    finally:
        c.close()


def iiotbed(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("IIOTBED_EXECUTOR", None)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flat(text: str) -> str:
    """An error panel's text on one line (rich wraps and frames it)."""
    return " ".join(text.replace("│", " ").split())


def test_compare_on_a_dask_cluster_equals_the_local_pool_bit_for_bit(cluster: Cluster) -> None:
    args = ["compare", str(BASELINE), str(UPGRADE), "-n", "2", "-d", "10h", "--json"]
    local = iiotbed(*args, "--workers", "2")
    dask = iiotbed(*args, "--executor", cluster.url)
    assert local.returncode == 0, local.stderr
    assert dask.returncode == 0, dask.stderr
    assert dask.stdout == local.stdout  # the same JSON text: every float's repr equal
    out = json.loads(dask.stdout)
    # a real comparison: production in every replication, and pairs that differ
    assert out["kpis"]["baseline"]["good_count"]["mean"] > 0
    assert len(set(out["improvement"]["per_replication"])) == 2


def test_simulate_on_a_dask_cluster_equals_the_local_pool(cluster: Cluster) -> None:
    args = ["simulate", str(UPGRADE), "-n", "2", "-d", "3h", "--seed", "7", "--json"]
    local = iiotbed(*args, "--workers", "1")
    dask = iiotbed(*args, "--executor", cluster.url)
    assert local.returncode == 0, local.stderr
    assert dask.returncode == 0, dask.stderr
    assert dask.stdout == local.stdout


def test_an_unreachable_scheduler_exits_2_naming_the_url() -> None:
    url = f"dask://127.0.0.1:{free_port()}"
    res = iiotbed("simulate", str(UPGRADE), "-n", "2", "-d", "1h", "--executor", url)
    assert res.returncode == 2
    msg = flat(res.stderr)
    assert f"cannot reach the Dask scheduler at {url}" in msg
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        ("dask:/127.0.0.1:8786", "expected 'local' or dask://HOST:PORT"),
        ("tcp://127.0.0.1:8786", "expected 'local' or dask://HOST:PORT"),
        ("dask://127.0.0.1", "expected 'local' or dask://HOST:PORT"),
        ("dask://127.0.0.1:8786?timeout=-1", "timeout must be a positive number"),
        ("dask://127.0.0.1:8786?retries=3", "unknown parameter 'retries'"),
    ],
)
def test_a_malformed_executor_exits_2_before_any_work(executor: str, expected: str) -> None:
    res = CliRunner().invoke(
        app, ["compare", str(BASELINE), str(UPGRADE), "-n", "2", "--executor", executor]
    )
    assert res.exit_code == 2, res.output
    assert expected in flat(res.output)


def test_a_cluster_without_workers_exits_2(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        url = c.url + "?timeout=1"
        res = iiotbed("simulate", str(UPGRADE), "-n", "2", "-d", "1h", "--executor", url)
        assert res.returncode == 2, res.stderr
        assert f"the Dask scheduler at {url} has no workers" in flat(res.stderr)
        assert "Traceback" not in res.stderr
    finally:
        c.close()


def test_workers_of_another_iiotbed_version_or_none_exit_2(
    cluster: Cluster, tmp_path: Path
) -> None:
    # preloads, run before a worker serves: one says another version, one cannot import it
    other = tmp_path / "other_version.py"
    other.write_text('import iiotbed\niiotbed.__version__ = "0.0.1"\n', encoding="utf-8")
    hidden = tmp_path / "no_iiotbed.py"
    hidden.write_text('import sys\nsys.modules["iiotbed"] = None\n', encoding="utf-8")
    workers = cluster.add_workers(["--preload", str(other)], ["--preload", str(hidden)])
    try:
        res = iiotbed("simulate", str(UPGRADE), "-n", "2", "-d", "1h", "--executor", cluster.url)
    finally:
        for w in workers:
            cluster.stop(w)
    assert res.returncode == 2, res.stderr
    msg = flat(res.stderr)
    assert f"the workers of {cluster.url} must run iiotbed" in msg
    assert "has iiotbed 0.0.1" in msg
    assert "has no iiotbed" in msg
    assert "Traceback" not in res.stderr
