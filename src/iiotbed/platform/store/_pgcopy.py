"""The PostgreSQL store's binary COPY rows of a batch of samples, packed in one loop.

Binary COPY: a signature, flags and header extension; per row the field count, then per
field its length (-1: NULL) and bytes; the trailer is a field count of -1. The columns,
in the order packed here: run, series, n, t, source_ts, value_num, gateway_ts, seq,
value_text, unit, quality (``postgres._SAMPLE_COLS``): the fixed-size fields first, so a
usual row is one ``struct`` pack and one cached tail.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from iiotbed.platform.store import _rollup
from iiotbed.telemetry import Sample

__all__ = ["COPY_HEAD", "COPY_TAIL", "Folded", "build_payload", "pack_rows"]

# binary COPY: signature, flags and header extension; a row: field count, then per field
# its length (-1: NULL) and bytes; the trailer: field count -1
COPY_HEAD: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TAIL: Final = b"\xff\xff"
_NULL: Final = b"\xff\xff\xff\xff"
_N_T_TS_NUM: Final = struct.Struct(">iqidiqid").pack  # n, t, source_ts, value_num
_N_T_TS: Final = struct.Struct(">iqidiq").pack  # n, t, source_ts
_LEN: Final = struct.Struct(">i").pack
_INT8: Final = struct.Struct(">iq").pack
_FLOAT8: Final = struct.Struct(">id").pack
_INT2: Final = struct.Struct(">ih").pack
_SERIES: Final = struct.Struct(">hiiii").pack  # 11 fields, run and series (int4 each)
_PG_EPOCH: Final = 946684800.0  # 2000-01-01 in Unix seconds
_NO_CHECK: Final[Mapping[int, float]] = {}


@dataclass(slots=True)
class Folded:
    """What the rollups need of a batch, folded in while its rows are packed: the counter
    buckets' maxima (``_rollup.add_counter``), the earliest state sample's t and the
    latest t. Folding a sample twice changes nothing."""

    counters: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    state_min_t: float | None = None
    max_t: float = -math.inf


def _key(s: Sample) -> tuple[Any, ...]:
    """What the samples' key compares of a sample besides series and t: value and quality."""
    v = s.value
    if v is None or type(v) is str:
        return (None, v, int(s.quality))
    f = float(v)
    return (None if f != f else f, None, int(s.quality))


