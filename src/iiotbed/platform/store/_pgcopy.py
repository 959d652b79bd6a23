"""The PostgreSQL store's binary COPY payload of a batch of samples, packed in one loop.

Binary COPY: a signature, flags and header extension; per row the field count, then per
field its length (-1: NULL) and bytes; the trailer is a field count of -1. The columns,
in the order packed here: run, series, n, t, value_num, value_text, unit, quality,
gateway_ts, seq, source_ts (``postgres._SAMPLE_COLS``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

from iiotbed.platform.store import _rollup
from iiotbed.telemetry import Sample

__all__ = ["build_payload"]

# binary COPY: signature, flags and header extension; a row: field count, then per field
# its length (-1: NULL) and bytes; the trailer: field count -1
_COPY_HEAD: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TAIL: Final = b"\xff\xff"
_NULL: Final = b"\xff\xff\xff\xff"
_N_T_NUM: Final = struct.Struct(">iqidid").pack  # n, t, value_num
_N_T: Final = struct.Struct(">iqid").pack  # n, t
_LEN: Final = struct.Struct(">i").pack
_INT8: Final = struct.Struct(">iq").pack
_FLOAT8: Final = struct.Struct(">id").pack
_INT2: Final = struct.Struct(">ih").pack
_SERIES: Final = struct.Struct(">hiiii").pack  # 11 fields, run and series (int4 each)
_PG_EPOCH: Final = 946684800.0  # 2000-01-01 in Unix seconds


def _key(s: Sample) -> tuple[Any, ...]:
    """What the samples' key compares of a sample besides series and t: value and quality."""
    v = s.value
    if v is None or type(v) is str:
        return (None, v, int(s.quality))
    f = float(v)
    return (None if f != f else f, None, int(s.quality))


def build_payload(
    samples: Sequence[Sample],
    ids: dict[str, dict[str, tuple[int, int]]],
    rk: int,
    epoch: float,
    ns: Sequence[int],
    encoding: str = "utf-8",
) -> tuple[bytes, dict[int, float] | None, dict[tuple[int, int], list[float]], float | None, float]:
    """The binary COPY payload of ``samples``, each series' earliest t (None when the
    batch may repeat a sample: a series' time goes back, or two of its samples are equal),
    and what the rollups need; KeyError on an unknown series.

    Row ``i`` carries ``ns[i]`` as its insertion order ``n``; the rows go out grouped by
    series (in the batch's order within each), so the unique key's B-tree takes each
    series' rows at one leaf after another rather than one leaf per row. Each row is
    packed here, without a formatter call per value: run and series once per series,
    unit and quality once per pair.
    """
    # one pass, no calls but struct packing and the counter fold: the ingest hot path
    by_series: dict[int, list[bytes]] = {}
    first: dict[int, float] = {}
    last: dict[int, Sample] = {}  # each series' previous sample in the batch
    ties: dict[tuple[int, float], set[tuple[Any, ...]]] = {}  # keys at a t seen twice
    ordered = True
    counters: dict[tuple[int, int], list[float]] = {}
    add_counter = _rollup.add_counter
    state = _rollup.STATE
    tails: dict[tuple[str | None, int], bytes] = {}  # unit and quality fields
    nulls2 = _NULL + _NULL
    state_min = math.inf
    max_t = -math.inf
    for s, n in zip(samples, ns, strict=True):
        sid, kind = ids[s.asset][s.tag]
        v = s.value
        tv = type(v)
        t = s.t
        q = s.quality
        text: str | None = None
        num: Any
        if tv is float:
            if v == v:
                num = v
                head = _N_T_NUM(8, n, 8, t, 8, v) + _NULL
            else:  # NaN is no value
                num = None
                head = _N_T(8, n, 8, t) + nulls2
        elif tv is int:
            num = float(v)  # type: ignore[arg-type]
            head = _N_T_NUM(8, n, 8, t, 8, num) + _NULL
        elif tv is str:
            num = None
            text = v  # type: ignore[assignment]
            data = v.encode(encoding)  # type: ignore[union-attr]
            head = _N_T(8, n, 8, t) + _NULL + _LEN(len(data)) + data
        elif v is None:
            num = None
            head = _N_T(8, n, 8, t) + nulls2
        else:
            num = float(v)
            head = _N_T_NUM(8, n, 8, t, 8, num) + _NULL
        unit = s.unit
        tail = tails.get((unit, q))
        if tail is None:
            u = _NULL if unit is None else _LEN(len(b := unit.encode(encoding))) + b
            tail = tails[(unit, q)] = u + _INT2(2, int(q))
        g, seq = s.gateway_ts, s.seq
        # to_timestamp(epoch + t), to the microsecond as PostgreSQL rounds it
        ts = _INT8(8, round((epoch + t - _PG_EPOCH) * 1e6))
        if g is None and seq is None:
            row = head + tail + nulls2 + ts
        else:
            row = (
                head + tail + (_NULL if g is None else _FLOAT8(8, g))
                + (_NULL if seq is None else _INT8(8, seq)) + ts
            )  # fmt: skip
        rows = by_series.get(sid)
        if rows is None:
            by_series[sid] = [row]
            first[sid] = t
        else:
            rows.append(row)
            prev = last[sid]
            if t <= prev.t and ordered:
                # samples of one series at one t are usual (events at one instant); only
                # an equal one, or a time going back, makes the batch go by staging
                if t < prev.t:
                    ordered = False
                else:
                    keys = ties.get((sid, t))
                    if keys is None:
                        keys = ties[(sid, t)] = {_key(prev)}
                    k = _key(s)
                    if k in keys:
                        ordered = False
                    keys.add(k)
        last[sid] = s
        if kind:
            if kind == state:
                if t < state_min:
                    state_min = t
            else:
                add_counter(counters, sid, t, num if text is None else text, q)
        if t > max_t:
            max_t = t
    out = [_COPY_HEAD]
    for sid in sorted(by_series):
        lead = _SERIES(11, 4, rk, 4, sid)
        out.append(lead)
        out.append(lead.join(by_series[sid]))
    out.append(_COPY_TAIL)
    state_min_t = None if state_min == math.inf else state_min
    return b"".join(out), (first if ordered else None), counters, state_min_t, max_t
