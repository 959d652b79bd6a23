"""R7 at ingest: 10,000 fuzzed UNS payloads on the platform's stream topic during a live run.

Every payload is refused and counted exactly once (``malformed`` for a message that does not
decode, ``out_of_window`` / ``unknown_run`` for a well-formed sample the platform must not
store), the platform never stops, and the real run next to them agrees with the answer key.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from kit import Mosquitto, testbed, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.protocols.uns import sample_dict, stream_topic
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Sample

pytestmark = [pytest.mark.network, pytest.mark.timeout(180)]

SHIFT = 8 * 3600.0
N = 10_000


def _fuzz(rng: random.Random, epoch: float, asset: str) -> tuple[str, bytes]:
    """One payload and the counter that must take it."""
    base = sample_dict(Sample(t=3600.0, asset=asset, tag="GoodCount", value=1), epoch=epoch,
                       run_id="single-machine-teaching-fuzz", gateway_ts=epoch)  # fmt: skip
    kind = rng.randrange(8)
    if kind == 0:
        return "malformed", rng.randbytes(rng.randrange(1, 200))
    if kind == 1:
        whole = orjson.dumps({"samples": [base]})
        return "malformed", whole[: rng.randrange(1, len(whole) - 1)]
    if kind == 2:  # a field of the wrong type (wrong for every field)
        key = rng.choice(sorted(base))
        bad: dict[str, Any] = {**base, key: rng.choice([[1], {"x": 1}, True])}
        return "malformed", orjson.dumps({"samples": [bad]})
    if kind == 3:
        key = rng.choice(sorted(base))
        return "malformed", orjson.dumps({"samples": [{k: v for k, v in base.items() if k != key}]})
    if kind == 4:
        depth = rng.randrange(50, 5000)
        return "malformed", b"[" * depth + b"]" * depth
    if kind == 5:
        t = rng.choice([1e11, 1e300, -1.0, -1e300, 3.5e7])
        uid = f"{rng.getrandbits(64):016x}"  # its own id: not a duplicate of another
        return "out_of_window", orjson.dumps({"samples": [{**base, "t": t, "id": uid}]})
    if kind == 6:
        quality = {**base, "quality": rng.choice(["good", "", "Bogus", 7])}
        return "malformed", orjson.dumps({"samples": [quality]})
    # well-formed, in the window, of a run nobody registered (its own epoch)
    rid = f"fuzz-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
    ep = epoch + 3600.0 * rng.randrange(1, 10_000)
    obj = sample_dict(Sample(t=rng.uniform(0, 1e5), asset=asset, tag="GoodCount", value=1),
                      epoch=ep, run_id=rid, gateway_ts=ep)  # fmt: skip
    return "unknown_run", orjson.dumps({"samples": [obj]})


def _publish_all(port: int, topic: str, payloads: list[bytes], done: Callable[[], None]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        if all(info.is_published() for info in infos):
            done()  # set only when the broker acknowledged every payload
    finally:
        c.disconnect()
        c.loop_stop()


def test_fuzzed_payloads_are_refused_counted_and_harmless(tmp_path: Path) -> None:
    # 10,000 messages at once: the ingest acknowledges each only once handled, so Mosquitto
    # queues the burst for it, and its default max_queued_messages (1000) dropped ~900 of them
    broker = Mosquitto(tmp_path / "broker", max_queued=0).start()
    try:
        _run(tmp_path, broker)
    finally:
        broker.kill()


def _run(tmp_path: Path, broker: Mosquitto) -> None:
    with testbed(tmp_path, broker, duration=SHIFT + 3 * 3600, speed=600) as tb:
        sc = load_scenario(tb.scenario)
        epoch = sc.plant.epoch.timestamp()
        rng = random.Random(10)
        fuzz = [_fuzz(rng, epoch, f"{sc.line_path}/bonding/bonder-01") for _ in range(N)]
        want = {k: sum(1 for kind, _ in fuzz if kind == k)
                for k in ("malformed", "out_of_window", "unknown_run")}  # fmt: skip
        tb.start_all()
        finished = threading.Event()
        topic = stream_topic(sc.line_path)
        th = threading.Thread(target=_publish_all,
                              args=(broker.port, topic, [p for _, p in fuzz], finished.set))  # fmt: skip
        th.start()
        tb.procs["devices"].wait(150)
        th.join(60)
        assert finished.is_set(), "the broker did not acknowledge every fuzzed payload"
        seen: dict[str, Any] = {}

        def counted() -> bool:
            seen.update(tb.ingest())
            return all(seen[k] >= v for k, v in want.items())

        try:
            wait_for(counted, 90, "every fuzzed payload counted")
        except BaseException:
            print(f"wanted {want}, ingest counted {seen}")
            raise
        tb.wait_agreement(0.0, tb.duration, timeout=60)
        m = tb.ingest()
        assert {k: m[k] for k in want} == want, m
        assert tb.procs["platform"].alive
        assert [r["run_id"] for r in tb.get("/api/runs")] == [tb.run_id]
