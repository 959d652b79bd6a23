"""The ``[ASSUMPTION]`` parameters of a scenario file and of the files it ``extends:``.

A scenario labels a number that no source backs with a YAML comment containing
``[ASSUMPTION]`` on the same line, or in a block of comment lines right above its key.
:func:`assumptions` lists them with their ``file:line``, the key they set (a dotted path;
named list items by name, as ``extends:`` merges them) and the value as written, from the
root base file down to the file itself, and says which ones a later file overrides. The
comment block a file opens with is prose about the file, not a parameter: skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["Assumption", "assumptions", "extends_chain"]

MARK = "[ASSUMPTION"
_EXTENDS = re.compile(r"^extends:\s*['\"]?([^'\"#]+?)['\"]?\s*(?:#.*)?$")


@dataclass(frozen=True, slots=True)
class Assumption:
    """One labelled line: where, which key, the value as written and the comment."""

    file: Path
    line: int  # 1-based
    key: str  # dotted path, e.g. ``line.stages[lighting-inspection].inspection.time``
    value: str
    note: str  # the comment, without '#'
    # ``file:line`` of the last later file setting the same key ("partly file:line" when
    # it sets only some keys of a mapping, which extends: merges key by key)
    overridden_by: str | None = None
    last: int = 0  # the comment block's last line, when the mark stands above its key

    @property
    def status(self) -> str:
        """The row's status: in effect, overridden by f:n or partly overridden by f:n."""
        o = self.overridden_by
        if o is None:
            return "in effect"
        return f"partly overridden by {o[7:]}" if o.startswith("partly ") else f"overridden by {o}"

    @property
    def where(self) -> str:
        span = f"-{self.last}" if self.last > self.line else ""
        return f"{self.file.name}:{self.line}{span}"


def extends_chain(path: Path) -> list[Path]:
    """``path`` and the files it extends, the root base first (cycles stop the walk)."""
    chain: list[Path] = []
    seen: set[Path] = set()
    current: Path | None = Path(path)
    while current is not None and current.resolve() not in seen and current.is_file():
        seen.add(current.resolve())
        chain.append(current)
        current = _extends(current)
    return chain[::-1]


def assumptions(path: Path) -> list[Assumption]:
    """Every ``[ASSUMPTION]`` of ``path`` and its bases, root base first (blocking)."""
    per_file = []
    for file in extends_chain(path):
        text = file.read_text(encoding="utf-8", errors="replace")
        per_file.append((file, text, _key_lines(text)))
    out: list[Assumption] = []
    for i, (file, text, keys) in enumerate(per_file):
        for first, last, key_line, note in _marked(text.splitlines()):
            key, value, children = keys.get(key_line, ("", "", None))
            later = None
            for f, _text, k in per_file[i + 1 :]:
                for n, (other, _value, theirs) in sorted(k.items()):
                    if key and other == key:
                        # mappings merge key by key: a base key the later one lacks stays
                        partly = (
                            children is not None and theirs is not None and not children <= theirs
                        )
                        later = f"{'partly ' if partly else ''}{f.name}:{n}"
            out.append(Assumption(file, first, key, value, note, later, last))
    return out


def _marked(lines: list[str]) -> list[tuple[int, int, int, str]]:
    """(first marked line, last line, line of the key, comment) of each labelled place:
    a content line with the mark in its comment, or a block of comment lines with the mark
    somewhere (about the next content line). The file's header comment is prose: skipped."""
    out: list[tuple[int, int, int, str]] = []
    block: list[tuple[int, str]] = []  # the comment-only lines since the last content line
    seen_content = False
    for n, raw in enumerate(lines, start=1):
        content, comment = _split_comment(raw)
        if not content.strip():
            if comment or not raw.strip():
                block.append((n, comment.strip()))
            continue
        marked = [m for m, c in block if MARK in c]
        if seen_content and marked:
            note = " ".join(c for _m, c in block if c)
            out.append((marked[0], max(m for m, c in block if c), n, note))
        block = []
        seen_content = True
        if MARK in comment and content.strip() != "-":
            out.append((n, n, n, comment.strip()))
    return out


def _extends(path: Path) -> Path | None:
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EXTENDS.match(raw.strip())
        if m:
            ext = Path(m.group(1).strip())
            return ext if ext.is_absolute() else path.parent / ext
    return None


def _split_comment(line: str) -> tuple[str, str]:
    """(content, comment) of one YAML line: '#' starts a comment outside quotes, at the
    line's start or after whitespace."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i + 1 :]
    return line, ""


_KeyLine = tuple[str, str, frozenset[str] | None]


def _key_lines(text: str) -> dict[int, _KeyLine]:
    """Line (1-based) -> (key path, value text, the value's keys if a mapping) of the
    outermost key or list item starting on it; empty when the file is no valid YAML."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[int, _KeyLine] = {}

    def value_text(node: yaml.Node) -> str:
        span = text[node.start_mark.index : node.end_mark.index]
        parts = (_split_comment(ln)[0].strip() for ln in span.splitlines())
        joined = " ".join(p for p in parts if p)
        return joined if len(joined) <= 160 else joined[:157] + "..."

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                sub = f"{path}.{k.value}" if path else str(k.value)
                out.setdefault(k.start_mark.line + 1, (sub, value_text(v), _keys(v)))
                walk(v, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                name = _name_of(item)
                sub = f"{path}[{name if name is not None else i}]"
                out.setdefault(item.start_mark.line + 1, (sub, value_text(item), _keys(item)))
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return out


def _keys(node: yaml.Node) -> frozenset[str] | None:
    if isinstance(node, yaml.MappingNode):
        return frozenset(str(k.value) for k, _v in node.value)
    return None


def _name_of(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == "name" and isinstance(v, yaml.ScalarNode):
                return str(v.value)
    return None
