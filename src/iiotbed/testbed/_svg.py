"""Inline SVG charts for the HTML report, written by hand: no library, no external file.

Every function returns an ``<svg>`` element as text (HTML5 inline SVG needs no ``xmlns``);
all text passes through :func:`html.escape`. Elements carrying a number of the JSON report
have ``data-json="<path>"`` so a test can read them back from the DOM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TypeGuard

__all__ = [
    "Interval",
    "Series",
    "interval_chart",
    "line_chart",
    "mini_pair",
    "nice_ticks",
    "waterfall",
]

INK, GRID, GOAL = "#222", "#ddd", "#c0392b"
BASE, UPGRADE = "#5b7aa6", "#e08a1e"
GOOD, LOSS, GAIN = "#3a8f5c", "#c9c9c9", "#c0392b"


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean and its 95 % CI on a chart row; ``json`` is the report path of the mean."""

    label: str
    mean: float | None
    lo: float | None
    hi: float | None
    color: str = INK
    json: str = ""
    points: tuple[float, ...] = ()  # per-replication values, drawn as dots


@dataclass(frozen=True, slots=True)
class Series:
    """A line of (t in hours, value) points."""

    label: str
    color: str
    points: tuple[tuple[float, float], ...]


def _f(x: float) -> str:
    return f"{x:.1f}"


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "middle",
    size: int = 11,
    color: str = INK,
    extra: str = "",
) -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{color}"{extra}>{escape(text)}</text>'
    )


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _ok(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def interval_chart(
    rows: Sequence[Interval],
    *,
    refs: Sequence[tuple[float, str, str]] = (),  # (x, label, color): vertical lines
    fmt: str = "pct",
    width: int = 640,
    title: str = "",
) -> str:
    """Horizontal intervals (mean with 95 % CI whiskers) on one shared axis, with
    reference lines such as 0 and the goal; ``fmt`` "pct" labels the axis in %."""
    values = [v for r in rows for v in (r.mean, r.lo, r.hi, *r.points) if _ok(v)]
    values += [x for x, _, _ in refs]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.05
    ticks = nice_ticks(lo - pad, hi + pad)
    x0, x1 = ticks[0], ticks[-1]
    left, right, row_h, top = 150, width - 20, 34, 24 if title else 8
    height = top + row_h * len(rows) + 34

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def label(x: float) -> str:
        return f"{x * 100:+.0f} %" if fmt == "pct" else f"{x:g}"

    def value(x: float) -> str:
        return f"{x * 100:+.1f} %" if fmt == "pct" else f"{x:.4g}"

    out = [
        f'<svg class="chart" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">'
    ]
    if title:
        out.append(_text(left, 14, title, anchor="start", size=12))
    bottom = top + row_h * len(rows)
    for t in ticks:
        out.append(
            f'<line x1="{_f(sx(t))}" y1="{top}" x2="{_f(sx(t))}" y2="{bottom}" stroke="{GRID}"/>'
        )
        out.append(_text(sx(t), bottom + 14, label(t), size=10))
    for x, text, color in refs:
        out.append(
            f'<line x1="{_f(sx(x))}" y1="{top - 4}" x2="{_f(sx(x))}" y2="{bottom}" '
            f'stroke="{color}" stroke-width="2" stroke-dasharray="6 3"/>'
        )
        out.append(_text(sx(x), bottom + 28, text, size=10, color=color))
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(_text(left - 8, y + 4, r.label, anchor="end"))
        for p in r.points:
            if _ok(p):
                out.append(
                    f'<circle cx="{_f(sx(p))}" cy="{_f(y + 9)}" r="2.5" '
                    f'fill="{r.color}" opacity="0.5"/>'
                )
        if r.lo is not None and r.hi is not None and _ok(r.lo) and _ok(r.hi):
            a, b = sx(r.lo), sx(r.hi)
            out.append(
                f'<line x1="{_f(a)}" y1="{_f(y)}" x2="{_f(b)}" y2="{_f(y)}" '
                f'stroke="{r.color}" stroke-width="3"/>'
            )
            for e in (a, b):
                out.append(
                    f'<line x1="{_f(e)}" y1="{_f(y - 7)}" x2="{_f(e)}" '
                    f'y2="{_f(y + 7)}" stroke="{r.color}" stroke-width="2"/>'
                )
        if r.mean is not None and _ok(r.mean):
            attr = f' data-json="{escape(r.json)}"' if r.json else ""
            out.append(f'<circle cx="{_f(sx(r.mean))}" cy="{_f(y)}" r="5" fill="{r.color}"/>')
            out.append(_text(sx(r.mean), y - 9, value(r.mean), size=10, extra=attr))
    out.append("</svg>")
    return "".join(out)


def waterfall(
    a: float | None,
    p: float | None,
    q: float | None,
    *,
    title: str = "",
    width: int = 250,
    height: int = 150,
) -> str:
    """ISO 22400 OEE as a waterfall: 100 % planned busy time, minus the availability,
    performance and quality losses, leaves OEE = A x P x Q. A performance above 100 %
    (impossible by the definitions: a scenario error) draws as a red gain."""
    left, right, top, bottom = 34, width - 6, 18, height - 30
    a_, p_, q_ = (x if _ok(x) else None for x in (a, p, q))
    levels: list[float | None] = [1.0, a_]
    levels.append(None if a_ is None or p_ is None else a_ * p_)
    levels.append(None if levels[2] is None or q_ is None else levels[2] * q_)
    if a_ == 0.0:  # no actual production time: OEE 0 whatever P and Q are
        levels = [1.0, 0.0, 0.0, 0.0]
    top_v = max([1.0, *(x for x in levels if x is not None)])

    def sy(v: float) -> float:
        return bottom - v / top_v * (bottom - top)

    names = ("planned", "avail.", "perf.", "quality", "OEE")
    bw = (right - left) / len(names)
    out = [
        f'<svg class="waterfall" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">'
    ]
    if title:
        out.append(_text(left, 12, title, anchor="start", size=11))
    for v in (0.0, 0.5, 1.0):
        out.append(
            f'<line x1="{left}" y1="{_f(sy(v))}" x2="{right}" y2="{_f(sy(v))}" stroke="{GRID}"/>'
        )
        out.append(_text(left - 3, sy(v) + 3, f"{v * 100:.0f}%", anchor="end", size=9))
    bars: list[tuple[float | None, float | None, str, str]] = [(0.0, 1.0, GOOD, "100 %")]
    for i in range(3):
        hi_, lo_ = levels[i], levels[i + 1]
        if hi_ is None or lo_ is None:
            bars.append((None, None, LOSS, "n/a"))
        else:
            color = GAIN if lo_ > hi_ else LOSS
            bars.append((min(lo_, hi_), max(lo_, hi_), color, f"{(lo_ - hi_) * 100:+.1f}"))
    oee = levels[3]
    bars.append((0.0, oee, GOOD, "n/a" if oee is None else f"{oee * 100:.1f} %"))
    for i, (lo_, hi_, color, text) in enumerate(bars):
        x = left + bw * i + 3
        if lo_ is not None and hi_ is not None:
            out.append(
                f'<rect x="{_f(x)}" y="{_f(sy(hi_))}" width="{_f(bw - 6)}" '
                f'height="{_f(max(sy(lo_) - sy(hi_), 0.5))}" fill="{color}"/>'
            )
            out.append(_text(x + (bw - 6) / 2, sy(hi_) - 3, text, size=9))
        else:
            out.append(_text(x + (bw - 6) / 2, bottom - 3, text, size=9))
        out.append(_text(x + (bw - 6) / 2, bottom + 12, names[i], size=9))
    out.append("</svg>")
    return "".join(out)


def line_chart(
    series: Sequence[Series],
    *,
    refs: Sequence[tuple[float, str, str]] = (),
    y_label: str = "",
    width: int = 760,
    height: int = 260,
) -> str:
    """Lines of (hours, value) points on shared axes; ``refs`` are horizontal lines
    (value, label, colour). Each point is a ``circle`` with ``data-t`` (h) and ``data-v``."""
    left, right, top, bottom = 54, width - 130, 14, height - 36
    xs = [t for s in series for t, _ in s.points] or [0.0, 1.0]
    ys = [v for s in series for _, v in s.points] + [r for r, _, _ in refs] + [0.0]
    xt = nice_ticks(min(xs), max(xs), 8)
    yt = nice_ticks(0.0, max(ys) * 1.05 or 1.0, 5)

    def sx(t: float) -> float:
        return left + (t - xt[0]) / (xt[-1] - xt[0]) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - yt[0]) / (yt[-1] - yt[0]) * (bottom - top)

    out = [
        f'<svg class="chart" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for v in yt:
        out.append(
            f'<line x1="{left}" y1="{_f(sy(v))}" x2="{right}" y2="{_f(sy(v))}" stroke="{GRID}"/>'
        )
        out.append(_text(left - 5, sy(v) + 4, f"{v:g}", anchor="end", size=10))
    for t in xt:
        out.append(_text(sx(t), bottom + 14, f"{t:g}", size=10))
    out.append(_text((left + right) / 2, bottom + 30, "sim time (h)", size=10))
    if y_label:
        out.append(
            _text(
                12,
                (top + bottom) / 2,
                y_label,
                size=10,
                extra=f' transform="rotate(-90 12 {_f((top + bottom) / 2)})"',
            )
        )
    for value, text, color in refs:
        out.append(
            f'<line x1="{left}" y1="{_f(sy(value))}" x2="{right}" y2="{_f(sy(value))}" '
            f'stroke="{color}" stroke-dasharray="5 3"/>'
        )
        out.append(_text(right + 4, sy(value) + 4, text, anchor="start", size=10, color=color))
    for s in series:
        pts = " ".join(f"{_f(sx(t))},{_f(sy(v))}" for t, v in s.points)
        out.append(
            f'<g class="series" data-label="{escape(s.label)}">'
            f'<polyline points="{pts}" fill="none" stroke="{s.color}" '
            f'stroke-width="1.6"/>'
        )
        for t, v in s.points:
            out.append(
                f'<circle cx="{_f(sx(t))}" cy="{_f(sy(v))}" r="1.8" fill="{s.color}" '
                f'data-t="{t:.6g}" data-v="{v:.6g}"/>'
            )
        out.append("</g>")
    for i, s in enumerate(series):
        y = top + 14 + 16 * i
        out.append(f'<rect x="{right + 8}" y="{y - 8}" width="12" height="4" fill="{s.color}"/>')
        out.append(_text(right + 24, y - 2, s.label, anchor="start", size=10))
    out.append("</svg>")
    return "".join(out)


def mini_pair(base: Interval, upgrade: Interval, *, width: int = 170, height: int = 30) -> str:
    """Two intervals (baseline above, upgrade below) on an axis of their own: a glance at
    whether the CIs overlap. No ticks: the table beside it has the numbers."""
    values = [v for r in (base, upgrade) for v in (r.mean, r.lo, r.hi) if _ok(v)]
    out = [
        f'<svg class="mini" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">'
    ]
    if values:
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad

        def sx(x: float) -> float:
            return 4 + (x - lo) / (hi - lo) * (width - 8)

        for y, r in ((9.0, base), (21.0, upgrade)):
            if r.lo is not None and r.hi is not None and _ok(r.lo) and _ok(r.hi):
                out.append(
                    f'<line x1="{_f(sx(r.lo))}" y1="{y}" x2="{_f(sx(r.hi))}" y2="{y}" '
                    f'stroke="{r.color}" stroke-width="3"/>'
                )
            if r.mean is not None and _ok(r.mean):
                out.append(f'<circle cx="{_f(sx(r.mean))}" cy="{y}" r="4" fill="{r.color}"/>')
    out.append("</svg>")
    return "".join(out)
