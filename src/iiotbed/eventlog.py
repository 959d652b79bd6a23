"""Event logs: records as JSON Lines, one record per line, compact and deterministic.

A Sample line: ``{"t":..,"asset":..,"tag":..,"value":..[,"unit":..][,"quality":..]
[,"gateway_ts":..][,"seq":..][,"run_id":..]}``; an Event line:
``{"t":..,"asset":..,"event":..,"fields":{..}}`` with field keys sorted. Optional keys are
left out when they hold their default. See ``docs/event-log.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from iiotbed.errors import EventLogError, StorageError
from iiotbed.telemetry import Event, Quality, Record, Sample

__all__ = ["KeyNames", "dump_columns", "dump_records", "load_records", "record_to_json",
           "write_event_log", "write_event_log_columns"]

#: what a column key stands for: ``(False, asset, tag, unit)`` for a Good sample's key,
#: ``(True, asset, event name, None)`` for an event's
KeyNames = Callable[[Any], "tuple[bool, str, str, str | None]"]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=False,
                            allow_nan=False)
_FIELDS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                                   allow_nan=False)


def record_to_json(r: Record) -> str:
    """One record as a compact JSON object, keys in a fixed order."""
    if isinstance(r, Sample):
        d: dict[str, Any] = {"t": r.t, "asset": r.asset, "tag": r.tag, "value": r.value}
        if r.unit is not None:
            d["unit"] = r.unit
        if r.quality is not Quality.Good:
            d["quality"] = int(r.quality)
        if r.gateway_ts is not None:
            d["gateway_ts"] = r.gateway_ts
        if r.seq is not None:
            d["seq"] = r.seq
        if r.run_id is not None:
            d["run_id"] = r.run_id
        return _ENCODER.encode(d)
    head = _ENCODER.encode({"t": r.t, "asset": r.asset, "event": r.name})
    return f'{head[:-1]},"fields":{_FIELDS_ENCODER.encode(r.fields)}}}'


def _scalar(v: Any) -> str:
    """``_ENCODER.encode(v)``, with plain ints and finite floats (nearly every value) done directly."""
    tv = type(v)
    if (tv is float and math.isfinite(v)) or tv is int:
        return repr(v)
    return _ENCODER.encode(v)


class _Lines:
    """``record_to_json`` for a stream of records: the text around a sample's ``t`` and
    ``value`` is cached per (asset, tag, unit), which a log repeats a few hundred times.
    Samples with non-default optional keys and events go through ``record_to_json``."""

    def __init__(self) -> None:
        self._parts: dict[tuple[Any, Any, Any], tuple[str, str]] = {}

    def __call__(self, r: Record) -> str:
        if (type(r) is Sample and r.quality is Quality.Good and r.gateway_ts is None
                and r.seq is None and r.run_id is None):
            key = (r.asset, r.tag, r.unit)
            parts = self._parts.get(key)
            if parts is None:
                # JSON of an object = its keys and values encoded one by one, in order
                mid = f',"asset":{_ENCODER.encode(r.asset)},"tag":{_ENCODER.encode(r.tag)},"value":'
                end = "}" if r.unit is None else f',"unit":{_ENCODER.encode(r.unit)}}}'
                parts = self._parts[key] = (mid, end)
            t, v = r.t, r.value
            # _scalar inlined for t (a finite float: t - t == 0) and plain int values
            ts = repr(t) if type(t) is float and t - t == 0.0 else _ENCODER.encode(t)
            vs = repr(v) if type(v) is int else _scalar(v)
            return f'{{"t":{ts}{parts[0]}{vs}{parts[1]}'
        return record_to_json(r)


def dump_records(records: Iterable[Record], fp: TextIO) -> int:
    """Write records as JSON Lines to ``fp``; returns the number of lines written."""
    n = 0
    buf: list[str] = []
    line = _Lines()
    for r in records:
        buf.append(line(r))
        n += 1
        if len(buf) >= 4096:
            fp.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        fp.write("\n".join(buf) + "\n")
    return n


def dump_columns(times: Sequence[float], keys: Sequence[Hashable], values: Sequence[Any],
                 names: KeyNames, fp: TextIO) -> int:
    """Write records given as columns (record ``i``: ``times[i]``, what ``names(keys[i])``
    says, ``values[i]`` - a sample's value or an event's fields) as JSON Lines; the same
    bytes as :func:`dump_records` of the records they stand for, without building them.
    Returns the number of lines written."""
    # per key: (text between t and value, text after it) of a sample, or (asset, name) of an
    # event; see _Lines
    parts: dict[Hashable, tuple[str, str, bool]] = {}
    buf: list[str] = []
    n = 0
    for t, key, v in zip(times, keys, values, strict=True):
        p = parts.get(key)
        if p is None:
            is_event, asset, tag, unit = names(key)
            if is_event:
                p = parts[key] = (asset, tag, True)
            else:
                mid = f',"asset":{_ENCODER.encode(asset)},"tag":{_ENCODER.encode(tag)},"value":'
                end = "}" if unit is None else f',"unit":{_ENCODER.encode(unit)}}}'
                p = parts[key] = (mid, end, False)
        if p[2]:
            buf.append(record_to_json(Event(t, p[0], p[1], v)))
        else:
            ts = repr(t) if type(t) is float and t - t == 0.0 else _ENCODER.encode(t)
            vs = repr(v) if type(v) is int else _scalar(v)
            buf.append(f'{{"t":{ts}{p[0]}{vs}{p[1]}')
        n += 1
        if len(buf) >= 4096:
            fp.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        fp.write("\n".join(buf) + "\n")
    return n


def write_event_log(records: Iterable[Record], path: Path) -> int:
    """Write records to the file ``path`` (UTF-8, ``\\n`` line ends); returns lines written."""
    return _write(path, lambda fp: dump_records(records, fp))


def write_event_log_columns(times: Sequence[float], keys: Sequence[Hashable],
                            values: Sequence[Any], names: KeyNames, path: Path) -> int:
    """:func:`write_event_log` of records given as columns (see :func:`dump_columns`)."""
    return _write(path, lambda fp: dump_columns(times, keys, values, names, fp))


def _write(path: Path, dump: Callable[[TextIO], int]) -> int:
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8", newline="\n") as fp:
            return dump(fp)
    except OSError as exc:
        raise StorageError(f"cannot write event log {path}: {exc.strerror}; check the directory",
                           url=str(path)) from exc


def _num(d: dict[str, Any], key: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key!r} must be a number, got {v!r}")
    return float(v)


def _str(d: dict[str, Any], key: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise ValueError(f"{key!r} must be a string, got {v!r}")
    return v


def _parse(text: str) -> Record:
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    if "tag" in d:
        extra = set(d) - {"t", "asset", "tag", "value", "unit", "quality", "gateway_ts", "seq",
                          "run_id"}
        if extra:
            raise ValueError(f"unknown key(s) {', '.join(sorted(extra))} in a sample")
        value = d.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | str)):
            raise ValueError(f"'value' must be a number, a string or null, got {value!r}")
        return Sample(
            t=_num(d, "t"), asset=_str(d, "asset"), tag=_str(d, "tag"), value=value,
            unit=d.get("unit"), quality=Quality(d.get("quality", 0)),
            gateway_ts=d.get("gateway_ts"), seq=d.get("seq"), run_id=d.get("run_id"),
        )
    if "event" in d:
        fields = d.get("fields", {})
        if not isinstance(fields, dict):
            raise ValueError(f"'fields' must be an object, got {fields!r}")
        return Event(t=_num(d, "t"), asset=_str(d, "asset"), name=_str(d, "event"), fields=fields)
    raise ValueError("a record needs 'tag' (a sample) or 'event' (an event)")


def load_records(path: Path) -> list[Record]:
    """Read an event log; a bad line raises :class:`EventLogError` naming ``file:line``."""
    path = Path(path)
    out: list[Record] = []
    try:
        fp = path.open(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read event log {path}: {exc.strerror}", url=str(path)) from exc
    with fp:
        for i, line in enumerate(fp, 1):
            if not line.strip():
                continue
            try:
                out.append(_parse(line))
            except KeyError as exc:
                raise EventLogError(f"missing key {exc.args[0]!r}; each record needs t and asset",
                                    path=path, line=i) from None
            except (ValueError, TypeError) as exc:
                raise EventLogError(f"not an event-log record: {exc}", path=path, line=i) from None
    return out
