"""Layout derived from scenarios: stations, bottleneck stage, counted labour roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iiotbed.platform.layout import Layout
from iiotbed.scenario import load_scenario, scenario_from_dict

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BASELINE = SCENARIOS / "tcl-huizhou-baseline.yaml"


def test_baseline_layout() -> None:
    scenario = load_scenario(BASELINE)
    lay = Layout.from_scenario(scenario)
    assert lay.line == "tcl/huizhou/module-assembly/line-1"
    assert [s.path for s in lay.stations] == [p for _, _, p in scenario.station_paths()]
    assert [(s.stage, s.name) for s in lay.stations] == [
        (st.name, n) for st, n, _ in scenario.station_paths()
    ]
    assert lay.stage_order == (
        "cleaning", "cof-bonding", "pcb-bonding", "backlight-assembly",
        "lighting-inspection", "packing",
    )
    # mix-weighted ideal cycle time per station (mix 0.6 / 0.4):
    #   cleaning 0.6x18 + 0.4x20 = 18.8 / 1 = 18.8     cof-bonding 0.6x38 + 0.4x42 = 39.6 / 2 = 19.8
    #   pcb-bonding 37.6 / 2 = 18.8                    backlight-assembly 39.6 / 2 = 19.8
    #   lighting-inspection 34 / 2 = 17            packing 17.8 / 1 = 17.8
    # cof-bonding and backlight-assembly tie at 19.8 s; the tie goes to the slower in practice:
    # cycle_time_factor mean 1.08 (backlight) > 1.06 (cof)
    assert lay.bottleneck_stage == "backlight-assembly"
    assert lay.counted_roles == {
        "operators", "inspectors", "handlers", "technicians", "amr_supervisors",
    }
    assert lay.inspection_stages == {"lighting-inspection"}
    assert lay.mix == pytest.approx({"lcm-55": 0.6, "lcm-65": 0.4})
    bonder = next(s for s in lay.stations if s.name == "bonder-02")
    assert bonder.stage == "cof-bonding"
    assert bonder.path == "tcl/huizhou/module-assembly/line-1/cof-bonding/bonder-02"
    assert dict(bonder.ideal_cycle_time) == {"lcm-55": 38.0, "lcm-65": 42.0}
    assert [s.name for s in lay.stations_of("packing")] == ["packer-01"]


def _baseline_data() -> dict[str, Any]:
    # through the model, not PyYAML: the file's YAML 1.1 `off:` key would read as False
    return load_scenario(BASELINE).model_dump(exclude_none=True)


def test_bottleneck_follows_station_count_and_labour_other_roles_count() -> None:
    data = _baseline_data()
    for stage in data["line"]["stages"]:
        if stage["name"] == "backlight-assembly":
            stage["stations"] = 3  # 39.6 / 3 = 13.2 s per station: no longer a bottleneck
    data["products"][0]["mix"] = 3  # 3 : 2 is the same mix as 0.6 : 0.4
    data["products"][1]["mix"] = 2
    data["labour"] = {"counted": ["operators", "technicians"], "other": {"quality-engineer": 1}}
    lay = Layout.from_scenario(scenario_from_dict(data))
    # cof-bonding alone at 19.8 s per station
    assert lay.bottleneck_stage == "cof-bonding"
    assert lay.mix == pytest.approx({"lcm-55": 0.6, "lcm-65": 0.4})
    assert lay.counted_roles == {"operators", "technicians", "quality-engineer"}
    assert len(lay.stations_of("backlight-assembly")) == 3


def test_single_machine_and_upgrade_layouts() -> None:
    single = Layout.from_scenario(load_scenario(SCENARIOS / "single-machine.yaml"))
    assert single.bottleneck_stage == "bonding"
    assert [s.path for s in single.stations] == ["iiotbed/lab/teaching/line-1/bonding/bonder-01"]
    assert single.inspection_stages == frozenset()
    upgrade = load_scenario(SCENARIOS / "tcl-huizhou-5g.yaml")
    lay = Layout.from_scenario(upgrade)
    # same stages and ideal times as the baseline: the same bottleneck
    assert lay.bottleneck_stage == "backlight-assembly"
    assert [s.path for s in lay.stations] == [p for _, _, p in upgrade.station_paths()]
