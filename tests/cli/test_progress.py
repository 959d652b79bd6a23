"""The progress line of `iiotbed run` and `devices`: its figures from worked examples, when
plain lines are written, and its lifecycle (the end-to-end lines are in tests/test_run.py)."""

from __future__ import annotations

import asyncio

import pytest

from iiotbed.cli.progress import (
    LogLines,
    ProgressLine,
    describe,
    figures,
    progress_mode,
)
from iiotbed.testbed.progress import Phase, Progress

DAY = 86400.0


def _p(
    sim: float,
    end: float = 7200.0,
    *,
    speed: float | None = 1500.0,
    phase: Phase = "paced",
    received: int | None = None,
    stored: int | None = None,
) -> Progress:
    return Progress(sim, end, speed, phase, 0.0, 42, received, stored)


def test_half_way_at_the_speed_asked() -> None:
    # 3000 sim s in 2 wall s = 1500x, as asked; 3600 sim s to go at 1500x = 2.4 wall s
    f = figures(_p(3600.0), [(10.0, 600.0), (11.0, 2100.0), (12.0, 3600.0)])
    assert f.fraction == 0.5
    assert f.speed == 1500.0 and f.ratio == 1.0
    assert f.eta_s == pytest.approx(2.4)


def test_eta_comes_from_the_speed_achieved_not_the_one_asked() -> None:
    # asked 1500x, achieved 3000 sim s in 4 wall s = 750x: half the pace, twice the wait
    f = figures(_p(3600.0), [(0.0, 600.0), (4.0, 3600.0)])
    assert f.speed == 750.0 and f.ratio == 0.5
    assert f.eta_s == pytest.approx(3600.0 / 750.0)  # 4.8 s, not the 2.4 s of the asked pace


def test_the_week_of_the_5g_scenario() -> None:
    # day 2, 03:00 of a 6-day window: 183600 / 518400 = 35.4 %; 334800 s left at 1500x = 223.2 s
    p = _p(2 * DAY + 3 * 3600, 6 * DAY, received=1234, stored=1200)
    f = figures(p, [(0.0, p.sim_s - 15000.0), (10.0, p.sim_s)])
    assert f.fraction == pytest.approx(183600 / 518400)
    assert f.eta_s == pytest.approx(223.2)
    text = describe(p, f)
    assert "sim time 2d 03:00:00 of 6d 00:00:00 (35.4 %)" in text
    assert "speed 1,500x of 1,500x asked (100 %)" in text
    assert "received 1,234, stored 1,200" in text
    assert "(35.4 %), ETA 3:44, " in text  # 223.2 s, rounded up; next to the %


def test_speed_unknown_until_two_paced_readings() -> None:
    for paced in ([], [(5.0, 3600.0)], [(5.0, 3000.0), (5.0, 3600.0)]):
        f = figures(_p(3600.0), paced)
        assert f.speed is None and f.ratio is None and f.eta_s is None
    assert "speed measuring (1,500x asked)" in describe(_p(3600.0), f)
    assert "ETA --" in describe(_p(3600.0), f)


def test_the_end_of_the_window_is_100_percent_and_no_wait() -> None:
    f = figures(_p(7200.0), [])
    assert f.fraction == 1.0 and f.eta_s == 0.0
    assert "(100.0 %)" in describe(_p(7200.0), f) and "ETA 0:00" in describe(_p(7200.0), f)


def test_fast_forward_paused_and_devices_alone() -> None:
    ff = _p(0.0, 36000.0, phase="fast-forward")
    text = describe(ff, figures(ff, []))
    assert "sim time 00:00:00 of 10:00:00 (0.0 %)" in text
    assert "unpaced up to the first shift" in text and "ETA --" in text
    assert "records 42" in text  # no gateway, no platform: what the simulation emitted
    paused = _p(3600.0, phase="paused")
    assert "paused" in describe(paused, figures(paused, []))
    fast = _p(3600.0, speed=None)
    text = describe(fast, figures(fast, [(0.0, 0.0), (1.0, 3600.0)]))
    assert "speed 3,600x (as fast as possible)" in text


def test_log_lines_at_the_start_every_tenth_every_10_s_and_the_last() -> None:
    lines = LogLines(every_s=10.0, step=0.10)

    def due(wall: float, sim: float, last: bool = False) -> bool:
        return lines.due(wall, figures(_p(sim, 1000.0), []), last=last)

    assert due(0.0, 0.0)  # the first reading
    assert not due(1.0, 50.0)
    assert due(2.0, 100.0)  # 10 % crossed
    assert not due(3.0, 150.0)
    assert due(12.5, 160.0)  # 10 s since the last line
    assert due(13.0, 300.0)  # 30 %: 0.3 / 0.1 is 2.999... in floats
    assert not due(13.5, 300.0, last=True)  # the last reading, already written
    assert due(14.0, 1000.0)
    assert not due(14.5, 1000.0, last=True)


@pytest.mark.parametrize(
    ("tty", "as_json", "mode"),
    [(True, False, "line"), (True, True, "line"), (False, False, "log"), (False, True, "off")],
)
def test_mode(tty: bool, as_json: bool, mode: str) -> None:
    assert progress_mode(as_json=as_json, tty=tty) == mode


def test_log_mode_writes_increasing_lines_and_the_last_one() -> None:
    written: list[str] = []
    sims = [0.0]
    ended: list[asyncio.Event] = []

    def read() -> Progress:
        sims[0] = min(sims[0] + 100.0, 1000.0)
        if sims[0] == 1000.0:
            ended[0].set()
        return _p(sims[0], 1000.0)

    async def main() -> ProgressLine:
        ended.append(asyncio.Event())
        async with ProgressLine(read, "log", write=written.append, refresh_s=0.001) as line:
            await ended[0].wait()
        return line

    line = asyncio.run(main())
    assert line._task is None
    assert all(w.startswith("progress: sim time ") for w in written)
    pct = [float(w.split("(")[1].split(" %")[0]) for w in written]
    assert pct == sorted(pct) and pct[-1] == 100.0, written
    assert len(pct) == len(set(pct))  # each 10 % once, no repeated last line


def test_the_body_exception_passes_through_and_the_task_ends() -> None:
    written: list[str] = []
    tasks: list[asyncio.Task[None] | None] = []

    async def main() -> None:
        line = ProgressLine(lambda: _p(10.0), "log", write=written.append, refresh_s=0.001)
        async with line:
            tasks.append(line._task)
            await asyncio.sleep(0.01)
            raise KeyError("body")

    with pytest.raises(KeyError, match="body"):
        asyncio.run(main())
    assert tasks[0] is not None and tasks[0].done()
    assert written and "(0.1 %)" in written[-1]


def test_line_mode_leaves_stdout_alone(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async with ProgressLine(lambda: _p(7200.0), "line", refresh_s=0.001):
            await asyncio.sleep(0.01)

    asyncio.run(main())
    out, err = capsys.readouterr()
    assert out == ""
    assert "(100.0 %)" in err


def test_off_shows_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    def read() -> Progress:
        raise AssertionError("not read")

    async def main() -> None:
        async with ProgressLine(read, "off"):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert capsys.readouterr() == ("", "")
