"""Checkers of the batch labs (7, 8): a scenario file the student wrote, simulated here.

No protocols: the student's scenario and the one it changes run as paired batch
replications with common random numbers (replication i of both shares its random
streams), so a difference between them comes from the change, not from luck.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iiotbed.errors import ScenarioError
from iiotbed.labs.report import CheckReport

if TYPE_CHECKING:
    from iiotbed.scenario import Scenario

__all__ = ["BATCH_CHECKS"]

#: the scenario both labs change (by ``extends:``)
UPGRADE = "tcl-huizhou-5g.yaml"
#: what the checkers simulate: short, so a check takes seconds
DAYS = 2
VERDICT_DAYS = 1
REPLICATIONS = 3
_IDENTITY = ("name", "description")


def _load(path: Path, report: CheckReport) -> Scenario | None:
    from iiotbed.scenario import load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        report.add("your scenario loads", False, "; ".join(str(i) for i in exc.issues[:3]),
                   f"fix what `iiotbed validate {path}` reports")  # fmt: skip
        return None
    report.add("your scenario loads", True, scenario.name)
    base = scenario.base_path
    ok = base is not None and base.name == UPGRADE
    report.add(f"it extends {UPGRADE}", ok, str(base) if base else "no extends:",
               f"start the file with `extends: <path to scenarios/{UPGRADE}>` and write only "
               "what you change")  # fmt: skip
    return scenario if ok else None


def _upgrade(scenario: Scenario) -> Scenario:
    from iiotbed.scenario import load_scenario

    assert scenario.base_path is not None
    return load_scenario(scenario.base_path)


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            name = v.get("name") if isinstance(v, Mapping) else None
            yield from _leaves(v, f"{prefix}[{name if name is not None else i}]")
    else:
        yield prefix, value


def differences(a: Scenario, b: Scenario) -> list[str]:
    """Settings (dotted paths) whose values differ between two scenarios, names aside."""
    da = dict(_leaves({k: v for k, v in a.model_dump(mode="json").items() if k not in _IDENTITY}))
    db = dict(_leaves({k: v for k, v in b.model_dump(mode="json").items() if k not in _IDENTITY}))
    return sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))


def _short(s: Scenario, days: int = DAYS) -> Scenario:
    return s.with_run(duration=s.run.warmup + days * 86400.0)


def _vision_link(s: Scenario) -> tuple[str, str] | None:
    for stage in s.line.stages:
        if stage.inspection is not None and stage.inspection.method == "vision" and stage.inspection.link:
            return stage.name, stage.inspection.link
    return None


# ---------------------------------------------------------------------- lab 7


def check_network(path: Path, report: CheckReport) -> None:
    from iiotbed.testbed import run_replications

    scenario = _load(path, report)
    if scenario is None:
        return
    upgrade = _upgrade(scenario)
    vision = _vision_link(upgrade)
    assert vision is not None
    stage, link = vision
    changed = differences(upgrade, scenario)
    outside = [c for c in changed if not c.startswith("network.")]
    report.add("only the network changed", not outside and bool(changed),
               ", ".join(changed[:6]) or "nothing changed",
               "copy nothing but network.links: other changes would blur the effect you measure")  # fmt: skip
    mine = [c for c in changed if c.startswith(f"network.links.{link}.")]
    report.add(f"the vision inspection's link ({link}) changed", bool(mine),
               ", ".join(mine) or f"{link} is as in {UPGRADE}",
               f"stage {stage} sends every image over the link named in its inspection.link: "
               f"{link}; change that one (loss, outages), not the AMRs' link")  # fmt: skip
    if outside or not mine:
        return
    results = run_replications([(_short(upgrade), 0), (_short(scenario), 0)])
    names = [n for st, n, _ in scenario.station_paths() if st.name == stage]
    paths = [p for st, _, p in scenario.station_paths() if st.name == stage]

    def per_unit(r: Any) -> float:
        apt = sum(r.stations[p].get("apt_h", 0.0) for p in paths)
        done = sum(r.stations[p].get("processed", 0.0) for p in paths)
        return 3600.0 * apt / done if done else float("nan")

    before, after = per_unit(results[0]), per_unit(results[1])
    report.add(f"the {stage} stations feel it", after > before,
               f"{', '.join(names)}: {before:.3f} -> {after:.3f} s of operating time per unit "
               f"over {DAYS} days; line throughput {results[0].line.get('throughput', 0):.2f} -> "
               f"{results[1].line.get('throughput', 0):.2f} units/h",
               "a loss of a few in ten thousand costs a retransmission now and then: nothing you "
               "can measure; try a loss of 0.05 and outages of seconds every few minutes")  # fmt: skip


# ---------------------------------------------------------------------- lab 8


def check_verdict(path: Path, report: CheckReport) -> None:
    from iiotbed.scenario import load_scenario
    from iiotbed.testbed import run_replications
    from iiotbed.testbed.verdict import paired_verdict

    scenario = _load(path, report)
    if scenario is None:
        return
    upgrade = _upgrade(scenario)
    changed = differences(upgrade, scenario)
    report.add("one assumption changed", len(changed) == 1, ", ".join(changed[:6]) or "nothing changed",
               "change exactly one setting (one [ASSUMPTION] line of the scenario files), so the "
               "effect on the verdict is that setting's")  # fmt: skip
    if len(changed) != 1 or upgrade.base_path is None:
        return
    base = load_scenario(upgrade.base_path).with_run(seed=scenario.run.seed, warmup=scenario.run.warmup)
    jobs = [(_short(s, VERDICT_DAYS), i) for s in (base, upgrade, scenario) for i in range(REPLICATIONS)]
    results = run_replications(jobs)
    n = REPLICATIONS
    lines = []
    for label, side in (("shipped 5G", results[n : 2 * n]), ("yours", results[2 * n :])):
        v = paired_verdict(results[:n], side, metric="labour_productivity", goal=0.20,
                           basis=f"{n} paired replications of {VERDICT_DAYS} day")  # fmt: skip
        imp = v.improvement or {}
        ci = imp.get("ci95") or [float("nan"), float("nan")]
        lines.append(f"{label}: {100 * imp.get('mean', float('nan')):+.1f} % "
                     f"(95 % CI {100 * ci[0]:+.1f} .. {100 * ci[1]:+.1f}) -> {v.verdict}")  # fmt: skip
    report.add("the verdict with your change", True, "; ".join(lines))


BatchCheck = Callable[[Path, CheckReport], None]

BATCH_CHECKS: dict[int, BatchCheck] = {7: check_network, 8: check_verdict}
