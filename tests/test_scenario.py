"""Scenario files: shipped ones load; bad ones give file:line: what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from iiotbed.errors import ScenarioError
from iiotbed.scenario import Dist, load_scenario, parse_duration, scenario_from_dict

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_shipped_scenarios_load(name: str) -> None:
    sc = load_scenario(SCENARIOS / name)
    assert sc.line.stages
    paths = [p for _, _, p in sc.station_paths()]
    assert len(paths) == len(set(paths))
    assert all(p.startswith(sc.line_path + "/") for p in paths)


def test_upgrade_extends_the_baseline_and_states_only_differences() -> None:
    base = load_scenario(SCENARIOS / "tcl-huizhou-baseline.yaml")
    upg = load_scenario(SCENARIOS / "tcl-huizhou-5g.yaml")
    assert upg.base_path is not None and upg.base_path.name == "tcl-huizhou-baseline.yaml"
    # inherited unchanged
    assert (
        upg.plant == base.plant and upg.calendar == base.calendar and upg.products == base.products
    )
    assert upg.run.seed == base.run.seed
    # merged by stage name: the inspection stage changed, its neighbours did not
    insp_b = {s.name: s for s in base.line.stages}["lighting-inspection"]
    insp_u = {s.name: s for s in upg.line.stages}["lighting-inspection"]
    assert insp_b.inspection is not None and insp_u.inspection is not None
    assert (insp_b.inspection.method, insp_u.inspection.method) == ("manual", "vision")
    assert insp_u.buffer_capacity == insp_b.buffer_capacity  # inherited inside the merged stage
    assert [s.name for s in upg.line.stages] == [s.name for s in base.line.stages]
    assert upg.supply is not None and upg.supply.mode == "amr"
    assert upg.technicians.count == base.technicians.count
    assert upg.technicians.repair_time_factor == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("45min", 2700),
        ("8h", 28800),
        ("7d", 604800),
        ("1w", 604800),
        (12, 12),
        ("1.5h", 5400),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_distribution_means() -> None:
    assert Dist.model_validate({"dist": "exponential", "mean": "2h"}).expected == pytest.approx(
        7200
    )
    g = Dist.model_validate({"dist": "gamma", "mean": 1.05, "cv": 0.05})
    assert g.expected == pytest.approx(1.05)
    assert Dist.model_validate("30s").expected == 30


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _single(tmp_path: Path, edit: str, new: str) -> Path:
    text = (SCENARIOS / "single-machine.yaml").read_text(encoding="utf-8")
    assert edit in text, edit
    return _write(tmp_path, "bad.yaml", text.replace(edit, new))


def _line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_wrong_value_names_file_line_value_and_expectation(tmp_path: Path) -> None:
    p = _single(tmp_path, "buffer_capacity: 5", "buffer_capacity: -3")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    (issue,) = info.value.issues
    assert issue.path == p and issue.line == _line_of(p, "buffer_capacity: -3")
    assert "buffer_capacity" in issue.location
    assert "-3" in issue.message and "greater than or equal to 1" in issue.message
    assert str(issue).startswith(f"{p}:{issue.line}:")


def test_misspelt_key_is_reported_at_its_line(tmp_path: Path) -> None:
    p = _single(tmp_path, "defect_probability: 0.01", "defect_probabilty: 0.01")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    (issue,) = info.value.issues
    assert issue.line == _line_of(p, "defect_probabilty")
    assert "unknown key" in issue.message


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    p = _single(tmp_path, "count: 1", "count: 0")
    text = p.read_text(encoding="utf-8").replace("seed: 7", "seed: -7").replace('"08:00"', '"8 am"')
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    lines = {i.line for i in info.value.issues}
    assert {_line_of(p, "count: 0"), _line_of(p, "seed: -7"), _line_of(p, '"8 am"')} <= lines


def test_unknown_stage_in_cycle_times_is_explained(tmp_path: Path) -> None:
    p = _single(tmp_path, "ideal_cycle_time: {bonding: 30s}", "ideal_cycle_time: {bondng: 30s}")
    with pytest.raises(ScenarioError, match=r"unknown stage\(s\) bondng; stages are bonding"):
        load_scenario(p)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    p = _single(tmp_path, "seed: 7", "seed: [7")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    assert info.value.line is not None and "YAML syntax error" in str(info.value)


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    p = _single(tmp_path, "seed: 7", "seed: 7\n  seed: 8")
    with pytest.raises(ScenarioError, match="duplicate"):
        load_scenario(p)


def test_missing_file_and_extends_cycle(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "nope.yaml")
    _write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(ScenarioError, match="cycle"):
        load_scenario(tmp_path / "a.yaml")


def test_error_in_a_base_file_points_into_the_base(tmp_path: Path) -> None:
    base = _single(tmp_path, "count: 1", "count: 0")
    child = _write(tmp_path, "child.yaml", f"extends: {base.name}\nname: child\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(child)
    (issue,) = info.value.issues
    assert issue.path == base and issue.line == _line_of(base, "count: 0")


def test_scenario_from_dict_validates_too() -> None:
    with pytest.raises(ScenarioError, match="required key is missing"):
        scenario_from_dict({"name": "x"})


_BREAK = '    - {start: "12:00", duration: 30min}'


@pytest.mark.parametrize(
    ("calendar", "cause"),
    [
        # one break as long as the shift (08:00-16:00)
        (_BREAK.replace('"12:00", duration: 30min', '"08:00", duration: 8h'), "daily breaks"),
        # two breaks that meet, and one from the day before reaching into the shift
        (
            '    - {start: "07:00", duration: 5h}\n    - {start: "12:00", duration: 4h}',
            "daily breaks",
        ),
        (
            '    - {start: "20:00", duration: 14h}\n    - {start: "10:00", duration: 6h}',
            "daily breaks",
        ),
        # maintenance on every workday over what the break leaves
        (
            _BREAK
            + "\n  workdays: [mon, tue]\n  planned_maintenance:\n"
            + '    - {day: mon, start: "07:00", duration: 10h}\n'
            + '    - {day: tue, start: "08:00", duration: 8h}',
            "daily breaks and planned maintenance",
        ),
    ],
)
def test_calendar_without_production_time_is_refused(
    tmp_path: Path, calendar: str, cause: str
) -> None:
    p = _single(tmp_path, _BREAK, calendar)
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    (issue,) = info.value.issues
    # a section's line is where its mapping starts: the calendar's first key
    assert issue.path == p and issue.line == _line_of(p, "calendar:") + 1
    assert issue.location == "calendar"
    assert f"no production time: {cause} cover every shift" in issue.message
    assert "expected at least part of a shift on a workday" in issue.message


def test_a_calendar_with_one_minute_of_production_a_day_is_valid(tmp_path: Path) -> None:
    p = _single(tmp_path, _BREAK, '    - {start: "08:00", duration: 479min}')
    assert load_scenario(p).calendar.production_per_week() == pytest.approx(7 * 60.0)
    # a night shift crossing midnight, a break crossing it too, maintenance on Sunday
    night = _single(
        tmp_path,
        '{name: day, start: "08:00", end: "16:00"}',
        '{name: night, start: "22:00", end: "06:00"}',
    )
    text = night.read_text(encoding="utf-8").replace('"12:00", duration: 30min', '"23:00", duration: 2h')
    text = text.replace(
        "  breaks:",
        '  planned_maintenance:\n    - {day: sun, start: "22:00", duration: 8h}\n  breaks:',
    )
    night.write_text(text, encoding="utf-8")
    # 8 h shifts less 2 h breaks on six days; Sunday's shift is all maintenance
    assert load_scenario(night).calendar.production_per_week() == pytest.approx(6 * 6 * 3600.0)


def test_shipped_calendars_have_the_production_time_they_state() -> None:
    single = load_scenario(SCENARIOS / "single-machine.yaml").calendar
    assert single.production_per_week() == pytest.approx(7 * 7.5 * 3600.0)  # 08-16, 30 min break
    tcl = load_scenario(SCENARIOS / "tcl-huizhou-baseline.yaml").calendar
    # 6 days x 24 h of shifts, less 2.5 h of breaks a day, less Saturday's 4 h service
    # minus the half hour of it a break already takes
    assert tcl.production_per_week() == pytest.approx((144 - 15 - 3.5) * 3600.0)
