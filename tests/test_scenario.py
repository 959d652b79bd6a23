"""Scenario files: shipped ones load; bad ones give file:line: what is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
    assert upg.plant == base.plant and upg.calendar == base.calendar
    # products merged by name: only the inspection stage's ideal cycle time changes with the
    # method (vision's design cycle, 8.5 s capture and handling + 0.25 s inference)
    assert [p.name for p in upg.products] == [p.name for p in base.products]
    for pu, pb in zip(upg.products, base.products, strict=True):
        assert pu.mix == pb.mix
        assert pu.ideal_cycle_time == {**pb.ideal_cycle_time, "lighting-inspection": 8.75}
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
    text = night.read_text(encoding="utf-8").replace(
        '"12:00", duration: 30min', '"23:00", duration: 2h'
    )
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


# --------------------------------------------------------------------------- KPIs that can be true
# (scenario/checks.py: a stage faster than its ideal cycle time, a method changed by
# `extends:` without its ideal time; the shipped scenarios against the ISO 22400 bound)

BASELINE = SCENARIOS / "tcl-huizhou-baseline.yaml"
UPGRADE = SCENARIOS / "tcl-huizhou-5g.yaml"
_MANUAL_TIME = "time: {dist: gamma, mean: 36s, cv: 0.15}"


def _edited(src: Path, dst: Path, *edits: tuple[str, str]) -> Path:
    text = src.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    dst.write_text(text, encoding="utf-8")
    return dst


def _lines_of(path: Path, needle: str) -> list[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, 1) if needle in line]


def test_an_inspection_well_below_its_ideal_cycle_time_is_refused_at_the_ideal(
    tmp_path: Path,
) -> None:
    # a person 20 s per panel against an ideal of 34 s: performance would read 170 %
    p = _edited(
        BASELINE, tmp_path / "fast.yaml", (_MANUAL_TIME, _MANUAL_TIME.replace("36s", "20s"))
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    issues = info.value.issues
    # one issue per product, each at the line stating that product's ideal time
    assert [(i.path, i.line) for i in issues] == [
        (p, n) for n in _lines_of(p, "lighting-inspection: 34s")
    ]
    assert [i.location for i in issues] == [
        "products[0].ideal_cycle_time.lighting-inspection",
        "products[1].ideal_cycle_time.lighting-inspection",
    ]
    msg = issues[0].message
    assert "34 s" in msg and "20 s" in msg and "manual inspection" in msg
    assert "performance would pass 100 %" in msg and "170%" in msg
    assert "expected actual >= 0.9 x ideal" in msg


@pytest.mark.parametrize(("mean", "refused"), [("31s", False), ("30s", True)])
def test_the_threshold_is_nine_tenths_of_the_ideal(
    tmp_path: Path, mean: str, refused: bool
) -> None:
    # 0.9 x 34 s = 30.6 s
    p = _edited(BASELINE, tmp_path / "b.yaml", (_MANUAL_TIME, _MANUAL_TIME.replace("36s", mean)))
    if refused:
        with pytest.raises(ScenarioError, match="performance would pass 100 %"):
            load_scenario(p)
    else:
        assert load_scenario(p).name


def test_vision_counts_inference_in_the_expected_cycle_time(tmp_path: Path) -> None:
    # 9 s capture + 0.25 s inference = 9.25 s; an ideal of 10.2 s passes (9.25 >= 9.18),
    # 10.3 s does not (9.25 < 9.27)
    for ideal, ok in (("10.2s", True), ("10.3s", False)):
        _edited(BASELINE, tmp_path / "tcl-huizhou-baseline.yaml")
        p = _edited(
            UPGRADE, tmp_path / "tcl-huizhou-5g.yaml",
            ("{lighting-inspection: 8.75s}", f"{{lighting-inspection: {ideal}}}"),
        )  # fmt: skip
        if ok:
            assert load_scenario(p).name
        else:
            with pytest.raises(ScenarioError, match=r"9 s time \+ 0.25 s inference = 9.25 s"):
                load_scenario(p)


@pytest.mark.parametrize(("mean", "refused"), [("0.9", False), ("0.8", True)])
def test_a_process_stage_faster_than_ideal_is_refused_at_its_factor(
    tmp_path: Path, mean: str, refused: bool
) -> None:
    p = _single(tmp_path, "mean: 1.05, cv: 0.05", f"mean: {mean}, cv: 0.05")
    if not refused:
        assert load_scenario(p).name
        return
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    (issue,) = info.value.issues
    assert issue.path == p and issue.line == _line_of(p, "cycle_time_factor:")
    assert issue.location == "line.stages[0].cycle_time_factor"
    assert "mean 0.8" in issue.message and "performance would read about 125%" in issue.message
    assert "expected a mean >= 0.9" in issue.message


_VISION = """line:
  stages:
    - name: lighting-inspection
      inspection:
        method: vision
        time: {dist: gamma, mean: 9s, cv: 0.1}
        inference_time: 250ms
        detection_rate: 0.97
        link: wifi
