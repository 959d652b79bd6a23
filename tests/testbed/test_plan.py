"""The run's plan: a pure function of the scenario and the options (no sockets, no files)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from iiotbed.scenario import load_scenario
from iiotbed.testbed import DEFAULT_RUNS_DIR, DEFAULT_SPEED, RunOptions, plan_run, run_id_for
from iiotbed.testbed.plan import RUN_ID_PATTERN, base_scenario

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"
TCL_5G = ROOT / "scenarios" / "tcl-huizhou-5g.yaml"


def test_run_id_is_slug_utc_time_and_suffix() -> None:
    scenario = load_scenario(SINGLE)  # "Single machine (teaching)"
    now = dt.datetime(2026, 1, 5, 8, 30, 15, tzinfo=dt.UTC)
    run_id = run_id_for(scenario, now, suffix="abc123")
    assert run_id == "single-machine-teaching-20260105T083015Z-abc123"
    m = RUN_ID_PATTERN.match(run_id)
    assert m is not None and m["stamp"] == "20260105T083015Z"
    # without a suffix: six random hex digits, so two runs in one second differ
    a, b = run_id_for(scenario, now), run_id_for(scenario, now)
    assert a != b and RUN_ID_PATTERN.match(a) and RUN_ID_PATTERN.match(b)


def test_defaults_embedded_broker_and_sqlite_under_the_run_dir() -> None:
    scenario = load_scenario(SINGLE)
    plan = plan_run(scenario, RunOptions(), has_base=False, run_id="r-20260105T083015Z-abc123")
    run_dir = DEFAULT_RUNS_DIR / "r-20260105T083015Z-abc123"
    assert plan.run_dir == run_dir
    assert plan.store_url == f"sqlite:///{run_dir / 'store.db'}"
    assert plan.events == run_dir / "events.jsonl"
    assert plan.gateway_buffer == run_dir / "gateway.db"
    assert plan.embedded_broker is True
    assert plan.baseline_run_id is None
    assert plan.host_id == "iiotbed-r-20260105T083015Z-abc123"
    # the scenario's own window: one day from the epoch, no warmup
    assert (plan.start, plan.duration) == (0.0, 86400.0)
    assert RunOptions().speed == DEFAULT_SPEED == 1500.0


def test_options_override_store_broker_window_and_runs_dir(tmp_path: Path) -> None:
    scenario = load_scenario(SINGLE).with_run(warmup=3600.0)
    opts = RunOptions(
        broker="mqtt://127.0.0.1:1883",
        store="postgresql://127.0.0.1:5432/test",
        duration=1800.0,  # shorter than the warmup: the window starts at the end
        runs_dir=tmp_path,
    )
    plan = plan_run(scenario, opts, has_base=True, run_id="x-20260105T083015Z-000000")
    assert plan.embedded_broker is False
    assert plan.store_url == "postgresql://127.0.0.1:5432/test"
    assert plan.run_dir == tmp_path / "x-20260105T083015Z-000000"
    assert (plan.start, plan.duration) == (1800.0, 1800.0)
    assert plan.baseline_run_id == "x-20260105T083015Z-000000-baseline"
    assert not plan.run_dir.exists()  # planning creates nothing


@pytest.mark.parametrize(("verdict", "expected"), [(True, True), (False, False)])
def test_base_only_with_extends_and_a_verdict(verdict: bool, expected: bool) -> None:
    upgrade = load_scenario(TCL_5G).with_run(seed=11, warmup=600.0)
    base = base_scenario(upgrade, RunOptions(verdict=verdict))
    assert (base is not None) is expected
    if base is not None:
        # the base runs on the upgrade's seed and warmup: replication i shares its streams
        assert base.name == "TCL Huizhou LCM line - baseline"
        assert (base.run.seed, base.run.warmup) == (11, 600.0)
    assert base_scenario(load_scenario(SINGLE), RunOptions()) is None  # no `extends:`
