"""The OPC UA names the machine servers and the gateway's collector agree on (no asyncua here).

A machine's address space, after OPC 40001-1 (Machinery) and OPC 10031-4 (PackML)::

    Objects/Machines/<station>                     one object per machine (browse name = station)
      Identification/{Manufacturer, SerialNumber, ProductInstanceUri, AssetPath, Model?}
      MachineryItemState/CurrentState{/Id, /Number}    Tag.ITEM_STATE
      MachineryOperationMode/CurrentState{...}         Tag.OPERATION_MODE
      State/CurrentState{...}                          Tag.PACKML_STATE
      OperationCounters/<counter tag>              UInt64, never reset (and EnergyTotal, kWh)
      Monitoring/<process value tag>, Fault        Double with EngineeringUnits and EURange
      SpeedSetpoint                                writable Double, factor of nominal in (0, 2]
      Start(), Stop(), Reset(), Hold(), Unhold()   methods returning a message

Units are UNECE Rec. 20 common codes packed into ``EUInformation.UnitId`` (OPC UA Part 8
§5.6.3.3): :func:`unit_id` packs, :func:`unit_from_opcua` unpacks.
"""

from __future__ import annotations

from typing import Final

from iiotbed.errors import UnsError
from iiotbed.telemetry import Tag

__all__ = [
    "ASSET_PATH",
    "CURRENT_STATE",
    "ENGINEERING_UNITS",
    "EU_RANGE",
    "IDENTIFICATION",
    "MACHINES",
    "METHODS",
    "MONITORING",
    "OPERATION_COUNTERS",
    "SPEED_SETPOINT",
    "STATE_ID",
    "STATE_MACHINES",
    "STATE_NUMBER",
    "UNECE_URI",
    "UNIT_NAMES",
    "unit_from_opcua",
    "unit_id",
]

MACHINES: Final = "Machines"  # the folder under Objects (OPC 40001-1 entry point)
IDENTIFICATION: Final = "Identification"  # the MachineIdentification AddIn
ASSET_PATH: Final = "AssetPath"  # Identification property: the ISA-95 asset path
OPERATION_COUNTERS: Final = "OperationCounters"  # never-reset counters
MONITORING: Final = "Monitoring"  # process values and the fault flag
CURRENT_STATE: Final = "CurrentState"  # a state machine's current state (LocalizedText)
STATE_ID: Final = "Id"  # CurrentState property: the state's NodeId
STATE_NUMBER: Final = "Number"  # CurrentState property: the state's number (what is collected)
ENGINEERING_UNITS: Final = "EngineeringUnits"  # EUInformation property of an analog value
EU_RANGE: Final = "EURange"  # Range property of an analog value
SPEED_SETPOINT: Final = Tag.SPEED_SETPOINT  # writable speed factor, on the machine object
#: the machine's methods, in address-space order
METHODS: Final[tuple[str, ...]] = ("Start", "Stop", "Reset", "Hold", "Unhold")
#: state machine object browse name -> the tag its ``CurrentState/Number`` carries
STATE_MACHINES: Final[dict[str, str]] = {
    "MachineryItemState": Tag.ITEM_STATE,
    "MachineryOperationMode": Tag.OPERATION_MODE,
    "State": Tag.PACKML_STATE,
}

UNECE_URI: Final = "http://www.opcfoundation.org/UA/units/un/cefact"
#: UNECE Rec. 20 common codes with a display name (OPC UA Part 8 §5.6.3).
UNIT_NAMES: Final[dict[str, str]] = {
    "SEC": "s",
    "KWT": "kW",
    "KWH": "kWh",
    "MMS": "mm/s",
    "C16": "mm/s",
    "C62": "1",
    "P1": "%",
    "MTR": "m",
    "CEL": "°C",
}
_CODE_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def unit_id(code: str) -> int:
    """OPC UA ``EUInformation.UnitId`` of a UNECE common code: its ASCII bytes, big-endian."""
    if not 1 <= len(code) <= 3 or not code.isascii():
        raise ValueError(f"UNECE common code must be 1-3 ASCII characters, got {code!r}")
    value = 0
    for ch in code.upper():
        value = (value << 8) | ord(ch)
    return value


def unit_from_opcua(unit_id: int) -> str | None:
    """The UNECE code packed in an OPC UA ``EUInformation.UnitId`` (-1 or 0: none)."""
    if unit_id <= 0:
        return None
    raw = unit_id.to_bytes(4, "big").lstrip(b"\x00")
    try:
        code = raw.decode("ascii")
    except UnicodeDecodeError:
        code = ""
    if not (2 <= len(code) <= 3 and _CODE_CHARS.issuperset(code)):
        raise UnsError(f"OPC UA UnitId {unit_id:#x} is not a UNECE common code", field="unit")
    return code
