"""The run a live factory's devices belong to, announced for the gateways.

Every gateway collecting one line must write the same run id, or the store would hold the
line once per gateway (redundant gateways: ``docker compose up --scale gateway=2``). The
devices already name their run: a token minted when the run starts from t = 0 and kept in
the resume file, so a restarted devices process goes on with it (:mod:`.resume`). The
Sparkplug edge node keeps the run id made from it retained on
``iiotbed/run/<group>/<edge node>`` (QoS 1, published again on every connect, before the
births) and clears it once the run is complete. ``iiotbed gateway --run-id @devices`` reads
it at its start: every replica, and a replica restarted mid-run, gets the same run id; the
next run of the devices (a new token) is a new run id.
"""

from __future__ import annotations

import re

import orjson

__all__ = ["RUN_FROM_DEVICES", "announcement", "parse_announcement", "run_id_of", "run_topic"]

#: ``--run-id`` value: the run id the devices announce
RUN_FROM_DEVICES = "@devices"


def run_topic(group: str, edge_node: str) -> str:
    """The retained topic of the run of the edge node ``group/edge_node``."""
    return f"iiotbed/run/{group}/{edge_node}"


def run_id_of(scenario: str, replication: int, token: str) -> str:
    """The run id of a run: ``<slug of the scenario>-r<replication>-<12 hex of its token>``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", scenario).strip("-").lower()[:40] or "run"
    return f"{slug}-r{replication}-{token[:12]}"


def announcement(scenario: str, replication: int, token: str) -> bytes:
    """The retained payload: JSON with the run id, scenario and replication."""
    return orjson.dumps({"run_id": run_id_of(scenario, replication, token),
                         "scenario": scenario, "replication": replication})  # fmt: skip


def parse_announcement(data: bytes) -> str:
    """The run id of a payload; ValueError (saying why) when it is none."""
    try:
        run_id = orjson.loads(data)["run_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a run announcement: {data[:200]!r} ({exc})") from None
    if not isinstance(run_id, str) or not 0 < len(run_id) <= 200:
        raise ValueError(f"run id {run_id!r} is not a string of 1 to 200 characters")
    return run_id
