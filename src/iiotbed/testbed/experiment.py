"""Replications of a scenario in parallel processes or on a Dask cluster, and their KPIs.

Replication ``i`` of any scenario draws from the streams keyed by ``(seed, i, source
name)``, so replication ``i`` of a baseline and of its upgrade share their random numbers
wherever they share a source (common random numbers). A replication depends on nothing
but its scenario and index, so where it runs (this machine's process pool or a worker of
a Dask cluster, ``executor="dask://host:8786"``) never changes its numbers.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from iiotbed import __version__
from iiotbed.scenario import Scenario

__all__ = [
    "ExecutorError",
    "ReplicationResult",
    "check_executor",
    "default_workers",
    "run_replication",
    "run_replications",
]

#: seconds to reach the scheduler, and to wait for its first worker (``?timeout=`` sets it)
CONNECT_TIMEOUT_S = 10.0


class ExecutorError(Exception):
    """The executor URL is malformed, its cluster unreachable or unfit (a user's setting)."""


@dataclass(frozen=True, slots=True)
class ReplicationResult:
    """KPIs of one replication over the window ``[warmup, duration]``."""

    scenario: str
    replication: int
    seed: int
    line: dict[str, float]
    stations: dict[str, dict[str, float]]
    records: int
    wall_s: float


def run_replication(
    scenario: Scenario, replication: int, events: Path | None = None
) -> ReplicationResult:
    """Simulate one replication and compute its KPIs; optionally write its event log."""
    # imported here: worker processes and `iiotbed --help` should not pay for what they skip
    from iiotbed.devices.sim import Factory, record_names, sample_names
    from iiotbed.eventlog import write_event_log_columns
    from iiotbed.platform.kpi import compute_kpis_columns
    from iiotbed.platform.layout import Layout

    started = time.perf_counter()
    factory = Factory(scenario, replication)
    factory.run()
    columns = factory.columns()
    # the event log and the KPIs read the run's rows as columns: no record objects built
    if events is not None:
        write_event_log_columns(*columns, record_names, events)
    report = compute_kpis_columns(
        *columns,
        sample_names,
        Layout.from_scenario(scenario),
        start=scenario.run.warmup,
        end=scenario.run.duration,
    )
    return ReplicationResult(
        scenario=scenario.name,
        replication=replication,
        seed=scenario.run.seed,
        line=dict(report.line),
        stations={k: dict(v) for k, v in report.stations.items()},
        records=factory.record_count,
        wall_s=time.perf_counter() - started,
    )


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_executor(executor: str | None) -> str | None:
    """The Dask scheduler address (``tcp://host:port``) of ``executor``, None for the
    local process pool (``None`` or ``"local"``); ExecutorError when it is neither.

    ``dask://host:port?timeout=S`` waits S seconds (default 10) for the scheduler and
    for its first worker.
    """
    if executor is None or executor == "local":
        return None
    parts = urlsplit(executor)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "dask" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ExecutorError(
            f"{executor!r} is not an executor: expected 'local' or dask://HOST:PORT "
            f"(a Dask scheduler, e.g. dask://127.0.0.1:8786)"
        )
    _timeout(executor)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port}"


def _timeout(executor: str) -> float:
    query = dict(parse_qsl(urlsplit(executor).query, keep_blank_values=True))
    unknown = sorted(set(query) - {"timeout"})
    if unknown:
        raise ExecutorError(f"{executor}: unknown parameter {unknown[0]!r} (known: timeout)")
    if "timeout" not in query:
        return CONNECT_TIMEOUT_S
    try:
        value = float(query["timeout"])
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ExecutorError(
            f"{executor}: timeout must be a positive number of seconds, got {query['timeout']!r}"
        )
    return value


