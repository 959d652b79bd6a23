"""Turn what collectors receive into :class:`~iiotbed.telemetry.Sample` records.

Rules: the source timestamp is kept (converted to seconds since the scenario epoch, never
replaced by receive time); Bad quality carries no value; a value that cannot be sent
(NaN, infinity, missing) becomes Bad rather than a made-up number; stale tags are marked
Uncertain (or Bad) with no value; units become UNECE Rec. 20 codes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from iiotbed.errors import UnsError
from iiotbed.protocols.opcua import unit_from_opcua  # one UnitId <-> UNECE packing, both ways
from iiotbed.telemetry import Quality, Sample

__all__ = [
    "UNIT_CODES",
    "StaleMonitor",
    "mark_stale",
    "normalise_value",
    "quality_from_status",
    "seconds_since",
    "to_sample",
    "unit_code",
    "unit_from_opcua",
]

#: Unit symbols seen in device data and their UNECE Rec. 20 common codes.
UNIT_CODES: Final[Mapping[str, str]] = {
    "%": "P1",
    "percent": "P1",
    "kWh": "KWH",
    "Wh": "WHR",
    "kW": "KWT",
    "W": "WTT",
    "V": "VLT",
    "A": "AMP",
    "Hz": "HTZ",
    "m": "MTR",
    "mm": "MMT",
    "m/s": "MTS",
    "mm/s": "C16",
    "s": "SEC",
    "ms": "C26",
    "min": "MIN",
    "h": "HUR",
    "°C": "CEL",
    "degC": "CEL",
    "K": "KEL",
    "Pa": "PAL",
    "kPa": "KPA",
    "bar": "BAR",
    "kg": "KGM",
    "g": "GRM",
    "L": "LTR",
    "rpm": "RPM",
    "1/min": "RPM",
    "N": "NEW",
    "Nm": "NU",
    "pcs": "C62",
    "unit": "C62",
    "1": "C62",
}
_CODE_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_FOLDED: Final = {k.casefold(): v for k, v in UNIT_CODES.items()}


def unit_code(unit: str | None) -> str | None:
    """A UNECE Rec. 20 code for ``unit`` (a code already, or a known symbol)."""
    if unit is None or unit == "":
        return None
    if unit in UNIT_CODES:
        return UNIT_CODES[unit]
    if 2 <= len(unit) <= 3 and _CODE_CHARS.issuperset(unit):
        return unit
    code = _FOLDED.get(unit.casefold())
    if code is None:
        raise UnsError(
            f"unit {unit!r} has no known UNECE Rec. 20 code; send the code itself "
            "(e.g. KWH, MTR, P1) or add the symbol to UNIT_CODES",
            field="unit",
        )
    return code


def quality_from_status(status_code: int) -> Quality:
    """OPC UA StatusCode severity (top two bits) as a :class:`Quality`."""
    severity = (status_code >> 30) & 0b11
    if severity == 0:
        return Quality.Good
    return Quality.Uncertain if severity == 1 else Quality.Bad


def seconds_since(epoch: dt.datetime, source_ts: dt.datetime) -> float:
    """Source timestamp as seconds since the scenario epoch (both must be aware)."""
    if epoch.tzinfo is None or source_ts.tzinfo is None:
        raise UnsError(
            f"timestamps must carry a UTC offset (epoch {epoch.isoformat()}, "
            f"source {source_ts.isoformat()})",
            field="source_ts",
        )
    return (source_ts - epoch).total_seconds()


def normalise_value(
    value: object, quality: Quality = Quality.Good
) -> tuple[float | int | str | None, Quality]:
    """``(value, quality)`` as the UNS accepts them; never invents a value."""
    if quality is Quality.Bad:
        return None, Quality.Bad
    if isinstance(value, bool):
        return int(value), quality
    if isinstance(value, float):
        return (value, quality) if math.isfinite(value) else (None, Quality.Bad)
    if isinstance(value, int | str):
        return value, quality
    if value is None:
        return None, Quality.Bad if quality is Quality.Good else quality
    # numpy scalars, Decimal...: numbers that are not Python numbers
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, Quality.Bad
    return normalise_value(number, quality)


def to_sample(
    asset: str,
    tag: str,
    value: object,
    *,
    t: float | None = None,
    source_ts: dt.datetime | None = None,
    epoch: dt.datetime | None = None,
    unit: str | None = None,
    quality: Quality = Quality.Good,
    gateway_ts: float | None = None,
    seq: int | None = None,
    run_id: str | None = None,
) -> Sample:
    """Build a normalised sample from either ``t`` or ``source_ts`` + ``epoch``."""
    if t is None:
        if source_ts is None or epoch is None:
            raise UnsError("a sample needs t= or source_ts= with epoch=", field="t")
        t = seconds_since(epoch, source_ts)
    v, q = normalise_value(value, quality)
    return Sample(t, asset, tag, v, unit_code(unit), q, gateway_ts, seq, run_id)


def mark_stale(sample: Sample, t: float, quality: Quality = Quality.Uncertain) -> Sample:
    """A stale mark for the tag of ``sample`` at time ``t``: no value, reduced quality."""
    if quality is Quality.Good:
        raise ValueError("a stale mark needs quality Uncertain or Bad")
    return replace(sample, t=t, value=None, quality=quality, seq=None, gateway_ts=None)


class StaleMonitor:
    """Marks tags that went quiet for longer than ``max_age`` seconds (sim time).

    Each silence yields one mark; the next real sample of the tag re-arms it.
    """

    def __init__(self, max_age: float, quality: Quality = Quality.Uncertain) -> None:
        if max_age <= 0:
            raise ValueError(f"max_age must be > 0 s, got {max_age}")
        self.max_age = max_age
        self.quality = quality
        self._last: dict[tuple[str, str], Sample] = {}
        self._marked: set[tuple[str, str]] = set()

    def observe(self, sample: Sample) -> None:
        key = (sample.asset, sample.tag)
        last = self._last.get(key)
        if last is None or sample.t >= last.t:
            self._last[key] = sample
            self._marked.discard(key)

    def expired(self, now: float) -> list[Sample]:
        """Stale marks (stamped ``now``) for tags last seen more than ``max_age`` ago."""
        marks = []
        for key, last in self._last.items():
            if key not in self._marked and now - last.t > self.max_age:
                self._marked.add(key)
                marks.append(mark_stale(last, now, self.quality))
        return marks
