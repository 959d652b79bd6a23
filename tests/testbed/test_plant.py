"""A plant scenario (``run.lines: N``): its lines, their seeds and ports, and the CLI's choice
of one line (``--line``). The live case (processes per line) is tests/faults/test_plant.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.errors import ScenarioError
from iiotbed.platform.catalog import scenario_assets
from iiotbed.scenario import load_scenario
from iiotbed.scenario.plant import (
    line_for_asset,
    line_names,
    opcua_port,
    plant_lines,
    select_line,
)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def plant(tmp_path: Path) -> Path:
    f = tmp_path / "plant.yaml"
    f.write_text(f"extends: {ROOT / 'scenarios/single-machine.yaml'}\nrun: {{lines: 3}}\n")
    return f


def test_lines_have_their_own_names_seeds_and_paths(plant: Path) -> None:
    sc = load_scenario(plant)
    assert line_names(sc) == ["line-1-1", "line-1-2", "line-1-3"]
    lines = plant_lines(sc)
    assert [s.run.seed for s in lines] == [7, 8, 9]
    assert [s.run.lines for s in lines] == [1, 1, 1]
    assert lines[1].line_path == "iiotbed/lab/teaching/line-1-2"
    assert lines[1].name == "Single machine (teaching) - line-1-2"
    paths = [{a.path for a in scenario_assets(s)} for s in lines]
    assert not paths[0] & paths[1] and not paths[1] & paths[2]
    got = line_for_asset(sc, "iiotbed/lab/teaching/line-1-3/bonding/bonder-01")
    assert got is not None and got.plant.line == "line-1-3"
    assert line_for_asset(sc, "iiotbed/lab/teaching/line-1-30/x") is None
    # OPC UA: one port per line, or one per station of each line (machine layout)
    assert [opcua_port(s, 4840) for s in lines] == [4840, 4841, 4842]
    assert opcua_port(lines[2], 4840, per_machine=True) == 4842  # one station per line
    # a single line is left as it is
    single = load_scenario(ROOT / "scenarios/single-machine.yaml")
    assert select_line(single, None) is single
    assert select_line(single, "line-1") is single
    assert line_names(single) == ["line-1"]


def test_choosing_a_line(plant: Path) -> None:
    sc = load_scenario(plant)
    with pytest.raises(ScenarioError, match="plant of 3 lines"):
        select_line(sc, None, plant)
    with pytest.raises(ScenarioError, match="no line 'line-9'"):
        select_line(sc, "line-9", plant)


def test_cli_validate_and_simulate_a_line(plant: Path) -> None:
    r = runner.invoke(app, ["validate", str(plant)])
    assert r.exit_code == 0, r.output
    assert "a plant of 3 lines: line-1-1, line-1-2, line-1-3 (seeds 7..9)" in r.output
    # simulate: a plant needs --line (exit 2, a message, no traceback)
    r = runner.invoke(app, ["simulate", str(plant), "-n", "1", "-d", "8h"])
    assert r.exit_code == 2 and "choose one with --line" in r.output, r.output
    r = runner.invoke(app, ["simulate", str(plant), "--line", "nope", "-n", "1"])
    assert r.exit_code == 2 and "its lines are line-1-1, line-1-2, line-1-3" in r.output
    keys = []
    for line in ("line-1-1", "line-1-2"):
        r = runner.invoke(app, ["simulate", str(plant), "--line", line, "-n", "1", "-d", "12h",
                                "-j", "1", "--json"])  # fmt: skip
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["scenario"].endswith(line)
        keys.append(out["per_replication"][0])
    assert keys[0] != keys[1]  # seeds 7 and 8
    # devices and gateway refuse a plant without --line before starting anything
    r = runner.invoke(app, ["devices", str(plant), "--duration", "1h"])
    assert r.exit_code == 2 and "choose one with --line" in r.output, r.output
    r = runner.invoke(app, ["gateway", "--scenario", str(plant), "--broker", "mqtt://127.0.0.1:1",
                            "--line", "line-1-4"])  # fmt: skip
    assert r.exit_code == 2 and "no line 'line-1-4'" in r.output, r.output


def test_too_long_line_names_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    long = "l" * 63
    f.write_text(f"extends: {ROOT / 'scenarios/single-machine.yaml'}\n"
                 f"plant: {{line: {long}}}\nrun: {{lines: 12}}\n")  # fmt: skip
    r = runner.invoke(app, ["validate", str(f)])
    assert r.exit_code == 2 and "longer than 64 characters" in r.output, r.output
