"""An inspection station against renewal theory, as test_theory.py does for process stations.

A fast upstream station (1 s a unit, defect probability d) keeps one inspection station
saturated. Each unit costs the inspection E[time] (+ E[inference] + E[round trip] for
vision) and, when rejected (detected defect, or a false reject) and reworked, the rework
time. Over a horizon H the inspected count is a renewal count: mean H / mu, variance
H sigma^2 / mu^3. Pass, rework and scrap fractions are binomial. Tolerances are 4 sigma.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from simkit import LINE, events, make, series

from iiotbed.devices.sim import Factory
from iiotbed.platform.kpi import compute_kpis
from iiotbed.platform.layout import Layout
from iiotbed.telemetry import Tag

MAKER = f"{LINE}/make/p-01"
LOOK = f"{LINE}/look/v-01"


def _line(d: float, inspection: dict[str, Any], ideal: float, **top: Any) -> Factory:
    sc = make(
        [{"name": "make", "station_prefix": "p", "_ict": 1, "defect_probability": d,
          "buffer_capacity": 10},
         {"name": "look", "kind": "inspection", "station_prefix": "v", "_ict": ideal,
          "buffer_capacity": 10, "inspection": inspection}],
        **top,
    )  # fmt: skip
    f = Factory(sc)
    f.run()
    return f


def _last(f: Factory, asset: str, tag: str) -> float:
    pts = series(f.records, asset, tag)
    return float(pts[-1][1]) if pts else 0.0


def _binomial_ok(count: float, n: float, p: float) -> None:
    tol = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(count / n - p) < tol, (count / n, p, tol)


def _check(f: Factory, horizon: float, mu: float, var: float, d: float,
           insp: dict[str, Any]) -> float:  # fmt: skip
    """Renewal count, first-pass, rework and scrap fractions; returns the inspected count."""
    n = _last(f, LOOK, Tag.INSPECTED)
    expected = horizon / mu
    tol = 4 * math.sqrt(horizon * var / mu**3)
    assert abs(n - expected) < tol, (n, expected, tol)
    det, fr, rf = insp["detection_rate"], insp.get("false_reject_rate", 0.0), insp["rework_fraction"]
    _binomial_ok(_last(f, LOOK, Tag.PASSED_FIRST), n, 1 - (d * det + (1 - d) * fr))
    # a reworked true defect counts at the station that made it, a false reject at inspection
    _binomial_ok(_last(f, MAKER, Tag.REWORK), n, d * det * rf)
    _binomial_ok(_last(f, LOOK, Tag.REWORK), n, (1 - d) * fr * rf)
    _binomial_ok(_last(f, LINE, Tag.SCRAP), n, (d * det + (1 - d) * fr) * (1 - rf))
    assert len(events(f.records, "UnitReworked")) == _last(f, MAKER, Tag.REWORK) + _last(
        f, LOOK, Tag.REWORK
    )
    return n


def test_manual_inspection_throughput_first_pass_and_rework() -> None:
    d, horizon = 0.2, 520_000.0
    insp = {"method": "manual", "time": {"dist": "gamma", "mean": 20, "cv": 0.15},
            "detection_rate": 0.8, "false_reject_rate": 0.05, "rework_fraction": 0.5,
            "rework_time": 60}  # fmt: skip
    f = _line(d, insp, ideal=20, run={"duration": horizon, "seed": 21})
    q = (d * 0.8 + (1 - d) * 0.05) * 0.5  # reworked per unit inspected: 0.1
    mu = 20 + q * 60  # 26 s
    var = (20 * 0.15) ** 2 + 60**2 * q * (1 - q)
    _check(f, horizon, mu, var, d, insp)


def test_vision_inspection_adds_inference_and_the_link_round_trip() -> None:
    d, horizon = 0.1, 200_000.0
    latency, loss, rto = 0.2, 0.2, 0.5
    insp = {"method": "vision", "time": {"dist": "gamma", "mean": 4, "cv": 0.1},
            "inference_time": {"dist": "lognormal", "mean": 0.5, "cv": 0.2},
            "detection_rate": 0.9, "false_reject_rate": 0.02, "rework_fraction": 0.25,
            "rework_time": 20, "link": "mec"}  # fmt: skip
    link = {"kind": "5g-embb", "latency": latency, "loss": loss, "retransmit_timeout": rto}
    f = _line(d, insp, ideal=4.5, run={"duration": horizon, "seed": 22},
              network={"links": {"mec": link}})  # fmt: skip
    # one way: latency + K (timeout + latency), K ~ geometric losses before a delivery
    k_mean, k_var = loss / (1 - loss), loss / (1 - loss) ** 2
    rtt_mean = 2 * (latency + k_mean * (rto + latency))
    rtt_var = 2 * (rto + latency) ** 2 * k_var
    q = (d * 0.9 + (1 - d) * 0.02) * 0.25
    mu = 4 + 0.5 + rtt_mean + q * 20  # 5.79 s: the link alone is 0.75 s of it
    var = 0.4**2 + 0.1**2 + rtt_var + 20**2 * q * (1 - q)
    n = _check(f, horizon, mu, var, d, insp)
    # retransmissions per message (a request and a reply per unit)
    hop = f._stations[1].link
    assert hop is not None
    assert abs(hop.resent / (2 * n) - k_mean) < 4 * math.sqrt(k_var / (2 * n))
    # ISO 22400 performance of the saturated station: ideal (design: time + inference)
    # over the mean cycle, below 1 by the link and rework; availability 1 (never starved)
    kpis = compute_kpis(f.records, Layout.from_scenario(f.scenario), end=horizon)
    look = kpis.stations[LOOK]
    assert look["availability"] == pytest.approx(1.0, abs=1e-4)
    assert look["performance"] == pytest.approx(4.5 * n / horizon, rel=1e-4)
    tol = 4 * math.sqrt(horizon * var / mu**3) * 4.5 / horizon
    assert abs(look["performance"] - 4.5 / mu) < tol
    assert look["performance"] < 1.0
