"""The OPC UA names and unit packing the servers and the collector share."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from iiotbed.errors import UnsError
from iiotbed.protocols import opcua
from iiotbed.protocols.opcua import UNIT_NAMES, unit_from_opcua, unit_id
from iiotbed.telemetry import Tag


@pytest.mark.parametrize("code", [*UNIT_NAMES, "KWH", "P1", "C62", "MTR", "WHR", "A1"])
def test_unit_id_round_trips(code: str) -> None:
    assert unit_from_opcua(unit_id(code)) == code


def test_unit_id_is_the_ascii_bytes_big_endian() -> None:
    # worked example from OPC UA Part 8 §5.6.3.3: "KWH" = 0x4B 0x57 0x48
    assert unit_id("KWH") == 0x4B5748 == 4937544
    assert unit_id("kwh") == unit_id("KWH")  # codes are upper case on the wire
    assert unit_id("P1") == 0x5031
    with pytest.raises(ValueError, match="1-3 ASCII"):
        unit_id("KWHX")
    assert unit_from_opcua(-1) is None and unit_from_opcua(0) is None
    with pytest.raises(UnsError, match="not a UNECE common code"):
        unit_from_opcua(0x7F_FF_FF_FF)
    with pytest.raises(UnsError):
        unit_from_opcua(ord("K"))  # one character: no Rec. 20 common code is that short


def test_names_speak_the_tag_constants() -> None:
    assert opcua.SPEED_SETPOINT == Tag.SPEED_SETPOINT
    assert set(opcua.STATE_MACHINES.values()) == {
        Tag.ITEM_STATE, Tag.OPERATION_MODE, Tag.PACKML_STATE,
    }  # fmt: skip
    assert opcua.METHODS == ("Start", "Stop", "Reset", "Hold", "Unhold")


def test_protocols_opcua_imports_no_library() -> None:
    tree = ast.parse(Path(opcua.__file__).read_text(encoding="utf-8"))
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            imported |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            imported.add((n.module or "").split(".")[0])
    assert imported <= {"__future__", "typing", "iiotbed"}