def run_replications(
    jobs: Sequence[tuple[Scenario, int]],
    *,
    workers: int | None = None,
    on_done: Callable[[ReplicationResult], Any] | None = None,
    executor: str | None = None,
) -> list[ReplicationResult]:
    """Run ``(scenario, replication)`` jobs, in parallel processes when there are several,
    or as tasks of the Dask cluster whose scheduler ``executor`` names (``dask://host:port``).

    Results come back in the order of ``jobs`` whatever order they finish in, so the
    output does not depend on scheduling; ``on_done`` sees each as it finishes.
    """
    address = check_executor(executor)
    if address is not None:
        assert executor is not None
        return _run_on_dask(jobs, executor, address, on_done)
    workers = min(workers or default_workers(), len(jobs)) or 1
    results: list[ReplicationResult | None] = [None] * len(jobs)
    if workers == 1:
        for i, (scenario, rep) in enumerate(jobs):
            results[i] = run_replication(scenario, rep)
            if on_done is not None:
                on_done(results[i])  # type: ignore[arg-type]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(run_replication, scenario, rep): i
                for i, (scenario, rep) in enumerate(jobs)
            }
            for fut in as_completed(futures):
                res = fut.result()
                results[futures[fut]] = res
                if on_done is not None:
                    on_done(res)
    return [r for r in results if r is not None]


@contextmanager
def _dask_client(executor: str, address: str) -> Iterator[Any]:
    """A client of the scheduler at ``address``, once its workers are known to run this
    version of iiotbed; ExecutorError (naming ``executor``) otherwise."""
    try:
        from distributed import Client
    except ImportError:
        raise ExecutorError(
            f"--executor {executor} needs Dask distributed: pip install 'iiotbed[dask]'"
        ) from None
    parts = urlsplit(executor)
    assert parts.hostname is not None and parts.port is not None
    timeout = _timeout(executor)
    # a plain connect first: a refused or unroutable address fails now, not after retries
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Dask scheduler at {executor}: {exc.strerror or exc}; "
            "check that it runs (`dask scheduler`) and the host and port"
        ) from None
    try:
        client = Client(  # type: ignore[no-untyped-call]
            address, timeout=timeout, set_as_default=False
        )
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(f"cannot connect to the Dask scheduler at {executor}: {exc}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ExecutorError(
                f"the Dask scheduler at {executor} has no workers "
                f"(none joined within {timeout:g} s); start some with "
                f"`dask worker {address} --nthreads 1`"
            ) from None

        def iiotbed_version() -> str | None:
            # defined here, so it travels by value: it runs where iiotbed may be missing
            try:
                import iiotbed
            except ImportError:
                return None
            return str(iiotbed.__version__)

        try:
            versions: dict[str, str | None] = client.run(iiotbed_version)
        except Exception as exc:  # a worker that cannot run it at all
            raise ExecutorError(
                f"cannot ask the workers of {executor} for their iiotbed version: {exc}"
            ) from None
        wrong = {w: v for w, v in versions.items() if v != __version__}
        if wrong:
            listed = ", ".join(
                f"{w} has {'no iiotbed' if v is None else 'iiotbed ' + v}"
                for w, v in sorted(wrong.items())
            )
            raise ExecutorError(
                f"the workers of {executor} must run iiotbed {__version__}, like this "
                f"client: {listed}"
            )
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _run_on_dask(
    jobs: Sequence[tuple[Scenario, int]],
    executor: str,
    address: str,
    on_done: Callable[[ReplicationResult], Any] | None,
) -> list[ReplicationResult]:
    """Each job a task on the cluster; results stream back as tasks finish."""
    from distributed import as_completed as dask_completed

    results: list[ReplicationResult | None] = [None] * len(jobs)
    with _dask_client(executor, address) as client:
        # each scenario goes to the cluster once, not once per replication
        shared = {id(s): client.scatter(s, broadcast=False) for s, _ in jobs}
        futures = [
            client.submit(run_replication, shared[id(scenario)], rep, pure=False)
            for scenario, rep in jobs
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in dask_completed(futures, loop=client.loop):  # type: ignore[no-untyped-call]
                res: ReplicationResult = fut.result()
                results[index[fut.key]] = res
                if on_done is not None:
                    on_done(res)
        finally:
            client.cancel(futures)
    return [r for r in results if r is not None]
