"""The model against queueing and reliability theory, with tolerances from run length."""

from __future__ import annotations

import math

from simkit import LINE, durations, events, make, series, time_average

from iiotbed.devices.sim import Factory
from iiotbed.telemetry import ItemState, Tag

STATION = f"{LINE}/work/m-01"
BUFFER = f"{LINE}/work/buffer"


def test_availability_tends_to_mtbf_over_mtbf_plus_mttr() -> None:
    mtbf, mttr, n_cycles = 600.0, 100.0, 2500
    horizon = n_cycles * (mtbf + mttr)
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": 60,
          "failures": {"ttf": {"dist": "exponential", "mean": mtbf},
                       "repair": {"dist": "exponential", "mean": mttr}}}],
        run={"duration": horizon, "seed": 11},
    )
    f = Factory(sc)
    f.run()
    d = durations(series(f.records, STATION, Tag.ITEM_STATE), horizon)
    measured = d.get(int(ItemState.Executing), 0.0) / horizon
    failures = len(events(f.records, "FailureStart"))
    expected = mtbf / (mtbf + mttr)
    # delta method for an alternating renewal process with exponential up (U) and down (D)
    # times: Var(A_hat) ~ ((1-A)^2 Var U + A^2 Var D) / (n (EU+ED)^2); tolerance 4 sigma
    var = ((1 - expected) ** 2 * mtbf**2 + expected**2 * mttr**2) / (n_cycles * (mtbf + mttr) ** 2)
    tol = 4 * math.sqrt(var)
    assert failures > 0.9 * n_cycles
    assert abs(measured - expected) < tol, (measured, expected, tol, failures)


def _mm1(rep: int, horizon: float, mean_ia: float, mean_s: float) -> Factory:
    sc = make(
        [{"name": "work", "station_prefix": "m", "_ict": mean_s, "buffer_capacity": 10_000,
          "cycle_time_factor": {"dist": "exponential", "mean": 1.0}}],
        run={"duration": horizon, "seed": 3},
        line={"source": {"interarrival": {"dist": "exponential", "mean": mean_ia}},
              "stages": [{"name": "work", "station_prefix": "m", "buffer_capacity": 10_000,
                          "cycle_time_factor": {"dist": "exponential", "mean": 1.0}}]},
    )
    f = Factory(sc, rep)
    f.run()
    return f


def test_mm1_utilisation_number_in_system_and_littles_law() -> None:
    mean_ia, mean_s, horizon, reps = 100.0, 60.0, 3.0e6, 3
    rho = mean_s / mean_ia
    util, in_system = [], []
    for rep in range(reps):
        f = _mm1(rep, horizon, mean_ia, mean_s)
        busy = [(t, 1 if v == int(ItemState.Executing) else 0)
                for t, v in series(f.records, STATION, Tag.ITEM_STATE)]
        level = series(f.records, BUFFER, Tag.BUFFER_LEVEL)
        u = time_average(busy, horizon)
        lq = time_average(level, horizon)
        util.append(u)
        in_system.append(u + lq)
        # Little's law on the buffer: L = lambda W, W from the units' recorded waits
        produced = events(f.records, "UnitProduced")
        released = series(f.records, LINE, "ReleasedCount")[-1][1]
        w = sum(e.fields["waits"][0] for e in produced) / len(produced)
        assert abs(lq - released / horizon * w) < 0.02 * lq, (lq, released / horizon * w)
    u_mean = sum(util) / reps
    l_mean = sum(in_system) / reps
    # Var of the busy fraction ~ 2 rho / (mu T) (sum of exponential service times);
    # T Var(L_bar) -> 2 rho (1 + rho) / (mu (1 - rho)^4) for M/M/1. Tolerances: 4 sigma.
    tol_u = 4 * math.sqrt(2 * rho * mean_s / horizon / reps)
    tol_l = 4 * math.sqrt(2 * rho * (1 + rho) * mean_s / (1 - rho) ** 4 / horizon / reps)
    assert abs(u_mean - rho) < tol_u, (u_mean, rho, tol_u)
    assert abs(l_mean - rho / (1 - rho)) < tol_l, (l_mean, rho / (1 - rho), tol_l)
