"""UNS ingest through a real Mosquitto: resends stored once, malformed payloads counted,
KPIs from the store and from the live view equal the engine's on the same records."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iiotbed.devices.sim import simulate
from iiotbed.gateway import DurableBuffer, UnsPublisher
from iiotbed.mqtt import stop_client
from iiotbed.platform import Layout, compute_kpis
from iiotbed.platform.catalog import RunCatalog
from iiotbed.platform.ingest import Ingest
from iiotbed.platform.store import open_store
from iiotbed.protocols.uns import (
    encode_batch,
    encode_sample,
    sample_dict,
    sample_id,
    stream_topic,
)
from iiotbed.scenario import Scenario, load_scenario
from iiotbed.telemetry import Event, Record, Sample

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]

BROKER = "mqtt://127.0.0.1:1883"
ROOT_DIR = Path(__file__).resolve().parents[2]
DAY = 86400.0


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(ROOT_DIR / "scenarios" / "single-machine.yaml")


@pytest.fixture(scope="module")
def records(scenario: Scenario) -> list[Record]:
    return simulate(scenario, 0, duration=DAY)


def _root() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


class Publisher:
    """A plain paho client publishing QoS 1 and waiting for each PUBACK."""

    def __init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    async def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    def close(self) -> None:
        self.client.disconnect()
        stop_client(self.client)


def _assert_kpis_equal(got: Mapping[str, float], want: Mapping[str, float]) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        g = got[k]
        if math.isnan(w):
            assert math.isnan(g), k
        else:
            assert g == pytest.approx(w, rel=1e-9, abs=1e-9), k


async def _until(pred: Callable[[], bool], limit_s: float = 20.0) -> None:
    async with asyncio.timeout(limit_s):
        # metrics are plain counters without an event to wait on: poll them
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def test_resends_are_stored_once_malformed_counted_and_kpis_match(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    root = _root()
    run_id = "single-r0"
    epoch = scenario.plant.epoch.timestamp()
    layout = Layout.from_scenario(scenario)
    samples = [r for r in records if isinstance(r, Sample)]
    events = [r for r in records if isinstance(r, Event)]
    unique_ids = {sample_id(run_id, s.asset, s.tag, s.t, s.value, s.quality) for s in samples}
    topic = stream_topic(scenario.line_path, root)
    malformed = [
        b"{not json",
        b"[1, 2, 3]",
        b'{"samples": "many"}',
        # a Bad sample that carries a value: the whole batch is refused
        b'{"samples": [{"asset": "a/b", "tag": "x", "value": 3, "unit": null, "quality": "Bad",'
        b' "t": 1, "source_ts": "2026-01-05T00:00:01.000Z", "gateway_ts":'
        b' "2026-01-05T00:00:01.000Z", "seq": null, "run_id": "r", "id": "0123456789abcdef"}]}',
    ]

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
                Ingest(store, BROKER, catalog=RunCatalog(store, scenario), root=root) as ingest,
            ):
                batches = [samples[i : i + 500] for i in range(0, len(samples), 500)]
                resent = 0
                for i, batch in enumerate(batches):
                    payload = encode_batch(
                        batch,
                        epoch=epoch,
                        run_id=run_id,
                        gateway_ts=1.0e9 + i,
                        events=[e for e in events if batch[0].t <= e.t <= batch[-1].t]
                        if i < len(batches) - 1
                        else [e for e in events if e.t >= batch[0].t],
                    )
                    await pub.send(topic, payload)
                    if i % 3 == 1:  # a lost PUBACK: the gateway sends the batch again
                        await pub.send(topic, payload)
                        resent += len(batch)
                    if i == 2:
                        for bad in malformed:
                            await pub.send(topic, bad)
                await _until(lambda: ingest.metrics.messages >= len(batches) + 4 + resent // 500)
                await asyncio.wait_for(ingest.drain(), 20)

                m = ingest.metrics
                assert m.malformed == len(malformed)
                assert m.stored == len(unique_ids)
                assert m.duplicates >= resent  # resent samples (and their events) dropped
                counts = await store.counts(run_id)
                assert counts.samples == len(unique_ids)
                assert counts.events == len(events)
                assert m.pending == 0 and m.connected

                run = await store.get_run(run_id)
                assert run is not None and run.scenario == scenario.name
                assert run.epoch == scenario.plant.epoch.isoformat()
                assert len(await store.assets()) >= 3

                want = compute_kpis(records, layout, start=0.0, end=DAY)
                got = await store.kpis(run_id, layout, 0.0, DAY)
                _assert_kpis_equal(got.line, want.line)
                for path, kpis in want.stations.items():
                    _assert_kpis_equal(got.stations[path], kpis)

                live = ingest.live(run_id)
                assert live is not None
                ingest.settle(run_id)
                assert m.late == 0
                report = live.report()
                assert report is not None
                _assert_kpis_equal(
                    report.line, compute_kpis(records, layout, start=0.0, end=live.fed_t).line
                )
                # the live view keeps the newest sample of each tag
                last = {}
                for s in samples:
                    last[(s.asset, s.tag)] = s
                assert {k: s.value for k, s in live.latest.items()} == {
                    k: s.value for k, s in last.items()
                }
        finally:
            pub.close()

    asyncio.run(main())


def test_a_batch_resent_after_the_live_view_moved_on_is_counted_once(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    """The in-memory dedup: a batch whose PUBACK was lost and that comes again after the live
    view has fed past it is dropped before the store and the live view, not only by the store
    (the live view would count it as late samples)."""
    root = _root()
    run_id = "resend-r0"
    epoch = scenario.plant.epoch.timestamp()
    samples = [r for r in records if isinstance(r, Sample)]
    batches = [samples[i : i + 500] for i in range(0, 3000, 500)]
    first = batches[0]
    first_events = [r for r in records if isinstance(r, Event) and r.t <= first[-1].t]
    topic = stream_topic(scenario.line_path, root)

    def payload(i: int) -> bytes:
        events = first_events if i == 0 else []
        return encode_batch(
            batches[i], epoch=epoch, run_id=run_id, gateway_ts=1.0e9 + i, events=events
        )

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
                Ingest(store, BROKER, catalog=RunCatalog(store, scenario), root=root) as ingest,
            ):
                for i in range(len(batches)):
                    await pub.send(topic, payload(i))
                await _until(lambda: ingest.metrics.messages >= len(batches))
                await asyncio.wait_for(ingest.drain(), 20)
                live = ingest.live(run_id)
                assert live is not None
                ingest.settle(run_id)  # the live view feeds everything held back
                assert live.fed_t > first[-1].t  # it has moved on past batch 0
                m = ingest.metrics
                stored, events_stored, duplicates = m.stored, m.events_stored, m.duplicates
                report = live.report()
                assert report is not None and report.line["good_count"] > 0
                latest = dict(live.latest)
                counts = await store.counts(run_id)

                await pub.send(topic, payload(0))  # the resend
                await _until(lambda: ingest.metrics.messages >= len(batches) + 1)
                await asyncio.wait_for(ingest.drain(), 20)
                ingest.settle(run_id)  # whatever of the resend was held back reaches it now

                assert (m.stored, m.events_stored) == (stored, events_stored)
                assert m.duplicates == duplicates + len(first) + len(first_events)
                assert m.late == 0  # nothing of the resend reached the live view
                again = live.report()
                assert again is not None and again.to_dict() == report.to_dict()
                assert live.latest == latest
                assert await store.counts(run_id) == counts
        finally:
            pub.close()

    asyncio.run(main())


def test_unknown_run_is_registered_with_the_epoch_of_its_payload(tmp_path: Path) -> None:
    """A run named in ``runs=`` but not in the store: registered on first sight."""
    root = _root()
    epoch = 1_767_571_200.0  # 2026-01-05T00:00:00Z
    samples = [Sample(t=float(i), asset="acme/s/a/l", tag="GoodCount", value=i) for i in range(10)]

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
                Ingest(store, BROKER, root=root, runs=["anon"]) as ingest,
            ):
                await pub.send(
                    stream_topic("acme/s/a/l", root),
                    encode_batch(samples, epoch=epoch, run_id="anon", gateway_ts=epoch),
                )
                await _until(lambda: ingest.metrics.stored == 10)
                run = await store.get_run("anon")
                assert run is not None and run.scenario == "unknown"
                assert run.epoch is not None
                import datetime as dt

                assert dt.datetime.fromisoformat(run.epoch).timestamp() == pytest.approx(epoch)
                live = ingest.live("anon")
                assert live is not None and live.report() is None  # no layout, no KPIs
                assert live.last_t == 9.0
        finally:
            pub.close()

    asyncio.run(main())


def test_current_values_and_the_gateway_publisher(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    """The real producer (UnsPublisher, stream + retained values) into an ingest that reads
    both: every sample is stored once although it arrives twice."""
    root = _root()
    samples = [r for r in records if isinstance(r, Sample)][:3000]
    events = [r for r in records if isinstance(r, Event)][:50]
    ids = {sample_id("gw-r0", s.asset, s.tag, s.t, s.value, s.quality) for s in samples}

    async def main() -> None:
        async with (
            open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
            Ingest(
                store, BROKER, catalog=RunCatalog(store, scenario), root=root, current_values=True
            ) as ingest,
            DurableBuffer(tmp_path / "buffer.db") as buffer,
            UnsPublisher(
                BROKER,
                buffer,
                line=scenario.line_path,
                epoch=scenario.plant.epoch.timestamp(),
                run_id="gw-r0",
                root=root,
            ) as publisher,
        ):
            await publisher.submit(samples)
            await publisher.submit_events(events)
            await asyncio.wait_for(publisher.flush(), 20)
            await _until(lambda: ingest.metrics.stored >= len(ids))
            await asyncio.sleep(0.3)  # late retained copies would show up as extra rows
            await asyncio.wait_for(ingest.drain(), 20)
            counts = await store.counts("gw-r0")
            assert counts.samples == len(ids)
            assert counts.events == len(events)
            assert ingest.metrics.duplicates >= publisher.metrics.current_values
            assert ingest.metrics.lag_s < 30

    asyncio.run(main())


def test_a_sample_from_a_current_value_topic_must_match_its_topic(tmp_path: Path) -> None:
    root = _root()
    s = Sample(t=1.0, asset="acme/s/a/l", tag="GoodCount", value=1, run_id="cv")

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
                Ingest(store, BROKER, root=root, current_values=True, runs=["cv"]) as ingest,
            ):
                payload = encode_sample(s, epoch=0.0, gateway_ts=1.0)
                await pub.send(f"{root}/acme/s/a/l/ScrapCount", payload)  # wrong topic
                await pub.send(f"{root}/acme/s/a/l/GoodCount", payload)
                await _until(lambda: ingest.metrics.messages >= 2)
                await asyncio.wait_for(ingest.drain(), 10)
                assert ingest.metrics.malformed == 1
                assert ingest.metrics.stored == 1
        finally:
            pub.close()

    asyncio.run(main())


def test_cancelled_start_leaves_no_task_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
            dead = "mqtt://127.0.0.1:1"  # nothing listens: the start waits for the broker
            ingest = Ingest(store, dead, client_id=f"ingest-{uuid.uuid4().hex[:8]}")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await ingest.__aenter__()
            await asyncio.sleep(0)
            assert asyncio.all_tasks() == {asyncio.current_task()}  # the ingest task is gone

    asyncio.run(scenario())


def _batch(samples: list[Sample], run_id: str, epoch: float) -> bytes:
    return encode_batch(samples, epoch=epoch, run_id=run_id, gateway_ts=epoch)


def test_samples_outside_the_window_and_made_up_runs_are_refused_never_fatal(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    """Issue 10: one well-formed sample with a new run id and t = 1e11 (or 1e300) killed the
    platform (OverflowError); well-formed batches with made-up run ids were stored as new
    runs. Now each is refused and counted, and the valid run next to them is stored whole."""
    root = _root()
    epoch = scenario.plant.epoch.timestamp()
    topic = stream_topic(scenario.line_path, root)
    good = [r for r in records if isinstance(r, Sample)][:400]
    asset = good[0].asset

    def one(t: float, run_id: str, ep: float = epoch) -> bytes:
        if t < 1e12:
            return _batch([Sample(t=t, asset=asset, tag="GoodCount", value=1)], run_id, ep)
        # no datetime holds epoch + t: the gateway could not encode it, a fuzzer can
        obj = sample_dict(Sample(t=1.0, asset=asset, tag="GoodCount", value=1), epoch=ep,
                          run_id=run_id, gateway_ts=ep)  # fmt: skip
        return orjson.dumps({"samples": [{**obj, "t": t}]})

    bad_time = [
        one(1e11, "evil-1"),
        one(1e300, "evil-2"),
        one(1e11, "single-machine-teaching-r0"),  # of a known run, far outside its window
        one(-5.0, "single-machine-teaching-r0"),
    ]
    # well-formed, in the window, but of runs nobody registered (their epochs are their own)
    made_up = [one(10.0 + i, f"fabricated-{i}", ep=epoch + 3600.0 * (i + 1)) for i in range(5)]
    no_epoch = _batch([Sample(t=10.0, asset=asset, tag="GoodCount", value=1)], "anon", 0.0)

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(f"sqlite:///{tmp_path / 'p.db'}") as store,
                Ingest(store, BROKER, catalog=RunCatalog(store, scenario), root=root) as ingest,
            ):
                await pub.send(topic, _batch(good[:200], "single-machine-teaching-r0", epoch))
                for payload in [*bad_time, *made_up, no_epoch]:
                    await pub.send(topic, payload)
                await pub.send(topic, _batch(good[200:], "single-machine-teaching-r0", epoch))
                await _until(lambda: ingest.metrics.messages >= 2 + len(bad_time) + 6)
                await asyncio.wait_for(ingest.drain(), 20)
                m = ingest.metrics
                assert m.out_of_window == len(bad_time)
                assert m.unknown_run == len(made_up) + 1
                assert m.stored == len(good)
                assert [r.run_id for r in await store.list_runs()] == ["single-machine-teaching-r0"]
                assert (await store.counts("single-machine-teaching-r0")).samples == len(good)
                assert ingest._task is not None and not ingest._task.done()  # still running
        finally:
            pub.close()

    asyncio.run(main())


def test_a_restarted_ingest_receives_what_the_broker_queued_while_it_was_down(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    """The persistent session: same store, same client id; batches published while no ingest
    ran are stored after the restart (a clean session with a random id lost them)."""
    root = _root()
    epoch = scenario.plant.epoch.timestamp()
    topic = stream_topic(scenario.line_path, root)
    samples = [r for r in records if isinstance(r, Sample)][:1500]
    batches = [samples[i : i + 100] for i in range(0, len(samples), 100)]
    url = f"sqlite:///{tmp_path / 'p.db'}"
    run = "single-machine-teaching-r0"

    async def main() -> None:
        pub = Publisher()
        try:
            async with (
                open_store(url) as store,
                Ingest(store, BROKER, catalog=RunCatalog(store, scenario), root=root) as ingest,
            ):
                first = ingest.client_id
                for b in batches[:5]:
                    await pub.send(topic, _batch(b, run, epoch))
                await _until(lambda: ingest.metrics.stored == 500)
            for b in batches[5:]:  # nobody listens: the broker queues them for the session
                await pub.send(topic, _batch(b, run, epoch))
            async with (
                open_store(url) as store,
                Ingest(store, BROKER, catalog=RunCatalog(store, scenario), root=root) as ingest,
            ):
                assert ingest.client_id == first  # derived from the store: the same session
                await _until(lambda: ingest.metrics.stored == len(samples) - 500)
                assert (await store.counts(run)).samples == len(samples)
        finally:
            pub.close()

    asyncio.run(main())


def test_a_failing_store_is_retried_and_nothing_is_lost(
    scenario: Scenario, records: list[Record], tmp_path: Path
) -> None:
    """A store error (PostgreSQL restarting) no longer drops the round: it is retried with
    backoff, the messages unacknowledged meanwhile."""
    from iiotbed.errors import StorageError

    root = _root()
    epoch = scenario.plant.epoch.timestamp()
    topic = stream_topic(scenario.line_path, root)
    samples = [r for r in records if isinstance(r, Sample)][:600]
    run = "single-machine-teaching-r0"

    async def main() -> None:
        pub = Publisher()
        try:
            async with open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
                write = store.write_samples
                failures = [3]

                async def flaky(batch: list[Sample], run_id: str) -> int:
                    if failures[0] > 0:
                        failures[0] -= 1
                        raise StorageError("connection to PostgreSQL lost (test)")
                    return await write(batch, run_id)

                store.write_samples = flaky  # type: ignore[method-assign,assignment]
                async with Ingest(
                    store, BROKER, catalog=RunCatalog(store, scenario), root=root
                ) as ingest:
                    for i in range(0, len(samples), 200):
                        await pub.send(topic, _batch(samples[i : i + 200], run, epoch))
                    await _until(lambda: ingest.metrics.stored == len(samples))
                    m = ingest.metrics
                    assert m.store_retries == 3 and m.duplicates == 0
                    assert m.last_error is not None and "PostgreSQL" in m.last_error
                assert (await store.counts(run)).samples == len(samples)
        finally:
            pub.close()

    asyncio.run(main())
