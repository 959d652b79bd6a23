"""Normalisation of collector inputs into Samples."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import pytest

from iiotbed.errors import UnsError
from iiotbed.gateway import (
    StaleMonitor,
    mark_stale,
    normalise_value,
    quality_from_status,
    seconds_since,
    to_sample,
    unit_code,
    unit_from_opcua,
)
from iiotbed.protocols.uns import decode_sample, encode_sample
from iiotbed.telemetry import Quality, Sample

EPOCH = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
BONDER = "tcl/huizhou/module-assembly/line-1/bonding/bonder-01"


def test_source_timestamp_is_preserved_as_seconds_since_epoch() -> None:
    src = dt.datetime(2026, 1, 5, 0, 1, 2, 345000, tzinfo=dt.UTC)  # 08:01:02.345 +08:00
    s = to_sample(BONDER, "Power", 3.5, source_ts=src, epoch=EPOCH, unit="kW", gateway_ts=9e9)
    assert s.t == pytest.approx(62.345)
    assert s.unit == "KWT" and s.gateway_ts == 9e9
    wire = decode_sample(encode_sample(s, epoch=EPOCH.timestamp(), run_id="r"))
    assert wire.source_ts == src  # the receive time never replaces the source time
    with pytest.raises(UnsError, match="UTC offset"):
        seconds_since(EPOCH, dt.datetime(2026, 1, 5))  # noqa: DTZ001 - the naive input under test
    with pytest.raises(UnsError, match="t= or source_ts="):
        to_sample(BONDER, "Power", 1.0)


@pytest.mark.parametrize(
    ("value", "quality", "expected"),
    [
        (4.2, Quality.Bad, (None, Quality.Bad)),
        (True, Quality.Good, (1, Quality.Good)),
        (math.nan, Quality.Good, (None, Quality.Bad)),
        (-math.inf, Quality.Uncertain, (None, Quality.Bad)),
        (None, Quality.Good, (None, Quality.Bad)),
        (None, Quality.Uncertain, (None, Quality.Uncertain)),
        ("Execute", Quality.Good, ("Execute", Quality.Good)),
        (np.float32(1.5), Quality.Good, (1.5, Quality.Good)),
        (Decimal("2.25"), Quality.Uncertain, (2.25, Quality.Uncertain)),
        (object(), Quality.Good, (None, Quality.Bad)),
    ],
)
def test_values_never_fabricated(
    value: object, quality: Quality, expected: tuple[object, Quality]
) -> None:
    got = normalise_value(value, quality)
    assert got == expected and type(got[0]) is type(expected[0])


def test_units_map_to_unece_codes() -> None:
    assert [unit_code(u) for u in ["kWh", "%", "°C", "KWH", "C62", "RPM", "MM/S", None, ""]] == [
        "KWH", "P1", "CEL", "KWH", "C62", "RPM", "C16", None, None,
    ]  # fmt: skip
    with pytest.raises(UnsError, match="furlongs"):
        unit_code("furlongs")
    # OPC UA EUInformation.UnitId packs the code's characters into an integer
    assert unit_from_opcua(int.from_bytes(b"KWH", "big")) == "KWH"
    assert unit_from_opcua(int.from_bytes(b"P1", "big")) == "P1"
    assert unit_from_opcua(-1) is None
    with pytest.raises(UnsError, match="UnitId"):
        unit_from_opcua(0x7F_FF_FF_FF)


def test_status_code_severity() -> None:
    assert quality_from_status(0) is Quality.Good
    assert quality_from_status(0x40920000) is Quality.Uncertain  # UncertainSubNormal
    assert quality_from_status(0x80000000) is Quality.Bad
    assert quality_from_status(0x808A0000) is Quality.Bad  # BadWaitingForInitialData


def test_stale_tags_are_marked_once_without_a_value() -> None:
    mon = StaleMonitor(max_age=10.0)
    mon.observe(Sample(0.0, BONDER, "Power", 3.0, "KWT", seq=4, gateway_ts=1.0, run_id="r"))
    mon.observe(Sample(5.0, BONDER, "Level", 2, run_id="r"))
    assert mon.expired(9.0) == []
    marks = mon.expired(12.0)
    assert marks == [Sample(12.0, BONDER, "Power", None, "KWT", Quality.Uncertain, None, None, "r")]
    assert mon.expired(14.0) == []  # once per silence
    mon.observe(Sample(14.5, BONDER, "Power", 3.1))
    assert [m.tag for m in mon.expired(16.0)] == ["Level"]
    assert [m.tag for m in mon.expired(30.0)] == ["Power"]  # re-armed by the fresh sample
    # a stale mark is a valid UNS record: no value, reduced quality
    encode_sample(marks[0], epoch=0.0, gateway_ts=1.0)
    bad = mark_stale(marks[0], 40.0, Quality.Bad)
    assert bad.value is None and bad.quality is Quality.Bad
    with pytest.raises(ValueError, match="Uncertain or Bad"):
        mark_stale(marks[0], 40.0, Quality.Good)
