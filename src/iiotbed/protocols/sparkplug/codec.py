"""Sparkplug B 3.0 wire format: topic namespace, datatypes, metric values and payloads.

No sockets here: the edge node (:mod:`iiotbed.devices.sparkplug`) and the gateway's host
application (:mod:`iiotbed.gateway.collectors.sparkplug`) both encode and decode with these
functions. Payloads use the specification's protobuf schema (``_sparkplug_b.proto``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from iiotbed.protocols.sparkplug import _sparkplug_b_pb2 as pb

__all__ = [
    "BDSEQ_METRIC",
    "DATATYPES",
    "DATATYPE_NAMES",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "UNIT_PROPERTY",
    "MetricDef",
    "check_id",
    "check_value",
    "command_payload",
    "decode_payload",
    "encode_value",
    "metric_value",
    "pb",
]

NAMESPACE: Final = "spBv1.0"
REBIRTH_METRIC: Final = "Node Control/Rebirth"
BDSEQ_METRIC: Final = "bdSeq"
UNIT_PROPERTY: Final = "engUnit"  # a convention (Ignition's), the specification names none

#: Supported scalar datatypes: name -> (Sparkplug DataType number, payload field).
DATATYPES: Final[Mapping[str, tuple[int, str]]] = {
    "Int8": (pb.Int8, "int_value"),
    "Int16": (pb.Int16, "int_value"),
    "Int32": (pb.Int32, "int_value"),
    "Int64": (pb.Int64, "long_value"),
    "UInt8": (pb.UInt8, "int_value"),
    "UInt16": (pb.UInt16, "int_value"),
    "UInt32": (pb.UInt32, "int_value"),
    "UInt64": (pb.UInt64, "long_value"),
    "Float": (pb.Float, "float_value"),
    "Double": (pb.Double, "double_value"),
    "Boolean": (pb.Boolean, "boolean_value"),
    "String": (pb.String, "string_value"),
    "Text": (pb.Text, "string_value"),
    "UUID": (pb.UUID, "string_value"),
    "DateTime": (pb.DateTime, "long_value"),
    "Bytes": (pb.Bytes, "bytes_value"),
}
DATATYPE_NAMES: Final = {code: name for name, (code, _) in DATATYPES.items()}
# Integer datatypes: (bits, signed). Signed values travel sign-extended (two's complement)
# in the unsigned protobuf field, as the Tahu reference implementation does.
_INTS: Final = {
    "Int8": (8, True), "Int16": (16, True), "Int32": (32, True), "Int64": (64, True),
    "UInt8": (8, False), "UInt16": (16, False), "UInt32": (32, False), "UInt64": (64, False),
    "DateTime": (64, False),
}  # fmt: skip
#: Sparkplug message types of the ``spBv1.0/<group>/<type>/...`` topic level.
MESSAGE_TYPES: Final = frozenset(
    ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD")
)


@dataclass(frozen=True)
class MetricDef:
    """One metric of the node or a device; ``unit`` is a UNECE Rec. 20 code."""

    name: str
    datatype: str
    writable: bool = False
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(
                f"metric {self.name!r}: datatype {self.datatype!r} is not supported; "
                f"use one of {', '.join(DATATYPES)}"
            )



# ---- payload codec --------------------------------------------------------------------


def check_value(datatype: str, value: object) -> object:
    """Return ``value`` normalised for ``datatype`` or raise TypeError/ValueError."""
    if datatype in _INTS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{datatype} needs an int, got {type(value).__name__} {value!r}")
        bits, signed = _INTS[datatype]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"{datatype} value {value} is outside [{lo}, {hi}]")
        return value
    if datatype in ("Float", "Double"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"{datatype} needs a number, got {type(value).__name__} {value!r}")
        return float(value)
    if datatype == "Boolean":
        if not isinstance(value, bool):
            raise TypeError(f"Boolean needs a bool, got {type(value).__name__} {value!r}")
        return value
    if datatype == "Bytes":
        if not isinstance(value, bytes):
            raise TypeError(f"Bytes needs bytes, got {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{datatype} needs a str, got {type(value).__name__} {value!r}")
    return value


def encode_value(metric: pb.Payload.Metric, datatype: str, value: object) -> None:
    if value is None:
        metric.is_null = True
        return
    field = DATATYPES[datatype][1]
    if datatype in _INTS:
        assert isinstance(value, int)
        width = 32 if field == "int_value" else 64
        setattr(metric, field, value & ((1 << width) - 1))
    else:
        setattr(metric, field, value)


def metric_value(metric: pb.Payload.Metric, datatype: str | None = None) -> object:
    """Decode a metric's value by its datatype (``metric.datatype`` unless given).

    Raises ValueError when the value field does not fit the datatype.
    """
    name = datatype or DATATYPE_NAMES.get(metric.datatype)
    if name is None:
        raise ValueError(f"metric {metric.name!r}: unsupported datatype number {metric.datatype}")
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None:
        raise ValueError(f"metric {metric.name!r} carries no value")
    expected = DATATYPES[name][1]
    # UInt32 went to long_value before Sparkplug 3.0 pinned it to int_value: accept both.
    if field != expected and not (name == "UInt32" and field == "long_value"):
        raise ValueError(f"metric {metric.name!r}: a {name} value cannot be in {field}")
    raw: object = getattr(metric, field)
    if name in _INTS:
        assert isinstance(raw, int)
        bits, signed = _INTS[name]
        raw &= (1 << bits) - 1
        if signed and raw >= 1 << (bits - 1):
            raw -= 1 << bits
    return raw


def decode_payload(data: bytes) -> pb.Payload:
    """Parse a Sparkplug B payload; raises ValueError on bytes that are not one."""
    try:
        return pb.Payload.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc


def command_payload(
    metrics: Sequence[tuple[str, str, object]], timestamp_ms: int
) -> bytes:
    """Encode an NCMD/DCMD payload from ``(name, datatype, value)`` triples."""
    payload = pb.Payload(timestamp=timestamp_ms)
    for name, datatype, value in metrics:
        m = payload.metrics.add(name=name, timestamp=timestamp_ms, datatype=DATATYPES[datatype][0])
        encode_value(m, datatype, check_value(datatype, value))
    return payload.SerializeToString()


def check_id(kind: str, value: str) -> None:
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"Sparkplug {kind} {value!r} must be non-empty without '/', '+' or '#'")

