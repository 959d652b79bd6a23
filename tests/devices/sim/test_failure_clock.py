"""The failure clock counts *Executing* time only: starved, blocked, broken down, on a break
or off shift, a station does not age (operating time to failure, ISO 22400 APT-based MTBF).

Each case has a deterministic time to failure, so the failure's sim time is exact.
"""

from __future__ import annotations

import pytest
from simkit import LINE, events, make, series

from iiotbed.devices.sim import Factory
from iiotbed.telemetry import ItemState, Tag

WORK = f"{LINE}/work/m-01"
TTF, REPAIR = 2995.0, 100.0
_FAILURES = {"ttf": {"dist": "fixed", "value": TTF}, "repair": {"dist": "fixed", "value": REPAIR}}


def _executing_between(f: Factory, asset: str, t0: float, t1: float) -> float:
    """Seconds in ItemState Executing within [t0, t1]."""
    pts = series(f.records, asset, Tag.ITEM_STATE)
    total = 0.0
    for (a, v), (b, _) in zip(pts, [*pts[1:], (t1, None)], strict=True):
        lo, hi = max(a, t0), min(b, t1)
        if hi > lo and v == int(ItemState.Executing):
            total += hi - lo
    return total


def _failures(f: Factory, asset: str) -> tuple[list[float], list[float]]:
    starts = [e.t for e in events(f.records, "FailureStart") if e.asset == asset]
    ends = [e.t for e in events(f.records, "RepairEnd") if e.asset == asset]
    return starts, ends


def _assert_every_failure_after_exactly_ttf_of_executing(f: Factory, asset: str) -> None:
    starts, ends = _failures(f, asset)
    assert len(starts) >= 3
    since = [0.0, *ends]
    for k, t in enumerate(starts):
        assert _executing_between(f, asset, since[k], t) == pytest.approx(TTF, abs=1e-6), k


def test_a_starved_station_fails_after_its_ttf_of_executing_time() -> None:
    # one unit every 60 s, 30 s of work each: Executing half the time, starved the other half
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 30, "failures": _FAILURES}],
        line={"source": {"interarrival": {"dist": "fixed", "value": 60}},
              "stages": [{"name": "work", "station_prefix": "m", "buffer_capacity": 1000,
                          "failures": _FAILURES}]},
    )  # fmt: skip
    f = Factory(sc)
    f.run(86400.0)
    starts, ends = _failures(f, WORK)
    # unit k arrives at 60k and works [60k, 60k + 30]: 2995 s of work are 99 units and 25 s
    # of the 100th, which started at 6000 s. A clock that also ran while starved: 2995 s.
    assert starts[0] == pytest.approx(6000.0 + 25.0, abs=1e-6)
    assert ends[0] == pytest.approx(starts[0] + REPAIR, abs=1e-6)
    _assert_every_failure_after_exactly_ttf_of_executing(f, WORK)


def test_a_blocked_station_fails_after_its_ttf_of_executing_time() -> None:
    # a 30 s station feeding a 90 s one through a buffer of 1: blocked two thirds of the time
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 30, "failures": _FAILURES},
         {"name": "slow", "station_prefix": "s", "_ict": 90, "buffer_capacity": 1}],
    )  # fmt: skip
    f = Factory(sc)
    f.run(86400.0)
    starts, _ = _failures(f, WORK)
    # units 1-3 start at 0, 30 and 60; from unit 4 on, unit k starts when the slow station
    # frees the buffer, at 120 + 90 (k - 4). 2995 s of work: 25 s into unit 100, started at
    # 120 + 90 x 96 = 8760 s
    assert starts[0] == pytest.approx(8760.0 + 25.0, abs=1e-6)
    _assert_every_failure_after_exactly_ttf_of_executing(f, WORK)
    assert starts[0] > 2.9 * TTF  # nearly two thirds of the time before it was blocked


def test_breaks_and_off_shift_do_not_age_a_station() -> None:
    # saturated, 30 s units, a day shift 08:00-16:00 with a break at 08:30: a clock that ran
    # through the night would have used up its 2995 s by 00:50 and failed at 08:00
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 30, "failures": _FAILURES}],
        calendar={"shifts": [{"name": "day", "start": "08:00", "end": "16:00"}],
                  "breaks": [{"start": "08:30", "duration": "1h"}]},
    )  # fmt: skip
    f = Factory(sc)
    f.run(3 * 86400.0)
    starts, _ = _failures(f, WORK)
    # 30 min of work before the break (08:00-08:30), then 2995 - 1800 = 1195 s after 09:30
    assert starts[0] == pytest.approx(9.5 * 3600 + 1195.0, abs=1e-6)
    _assert_every_failure_after_exactly_ttf_of_executing(f, WORK)
