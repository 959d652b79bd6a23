"""Progress of a paced run on stderr: a live line on a terminal, plain lines otherwise.

The numbers come from :func:`figures`, a pure function of readings of the simulation's
own clock (:class:`iiotbed.testbed.progress.Progress`): sim time and its share of the run
window ``0 .. end``, the speed achieved over the last ``window_s`` wall seconds against the
speed asked, and the ETA at the achieved speed. :class:`ProgressLine` reads the run every
``refresh_s`` while its ``async with`` body runs. stdout is left to the report.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from types import TracebackType

    from iiotbed.testbed.progress import Progress

__all__ = ["Figures", "LogLines", "Mode", "ProgressLine", "describe", "figures", "progress_mode"]

log = logging.getLogger(__name__)

#: "line": a live line (rich) on a terminal; "log": a plain line now and then; "off"
Mode = Literal["line", "log", "off"]


def progress_mode(*, as_json: bool, tty: bool | None = None) -> Mode:
    """A live line when stderr is a terminal; otherwise plain lines, or none with --json
    (a script reading the JSON report gets nothing but the report and the endpoints)."""
    if sys.stderr.isatty() if tty is None else tty:
        return "line"
    return "off" if as_json else "log"


@dataclass(frozen=True, slots=True)
class Figures:
    """What the progress line says, all from the simulation clock."""

    sim_s: float  # sim time now (s from the scenario's epoch)
    end_s: float  # the run window's end (it starts at 0)
    fraction: float  # sim_s / end_s
    asked: float | None  # sim s per wall s asked (None: as fast as possible)
    speed: float | None  # achieved over the readings given; None until two paced ones
    ratio: float | None  # speed / asked
    eta_s: float | None  # wall s to the window's end at the achieved speed


def figures(p: Progress, paced: Sequence[tuple[float, float]]) -> Figures:
    """The figures of reading ``p``; ``paced`` holds recent ``(wall s, sim s)`` readings of
    the paced stretch, oldest first (the achieved speed is measured over them)."""
    fraction = p.sim_s / p.end_s if p.end_s > 0 else 1.0
    speed = None
    if len(paced) >= 2 and paced[-1][0] > paced[0][0]:
        speed = (paced[-1][1] - paced[0][1]) / (paced[-1][0] - paced[0][0])
    asked = p.speed
    ratio = speed / asked if speed is not None and asked else None
    remaining = max(p.end_s - p.sim_s, 0.0)
    eta = None
    if remaining == 0:
        eta = 0.0
    elif speed is not None and speed > 0:
        eta = remaining / speed
    return Figures(p.sim_s, p.end_s, fraction, asked, speed, ratio, eta)


def _clock(s: float) -> str:
    """Sim time as ``[Nd ]HH:MM:SS`` from the scenario's epoch."""
    days, rest = divmod(int(s), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"{days}d {h:02d}:{m:02d}:{sec:02d}" if days else f"{h:02d}:{m:02d}:{sec:02d}"


def _wall(s: float) -> str:
    m, sec = divmod(math.ceil(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def describe(p: Progress, f: Figures) -> str:
    """One line: sim time and % of the window, ETA, speed, samples, lag."""
    parts = [
        f"sim time {_clock(f.sim_s)} of {_clock(f.end_s)} ({f.fraction * 100:.1f} %)",
        f"ETA {'--' if f.eta_s is None else _wall(f.eta_s)}",
    ]
    asked = "as fast as possible" if f.asked is None else f"{f.asked:,.0f}x asked"
    if p.phase == "fast-forward":
        parts.append("unpaced up to the first shift")
    elif p.phase == "paused":
        parts.append("paused")
    elif f.speed is None:
        parts.append(f"speed measuring ({asked})")
    elif f.ratio is None:
        parts.append(f"speed {f.speed:,.0f}x ({asked})")
    else:
        parts.append(f"speed {f.speed:,.0f}x of {asked} ({f.ratio * 100:.0f} %)")
    if p.received is not None or p.stored is not None:
        parts.append(f"received {_count(p.received)}, stored {_count(p.stored)}")
    else:
        parts.append(f"records {p.records:,}")
    parts.append(f"lag {p.lag_s:.2f} s")
    return ", ".join(parts)


def _count(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


class LogLines:
    """When to write a plain line: the first reading, each ``step`` of the window crossed,
    every ``every_s`` wall seconds, and the last reading if it moved since."""

    def __init__(self, *, every_s: float = 10.0, step: float = 0.10) -> None:
        self.every_s = every_s
        self.step = step
        self._wall: float | None = None
        self._mark = -1
        self._sim: float | None = None

    def due(self, wall: float, f: Figures, *, last: bool = False) -> bool:
        mark = math.floor(f.fraction / self.step + 1e-9)  # 0.3 / 0.1 is 2.999...
        if (
            self._wall is None
            or mark > self._mark
            or wall - self._wall >= self.every_s
            or (last and f.sim_s != self._sim)
        ):
            self._wall, self._mark, self._sim = wall, mark, f.sim_s
            return True
        return False


class ProgressLine:
    """Shows the progress of ``read()`` on stderr while the ``async with`` body runs.

    Owns one task that reads every ``refresh_s``; leaving the block cancels and awaits
    it, then shows the last reading. The body's exception passes through.
    """

    def __init__(
        self,
        read: Callable[[], Progress],
        mode: Mode,
        *,
        write: Callable[[str], None] | None = None,
        refresh_s: float = 0.5,
        window_s: float = 30.0,  # a reading's sim time can trail by the pacer's 0.05 s wait
        every_s: float = 10.0,
        step: float = 0.10,
    ) -> None:
        self._read = read
        self.mode = mode
        self._write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self.refresh_s = refresh_s
        self.window_s = window_s
        self._log = LogLines(every_s=every_s, step=step)
        self._paced: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._bar: Any = None  # rich.progress.Progress, imported when a terminal shows it
        self._bar_task: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    async def __aenter__(self) -> Self:
        if self.mode == "off":
            return self
        if self.mode == "line":
            self._start_bar()
        self._task = asyncio.create_task(self._loop(), name="iiotbed-progress")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await asyncio.wait({task})  # owned here: cancelled and awaited
            if not task.cancelled() and task.exception() is not None:
                log.warning("the progress line failed: %r", task.exception())
            self.show(last=True)
        finally:
            self._stop_bar()  # the terminal's cursor comes back, whatever happened

    def show(self, *, last: bool = False) -> None:
        """Read the run once and show it (the live line, or a plain line when due)."""
        p, wall = self._read(), time.monotonic()
        if p.phase == "paced":
            self._paced.append((wall, p.sim_s))
            while len(self._paced) > 2 and wall - self._paced[0][0] > self.window_s:
                self._paced.popleft()
        else:
            self._paced.clear()  # fast-forward or paused: not the pace to measure
        f = figures(p, self._paced)
        if self._bar is not None:
            self._bar.update(
                self._bar_task, total=f.end_s, completed=f.sim_s, text=describe(p, f), refresh=True
            )
        elif self._log.due(wall, f, last=last):
            self._write(f"progress: {describe(p, f)}")

    async def _loop(self) -> None:
        while True:
            self.show()
            await asyncio.sleep(self.refresh_s)

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self._bar = Progress(
            BarColumn(bar_width=20),
            # wrapped on a narrow terminal, not cut: every figure stays visible
            TextColumn("{task.fields[text]}", table_column=Column(no_wrap=False, ratio=1)),
            console=Console(stderr=True),
            auto_refresh=False,  # refreshed by show(): no rich thread
            redirect_stdout=False,  # stdout is the report's
        )
        self._bar_task = self._bar.add_task("run", total=None, text="starting")
        self._bar.start()
        # log records (e.g. the pacer's lag warning) print above the line, not through it:
        # the handlers that write to the real stderr write to rich's proxy of it for now
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream is sys.__stderr__:
                self._handlers.append((h, h.setStream(sys.stderr)))

    def _stop_bar(self) -> None:
        for h, stream in self._handlers:
            h.setStream(stream)
        self._handlers.clear()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