def pack_rows(
    samples: Sequence[Sample],
    ids: dict[str, dict[str, tuple[int, int]]],
    rk: int,
    epoch: float,
    ns: Sequence[int],
    folded: Folded,
    encoding: str = "utf-8",
    after: Mapping[int, float] | None = None,
    chunk: int | None = None,
) -> Iterator[tuple[int, bytes]]:
    """The binary COPY rows of ``samples`` (no header, no trailer), ``chunk`` samples at a
    time (all at once by default): per chunk, how many samples are packed so far and the
    chunk's rows. KeyError on an unknown series (the caller makes the series first).

    With ``after`` (each series' newest stored t), packing stops before a chunk holding a
    sample that may repeat another: one not later than its series' stored ones, or equal
    to an earlier one of the batch, or after its series' time went back. The chunks
    yielded until then hold no such sample: they can go straight into ``samples``.

    Row ``i`` carries ``ns[i]`` as its insertion order ``n``; within a chunk the rows go
    out grouped by series (in the batch's order within each), so the samples' index takes
    each series' rows at one leaf after another rather than one leaf per row. Each row is
    packed here, without a formatter call per value: run and series once per series and
    chunk, unit and quality once per pair.
    """
    check = after is not None
    stored = _NO_CHECK if after is None else after
    last: dict[int, Sample] = {}  # each series' previous sample in the batch
    ties: dict[tuple[int, float], set[tuple[Any, ...]]] = {}  # keys at a t seen twice
    ordered = True
    counters = folded.counters
    add_counter = _rollup.add_counter
    state = _rollup.STATE
    # unit and quality fields; and after gateway_ts, seq and value_text all NULL
    tails: dict[tuple[str | None, int], tuple[bytes, bytes]] = {}
    nulls3 = _NULL * 3
    state_min = math.inf if folded.state_min_t is None else folded.state_min_t
    max_t = folded.max_t
    total = len(samples)
    step = total if chunk is None else max(1, chunk)
    for start in range(0, total, step):
        end = min(start + step, total)
        by_series: dict[int, list[bytes]] = {}
        # one pass, no calls but struct packing and the counter fold: the ingest hot path
        for s, n in zip(samples[start:end], ns[start:end], strict=True):
            sid, kind = ids[s.asset][s.tag]
            v = s.value
            tv = type(v)
            t = s.t
            q = s.quality
            # source_ts = to_timestamp(epoch + t), to the microsecond as PostgreSQL rounds it
            ts = round((epoch + t - _PG_EPOCH) * 1e6)
            text: str | None = None
            num: Any
            if tv is float:
                if v == v:
                    num = v
                    head = _N_T_TS_NUM(8, n, 8, t, 8, ts, 8, v)
                else:  # NaN is no value
                    num = None
                    head = _N_T_TS(8, n, 8, t, 8, ts) + _NULL
            elif tv is int:
                num = float(v)  # type: ignore[arg-type]
                head = _N_T_TS_NUM(8, n, 8, t, 8, ts, 8, num)
            elif tv is str:
                num = None
                text = v  # type: ignore[assignment]
                head = _N_T_TS(8, n, 8, t, 8, ts) + _NULL
            elif v is None:
                num = None
                head = _N_T_TS(8, n, 8, t, 8, ts) + _NULL
            else:
                num = float(v)
                head = _N_T_TS_NUM(8, n, 8, t, 8, ts, 8, num)
            unit = s.unit
            tail = tails.get((unit, q))
            if tail is None:
                u = _NULL if unit is None else _LEN(len(b := unit.encode(encoding))) + b
                tail = tails[(unit, q)] = (u + _INT2(2, int(q)), nulls3 + u + _INT2(2, int(q)))
            g, seq = s.gateway_ts, s.seq
            if g is None and seq is None and text is None:
                row = head + tail[1]  # the usual row: one pack, one join
            else:
                if text is None:
                    tx = _NULL
                else:
                    data = text.encode(encoding)
                    tx = _LEN(len(data)) + data
                row = (
                    head + (_NULL if g is None else _FLOAT8(8, g))
                    + (_NULL if seq is None else _INT8(8, seq)) + tx + tail[0]
                )  # fmt: skip
            rows = by_series.get(sid)
            if rows is None:
                by_series[sid] = [row]
            else:
                rows.append(row)
            prev = last.get(sid)
            if prev is None:
                if check and t <= stored.get(sid, -math.inf):
                    ordered = False
            elif t <= prev.t and ordered:
                # samples of one series at one t are usual (events at one instant); only
                # an equal one, or a time going back, makes the rest go by staging
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
        folded.state_min_t = None if state_min == math.inf else state_min
        folded.max_t = max_t
        if check and not ordered:
            return
        out = []
        for sid in sorted(by_series):
            lead = _SERIES(11, 4, rk, 4, sid)
            out.append(lead)
            out.append(lead.join(by_series[sid]))
        yield end, b"".join(out)


def build_payload(
    samples: Sequence[Sample],
    ids: dict[str, dict[str, tuple[int, int]]],
    rk: int,
    epoch: float,
    ns: Sequence[int],
    folded: Folded,
    encoding: str = "utf-8",
) -> bytes:
    """The whole binary COPY payload of ``samples`` (for the staging table: no checks);
    KeyError on an unknown series."""
    rows = [data for _, data in pack_rows(samples, ids, rk, epoch, ns, folded, encoding)]
    return b"".join([COPY_HEAD, *rows, COPY_TAIL])
