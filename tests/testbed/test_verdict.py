"""The verdict: paired replications -> a value. Worked examples, checked by hand.

Three pairs give a paired Student-t interval ``mean ± t(0.975, 2) · sd / sqrt(3)`` with
``t(0.975, 2) = 4.3027`` (two degrees of freedom have a closed form,
``t_p = (2p - 1) / sqrt(2p(1 - p))``): ``met`` when the whole interval clears the goal,
``not met`` when the whole interval is below it, ``inconclusive`` otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest

from iiotbed.scenario import load_scenario
from iiotbed.testbed import ReplicationResult, RunOptions, RunVerdict, paired_verdict
from iiotbed.testbed.verdict import batch_verdict, verdict_basis

ROOT = Path(__file__).resolve().parents[2]
SINGLE = ROOT / "scenarios" / "single-machine.yaml"
T_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t, 97.5 % quantile, 2 degrees of freedom
LP = "labour_productivity"


def _results(values: list[float], metric: str = LP) -> list[ReplicationResult]:
    return [
        ReplicationResult("s", i, 7, {metric: v}, {}, records=0, wall_s=0.0)
        for i, v in enumerate(values)
    ]


def _half(sd: float) -> float:
    return T_2 * sd / math.sqrt(3)


@pytest.mark.parametrize(
    ("upgrade", "mean", "sd", "verdict"),
    [
        # ratios +30, +31, +29 %: mean 0.30, sd 0.01, CI 0.275 .. 0.325, all above +20 %
        ([130.0, 131.0, 129.0], 0.30, 0.01, "met"),
        # ratios +10, +11, +9 %: CI 0.075 .. 0.125, all below +20 %
        ([110.0, 111.0, 109.0], 0.10, 0.01, "not met"),
        # ratios +10, +30, +50 %: mean 0.30, sd 0.20, CI -0.197 .. 0.797, straddles +20 %
        ([110.0, 130.0, 150.0], 0.30, 0.20, "inconclusive"),
    ],
)
def test_worked_examples(upgrade: list[float], mean: float, sd: float, verdict: str) -> None:
    base = _results([100.0, 100.0, 100.0])
    v = paired_verdict(base, _results(upgrade), metric=LP, goal=0.20, basis="by hand")
    assert v.verdict == verdict
    assert v.improvement is not None
    imp = v.improvement
    assert imp["n"] == 3
    assert imp["mean"] == pytest.approx(mean, abs=1e-12)
    lo, hi = imp["ci95"]
    assert lo == pytest.approx(mean - _half(sd), abs=1e-12)
    assert hi == pytest.approx(mean + _half(sd), abs=1e-12)
    assert imp["per_replication"] == pytest.approx([u / 100 - 1 for u in upgrade])
    assert (imp["baseline_mean"], imp["upgrade_mean"]) == (100.0, pytest.approx(sum(upgrade) / 3))
    assert v.basis == "by hand" and v.warnings == ()


def test_the_interval_bounds_decide_and_met_includes_the_lower_bound() -> None:
    base, upgrade = _results([100.0, 100.0, 100.0]), _results([130.0, 131.0, 129.0])
    imp = paired_verdict(base, upgrade, metric=LP, goal=0.2, basis="").improvement
    assert imp is not None
    lo, hi = imp["ci95"]
    at = {g: paired_verdict(base, upgrade, metric=LP, goal=g, basis="").verdict
          for g in (lo, math.nextafter(lo, 1.0), hi, math.nextafter(hi, 1.0))}  # fmt: skip
    assert list(at.values()) == ["met", "inconclusive", "inconclusive", "not met"]


def test_lower_is_better_counts_a_decrease_as_the_improvement() -> None:
    # energy per good unit 1.0 -> 0.70, 0.69, 0.71: improvements 0.30, 0.31, 0.29
    base = _results([1.0, 1.0, 1.0], "energy_per_good_unit")
    upgrade = _results([0.70, 0.69, 0.71], "energy_per_good_unit")
    v = paired_verdict(base, upgrade, metric="energy_per_good_unit", goal=0.2, basis="")
    assert v.verdict == "met"
    assert v.improvement is not None and v.improvement["mean"] == pytest.approx(0.30)


def test_undefined_pairs_make_it_inconclusive() -> None:
    v = paired_verdict(_results([0.0, 0.0]), _results([1.0, 2.0]), metric=LP, goal=0.2, basis="")
    assert v.verdict == "inconclusive"
    assert v.improvement is not None
    assert v.improvement["mean"] is None and v.improvement["ci95"] == [None, None]
    assert v.improvement["n"] == 0


def test_live_run_improvement_against_its_own_replication_and_nothing_mutated() -> None:
    base, upgrade = _results([100.0, 80.0, 120.0]), _results([130.0, 100.0, 150.0])
    before = [dataclasses.replace(r, line=dict(r.line)) for r in base + upgrade]
    v = paired_verdict(base, upgrade, metric=LP, goal=0.2, basis="", replication=1,
                       live={LP: 96.0})  # fmt: skip
    assert v.live_improvement == pytest.approx(96.0 / 80.0 - 1)  # +20 % over pair 1's base
    assert v.base_line == {LP: 80.0}
    assert base + upgrade == before  # the inputs are as they were
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.verdict = "met"  # type: ignore[misc]
    # the live run's replication beyond the batch: no pair to set it against
    beyond = paired_verdict(base, upgrade, metric=LP, goal=0.2, basis="", replication=3,
                            live={LP: 96.0})  # fmt: skip
    assert beyond.live_improvement is None and beyond.base_line is None
    assert beyond.verdict == v.verdict


def test_comparison_is_what_the_store_keeps() -> None:
    v = RunVerdict(improvement={"mean": 0.3}, verdict="met", basis="b")
    assert v.comparison(LP, 0.2) == {
        "metric": LP, "goal": 0.2, "improvement": {"mean": 0.3}, "verdict": "met", "basis": "b",
    }  # fmt: skip
    assert RunVerdict().comparison(LP, 0.2)["verdict"] is None


def test_no_verdict_before_the_warmup_ends() -> None:
    scenario = load_scenario(SINGLE).with_run(warmup=3600.0)
    v = asyncio.run(batch_verdict(scenario, scenario, RunOptions(), 1800.0, {}))
    assert v.verdict is None and v.improvement is None and v.base_line is None
    assert v.warnings == ("the run ended before its warmup: no verdict",)


def test_batch_of_a_scenario_against_itself_improves_by_exactly_zero() -> None:
    # common random numbers: the same scenario on the same seed gives identical pairs
    scenario = load_scenario(SINGLE)
    lines: list[str] = []
    opts = RunOptions(replications=2, workers=1, goal=0.0)
    v = asyncio.run(batch_verdict(scenario, scenario, opts, 86400.0, {LP: math.nan}, lines.append))
    assert v.improvement is not None
    assert v.improvement["per_replication"] == [0.0, 0.0]
    assert v.improvement["ci95"] == [0.0, 0.0] and v.verdict == "met"  # 0 >= goal 0
    assert v.live_improvement is None  # the live value is undefined
    assert v.base_line is not None and v.base_line[LP] > 0
    assert v.basis == verdict_basis(scenario, scenario, 2, 86400.0, LP)
    assert "2 paired batch replications" in v.basis and "seed 7" in v.basis
    assert lines[0] == "verdict: 2 paired batch replications of 24 h, base vs upgrade"
    assert len(lines) == 5 and lines[-1].startswith("verdict: replication 4/4 done")
