"""Link shaping of the live endpoints: statistics against the scenario's link, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from iiotbed.devices.network import Channel, LiveLink, endpoint_links
from iiotbed.errors import ScenarioError
from iiotbed.scenario import Dist, Link, Outages, load_scenario, scenario_from_dict

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
N = 20_000


def _link(loss: float = 0.0, outages: Outages | None = None, cv: float = 0.5) -> Link:
    return Link(
        kind="5g-urllc",
        latency=Dist(dist="lognormal", mean=0.010, cv=cv),
        loss=loss,
        retransmit_timeout=0.2,
        outages=outages,
    )


def test_mean_latency_matches_the_link() -> None:
    link = LiveLink("opcua", "l", _link(), seed=1)
    delays = []
    for i in range(N):
        due = link.send(float(i))
        assert due is not None
        delays.append(due - i)
    mean = sum(delays) / N
    # lognormal, cv 0.5: the sample mean of 20 000 draws is within 2 % at > 5 sd
    assert mean == pytest.approx(0.010, rel=0.02)
    assert link.stats.mean_delay == pytest.approx(mean)
    assert link.stats.sent == link.stats.delayed == N
    assert link.stats.dropped == link.stats.resent == 0


def test_unreliable_loss_rate_drops() -> None:
    link = LiveLink("sparkplug", "l", _link(loss=0.05), seed=2, reliable=False)
    dropped = sum(link.send(float(i)) is None for i in range(N))
    assert dropped == link.stats.dropped
    # binomial sd = sqrt(0.05 * 0.95 / 20000) = 0.0015; 4 sd
    assert dropped / N == pytest.approx(0.05, abs=0.006)
    assert link.stats.resent == 0


def test_reliable_loss_is_paid_with_retransmissions() -> None:
    link = LiveLink("opcua", "l", _link(loss=0.05), seed=3, reliable=True)
    delays = []
    for i in range(N):
        due = link.send(float(i))
        assert due is not None
        delays.append(due - i)
    per_message = link.stats.resent / N
    assert link.stats.dropped == 0
    assert per_message == pytest.approx(0.05 / 0.95, abs=0.007)  # geometric: p / (1 - p)
    expected = 0.010 * (1 + per_message) + 0.2 * per_message
    assert sum(delays) / N == pytest.approx(expected, rel=0.03)


def test_outage_share_and_held_messages() -> None:
    outages = Outages(
        interval=Dist(dist="exponential", mean=100.0), duration=Dist(dist="exponential", mean=10.0)
    )
    link = LiveLink("vda5050", "l", _link(outages=outages), seed=4)
    horizon = 2_000_000.0
    held_wait = []
    step = 7.3  # messages at a spacing unrelated to the outage means
    t = 0.0
    n = 0
    while t < horizon:
        window = link.outage_at(t)
        due = link.send(t)
        assert due is not None
        if window is not None:
            assert due >= window[1]  # held until the link is back
            held_wait.append(window[1] - t)
        t += step
        n += 1
    begun = link.outages_begun(horizon)
    assert link.stats.outages >= len(begun) > 0
    share = link.stats.outage_time / horizon
    # alternating renewal: 10 / (100 + 10); about 18 000 outages, so a few % either way
    assert share == pytest.approx(10 / 110, rel=0.06)
    assert link.stats.held / n == pytest.approx(10 / 110, rel=0.06)
    # a message sent during an exponential outage waits its mean on average (memoryless)
    assert sum(held_wait) / len(held_wait) == pytest.approx(10.0, rel=0.06)


def test_shaping_is_deterministic_and_per_replication() -> None:
    def run(seed: int, replication: int) -> list[float | None]:
        outages = Outages(interval=Dist(dist="exponential", mean=50.0), duration=5.0)  # type: ignore[arg-type]
        link = LiveLink("sparkplug", "l", _link(loss=0.1, outages=outages), seed=seed,
                        replication=replication, reliable=False)  # fmt: skip
        return [link.send(i * 0.5) for i in range(2000)]

    assert run(9, 0) == run(9, 0)
    assert run(9, 0) != run(9, 1)
    assert run(9, 0) != run(10, 0)


def test_channel_keeps_order_and_releases_on_time() -> None:
    link = LiveLink("opcua", "l", _link(cv=2.0), seed=5)
    ch: Channel[int] = Channel(link)
    out: list[int] = []
    for i in range(5000):
        ch.send(i * 0.001, i)  # spacing far below the latency spread: order must hold
        out += ch.due(i * 0.001)
    out += ch.drain()
    assert out == list(range(5000))
    plain: Channel[str] = Channel()
    plain.send(3.0, "x")
    assert plain.due(3.0) == ["x"] and len(plain) == 0


def test_endpoint_links_from_the_scenario() -> None:
    sc = load_scenario(SCENARIOS / "tcl-huizhou-5g.yaml")
    assert endpoint_links(sc) == {"vda5050": "5g-urllc"}
    data = sc.model_dump(mode="json")
    data["network"]["endpoints"] = {"sparkplug": "5g-embb", "vda5050": "5g-embb"}
    assert endpoint_links(scenario_from_dict(data)) == {
        "sparkplug": "5g-embb",
        "vda5050": "5g-embb",
    }
    data["network"]["endpoints"] = {"opcua": "fiber"}
    with pytest.raises(ScenarioError, match=r"network\.endpoints\.opcua names link 'fiber'"):
        scenario_from_dict(data)
    base = load_scenario(SCENARIOS / "single-machine.yaml")
    assert endpoint_links(base) == {}
    never_down = LiveLink("x", "l", _link(), seed=1)
    assert math.isinf(never_down.outages.start) and never_down.outage_at(1e12) is None
