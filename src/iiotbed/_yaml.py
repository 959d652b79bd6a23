"""YAML loading that remembers where every value came from (file and line).

``load_located(path)`` returns plain Python data plus a map from each value's path
(a tuple of keys and list indices) to its origin, so a validation error can point at
``file:line``. ``extends:`` is resolved here: the extending file is deep-merged over its
base (mappings key by key, lists of named mappings item by ``name``, other values replaced).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import yaml

from iiotbed.errors import ScenarioError

__all__ = ["Located", "Origin", "load_located"]

Origin = tuple[Path, int]
Loc = tuple[str | int, ...]


class Located:
    """Data from YAML with the origin (file, 1-based line) of every value."""

    __slots__ = ("base", "base_doc", "data", "origins")

    def __init__(
        self,
        data: Any,
        origins: dict[Loc, Origin],
        base: Path | None = None,
        base_doc: Located | None = None,
    ) -> None:
        self.data = data
        self.origins = origins
        self.base = base  # the file this one extends, if any
        self.base_doc = base_doc  # that file as loaded (its own extends resolved)

    def origin_of(self, loc: Loc) -> Origin | None:
        """Origin of ``loc`` or of its nearest located ancestor."""
        for n in range(len(loc), -1, -1):
            o = self.origins.get(tuple(loc[:n]))
            if o is not None:
                return o
        return None


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings (pydantic parses them, with offsets)."""


# Keep ISO timestamps as text: PyYAML would drop a +08:00 offset into a naive datetime.
# Booleans are YAML 1.2's true/false only, so keys such as `off` or `no` stay names.
_Loader.yaml_implicit_resolvers = {
    k: [
        (tag, rx)
        for tag, rx in v
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct(
    node: yaml.Node, loader: _Loader, path: Path, loc: Loc, origins: dict[Loc, Origin]
) -> Any:
    origins[loc] = (path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                raise ScenarioError.single(
                    path, key_node.start_mark.line + 1, f"mapping key must be a name, got {key!r}"
                )
            skey = str(key)
            if skey in out:
                raise ScenarioError.single(
                    path,
                    key_node.start_mark.line + 1,
                    f"duplicate key {skey!r}; each key may appear once in a mapping",
                )
            out[skey] = _construct(value_node, loader, path, (*loc, skey), origins)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, loader, path, (*loc, i), origins) for i, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, dt.date | dt.datetime):  # pragma: no cover - resolver removed above
        return value.isoformat()
    return value


def _reader_error(path: Path, text: str, exc: yaml.reader.ReaderError) -> ScenarioError:
    """A character YAML forbids (NUL, another control character), at its line and column."""
    pos = exc.position if 0 <= exc.position <= len(text) else 0
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or b"\0")
    return ScenarioError.single(
        path,
        line,
        f"control character U+{char:04X} at column {column} is not allowed in YAML; "
        "remove it (a NUL often means a binary or UTF-16 file)",
    )


def _load_one(path: Path) -> Located:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError.single(
            path, None, "file not found; give the path of a YAML scenario"
        ) from None
    except IsADirectoryError:
        raise ScenarioError.single(
            path, None, "is a directory, not a file; give the path of a YAML scenario"
        ) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError.single(
            path,
            None,
            f"cannot read file: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
        ) from None
    except OSError as exc:
        raise ScenarioError.single(path, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        # the reader checks every character when it is built: a NUL or another control
        # character raises here, not while parsing
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    try:
        node = loader.get_single_node()
        origins: dict[Loc, Origin] = {}
        data = {} if node is None else _construct(node, loader, path, (), origins)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        problem = exc.problem or "invalid YAML"
        raise ScenarioError.single(path, line, f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    except yaml.YAMLError as exc:
        raise ScenarioError.single(path, None, f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ScenarioError.single(
            path, 1, f"a scenario must be a mapping of sections, got {type(data).__name__}"
        )
    origins.setdefault((), (path, 1))
    return Located(data, origins)


def _merge(
    base: Any,
    over: Any,
    loc: Loc,
    bo: dict[Loc, Origin],
    oo: dict[Loc, Origin],
    out: dict[Loc, Origin],
    base_loc: Loc,
    over_loc: Loc,
) -> Any:
    """Deep-merge ``over`` onto ``base``; record origins of the result under ``loc``."""
    if isinstance(base, dict) and isinstance(over, dict):
        out[loc] = oo.get(over_loc, bo.get(base_loc, next(iter(oo.values()))))
        result: dict[str, Any] = {}
        for k in base:
            if k in over:
                result[k] = _merge(
                    base[k], over[k], (*loc, k), bo, oo, out, (*base_loc, k), (*over_loc, k)
                )
            else:
                result[k] = _copy(base[k], (*loc, k), bo, out, (*base_loc, k))
        for k in over:
            if k not in base:
                result[k] = _copy(over[k], (*loc, k), oo, out, (*over_loc, k))
        return result
    if (
        isinstance(base, list)
        and isinstance(over, list)
        and all(isinstance(i, dict) and "name" in i for i in base + over)
    ):
        out[loc] = oo.get(over_loc, bo.get(base_loc, next(iter(oo.values()))))
        by_name = {str(i["name"]): n for n, i in enumerate(over)}
        merged: list[Any] = []
        used: set[str] = set()
        for bi, item in enumerate(base):
            name = str(item["name"])
            if name in by_name:
                oi = by_name[name]
                used.add(name)
                merged.append(
                    _merge(
                        item,
                        over[oi],
                        (*loc, len(merged)),
                        bo,
                        oo,
                        out,
                        (*base_loc, bi),
                        (*over_loc, oi),
                    )
                )
            else:
                merged.append(_copy(item, (*loc, len(merged)), bo, out, (*base_loc, bi)))
        for oi, item in enumerate(over):
            if str(item["name"]) not in used:
                merged.append(_copy(item, (*loc, len(merged)), oo, out, (*over_loc, oi)))
        return merged
    return _copy(over, loc, oo, out, over_loc)


def _copy(
    value: Any, loc: Loc, src: dict[Loc, Origin], out: dict[Loc, Origin], src_loc: Loc
) -> Any:
    o = src.get(src_loc)
    if o is not None:
        out[loc] = o
    if isinstance(value, dict):
        return {k: _copy(v, (*loc, k), src, out, (*src_loc, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v, (*loc, i), src, out, (*src_loc, i)) for i, v in enumerate(value)]
    return value


def load_located(path: Path, _chain: tuple[Path, ...] = ()) -> Located:
    """Load ``path``, resolving ``extends:`` (relative to the extending file)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ScenarioError.single(path, None, f"'extends' forms a cycle: {cycle}")
    doc = _load_one(path)
    ext = doc.data.pop("extends", None)
    if ext is None:
        return doc
    line = doc.origins.get(("extends",), (path, 1))[1]
    if not isinstance(ext, str) or not ext.strip():
        raise ScenarioError.single(
            path, line, f"extends must be the path of a base scenario file, got {ext!r}", "extends"
        )
    base_path = (path.parent / ext) if not Path(ext).is_absolute() else Path(ext)
    if not base_path.exists():
        raise ScenarioError.single(
            path, line, f"extends names {ext!r}, but {base_path} does not exist", "extends"
        )
    base = load_located(base_path, (*_chain, resolved))
    origins: dict[Loc, Origin] = {}
    merged = _merge(base.data, doc.data, (), base.origins, doc.origins, origins, (), ())
    origins[()] = (path, 1)
    return Located(merged, origins, base_path, base)
