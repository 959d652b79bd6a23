"""The testbed: one ``iiotbed run`` as plan, services, report and verdict.

``plan`` decides (pure), ``services`` starts and stops broker, platform, devices and
gateway in one ``async with``, ``report`` and ``agreement`` set telemetry beside the
answer key, ``verdict`` judges paired batch replications (``experiment``), ``record``
keeps the run in the store and ``runs`` lists and prunes the runs directory.
:func:`run_all` composes them. The testbed may import devices, gateway and platform;
nothing below imports the testbed.
"""

from iiotbed.testbed.agreement import COUNTERS, REL_TOLERANCE, Agreement, agreement, line_view
from iiotbed.testbed.experiment import (
    ReplicationResult,
    default_workers,
    run_replication,
    run_replications,
)
from iiotbed.testbed.plan import (
    DEFAULT_RUNS_DIR,
    DEFAULT_SPEED,
    RunOptions,
    RunPlan,
    base_scenario,
    plan_run,
    run_id_for,
)
from iiotbed.testbed.report import RunReport
from iiotbed.testbed.run import run_all
from iiotbed.testbed.runs import Pruned, RunDir, list_runs, prune_runs
from iiotbed.testbed.services import Services
from iiotbed.testbed.verdict import RunVerdict, paired_verdict

__all__ = [
    "COUNTERS",
    "DEFAULT_RUNS_DIR",
    "DEFAULT_SPEED",
    "REL_TOLERANCE",
    "Agreement",
    "Pruned",
    "ReplicationResult",
    "RunDir",
    "RunOptions",
    "RunPlan",
    "RunReport",
    "RunVerdict",
    "Services",
    "agreement",
    "base_scenario",
    "default_workers",
    "line_view",
    "list_runs",
    "paired_verdict",
    "plan_run",
    "prune_runs",
    "run_all",
    "run_id_for",
    "run_replication",
    "run_replications",
]
