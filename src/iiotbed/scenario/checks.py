"""Checks beyond the types: a scenario whose KPIs could not be true is refused.

ISO 22400 performance is ideal cycle time x produced / APT. The ideal cycle time is the
design cycle without losses, so performance stays at or below 1 (``docs/kpis.md``). Two
mistakes break that, and both pass the typed models:

- a stage whose expected actual cycle time is well below its ideal cycle time: for a
  process stage ideal x mean(``cycle_time_factor``), for an inspection stage
  mean(``time``) + mean(``inference_time``). That is a lower bound of the time a unit
  costs (link round trips and rework come on top), so below ``MIN_ACTUAL_OVER_IDEAL``
  x ideal the station's performance passes 100 % unless losses happen to make up for
  the wrong ideal time;
- a file that ``extends:`` a base and changes a stage's inspection method but keeps the
  base's ideal cycle time for that stage (vision in 9 s measured against a person's 36 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iiotbed._yaml import Loc, Located
from iiotbed.errors import ScenarioError, ScenarioIssue
from iiotbed.scenario.models import Scenario, Stage

__all__ = ["MIN_ACTUAL_OVER_IDEAL", "check_scenario", "expected_cycle_time", "scenario_issues"]

#: Refuse a stage whose expected actual cycle time is below this share of its ideal one.
#: Not 1: a design cycle a few per cent off the mean is a judgement call (and a stage's
#: rework and link time add to the actual time); 0.9 catches ideal times that are wrong.
MIN_ACTUAL_OVER_IDEAL = 0.9


def expected_cycle_time(stage: Stage, ideal: float) -> float:
    """Expected seconds a unit takes at a station of ``stage`` before rework and link time."""
    if stage.inspection is None:
        return ideal * stage.cycle_time_factor.expected
    return stage.inspection.time.expected + stage.inspection.inference_time.expected


def _loc_text(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _issue(doc: Located, path: Path, loc: Loc, message: str) -> ScenarioIssue:
    origin = doc.origin_of(loc)
    ipath, line = origin if origin is not None else (path, None)
    return ScenarioIssue(ipath, line, _loc_text(loc), message)


def _performance_issues(sc: Scenario, doc: Located, path: Path) -> list[ScenarioIssue]:
    issues: list[ScenarioIssue] = []
    limit = f"expected actual >= {MIN_ACTUAL_OVER_IDEAL:g} x ideal"
    for si, stage in enumerate(sc.line.stages):
        insp = stage.inspection
        if insp is None:
            factor = stage.cycle_time_factor.expected
            if factor < MIN_ACTUAL_OVER_IDEAL:
                issues.append(
                    _issue(
                        doc,
                        path,
                        ("line", "stages", si, "cycle_time_factor"),
                        f"mean {factor:g} makes the actual cycle time {factor:.0%} of the ideal one, "
                        f"so ISO 22400 performance would read about {1 / factor:.0%}; expected a mean >= "
                        f"{MIN_ACTUAL_OVER_IDEAL:g} (the ideal cycle time is the design cycle without "
                        "losses: a mean >= 1 is a speed loss)",
                    )
                )
            continue
        actual = expected_cycle_time(stage, 0.0)
        for pi, product in enumerate(sc.products):
            ideal = product.ideal_cycle_time[stage.name]
            if actual >= MIN_ACTUAL_OVER_IDEAL * ideal:
                continue
            parts = f"{insp.time.expected:g} s time"
            if insp.inference_time.expected > 0:
                parts += f" + {insp.inference_time.expected:g} s inference"
            issues.append(
                _issue(
                    doc,
                    path,
                    ("products", pi, "ideal_cycle_time", stage.name),
                    f"{ideal:g} s is well above what the {insp.method} inspection of stage "
                    f"{stage.name!r} takes ({parts} = {actual:g} s), so ISO 22400 performance "
                    f"would pass 100 % (up to {ideal / actual:.0%} before rework and link time); "
                    f"{limit}: give the stage's design cycle without losses",
                )
            )
    return issues


def _methods(data: Any) -> dict[str, tuple[int, Any]]:
    """Stage name -> (index, inspection method) in raw scenario data."""
    out: dict[str, tuple[int, Any]] = {}
    line = data.get("line") if isinstance(data, dict) else None
    stages = line.get("stages") if isinstance(line, dict) else None
    for i, st in enumerate(stages if isinstance(stages, list) else []):
        insp = st.get("inspection") if isinstance(st, dict) else None
        if isinstance(insp, dict) and "method" in insp:
            out[str(st.get("name"))] = (i, insp["method"])
    return out


def _extends_issues(doc: Located, path: Path) -> list[ScenarioIssue]:
    """A file that changes an inspection method must give that stage's ideal cycle time.

    Along the ``extends:`` chain (this file, its base, the base's base...), the most derived
    file that changes a stage's method must state the stage's ideal cycle time of every
    product, or a file extending it must.
    """
    chain = [doc]
    while (parent := chain[-1].base_doc) is not None:
        chain.append(parent)
    if len(chain) == 1:
        return []
    files = [d.origins.get((), (path, 1))[0].resolve() for d in chain]
    methods = [_methods(d.data) for d in chain]
    products = doc.data.get("products")
    issues: list[ScenarioIssue] = []
    for name, (si, method) in methods[0].items():
        changed = next(
            (
                k
                for k in range(len(chain) - 1)
                if name in methods[k + 1] and methods[k][name][1] != methods[k + 1][name][1]
            ),
            None,
        )
        if changed is None:
            continue
        allowed = set(files[: changed + 1])
        kept = [
            str(p.get("name"))
            for pi, p in enumerate(products if isinstance(products, list) else [])
            if isinstance(p, dict)
            and (o := doc.origins.get(("products", pi, "ideal_cycle_time", name))) is not None
            and o[0].resolve() not in allowed
        ]
        if kept:
            was = methods[changed + 1][name][1]
            issues.append(
                _issue(
                    doc,
                    path,
                    ("line", "stages", si, "inspection", "method"),
                    f"changes stage {name!r} from {was!r} (in {chain[changed].base}) to {method!r} "
                    f"but product(s) {', '.join(kept)} keep the base's ideal cycle time for it; "
                    f"expected products[].ideal_cycle_time.{name} in this file: the {method} "
                    "method's design cycle",
                )
            )
    return issues


def scenario_issues(sc: Scenario, doc: Located, path: Path) -> list[ScenarioIssue]:
    """Every problem of a validated scenario that would make its KPIs untrue."""
    return _extends_issues(doc, path) + _performance_issues(sc, doc, path)


def check_scenario(sc: Scenario, doc: Located, path: Path) -> None:
    """Raise :class:`ScenarioError` with every issue of :func:`scenario_issues`, if any."""
    issues = scenario_issues(sc, doc, path)
    if issues:
        raise ScenarioError(issues)
