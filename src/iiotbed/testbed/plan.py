"""What one ``iiotbed run`` will do, decided before anything starts: a pure function.

:func:`plan_run` turns a scenario and the :class:`RunOptions` into a :class:`RunPlan`:
the run id, its directory and files, the store URL, the KPI window, with
``extends:`` the baseline's run id, and with ``security="secure"`` where the secrets and the
OPC UA servers' certificates are. No sockets, no files, no clock but the one given.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from iiotbed.gateway.settings import new_run_id

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = [
    "DEFAULT_RUNS_DIR",
    "DEFAULT_SPEED",
    "RUN_ID_PATTERN",
    "RunOptions",
    "RunPlan",
    "base_scenario",
    "plan_run",
    "run_id_for",
]

#: sim seconds per wall second by default: the shipped 5G week, paced from its first
#: shift, in about 5.5 minutes (docs/answer-key.md)
DEFAULT_SPEED = 1500.0
#: where each run keeps its store, event log and gateway buffer, one directory per run id
DEFAULT_RUNS_DIR = Path(".iiotbed/runs")
#: a run id: ``<scenario-slug>-<UTC time>-<6 hex>`` (the time group is named ``stamp``)
RUN_ID_PATTERN = re.compile(r"^[a-z0-9-]+-(?P<stamp>\d{8}T\d{6}Z)-[0-9a-f]{6}$")


@dataclass
class RunOptions:
    """How ``iiotbed run`` runs. ``speed`` None = as fast as the machine allows."""

    speed: float | None = DEFAULT_SPEED
    duration: float | None = None  # sim seconds (default: the scenario's)
    replication: int = 0
    broker: str | None = None  # None: an embedded broker on a free port
    store: str | None = None  # None: sqlite under runs_dir/<run_id>/store.db
    host: str = "127.0.0.1"
    port: int = 0  # dashboard; 0 = a free port
    opcua_port: int = 4840
    sparkplug_group: str | None = None  # default <enterprise>-<site>
    fast_forward: bool = True
    verdict: bool = True
    replications: int | None = None  # of the batch comparison (default: the scenario's)
    goal: float = 0.20
    metric: str = "labour_productivity"
    workers: int | None = None
    runs_dir: Path = DEFAULT_RUNS_DIR
    ready_timeout: float = 30.0  # collectors subscribed before the simulation starts
    settle_timeout: float = 120.0  # everything forwarded is stored
    quiet_s: float = 0.5  # no new telemetry for this long (wall s) = the gateway has it all
    # "secure": TLS broker with logins and ACLs, OPC UA SignAndEncrypt with user logins, API
    # writes with the bearer token (docs/security.md, "One switch")
    security: Literal["open", "secure"] = "open"
    secrets: Path | None = None  # secure: these secrets (default: generated into the run's dir)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run, decided: ids, paths, store and the KPI window ``[start, duration]``."""

    run_id: str
    run_dir: Path
    store_url: str
    events: Path  # the live run's event log: the answer key's source
    gateway_buffer: Path
    start: float  # sim s: the scenario's warmup (capped at the duration)
    duration: float  # sim s the simulation runs to, unless stopped
    embedded_broker: bool
    baseline_run_id: str | None  # with a base scenario: its run in the store
    security: Literal["open", "secure"] = "open"
    secrets_dir: Path | None = None  # secure: the secrets (given, or <run_dir>/secrets)
    pki_dir: Path | None = None  # secure: the OPC UA servers' certificates

    @property
    def host_id(self) -> str:
        """This run's own Sparkplug host id: the edge births for this gateway only."""
        return f"iiotbed-{self.run_id}"


def run_id_for(
    scenario: Scenario, now: dt.datetime | None = None, suffix: str | None = None
) -> str:
    """A new run id: scenario slug, UTC time, a short random suffix (or ``suffix``); the
    one format of :func:`iiotbed.gateway.settings.new_run_id`."""
    return new_run_id(scenario.name, now, suffix)


def base_scenario(scenario: Scenario, options: RunOptions) -> Scenario | None:
    """The scenario's base (``extends:``) on this run's seed and warmup, when a verdict is
    asked: replication i of both then shares its random streams. Reads the base's file."""
    if not options.verdict or scenario.base_path is None:
        return None
    from iiotbed.scenario import load_scenario

    return load_scenario(scenario.base_path).with_run(
        seed=scenario.run.seed, warmup=scenario.run.warmup
    )


def plan_run(
    scenario: Scenario, options: RunOptions, *, has_base: bool, run_id: str | None = None
) -> RunPlan:
    """The plan of one run of ``scenario``; ``has_base``: a baseline is compared with."""
    run_id = run_id or run_id_for(scenario)
    run_dir = options.runs_dir / run_id
    duration = options.duration if options.duration is not None else scenario.run.duration
    secure = options.security == "secure"
    return RunPlan(
        run_id=run_id,
        run_dir=run_dir,
        store_url=options.store or f"sqlite:///{run_dir / 'store.db'}",
        events=run_dir / "events.jsonl",
        gateway_buffer=run_dir / "gateway.db",
        start=min(scenario.run.warmup, duration),
        duration=duration,
        embedded_broker=options.broker is None,
        baseline_run_id=f"{run_id}-baseline" if has_base else None,
        security=options.security,
        secrets_dir=(options.secrets or run_dir / "secrets") if secure else None,
        pki_dir=run_dir / "pki" if secure else None,
    )
