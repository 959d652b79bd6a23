"""Loading a scenario: YAML with ``extends:``, validated, every problem at its ``file:line``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iiotbed._yaml import Located, load_located
from iiotbed.errors import ScenarioError, ScenarioIssue
from iiotbed.scenario.checks import check_scenario
from iiotbed.scenario.models import Scenario

__all__ = ["load_scenario", "scenario_from_dict", "validation_issues"]


def _loc_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic inserts tags (e.g. "function-before[...]", "int", "list[str]") for unions and
    # validators; drop what is not a key or index of the document.
    return tuple(
        p
        for p in loc
        if isinstance(p, int)
        or ("[" not in str(p) and str(p) not in ("int", "float", "str", "bool"))
    )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_issues(doc: Located, exc: ValidationError, path: Path) -> list[ScenarioIssue]:
    """One issue per pydantic error, at the file and line the value came from (``doc``)."""
    issues: list[ScenarioIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = _clean_loc(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against the scenario format in the README"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg}, got {_describe(err['input'])}"
        key = (_loc_text(loc), msg)
        if key in seen:
            continue
        seen.add(key)
        origin = doc.origin_of(loc)
        # a missing key is reported at its parent mapping
        ipath, line = origin if origin is not None else (path, None)
        issues.append(ScenarioIssue(ipath, line, _loc_text(loc), msg))
    return issues


def load_scenario(path: str | Path) -> Scenario:
    """Read, merge (``extends``) and validate a scenario file."""
    path = Path(path)
    doc = load_located(path)
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        raise ScenarioError(validation_issues(doc, exc, path)) from None
    check_scenario(scenario, doc, path)  # KPIs that could not be true (scenario/checks.py)
    return scenario.model_copy(update={"source_path": path, "base_path": doc.base})


def scenario_from_dict(data: dict[str, Any], path: Path | None = None) -> Scenario:
    """Validate an in-memory scenario (tests, generated scenarios)."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        doc = Located(data, {})
        raise ScenarioError(validation_issues(doc, exc, path or Path("<scenario>"))) from None