"""
_IDEAL = """products:
  - name: lcm-55
    ideal_cycle_time: {lighting-inspection: 9s}
  - name: lcm-65
    ideal_cycle_time: {lighting-inspection: 9s}
"""


def _child(tmp_path: Path, name: str, extends: str, body: str) -> Path:
    return _write(tmp_path, name, f"extends: {extends}\nname: {name}\n{body}")


def test_extends_that_changes_the_inspection_method_must_give_its_ideal_time(
    tmp_path: Path,
) -> None:
    base = _edited(BASELINE, tmp_path / "base.yaml")
    bare = _child(tmp_path, "bare.yaml", base.name, _VISION)
    with pytest.raises(ScenarioError) as info:
        load_scenario(bare)
    first = info.value.issues[0]
    assert (first.path, first.line) == (bare, _line_of(bare, "method: vision"))
    assert first.location == "line.stages[4].inspection.method"
    msg = first.message
    assert "'lighting-inspection' from 'manual'" in msg and "to 'vision'" in msg
    assert "lcm-55, lcm-65 keep the base's ideal cycle time" in msg
    assert "expected products[].ideal_cycle_time.lighting-inspection in this file" in msg
    # the base's 34 s is also far above vision's 9.25 s: reported where it stands
    assert {(i.path, i.line) for i in info.value.issues[1:]} == {
        (base, n) for n in _lines_of(base, "lighting-inspection: 34s")
    }
    # with the ideal time stated by the file that changes the method: valid
    good = _child(tmp_path, "good.yaml", base.name, _IDEAL + _VISION)
    sc = load_scenario(good)
    assert {p.ideal_cycle_time["lighting-inspection"] for p in sc.products} == {9.0}
    # restating the base's method changes nothing: no ideal time needed
    same = _child(
        tmp_path, "same.yaml", base.name,
        "line:\n  stages:\n    - name: lighting-inspection\n      inspection: {method: manual}\n",
    )  # fmt: skip
    assert load_scenario(same).name == "same.yaml"


def test_a_method_changed_further_up_the_extends_chain(tmp_path: Path) -> None:
    base = _edited(BASELINE, tmp_path / "base.yaml")
    mid = _child(tmp_path, "mid.yaml", base.name, _VISION)  # changes the method, no ideal
    top = _child(tmp_path, "top.yaml", mid.name, "description: more\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(top)
    first = info.value.issues[0]
    assert (first.path, first.line) == (mid, _line_of(mid, "method: vision"))
    # a file extending the one that changed the method may give the ideal time
    fixed = _child(tmp_path, "fixed.yaml", mid.name, _IDEAL)
    assert load_scenario(fixed).name == "fixed.yaml"


def test_validate_cli_refuses_untrue_kpis_with_file_and_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from iiotbed.cli import app

    fast = _edited(
        BASELINE, tmp_path / "fast.yaml", (_MANUAL_TIME, _MANUAL_TIME.replace("36s", "20s"))
    )
    base = _edited(BASELINE, tmp_path / "base.yaml")
    bare = _child(tmp_path, "bare.yaml", base.name, _VISION)
    for path, needle in ((fast, "lighting-inspection: 34s"), (bare, "method: vision")):
        res = CliRunner().invoke(app, ["validate", str(path)])
        assert res.exit_code == 2, res.output
        assert f"error: {path}:{_line_of(path, needle)}: " in res.stderr
        assert "Traceback" not in res.output + res.stderr
    res = CliRunner().invoke(app, ["validate", *(str(p) for p in sorted(SCENARIOS.glob("*.yaml")))])
    assert res.exit_code == 0, res.output
    assert res.output.count(": ok - ") == len(list(SCENARIOS.glob("*.yaml")))


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.yaml")))
def test_shipped_stages_are_no_faster_than_their_ideal_cycle_time(name: str) -> None:
    from iiotbed._yaml import load_located
    from iiotbed.scenario.checks import expected_cycle_time, scenario_issues

    path = SCENARIOS / name
    sc = load_scenario(path)
    assert scenario_issues(sc, load_located(path), path) == []
    for stage in sc.line.stages:
        for p in sc.products:
            ideal = p.ideal_cycle_time[stage.name]
            # stricter than the validator's 0.9: the shipped ideal times are design cycles
            assert expected_cycle_time(stage, ideal) >= ideal, (stage.name, p.name)


@pytest.mark.parametrize(
    ("name", "days"),
    [("single-machine", 3), ("tcl-huizhou-baseline", 3), ("tcl-huizhou-5g", 3)],
)
def test_shipped_performance_is_at_most_one_every_day(name: str, days: int) -> None:
    """ISO 22400 performance of every station and of the line, day by day: a physical bound
    (the engine agreeing with the answer key would not catch an ideal time that is wrong)."""
    from iiotbed.devices.sim import simulate
    from iiotbed.platform.kpi import compute_kpis
    from iiotbed.platform.layout import Layout

    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    layout = Layout.from_scenario(sc)
    records = simulate(sc, 0, duration=days * 86400.0)
    for d in range(days):
        rep = compute_kpis(records, layout, start=d * 86400.0, end=(d + 1) * 86400.0)
        perf = {k: v["performance"] for k, v in rep.stations.items()}
        perf["line"] = rep.line["performance"]
        assert all(0.5 < v <= 1.0 for v in perf.values()), (d, perf)


# --------------------------------------------------------------------------- bad bytes
# a control character or a directory: the usual message and exit 2 from every command that
# reads a scenario (or a gateway file), never a traceback

_SINGLE = SCENARIOS / "single-machine.yaml"


def _bad_file(tmp_path: Path, kind: str) -> tuple[Path, int | None]:
    """A scenario with bad bytes (or a directory) and the line the message must name."""
    p = tmp_path / f"{kind}.yaml"
    text = _SINGLE.read_text(encoding="utf-8")
    if kind == "directory":
        p.mkdir()
        return p, None
    if kind == "utf16":
        p.write_bytes(text.encode("utf-16"))
        return p, None
    char = {"nul": "\x00", "bell": "\x07", "escape": "\x1b"}[kind]
    lines = text.splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n") + char + "\n"  # on line 3, after its text
    p.write_text("".join(lines), encoding="utf-8")
    return p, 3


def _commands(bad: Path, tmp_path: Path) -> dict[str, list[str]]:
    good = str(_SINGLE)
    return {
        "validate": ["validate", str(bad)],
        "simulate": ["simulate", str(bad), "-n", "1", "-j", "1"],
        "run": ["run", str(bad), "--no-verdict", "--runs-dir", str(tmp_path / "runs")],
        "compare-baseline": ["compare", str(bad), good, "-n", "2", "-j", "1"],
        "compare-upgrade": ["compare", good, str(bad), "-n", "2", "-j", "1"],
        "devices": ["devices", str(bad)],
        "gateway-config": ["gateway", "--config", str(bad)],
        "gateway-scenario": ["gateway", "--scenario", str(bad), "--broker", "mqtt://127.0.0.1:1"],
        "platform-scenario": [
            "platform", "--scenario", str(bad), "--store", f"sqlite:///{tmp_path / 'p.db'}",
            "--broker", "mqtt://127.0.0.1:1",
        ],
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["nul", "bell", "escape", "utf16", "directory"])
def test_bad_bytes_give_file_line_and_exit_2_from_every_command(tmp_path: Path, kind: str) -> None:
    from typer.testing import CliRunner

    from iiotbed.cli import app

    bad, line = _bad_file(tmp_path, kind)
    for name, args in _commands(bad, tmp_path).items():
        res = CliRunner().invoke(app, args)
        out = res.output + res.stderr
        assert res.exit_code == 2, (name, out, res.exception)
        assert "Traceback" not in out and "ReaderError" not in out, (name, out)
        # typer's own check of a directory argument draws a box that may wrap the path
        flat = re.sub(r"[\s│╭╮╰╯─]", "", res.stderr)
        assert str(bad) in flat, (name, out)
        if kind == "directory":
            # validate says it as every other scenario problem; the other commands refuse
            # the argument before reading it (typer's usage error, also exit 2)
            if name == "validate":
                assert f"error: {bad}: is a directory, not a file" in res.stderr
            else:
                assert "isadirectory" in flat, (name, out)
        elif line is not None:
            assert f"error: {bad}:{line}: control character U+" in res.stderr, (name, out)
            assert "at column " in res.stderr and "not allowed in YAML" in res.stderr
        else:
            assert f"error: {bad}: cannot read file: not UTF-8 text" in res.stderr, (name, out)


@pytest.mark.parametrize("kind", ["nul", "bell", "utf16", "directory"])
def test_the_loader_names_bad_bytes_at_their_line(tmp_path: Path, kind: str) -> None:
    bad, line = _bad_file(tmp_path, kind)
    with pytest.raises(ScenarioError) as info:
        load_scenario(bad)
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == (bad, line)
    if kind == "directory":
        assert issue.message == "is a directory, not a file; give the path of a YAML scenario"
    # in a base file, the message points into the base
    child = _write(tmp_path, "child.yaml", f"extends: {bad.name}\nname: child\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(child)
    assert (info.value.issues[0].path, info.value.issues[0].line) == (bad, line)


def test_a_control_character_later_in_the_file_has_its_own_line_and_column(tmp_path: Path) -> None:
    p = _single(tmp_path, "seed: 7", "seed: 7 \x00")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    (issue,) = info.value.issues
    assert issue.line == _line_of(p, "seed: 7")
    assert "control character U+0000 at column 11 " in issue.message  # "  seed: 7 " + NUL


# --------------------------------------------------------------------------- probability bounds

# every probability of the format, at a place where the 5G scenario has it
_PROBABILITIES: dict[tuple[str, str], tuple[str | int, ...]] = {
    ("Stage", "defect_probability"): ("line", "stages", 1, "defect_probability"),
    ("Inspection", "detection_rate"): ("line", "stages", 4, "inspection", "detection_rate"),
    ("Inspection", "false_reject_rate"): ("line", "stages", 4, "inspection", "false_reject_rate"),
    ("Inspection", "rework_fraction"): ("line", "stages", 4, "inspection", "rework_fraction"),
    ("Link", "loss"): ("network", "links", "5g-urllc", "loss"),
    ("PredictiveMaintenance", "detection_rate"): ("maintenance", "predictive", "detection_rate"),
}


def _upgrade_with(loc: tuple[str | int, ...], value: float) -> dict[str, Any]:
    data = load_scenario(UPGRADE).model_dump(exclude_none=True)
    node: Any = data
    for key in loc[:-1]:
        node = node[key]
    node[loc[-1]] = value
    return data


def _loc_str(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


@pytest.mark.parametrize("value", [1.5, -0.1, 1.0000001])
@pytest.mark.parametrize("field", list(_PROBABILITIES), ids="{0[0]}.{0[1]}".format)
def test_every_probability_outside_zero_one_is_refused(
    field: tuple[str, str], value: float
) -> None:
    loc = _PROBABILITIES[field]
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(_upgrade_with(loc, value))
    (issue,) = info.value.issues
    assert issue.location == _loc_str(loc)
    bound = "greater than or equal to 0" if value < 0 else "less than or equal to 1"
    assert bound in issue.message and repr(value) in issue.message
    # the bounds themselves are valid (a link that loses everything is refused on its own)
    for ok in (0.0, 0.999 if field == ("Link", "loss") else 1.0):
        assert scenario_from_dict(_upgrade_with(loc, ok)).name


def test_every_probability_field_is_bounded_and_tested() -> None:
    """Walk the models: a field named like a probability must be in [0, 1] and listed above."""
    import annotated_types as at
    from pydantic import BaseModel

    from iiotbed.scenario import calendar, durations, models

    probable = re.compile(r"(probability|_rate|fraction|^loss)$")
    found: set[tuple[str, str]] = set()
    for mod in (models, calendar, durations):
        for cls in vars(mod).values():
            if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
                continue
            for name, info in cls.model_fields.items():
                ge = [m.ge for m in info.metadata if isinstance(m, at.Ge)]
                le = [m.le for m in info.metadata if isinstance(m, at.Le)]
                if probable.search(name):
                    assert (ge, le) == ([0], [1]), (cls.__name__, name, info.metadata)
                if le == [1]:
                    found.add((cls.__name__, name))
    assert found == set(_PROBABILITIES)


@pytest.mark.parametrize("value", [-0.1, 0.0])
def test_a_product_mix_must_be_positive(value: float) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(_upgrade_with(("products", 0, "mix"), value))
    (issue,) = info.value.issues
    assert issue.location == "products[0].mix" and "greater than 0" in issue.message


def test_a_product_mix_is_a_relative_share_not_a_probability() -> None:
    # mix weights are normalised (3:2 is 0.6/0.4), so 1.5 is a valid share, not an error
    data = _upgrade_with(("products", 0, "mix"), 1.5)
    data["products"][1]["mix"] = 1.0
    from iiotbed.platform.layout import Layout

    assert Layout.from_scenario(scenario_from_dict(data)).mix == pytest.approx(
        {"lcm-55": 0.6, "lcm-65": 0.4}
    )
