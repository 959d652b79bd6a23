"""The ``[ASSUMPTION]`` parameters of a scenario file and of the files it ``extends:``.

A scenario labels a number that no source backs with a YAML comment containing
``[ASSUMPTION]`` on the same line. :func:`assumptions` lists those lines with their
``file:line``, the key they set (a dotted path; named list items by name, as ``extends:``
merges them) and the value as written, from the root base file down to the file itself,
and says which ones a later file overrides. Comment-only lines (a file's prose header)
set no parameter and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
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
    overridden_by: str | None = None  # ``file:line`` of a later file setting the same key

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.line}"


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
    """Every ``[ASSUMPTION]`` line of ``path`` and its bases, root base first (blocking)."""
    per_file = []
    for file in extends_chain(path):
        text = file.read_text(encoding="utf-8", errors="replace")
        per_file.append((file, text, _key_lines(text)))
    out: list[Assumption] = []
    for i, (file, text, keys) in enumerate(per_file):
        lines = text.splitlines()
        for n, raw in enumerate(lines, start=1):
            content, comment = _split_comment(raw)
            if MARK not in comment or not content.strip() or content.strip() == "-":
                continue
            key, value = keys.get(n, ("", content.strip()))
            later = next(
                (
                    f"{f.name}:{where}"
                    for f, _t, k in per_file[i + 1 :]
                    for where, (kk, _v) in sorted(k.items())
                    if key and kk == key
                ),
                None,
            )
            out.append(Assumption(file, n, key, value, comment.strip(), None))
            if later is not None:
                out[-1] = replace(out[-1], overridden_by=later)
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


def _key_lines(text: str) -> dict[int, tuple[str, str]]:
    """Line (1-based) -> (key path, value text) of the outermost key or list item that
    starts on it; empty when the file is no valid YAML (the lines are listed keyless)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[int, tuple[str, str]] = {}

    def value_text(node: yaml.Node) -> str:
        span = text[node.start_mark.index : node.end_mark.index]
        parts = (_split_comment(ln)[0].strip() for ln in span.splitlines())
        joined = " ".join(p for p in parts if p)
        return joined if len(joined) <= 160 else joined[:157] + "..."

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                sub = f"{path}.{k.value}" if path else str(k.value)
                out.setdefault(k.start_mark.line + 1, (sub, value_text(v)))
                walk(v, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                name = _name_of(item)
                sub = f"{path}[{name if name is not None else i}]"
                out.setdefault(item.start_mark.line + 1, (sub, value_text(item)))
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return out


def _name_of(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == "name" and isinstance(v, yaml.ScalarNode):
                return str(v.value)
    return None
