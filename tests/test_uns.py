"""UNS topics and JSON codec: round trips, schema conformance, rejected payloads."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iiotbed.protocols.uns import (
    UnsError,
    current_topic,
    decode_batch,
    decode_event,
    decode_sample,
    encode_batch,
    encode_event,
    encode_sample,
    format_ts,
    join_batch,
    sample_id,
    schema,
    split_topic,
    stream_topic,
)
from iiotbed.telemetry import Event, Quality, Sample

EPOCH = dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp()
LINE = "tcl/huizhou/module-assembly/line-1"
BONDER = f"{LINE}/bonding/bonder-01"
VALIDATOR = jsonschema.Draft202012Validator(schema())


def good(**kw: Any) -> Sample:
    base: dict[str, Any] = dict(
        t=12.5,
        asset=BONDER,
        tag="ProcessedCount/lcm-55",
        value=42,
        unit="C62",
        gateway_ts=EPOCH + 13.0,
        seq=7,
        run_id="run-1",
    )
    base.update(kw)
    return Sample(**base)


def payload(**changes: Any) -> bytes:
    obj = orjson.loads(encode_sample(good(), epoch=EPOCH))
    for k, v in changes.items():
        if v is KeyError:
            del obj[k]
        else:
            obj[k] = v
    return orjson.dumps(obj)


# --------------------------------------------------------------------------- topics


def test_topics_keep_tag_levels_and_split_by_known_assets() -> None:
    topic = current_topic(BONDER, "ProcessedCount/lcm-55", root="uns-x")
    assert topic == f"uns-x/{BONDER}/ProcessedCount/lcm-55"
    assert stream_topic(LINE) == f"uns/_stream/{LINE}"
    assets = {LINE, BONDER, f"{LINE}/amr-01"}
    assert split_topic(topic, assets, root="uns-x") == (BONDER, "ProcessedCount/lcm-55")
    # a line-level tag with '/' is not mistaken for a deeper asset
    assert split_topic(f"uns/{LINE}/Headcount/operator", assets) == (LINE, "Headcount/operator")
    with pytest.raises(UnsError, match="no known asset"):
        split_topic(f"uns/{LINE}x/GoodCount", assets)
    with pytest.raises(UnsError, match="not under root"):
        split_topic(topic, assets, root="uns")


@pytest.mark.parametrize(
    ("asset", "tag"),
    [
        (BONDER, "a/+/b"),
        (BONDER, "#"),
        (f"{LINE}//x", "Level"),
        ("", "Level"),
        ("_stream/x", "T"),
        (BONDER, ""),
    ],
)
def test_topics_reject_wildcards_and_empty_levels(asset: str, tag: str) -> None:
    with pytest.raises(UnsError):
        current_topic(asset, tag)


# --------------------------------------------------------------------------- round trips

names = st.text(
    st.characters(
        min_codepoint=33,
        max_codepoint=0x2FFF,
        blacklist_characters="/+#",
        blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"),
    ),
    min_size=1,
    max_size=12,
)
paths = st.lists(names, min_size=1, max_size=6).map("/".join)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
units = st.one_of(st.none(), st.sampled_from(["KWH", "P1", "MTR", "C62", "CEL", "28"]))


@settings(max_examples=300, deadline=None)
@given(
    asset=paths,
    tag=paths,
    value=st.one_of(st.none(), values),
    unit=units,
    quality=st.sampled_from(list(Quality)),
    t=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    seq=st.one_of(st.none(), st.integers(0, 2**32)),
    gw=st.floats(min_value=0, max_value=4e9),
)
def test_sample_round_trip(
    asset: str,
    tag: str,
    value: float | int | str | None,
    unit: str | None,
    quality: Quality,
    t: float,
    seq: int | None,
    gw: float,
) -> None:
    s = Sample(t, asset, tag, value, unit, quality, gw, seq, "run-h")
    if value is None and quality is Quality.Good:
        with pytest.raises(UnsError, match="needs a value"):
            encode_sample(s, epoch=EPOCH)
        return
    data = encode_sample(s, epoch=EPOCH)
    VALIDATOR.validate(orjson.loads(data))
    u = decode_sample(data, topic=current_topic(asset, tag) if not asset.startswith("_") else None)
    want_value = None if quality is Quality.Bad else value
    assert u.sample.value == want_value and type(u.sample.value) is type(want_value)
    assert (u.sample.asset, u.sample.tag, u.sample.unit, u.sample.quality) == (
        asset,
        tag,
        unit,
        quality,
    )
    assert u.sample.t == t and u.sample.seq == seq and u.sample.run_id == "run-h"
    assert u.sample.gateway_ts is not None and abs(u.sample.gateway_ts - gw) <= 0.0005 + 1e-6
    assert abs(u.source_ts.timestamp() - (EPOCH + t)) <= 0.0005 + 1e-6
    assert u.id == sample_id("run-h", asset, tag, t, want_value, quality)


def test_id_is_deterministic_and_tells_resends_from_new_values() -> None:
    a = orjson.loads(encode_sample(good(), epoch=EPOCH))
    again = orjson.loads(encode_sample(good(gateway_ts=EPOCH + 99, seq=8), epoch=EPOCH))
    assert a["id"] == again["id"]  # a resend (later receive time) keeps its id
    ids = {
        orjson.loads(encode_sample(s, epoch=EPOCH))["id"]
        for s in [
            good(),
            good(value=43),
            good(t=12.6),
            good(value=42.0),
            good(run_id="run-2"),
            good(tag="ProcessedCount/lcm-65"),
            good(quality=Quality.Uncertain),
        ]
    }
    assert len(ids) == 7


def test_encoding_stamps_timestamps_and_drops_bad_values() -> None:
    obj = orjson.loads(encode_sample(good(value=3.5, quality=Quality.Bad), epoch=EPOCH))
    assert obj["value"] is None and obj["quality"] == "Bad"
    assert obj["source_ts"] == "2026-01-05T00:00:12.500Z"
    assert obj["gateway_ts"] == "2026-01-05T00:00:13.000Z"
    assert format_ts(EPOCH + 0.0004) == "2026-01-05T00:00:00.000Z"
    assert format_ts(EPOCH - 0.001) == "2026-01-04T23:59:59.999Z"
    # bool becomes an int (OPC UA Boolean nodes), run_id/gateway_ts fill in from arguments
    obj = orjson.loads(
        encode_sample(
            good(value=True, run_id=None, gateway_ts=None),
            epoch=EPOCH,
            run_id="r9",
            gateway_ts=EPOCH,
        )
    )
    assert obj["value"] == 1 and obj["value"] is not True and obj["run_id"] == "r9"


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        (good(value=math.nan), "value"),
        (good(value=math.inf), "value"),
        (good(value=None), "value"),
        (good(run_id=None), "run_id"),
        (good(gateway_ts=None), "gateway_ts"),
        (good(t=math.nan), "t"),
        (good(asset="a/+"), "asset"),
        (good(unit="kWh"), "unit"),
        (good(seq=-3), "seq"),
    ],
)
def test_encoding_refuses_what_the_schema_forbids(sample: Sample, field: str) -> None:
    with pytest.raises(UnsError) as info:
        encode_sample(sample, epoch=EPOCH)
    assert info.value.field == field


def test_batch_round_trip_with_events_and_prejoined_objects() -> None:
    samples = [good(t=float(i), value=i) for i in range(50)]
    ev = Event(3.0, BONDER, "UnitProduced", {"unit": "88.999.1/u-1", "waits": [0.5, 1.0]})
    data = encode_batch(samples, epoch=EPOCH, run_id="run-1", gateway_ts=EPOCH + 60, events=[ev])
    VALIDATOR.validate(orjson.loads(data))
    got, events = decode_batch(data)
    assert [u.sample for u in got] == [
        Sample(s.t, s.asset, s.tag, s.value, s.unit, s.quality, s.gateway_ts, s.seq, s.run_id)
        for s in samples
    ]
    assert events[0].event == ev and events[0].run_id == "run-1"
    joined = join_batch(
        [encode_sample(s, epoch=EPOCH) for s in samples],
        [encode_event(ev, epoch=EPOCH, run_id="run-1", gateway_ts=EPOCH + 60)],
    )
    assert decode_batch(joined) == (got, events)
    assert decode_batch(join_batch([])) == ([], [])
    assert decode_event(encode_event(ev, epoch=EPOCH, run_id="r", gateway_ts=EPOCH)).event == ev


# --------------------------------------------------------------------------- rejection


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b"{not json", None, "malformed JSON"),
        (b"[1, 2]", None, "expected a JSON object"),
        (payload(value=5, quality="Bad"), "value", "Bad sample carries no value"),
        (payload(value=None, quality="Good"), "value", "needs a value"),
        (payload(value=True), "value", "number, a string or null"),
        (payload(value={"x": 1}), "value", "number, a string or null"),
        (payload(quality="good"), "quality", "Good/Uncertain/Bad"),
        (payload(t="12.5"), "t", "expected a number"),
        (payload(seq=-1), "seq", "non-negative"),
        (payload(seq=1.5), "seq", "non-negative"),
        (payload(unit="kWh"), "unit", "UNECE"),
        (payload(source_ts="yesterday"), "source_ts", "ISO 8601"),
        (payload(gateway_ts="2026-01-05T08:00:00+08:00"), "gateway_ts", "UTC"),
        (payload(id="XYZ"), "id", "hex"),
        (payload(asset=""), "asset", "non-empty string"),
        (payload(run_id=KeyError), "run_id", "missing field"),
        (payload(tag=KeyError, unit=KeyError), "tag", "missing field"),
    ],
)
def test_bad_payloads_are_rejected_with_reasons(
    data: bytes, field: str | None, reason: str
) -> None:
    with pytest.raises(UnsError, match=reason) as info:
        decode_sample(data)
    assert info.value.field == field
    # anything the hand-written decoder rejects, the JSON Schema rejects too
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    assert not VALIDATOR.is_valid(obj)


def test_topic_must_match_payload_and_batches_are_all_or_nothing() -> None:
    data = encode_sample(good(), epoch=EPOCH)
    with pytest.raises(UnsError, match="not this topic") as info:
        decode_sample(data, topic=f"uns/{BONDER}/GoodCount")
    assert info.value.topic == f"uns/{BONDER}/GoodCount"
    broken = join_batch([data, payload(quality="Bad")])
    with pytest.raises(UnsError, match="Bad sample"):
        decode_batch(broken, topic="uns/_stream/x")
    with pytest.raises(UnsError, match='"samples" array'):
        decode_batch(b'{"sample": []}')
    with pytest.raises(UnsError, match="expected an array"):
        decode_batch(b'{"samples": [], "events": {}}')
